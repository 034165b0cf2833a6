"""tools/benchmark_training_step.py runs stock and fused detectors in their own
processes and compares them (small inputs, one timed step, to keep it quick)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'tools' / 'benchmark_training_step.py'


def _load():
    spec = importlib.util.spec_from_file_location('benchmark_training_step', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stock_and_fused_steps_are_compared(tmp_path, capsys):
    module = _load()
    out = tmp_path / 'step.json'
    assert module.main(['--detectors', 'centernet_r18', 'rtmdet_s', '--steps', '1',
                        '--image-size', '96', '96', '--out', str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [r['detector'] for r in rows] == ['centernet_r18', 'rtmdet_s']
    for row in rows:
        assert row['stock']['variant'] == 'stock' and row['fused']['variant'] == 'fused'
        # The same model, weights and batch: the same first-iteration losses.
        assert row['first_loss_max_rel_diff'] <= 1e-4
        assert set(row['stock']['first_losses']) == set(row['fused']['first_losses'])
        assert row['stock']['peak_rss_mb'] > 100 and row['fused']['step_s'] > 0
    assert '| rtmdet_s |' in capsys.readouterr().out


@pytest.mark.parametrize('argv,message', [
    (['--steps', '0'], '--steps and --batch-size must be >= 1'),
    (['--detectors', 'yolox'], "invalid choice: 'yolox'"),
    (['--worker', 'rtmdet_s', 'half'], '--worker takes a detector'),
])
def test_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        _load().parse_args(argv)
    assert message in capsys.readouterr().err
