"""The CPU kernels' instruction-set dispatch: one library per ISA, the one ATen picks is loaded.

Every built library must compute the same losses: the op tests run once more
in a child process per instruction set, with ``ATEN_CPU_CAPABILITY`` choosing it.
"""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from focal_plugin.ops import cpu_isa, extension

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CHILD_ENV = 'FOCAL_PLUGIN_TEST_CHILD_ISA'


def _built(isa: str) -> bool:
    return importlib.util.find_spec(f'focal_plugin._C_cpu_{isa}') is not None


def _runnable(isa: str) -> bool:
    """Whether ATen may pick ``isa`` on this CPU (it never picks more than the CPU has)."""
    return isa in extension._usable_cpu_libraries()


def test_loads_the_best_library_that_atens_capability_allows():
    expected = next((isa for isa in extension._usable_cpu_libraries() if _built(isa)), None)
    assert expected is not None, 'no CPU kernel library is built: rebuild the extension'
    assert cpu_isa() == expected, (torch.backends.cpu.get_cpu_capability(), cpu_isa())
    if os.environ.get(CHILD_ENV):
        assert cpu_isa() == os.environ[CHILD_ENV]


def test_isa_order_matches_atens_capability_names():
    capability = torch.backends.cpu.get_cpu_capability().lower()
    usable = extension._usable_cpu_libraries()
    assert usable[-1] == 'default'
    if capability.startswith('avx512'):
        assert usable == ('avx512', 'avx2', 'default')
    elif capability.startswith('avx2'):
        assert usable == ('avx2', 'default')


@pytest.mark.skipif(bool(os.environ.get(CHILD_ENV)), reason='already the child run of one ISA')
@pytest.mark.parametrize('isa', extension.CPU_LIBRARIES)
def test_op_tests_pass_with_each_isa_library(isa, tmp_path):
    if not _built(isa):
        pytest.skip(f'focal_plugin._C_cpu_{isa} is not built (FOCAL_PLUGIN_CPU_VEC=none?)')
    if not _runnable(isa):
        pytest.skip(f'this CPU cannot run {isa} '
                    f'(ATen capability {torch.backends.cpu.get_cpu_capability()})')
    if isa == cpu_isa():
        pytest.skip(f'{isa} is the library this process runs the whole suite with')
    # A private Inductor cache: torch reuses compiled kernels across
    # ATEN_CPU_CAPABILITY values, which crashed a compiled training run
    # (a segfault in Inductor's generated code, not in the package's).
    env = dict(os.environ, ATEN_CPU_CAPABILITY=isa, TORCHINDUCTOR_CACHE_DIR=str(tmp_path),
               **{CHILD_ENV: isa})
    tests = [
        osp.join('tests', 'test_ops', name) for name in (
            'test_cpu_dispatch.py', 'test_family_ops.py', 'test_focal_loss_correctness.py',
            'test_focal_loss_determinism.py', 'test_focal_loss_bad_input.py',
            'test_focal_loss_torch_library.py', 'test_cpu_output_cache.py',
            'test_zero_target_table.py')
    ]
    result = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', *tests],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    summary = result.stdout.strip().splitlines()[-1:] or ['(no output)']
    assert result.returncode == 0, (
        f'{isa}: {summary[0]}\n{result.stdout[-4000:]}{result.stderr[-2000:]}')
    assert ' passed' in summary[0] and 'failed' not in summary[0], summary[0]
