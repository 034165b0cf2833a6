"""The tools' bare defaults name things that exist: running a tool with no
arguments must not fail on a stale default."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(relative: str):
    spec = importlib.util.spec_from_file_location(Path(relative).stem, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('tool', ['gamma_ablation', 'ohem_vs_focal'])
def test_experiment_default_config_exists(tool):
    module = _load(f'tools/experiments/{tool}.py')
    assert Path(module.DEFAULT_CONFIG).is_file(), module.DEFAULT_CONFIG


def test_ohem_vs_focal_default_config_mines_hard_negatives():
    module = _load('tools/experiments/ohem_vs_focal.py')
    module.check_mining_config(module.DEFAULT_CONFIG)  # raises if it does not


def test_benchmark_default_cases_parse_and_target_cases_are_defaults():
    module = _load('tools/benchmark_focal_loss.py')
    parsed = {module.parse_case(spec) for spec in module.DEFAULT_CASES}
    assert module.parse_args([]).cases == module.DEFAULT_CASES
    # Every case a target is stated for runs by default.
    for loss, shape, dtype in module.CPU_TARGETS:
        assert (loss, tuple(int(d) for d in shape.split('x')), dtype) in parsed


@pytest.mark.parametrize('spec', ['qfl:8x80:float32', 'focal:4x4:float32', 'vfl:8400:float32',
                                  'focal:2x3x4:float32', 'ohem:8x80:float32',
                                  'gaussian:8x80:int8'])
def test_benchmark_rejects_bad_cases(spec):
    module = _load('tools/benchmark_focal_loss.py')
    if spec in ('qfl:8x80:float32', 'focal:4x4:float32'):
        module.parse_case(spec)  # valid
        return
    with pytest.raises(ValueError):
        module.parse_case(spec)


def test_benchmark_runs_every_loss_on_tiny_cases(capsys):
    module = _load('tools/benchmark_focal_loss.py')
    cases = ['focal:64x8:float32', 'qfl:2x32x8:float32', 'vfl:2x32x8:bfloat16',
             'gaussian:1x2x8x8:float32']
    assert module.main(['--cases', *cases, '--repeat', '1']) == 0
    out = capsys.readouterr().out
    for case in ('focal 64x8 float32', 'qfl 2x32x8 float32', 'vfl 2x32x8 bfloat16',
                 'gaussian 1x2x8x8 float32'):
        assert f'| {case} | focal_plugin |' in out
        assert f'| {case} | mmdet (CPU path) |' in out


def test_benchmark_retain_allocator_mode_runs(tmp_path):
    # In its own process: --malloc retain changes glibc's behaviour for the
    # rest of the process.
    out = tmp_path / 'bench.json'
    done = subprocess.run([
        sys.executable, str(ROOT / 'tools' / 'benchmark_focal_loss.py'), '--cases',
        'qfl:2x32x8:float32', '--repeat', '1', '--malloc', 'retain', '--out', str(out)
    ], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '| qfl 2x32x8 float32 | mmdet (CPU path) |' in done.stdout
    assert '--malloc retain.' in done.stdout
    assert json.loads(out.read_text())['results'][0]['malloc'] == 'retain'


def test_benchmark_rejects_unknown_malloc_mode():
    module = _load('tools/benchmark_focal_loss.py')
    assert module.parse_args([]).malloc == 'default'
    with pytest.raises(SystemExit):
        module.parse_args(['--malloc', 'jemalloc'])


def test_plot_focal_loss_runs_with_no_arguments(tmp_path):
    # Its default --out is relative (docs/focal_loss_vs_pt.png): run from an
    # empty folder, it makes the folder and writes there.
    done = subprocess.run([sys.executable, str(ROOT / 'tools' / 'analysis' / 'plot_focal_loss.py')],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / 'docs' / 'focal_loss_vs_pt.png').stat().st_size > 10000


def test_benchmark_training_step_defaults_name_known_detectors():
    module = _load('tools/benchmark_training_step.py')
    args = module.parse_args([])
    assert args.detectors and set(args.detectors) <= set(module.DETECTORS)
