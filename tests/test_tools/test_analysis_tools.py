"""The analysis tools run end to end on tiny inputs and write sensible numbers and PNGs."""
import json
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SYNTHETIC = osp.join(ROOT, 'configs', 'retinanet', 'retinanet_r18-tiny_fpn_2k_synthetic.py')
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _run(*args, timeout=600):
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _is_png(path) -> bool:
    with open(path, 'rb') as f:
        return f.read(8) == PNG_MAGIC and osp.getsize(path) > 10000


def test_plot_focal_loss(tmp_path):
    out = tmp_path / 'fig1.png'
    text = _run(osp.join(ROOT, 'tools', 'analysis', 'plot_focal_loss.py'), '--out', str(out))
    assert _is_png(out)
    # -log(0.9) = 0.10536 for CE; gamma 2 scales it by (1 - 0.9)^2.
    assert 'gamma=0: loss at p_t=0.9 is 0.105' in text
    assert 'gamma=2: loss at p_t=0.9 is 0.00105' in text


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('tiny_train')
    _run(osp.join(ROOT, 'tools', 'train.py'), SYNTHETIC, '--work-dir', str(work_dir),
         '--cfg-options', 'train_cfg.max_iters=6', 'train_cfg.val_interval=1000',
         'param_scheduler.0.end=2', 'param_scheduler.1.begin=2', 'param_scheduler.1.end=6',
         'default_hooks.checkpoint.interval=6', 'train_dataloader.num_workers=0',
         'train_dataloader.persistent_workers=False')
    return str(work_dir / 'iter_6.pth')


def test_loss_distribution(tmp_path, tiny_checkpoint):
    out, numbers = tmp_path / 'fig4.png', tmp_path / 'fig4.json'
    text = _run(osp.join(ROOT, 'tools', 'analysis', 'loss_distribution.py'), SYNTHETIC,
                tiny_checkpoint, '--max-images', '8', '--out', str(out), '--json', str(numbers),
                '--work-dir', str(tmp_path / 'runner'), '--cfg-options',
                'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False')
    assert _is_png(out)
    rows = json.loads(numbers.read_text())
    assert [r['gamma'] for r in rows] == [0.0, 0.5, 1.0, 2.0]
    for r in rows:
        assert r['positives'] > 0 and r['negatives'] > 100 * r['positives']
        share1 = r['negative_loss_share_hardest_1pct']
        share10 = r['negative_loss_share_hardest_10pct']
        assert 0.01 <= share1 <= share10 <= 1.0
    assert rows[0]['positives'] + rows[0]['negatives'] <= 8 * 3000  # anchors of 8 images
    # Focusing moves the negative loss onto the hardest negatives.
    share_key = 'negative_loss_share_hardest_10pct'
    assert rows[-1][share_key] > rows[0][share_key]
    assert 'hardest 1% of' in text


def test_gamma_ablation_writes_tables_and_resumes(tmp_path):
    tool = osp.join(ROOT, 'tools', 'experiments', 'gamma_ablation.py')
    args = [tool, '--config', SYNTHETIC, '--variants', 'ce', 'fl_gamma2', '--seeds', '0',
            '--work-dir', str(tmp_path), '--cfg-options', 'train_cfg.max_iters=4',
            'train_cfg.val_interval=1000', 'param_scheduler.0.end=2',
            'param_scheduler.1.begin=2', 'param_scheduler.1.end=4',
            'default_hooks.checkpoint.interval=4', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False']
    text = _run(*args)
    table = (tmp_path / 'ablation.md').read_text()
    assert '| sigmoid CE | 0 | None | 1 |' in table and '| FL gamma 2, alpha .25 | 2 |' in table
    csv_lines = (tmp_path / 'ablation.csv').read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[0].startswith('variant,description,gamma')
    for variant in ('ce_seed0', 'fl_gamma2_seed0'):
        result = json.loads((tmp_path / variant / 'result.json').read_text())
        assert 0.0 <= result['mAP'] <= result['AP50'] <= 1.0
        per_class = sorted(k for k in result if k.startswith('AP50_'))
        assert len(per_class) == 3 and all(0.0 <= result[k] <= 1.0 for k in per_class)
    assert 'run 2/2' in text
    # Run again: both runs are found finished and not trained again.
    again = _run(*args)
    assert again.count('(done before)') == 2
