"""The ready-made mmseg config: FusedFocalLoss in an mmseg segmentor, built from
mmseg:: bases, trains one step on random images and predicts label maps."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

pytest.importorskip('mmseg')

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(
    osp.relpath(p, ROOT) for p in glob.glob(osp.join(ROOT, 'configs', 'mmseg', '*.py')))


def test_there_is_a_ready_made_mmseg_config():
    assert CONFIGS


@pytest.mark.parametrize('config', CONFIGS)
def test_mmseg_config_builds_and_trains_one_step(config):
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules

    from focal_plugin.models.losses import FusedFocalLoss

    cfg = Config.fromfile(osp.join(ROOT, config))
    assert 'focal_plugin' in cfg.custom_imports['imports']
    assert cfg.default_scope == 'mmseg'
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.decode_head.loss_decode) is FusedFocalLoss
    num_classes = cfg.model.decode_head.num_classes
    h, w = cfg.crop_size
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             pad_shape=(h, w)))
        label = torch.randint(0, num_classes, (1, h, w))
        label[:, :4] = 255  # mmseg's ignore label
        sample.gt_sem_seg = PixelData(data=label)
        samples.append(sample)
    data = dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8)] * 2,
                data_samples=samples)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    assert torch.isfinite(log_vars['loss']) and log_vars['loss'] > 0
    assert 'decode.loss_focal' in log_vars
    model.eval()
    out = model.test_step(data)
    assert out[0].pred_sem_seg.data.shape == (1, h, w)
