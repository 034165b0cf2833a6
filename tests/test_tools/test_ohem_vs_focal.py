"""tools/experiments/ohem_vs_focal.py end to end on generated data: three
variants trained a few iterations, tested, scored and tabulated, and a second
run that finds every run finished."""
import json
import os.path as osp
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'experiments', 'ohem_vs_focal.py')
BCCD_SSD = osp.join(ROOT, 'configs', 'ssd', 'ssdlite_mobilenetv2-tiny_2k_bccd.py')

# The BCCD SSDLite on the generated shapes (same three classes count), so that
# the test needs no dataset on disk.
SYNTHETIC_SSD = f"""
_base_ = {BCCD_SSD!r}
_data = dict(type='SyntheticShapesDataset', data_root=None)
train_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, **_data, split='train',
                 pipeline={{{{_base_.train_pipeline}}}}))
test_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, **_data, split='val', test_mode=True, indices=16,
                 pipeline={{{{_base_.test_pipeline}}}}))
val_dataloader = test_dataloader
"""


def _run(*args):
    done = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_ohem_vs_focal_writes_tables_and_resumes(tmp_path):
    config = tmp_path / 'ssd_synthetic.py'
    config.write_text(SYNTHETIC_SSD)
    work_dir = tmp_path / 'work'
    args = ['--config', str(config), '--seeds', '0', '--iters', '3', '--work-dir', str(work_dir),
            '--cfg-options', 'param_scheduler.0.end=1', 'param_scheduler.1.begin=1']
    text = _run(*args)
    assert 'run 3/3' in text
    focal_config = (work_dir / 'focal_ssd_synthetic.py').read_text()
    assert "type='FocalSSDHead'" in focal_config and 'neg_pos_ratio=' not in focal_config
    table = (work_dir / 'ohem_vs_focal.md').read_text()
    assert '| SSDHead: softmax CE, 3:1 hard-negative mining | SSDHead | softmax CE | 3:1 | 1 |' \
        in table
    assert '| FocalSSDHead | FL gamma 2, alpha .25 | none | 1 |' in table
    assert '| FocalSSDHead | sigmoid CE | none | 1 |' in table
    csv_lines = (work_dir / 'ohem_vs_focal.csv').read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith('variant,description,head,loss')
    with open(work_dir / 'ohem_vs_focal.png', 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    for run, gamma, alpha in (('focal_gamma2_seed0', 2.0, 0.25),
                              ('focal_gamma0_seed0', 0.0, None)):
        dumped = next((work_dir / run).glob('*/vis_data/config.py'), None) or next(
            (work_dir / run).glob('*/*.py'))
        text_cfg = dumped.read_text()
        assert f'gamma={gamma}' in text_cfg and f'alpha={alpha}' in text_cfg, run
    for run in ('ssd_ohem_seed0', 'focal_gamma2_seed0', 'focal_gamma0_seed0'):
        result = json.loads((work_dir / run / 'result.json').read_text())
        assert 0.0 <= result['mAP'] <= result['AP50'] <= 1.0
        per_class = sorted(k for k in result if k.startswith('AP50_'))
        assert len(per_class) == 3 and all(0.0 <= result[k] <= 1.0 for k in per_class)
        assert result['train_seconds'] > 0
    # Run again: every run is found finished and nothing is trained again.
    again = _run(*args)
    assert again.count('(done before)') == 3


def test_ohem_vs_focal_rejects_a_config_without_mining(tmp_path):
    retina = osp.join(ROOT, 'configs', 'retinanet', 'retinanet_r18-tiny_fpn_2k_bccd.py')
    done = subprocess.run([sys.executable, TOOL, '--config', retina, '--work-dir',
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2
    assert '--config must be an SSD config with hard-negative mining' in done.stderr
    assert "bbox_head 'FocalRetinaHead'" in done.stderr
