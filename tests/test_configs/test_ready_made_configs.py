"""Every ready-made config loads, builds its model and trains one iteration on
random images; a config that only adds the custom_imports line builds too."""
import glob
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from focal_plugin.apis.runner_setup import strip_pretrained

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# The mmdet configs; configs/mmseg/ has its own tests (test_mmseg_config.py).
CONFIGS = sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                                            recursive=True)
    if '_base_' not in p and not osp.relpath(p, ROOT).startswith(osp.join('configs', 'mmseg')))


def test_there_are_ready_made_configs():
    assert len(CONFIGS) >= 5, CONFIGS


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_and_trains_one_iteration(config):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules

    cfg = Config.fromfile(osp.join(ROOT, config))
    assert cfg.custom_imports == dict(imports=['focal_plugin'], allow_failed_imports=False)
    register_all_modules()
    torch.manual_seed(0)
    strip_pretrained(cfg.model)
    model = MODELS.build(cfg.model)
    model.init_weights()
    size = 300 if 'ssd' in config else 160
    num_classes = cfg.model.bbox_head.num_classes
    data = demo_mm_inputs(batch_size=2, image_shapes=[(3, size, size)] * 2, num_items=[3, 0],
                          num_classes=num_classes)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    assert torch.isfinite(log_vars['loss']) and log_vars['loss'] > 0
    assert any('cls' in k for k in log_vars), log_vars.keys()


def test_mmdet_config_with_only_the_custom_imports_line_builds(tmp_path):
    # In a fresh interpreter: the custom_imports line alone must register the
    # plugin, so a config naming its classes builds.
    cfg = tmp_path / 'retinanet_plugin.py'
    cfg.write_text(
        "_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'\n"
        "custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)\n"
        "model = dict(bbox_head=dict(loss_cls=dict(type='FusedFocalLoss')))\n")
    code = ('import sys; from mmengine.config import Config; '
            'from mmdet.utils import register_all_modules; register_all_modules(); '
            'from mmdet.registry import MODELS; '
            'assert "focal_plugin" not in sys.modules; '
            f'cfg = Config.fromfile({str(cfg)!r}); '
            'assert "focal_plugin" in sys.modules; '
            'model = MODELS.build(cfg.model); '
            'print(type(model.bbox_head.loss_cls).__name__)')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == 'FusedFocalLoss'
