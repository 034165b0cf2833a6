"""Build and install focal_plugin with its compiled focal-loss ops.

The CPU kernel is always built. The CUDA kernel is added when torch is a CUDA
build and nvcc is found (CUDA_HOME), or when ``FORCE_CUDA=1``.

Environment:
    FORCE_CUDA: ``1`` builds the CUDA kernel even without a visible GPU.
    FOCAL_PLUGIN_CPU_VEC: ``auto`` (default) compiles the CPU kernel for AVX2
        + FMA when the building machine has them (the build is for the machine
        that runs it, as with any from-source OpenMMLab install); ``none``
        compiles portable code.
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

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))
CSRC = osp.join('focal_plugin', 'csrc')


def get_version() -> str:
    scope: dict = {}
    with open(osp.join(ROOT, 'focal_plugin', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


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


def cpu_supports_avx2() -> bool:
    try:
        with open('/proc/cpuinfo') as f:
            flags = next((line for line in f if line.startswith('flags')), '')
    except OSError:
        return False
    return all(f' {flag}' in flags for flag in ('avx2', 'fma', 'f16c'))


def make_extensions() -> list:
    import torch
    from torch.utils.cpp_extension import (CUDA_HOME, CppExtension,
                                           CUDAExtension)

    sources = [osp.join(CSRC, 'focal_loss.cpp')]
    sources += sorted(glob.glob(osp.join(CSRC, 'cpu', '*.cpp')))
    cxx_flags = ['-O3', '-fopenmp', '-Wall', '-Wno-unknown-pragmas']
    vec = os.environ.get('FOCAL_PLUGIN_CPU_VEC', 'auto')
    if vec not in ('auto', 'none'):
        raise SystemExit(f"FOCAL_PLUGIN_CPU_VEC must be 'auto' or 'none', got {vec!r}")
    if vec == 'auto' and cpu_supports_avx2():
        # The same switches ATen uses for its AVX2 kernels: Vectorized<T>
        # then maps to 256-bit registers and libtorch's Sleef exp/log1p.
        cxx_flags += ['-mavx2', '-mfma', '-mf16c', '-DCPU_CAPABILITY=AVX2',
                      '-DCPU_CAPABILITY_AVX2']
    extra_link_args = ['-fopenmp']

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
        ]
    return [
        CppExtension('focal_plugin._C', sources, extra_compile_args={'cxx': cxx_flags},
                     extra_link_args=extra_link_args)
    ]


def main() -> None:
    from torch.utils.cpp_extension import BuildExtension

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
        cmdclass={'build_ext': BuildExtension.with_options(use_ninja=True)},
        zip_safe=False,
        classifiers=[
            'Programming Language :: Python :: 3.11',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
    )


if __name__ == '__main__':
    main()
