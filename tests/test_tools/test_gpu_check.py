"""tools/gpu_check.sh refuses bad arguments and a misfit machine before it builds.

The whole script is rehearsed on a bare CUDA venv by tools/rehearse_gpu_check.sh
(CI); these are its quick checks.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'gpu_check.sh'


@pytest.mark.parametrize('args,message', [
    (['--bogus'], 'usage: bash tools/gpu_check.sh'),
    (['--wheels'], 'usage: bash tools/gpu_check.sh'),
    (['--download'], 'usage: bash tools/gpu_check.sh'),
    (['--download', 'x', '--platform'], 'usage: bash tools/gpu_check.sh'),
    (['--wheels', '/nonexistent/wheels'], '--wheels /nonexistent/wheels is not a folder'),
])
def test_bad_arguments_exit_2_with_a_message(args, message, tmp_path):
    result = subprocess.run(['bash', str(SCRIPT), *args], capture_output=True, text=True,
                            env={'PATH': '/usr/bin:/bin', 'OUT': str(tmp_path)}, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was built or written


def _fake_cuda_home(tmp_path, release):
    nvcc = tmp_path / 'cuda' / 'bin' / 'nvcc'
    nvcc.parent.mkdir(parents=True)
    nvcc.write_text(f'#!/bin/sh\necho "Cuda compilation tools, release {release}, V{release}.1"\n')
    nvcc.chmod(0o755)
    return nvcc.parent.parent


@pytest.mark.skipif(torch.version.cuda is not None, reason='needs a CPU build of torch')
def test_preflight_stops_a_cpu_torch_before_the_build(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / 'out'),
               CUDA_HOME=str(_fake_cuda_home(tmp_path, '13.0')))
    result = subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1
    assert 'is a CPU build: the GPU check needs a CUDA build' in result.stderr
    assert 'preflight failed; nothing was built' in result.stderr
    assert not (tmp_path / 'out' / 'build.log').exists()

