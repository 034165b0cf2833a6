"""tools/focalize.py: the ready-made COCO configs are its output; it refuses what it
cannot convert, saying why."""
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from focal_plugin.apis.focalize import FocalizeError, focalize

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

READY_MADE = {
    'configs/retinanet/focal-retinanet_r50_fpn_1x_coco.py':
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
    'configs/ssd/focal-ssd300_vgg16_120e_coco.py': 'mmdet::ssd/ssd300_coco.py',
    'configs/yolo/focal-yolov3_d53_8xb8-320-273e_coco.py':
    'mmdet::yolo/yolov3_d53_8xb8-320-273e_coco.py',
    'configs/atss/atss_r50_fpn_fused-focal_1x_coco.py': 'mmdet::atss/atss_r50_fpn_1x_coco.py',
    # A local source: mmdet's SSDHead with mining (MiningSSDHead) on BCCD.
    'configs/ssd/focal-ssdlite_mobilenetv2-tiny_2k_bccd.py':
    'configs/ssd/ssdlite_mobilenetv2-tiny_2k_bccd.py',
}


@pytest.mark.parametrize('config,source', sorted(READY_MADE.items()))
def test_ready_made_config_is_focalize_output(config, source):
    with open(osp.join(ROOT, config)) as f:
        source = source if source.startswith('mmdet::') else osp.join(ROOT, source)
        assert f.read() == focalize(source, osp.join(ROOT, config))


def test_conversions_are_retinanet_style():
    ssd = Config.fromfile(osp.join(ROOT, 'configs/ssd/focal-ssd300_vgg16_120e_coco.py'))
    assert ssd.model.bbox_head.type == 'FocalSSDHead'
    assert ssd.model.bbox_head.loss_cls.type == 'FusedFocalLoss'
    assert 'neg_pos_ratio' not in ssd.model.train_cfg
    assert ssd.model.train_cfg.sampler.type == 'PseudoSampler'
    yolo = Config.fromfile(osp.join(ROOT, 'configs/yolo/focal-yolov3_d53_8xb8-320-273e_coco.py'))
    assert yolo.model.bbox_head.type == 'FocalYOLOV3Head'
    assert yolo.model.bbox_head.loss_conf == dict(type='FusedFocalLoss', use_sigmoid=True,
                                                  gamma=2.0, alpha=0.25, loss_weight=1.0)
    assert yolo.model.bbox_head.loss_xy.reduction == 'mean'
    atss = Config.fromfile(osp.join(ROOT, 'configs/atss/atss_r50_fpn_fused-focal_1x_coco.py'))
    assert atss.model.bbox_head.loss_cls.type == 'FusedFocalLoss'
    assert atss.model.bbox_head.loss_cls.gamma == 2.0  # FocalLoss's arguments are kept


def test_refuses_two_stage_detectors():
    with pytest.raises(FocalizeError, match='FasterRCNN is a two-stage detector'):
        focalize('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')


def test_refuses_heads_it_does_not_know(tmp_path):
    cfg = tmp_path / 'odd.py'
    cfg.write_text("_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
                   "model = dict(bbox_head=dict(type='GARetinaHead', loss_cls=dict("
                   "_delete_=True, type='CrossEntropyLoss', use_sigmoid=True)))\n")
    with pytest.raises(FocalizeError, match="'GARetinaHead' .* not a head focalize knows"):
        focalize(str(cfg))
    with pytest.raises(FocalizeError, match='does not exist'):
        focalize(str(tmp_path / 'missing.py'))


def test_cli_writes_a_config_inheriting_from_a_local_input(tmp_path):
    local = tmp_path / 'in' / 'my_retina.py'
    local.parent.mkdir()
    local.write_text("_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'\n")
    out = tmp_path / 'out' / 'focal_retina.py'
    tool = osp.join(ROOT, 'tools', 'focalize.py')
    done = subprocess.run([sys.executable, tool, str(local), str(out)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "_base_ = '../in/my_retina.py'" in out.read_text()
    cfg = Config.fromfile(str(out))
    assert cfg.model.bbox_head.type == 'FocalRetinaHead'
    again = subprocess.run([sys.executable, tool, str(local), str(out)], capture_output=True,
                           text=True)
    assert again.returncode == 2 and 'pass --force' in again.stderr
    refused = subprocess.run(
        [sys.executable, tool, 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
         str(tmp_path / 'x.py')], capture_output=True, text=True)
    assert refused.returncode == 1 and 'two-stage' in refused.stderr
