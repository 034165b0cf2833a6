"""Build and install focal_plugin with its compiled focal-loss ops.

The CPU kernel is always built. The CUDA kernel is added when torch is a CUDA
build and nvcc is found (CUDA_HOME), or when ``FORCE_CUDA=1``.

Environment:
    FORCE_CUDA: ``1`` builds the CUDA kernel even without a visible GPU.
    FOCAL_PLUGIN_CPU_VEC: ``auto`` (default) compiles the CPU kernels once per
        instruction set that ATen dispatches to on this architecture (x86-64:
        portable, AVX2 and AVX-512), each into its own library
        ``focal_plugin._C_cpu_<isa>``; at import the package loads the one that
        matches ``torch.backends.cpu.get_cpu_capability()``, so a build runs on
        any CPU, as ATen's own kernels do. ``none`` compiles the portable
        library only.
    TORCH_CUDA_ARCH_LIST: CUDA architectures. Defaults to ``9.0`` when no GPU
        is visible.

Build with ``pip install --no-build-isolation -e .`` so that the extension is
compiled against the torch already installed (``tools/setup_env.sh`` does it).

Requirements: ``install_requires`` is what the package needs at runtime
(``requirements/runtime.txt``: torch and mmengine); mmdet, mmcv and
mmsegmentation are the extras ``mmdet`` and ``mmseg``. The exact versions of
this project's own environment live in ``requirements/build.txt`` and
``requirements/mminstall.txt`` and never reach the package's metadata.
"""
import glob
import os
import os.path as osp
import platform

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
CSRC = osp.join('focal_plugin', 'csrc')


def read_constant(module_path: str, name: str):
    """A constant of one of the package's torch-free modules, read without
    importing the package (whose compiled libraries do not exist yet)."""
    scope: dict = {}
    with open(osp.join(ROOT, module_path)) as f:
        exec(f.read(), scope)
    return scope[name]


def get_version() -> str:
    return read_constant(osp.join('focal_plugin', 'version.py'), '__version__')


def parse_requirements(fname: str) -> list:
    """Requirement lines of ``requirements/<fname>``, following ``-r``."""
    reqs = []
    with open(osp.join(ROOT, 'requirements', fname)) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line.startswith('-r '):
                reqs += parse_requirements(line[3:].strip())
            elif line:
                reqs.append(line)
    return reqs


# The CPU kernel libraries (best first, named in focal_plugin/ops/cpu_libraries.py,
# which the package loads by) and their compiler switches: the same that ATen
# uses for its own kernels of each capability, so that at::vec::Vectorized
# maps to the same registers as in libtorch.
CPU_LIBRARIES = read_constant(osp.join('focal_plugin', 'ops', 'cpu_libraries.py'), 'CPU_LIBRARIES')
CPU_CAPABILITY_FLAGS = {
    'avx512': ['-mavx512f', '-mavx512bw', '-mavx512vl', '-mavx512dq', '-mavx2', '-mfma',
               '-mf16c', '-DCPU_CAPABILITY=AVX512', '-DCPU_CAPABILITY_AVX512'],
    'avx2': ['-mavx2', '-mfma', '-mf16c', '-DCPU_CAPABILITY=AVX2', '-DCPU_CAPABILITY_AVX2'],
    'default': ['-DCPU_CAPABILITY=DEFAULT'],
}
assert set(CPU_CAPABILITY_FLAGS) == set(CPU_LIBRARIES), 'compiler switches for every CPU library'


def cpu_capabilities() -> list:
    """Instruction sets to build the CPU kernels for (FOCAL_PLUGIN_CPU_VEC)."""
    vec = os.environ.get('FOCAL_PLUGIN_CPU_VEC', 'auto')
    if vec not in ('auto', 'none'):
        raise SystemExit(f"FOCAL_PLUGIN_CPU_VEC must be 'auto' or 'none', got {vec!r}")
    if vec == 'none' or platform.machine().lower() not in ('x86_64', 'amd64'):
        return ['default']
    return list(CPU_LIBRARIES)


def build_ext_command():
    """torch's BuildExtension (ninja), with one object folder per extension.

    The CPU kernel libraries compile the same sources with different switches;
    in setuptools' shared build_temp their object files would overwrite each
    other.
    """
    from torch.utils.cpp_extension import BuildExtension

    class BuildExtensionPerObjectDir(BuildExtension):

        def build_extension(self, ext):
            build_temp = self.build_temp
            self.build_temp = osp.join(build_temp, ext.name)
            try:
                super().build_extension(ext)
            finally:
                self.build_temp = build_temp

    return BuildExtensionPerObjectDir.with_options(use_ninja=True)


def make_extensions() -> list:
    import torch
    from torch.utils.cpp_extension import (CUDA_HOME, CppExtension,
                                           CUDAExtension)

    cxx_flags = ['-O3', '-fopenmp', '-Wall', '-Wno-unknown-pragmas']
    extra_link_args = ['-fopenmp']
    cpu_sources = sorted(glob.glob(osp.join(CSRC, 'cpu', '*.cpp')))
    cpu_libraries = []
    for isa in cpu_capabilities():
        isa_flags = list(CPU_CAPABILITY_FLAGS[isa])
        if isa == 'avx512':
            # GCC 12's avx512fintrin.h trips its own -Wuninitialized (_mm512_undefined_*,
            # GCC bug 105593).
            isa_flags += ['-Wno-uninitialized', '-Wno-maybe-uninitialized']
        cpu_libraries.append(
            CppExtension(f'focal_plugin._C_cpu_{isa}', cpu_sources,
                         extra_compile_args={'cxx': cxx_flags + isa_flags},
                         extra_link_args=extra_link_args))
    sources = [osp.join(CSRC, 'focal_loss.cpp')]

    force_cuda = os.environ.get('FORCE_CUDA', '0') == '1'
    with_cuda = force_cuda or (torch.version.cuda is not None and CUDA_HOME is not None
                               and torch.cuda.is_available())
    if with_cuda:
        if torch.version.cuda is None:
            raise SystemExit('FORCE_CUDA=1 needs a CUDA build of torch; '
                             f'torch {torch.__version__} is a CPU build')
        if CUDA_HOME is None:
            raise SystemExit('FORCE_CUDA=1 needs nvcc: set CUDA_HOME (e.g. /usr/local/cuda)')
        if not torch.cuda.is_available():
            os.environ.setdefault('TORCH_CUDA_ARCH_LIST', '9.0')
        sources += sorted(glob.glob(osp.join(CSRC, 'cuda', '*.cu')))
        # No --use_fast_math: the CUDA kernels must evaluate the same math as the
        # CPU kernel (focal_loss_math.h), which the CPU tests check against the oracle.
        nvcc_flags = ['-O3', '-lineinfo']
        return [
            CUDAExtension(
                'focal_plugin._C', sources,
                extra_compile_args={'cxx': cxx_flags,
                                    'nvcc': nvcc_flags},
                extra_link_args=extra_link_args)
        ] + cpu_libraries
    return [
        CppExtension('focal_plugin._C', sources, extra_compile_args={'cxx': cxx_flags},
                     extra_link_args=extra_link_args)
    ] + cpu_libraries


def main() -> None:
    setup(
        name='focal_plugin',
        version=get_version(),
        description='Fused focal loss (Lin et al.) for MMDetection 3.x as a plugin',
        long_description=open(osp.join(ROOT, 'README.md'), encoding='utf-8').read(),
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        python_requires='>=3.9',
        packages=find_packages(exclude=('configs', 'tools', 'tests', 'tests.*')),
        package_data={'focal_plugin': ['csrc/**/*']},
        include_package_data=True,
        install_requires=parse_requirements('runtime.txt'),
        extras_require={
            'mmdet': parse_requirements('mmdet.txt'),
            'mmseg': parse_requirements('mmseg.txt'),
            'tests': parse_requirements('tests.txt'),
        },
        ext_modules=make_extensions(),
        cmdclass={'build_ext': build_ext_command()},
        zip_safe=False,
        classifiers=[
            'Programming Language :: Python :: 3.11',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
    )


if __name__ == '__main__':
    main()
