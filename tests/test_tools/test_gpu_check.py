"""tools/gpu_check.sh refuses bad arguments before it touches the build."""
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / 'tools' / 'gpu_check.sh'


@pytest.mark.parametrize('args,message', [
    (['--bogus'], 'usage: bash tools/gpu_check.sh'),
    (['--wheels'], 'usage: bash tools/gpu_check.sh'),
    (['--wheels', '/nonexistent/wheels'], '--wheels /nonexistent/wheels is not a folder'),
])
def test_bad_arguments_exit_2_with_a_message(args, message, tmp_path):
    result = subprocess.run(['bash', str(SCRIPT), *args], capture_output=True, text=True,
                            env={'PATH': '/usr/bin:/bin', 'OUT': str(tmp_path)}, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was built or written
