"""End-to-end: the ready-made fused RTMDet-tiny config learns on the generated
data, and tools/train.py --fuse trains a config that names mmdet's losses."""
import glob
import os.path as osp
import subprocess
import sys

from mmengine.config import Config

from .test_training import ROOT, TRAIN, _env, _scalars, _schedule

CONFIG = osp.join(ROOT, 'configs', 'rtmdet', 'rtmdet_tiny_fused-qfl_synthetic.py')


def _run(config, work_dir, options, *extra):
    cmd = [sys.executable, TRAIN, str(config), '--work-dir', str(work_dir), *extra,
           '--cfg-options', *options]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_fused_rtmdet_learns_and_evaluates(tmp_path):
    # 120 iterations: about 40 s of training and 5 s of evaluation on 2 cores.
    # The loss may rise over the first tens of iterations (QualityFocalLoss's
    # targets are the IoUs, which grow as the boxes improve), then falls.
    iters = 120
    _run(CONFIG, tmp_path, _schedule(iters, iters, 20))
    rows = _scalars(tmp_path)
    losses = [r['loss'] for r in rows if 'loss' in r]
    assert len(losses) == 6
    assert losses[-1] < 0.85 * losses[0], losses
    metrics = [r for r in rows if 'coco/bbox_mAP' in r]
    assert metrics and metrics[-1]['coco/bbox_mAP'] > 0.0, rows[-1]


def test_train_fuse_swaps_mmdet_losses_without_a_config_file(tmp_path):
    stock = tmp_path / 'rtmdet_stock_qfl.py'
    stock.write_text(f"_base_ = {CONFIG!r}\n"
                     "model = dict(bbox_head=dict(loss_cls=dict(type='QualityFocalLoss')))\n")
    _run(stock, tmp_path / 'work', _schedule(2, 10, 2, validate=False), '--fuse')
    dumped = glob.glob(str(tmp_path / 'work' / '*' / 'vis_data' / 'config.py')) + \
        glob.glob(str(tmp_path / 'work' / 'rtmdet_stock_qfl.py'))
    assert dumped, 'the runner wrote no config dump'
    cfg = Config.fromfile(dumped[0])
    assert cfg.model.bbox_head.loss_cls.type == 'FusedQualityFocalLoss'
    assert 'focal_plugin' in cfg.custom_imports.imports
    assert osp.isfile(tmp_path / 'work' / 'iter_2.pth')
