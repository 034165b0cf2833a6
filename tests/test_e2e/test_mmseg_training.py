"""End-to-end: mmseg's own tools/train.py trains the ready-made segmentation
config (FusedFocalLoss as loss_decode) on the generated segmentation dataset,
in a subprocess: the loss falls and the val mIoU is above 0."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

mmseg = pytest.importorskip('mmseg')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'mmseg', 'fcn_unet-tiny_fused-focal_1k_synthetic-seg.py')


def test_short_mmseg_training_learns_and_evaluates(tmp_path):
    iters = 60
    mmseg_train = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'train.py')
    options = [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        f'param_scheduler.0.end=10', 'param_scheduler.1.begin=10',
        f'param_scheduler.1.end={iters}', f'default_hooks.checkpoint.interval={iters}',
        'default_hooks.logger.interval=10', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False', 'randomness.seed=0'
    ]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get('PYTHONPATH', '')]))
    cmd = [sys.executable, mmseg_train, CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
           *options]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = sorted(glob.glob(osp.join(str(tmp_path), '*', 'vis_data', 'scalars.json')))
    assert files, f'no scalars.json under {tmp_path}'
    with open(files[-1]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    losses = [r['decode.loss_focal'] for r in rows if 'decode.loss_focal' in r]
    assert len(losses) == iters // 10
    assert losses[-1] < 0.5 * losses[0], losses
    metrics = [r for r in rows if 'mIoU' in r]
    assert metrics and metrics[-1]['mIoU'] > 0.0, rows[-1]
