"""fuse_config and ``tools/focalize.py --fuse``: only the loss types change, the
written child config resolves to the in-memory result, lists included."""
import os.path as osp
import subprocess
import sys

import pytest
from mmengine.config import Config

from focal_plugin.apis.fuse import FuseError, fuse, fuse_config
from .helpers import config_diff, only_loss_types_differ, resolved_child_model

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FOCALIZE = osp.join(ROOT, 'tools', 'focalize.py')

# A made-up model with a focal-family loss in each kind of place: a dict head,
# a nested entry, a scoped name, a list of heads, a tuple, and a dict that
# merely resembles a loss (FocalLossCost, an assigner's cost).
NESTED = dict(
    model=dict(
        type='Made',
        bbox_head=dict(
            type='SomeHead',
            loss_cls=dict(type='FocalLoss', gamma=1.5, alpha=0.3, loss_weight=2.0),
            initial_loss_cls=dict(type='mmdet.FocalLoss', activated=True),
            loss_bbox=dict(type='GIoULoss')),
        roi_head=dict(bbox_head=[
            dict(type='StageHead', loss_cls=dict(type='QualityFocalLoss', beta=1.0)),
            dict(type='StageHead', loss_cls=dict(type='CrossEntropyLoss')),
        ]),
        extra_heads=(dict(type='Heatmap', loss=dict(type='GaussianFocalLoss', gamma=3.0)), ),
        train_cfg=dict(assigner=dict(match_costs=[dict(type='FocalLossCost', weight=2.0)]))),
    custom_imports=dict(imports=['my_project.models'], allow_failed_imports=False),
    train_cfg=dict(max_iters=10))


def test_fuse_config_swaps_every_focal_family_loss_and_nothing_else():
    cfg = Config(NESTED, cfg_text='# made', filename='made.py')
    fused = fuse_config(cfg)
    head = fused.model.bbox_head
    assert head.loss_cls == dict(type='FusedFocalLoss', gamma=1.5, alpha=0.3, loss_weight=2.0)
    assert head.initial_loss_cls == dict(type='FusedFocalLoss', activated=True)
    assert head.loss_bbox.type == 'GIoULoss'
    stages = fused.model.roi_head.bbox_head
    assert stages[0].loss_cls == dict(type='FusedQualityFocalLoss', beta=1.0)
    assert stages[1].loss_cls.type == 'CrossEntropyLoss'
    assert fused.model.extra_heads[0].loss == dict(type='FusedGaussianFocalLoss', gamma=3.0)
    assert fused.model.train_cfg.assigner.match_costs[0].type == 'FocalLossCost'
    # the input is untouched; the four loss types are all that differ
    assert cfg.model.bbox_head.loss_cls.type == 'FocalLoss'
    assert only_loss_types_differ(cfg.model, fused.model) == []
    assert len(config_diff(cfg.model, fused.model)) == 4
    # the config's own imports are kept; the plugin is added and runs the runner
    assert fused.custom_imports == dict(imports=['my_project.models', 'focal_plugin'],
                                        allow_failed_imports=False)
    assert fused.runner_type == 'FocalRunner'
    assert fused.train_cfg == cfg.train_cfg and fused.filename == cfg.filename


def test_fuse_config_keeps_a_runner_of_the_config():
    cfg = Config(dict(model=dict(head=dict(loss=dict(type='VarifocalLoss'))),
                      runner_type='MyRunner'))
    fused = fuse_config(cfg)
    assert fused.model.head.loss.type == 'FusedVarifocalLoss'
    assert fused.runner_type == 'MyRunner'
    assert fused.custom_imports.imports == ['focal_plugin']


def test_fuse_refuses_a_model_without_focal_loss():
    with pytest.raises(FuseError, match=r"faster-rcnn_r50_fpn_1x_coco.py: its model "
                       r"\(FasterRCNN\) uses no focal-family loss"):
        fuse('mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py')
    with pytest.raises(FuseError, match='no `model`'):
        fuse_config(Config(dict(train_cfg=dict()), cfg_text='#', filename='data_only.py'))


def test_fuse_refuses_quality_focal_loss_in_a_detr_head():
    cfg = Config.fromfile(_mmdet_config('dino/dino-4scale_r50_8xb2-12e_coco.py'))
    cfg.model.bbox_head.loss_cls = dict(type='QualityFocalLoss', beta=2.0)
    with pytest.raises(FuseError, match=r'model.bbox_head.loss_cls is a QualityFocalLoss in '
                       r'DINOHead.*isinstance'):
        fuse_config(cfg)


def _mmdet_config(name: str) -> str:
    import mmdet
    return osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', name)


@pytest.mark.parametrize('source', [
    'mmdet::tood/tood_r50_fpn_1x_coco.py',  # nested initial_loss_cls
    'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_1x_coco.py',  # a list of six RoI heads
])
def test_cli_child_config_resolves_to_the_in_memory_result(tmp_path, source):
    out = tmp_path / 'fused.py'
    done = subprocess.run([sys.executable, FOCALIZE, '--fuse', source, str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert f"_base_ = [{source!r}]" in text
    assert "custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)" in text
    assert resolved_child_model(str(out)) == fuse_config(
        Config.fromfile(_mmdet_config(source[7:]))).model
    assert Config.fromfile(str(out)).runner_type == 'FocalRunner'


def test_cli_local_input_and_refusal(tmp_path):
    local = tmp_path / 'in' / 'my_vfnet.py'
    local.parent.mkdir()
    local.write_text("_base_ = 'mmdet::vfnet/vfnet_r50_fpn_1x_coco.py'\n"
                     "model = dict(bbox_head=dict(num_classes=3))\n")
    out = tmp_path / 'out' / 'my_vfnet_fused.py'
    done = subprocess.run([sys.executable, FOCALIZE, '--fuse', str(local), str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "_base_ = ['../in/my_vfnet.py']" in out.read_text()
    child = Config.fromfile(str(out))
    assert child.model.bbox_head.loss_cls.type == 'FusedVarifocalLoss'
    assert child.model.bbox_head.num_classes == 3
    refused = subprocess.run(
        [sys.executable, FOCALIZE, '--fuse', 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py',
         str(tmp_path / 'x.py')], capture_output=True, text=True)
    assert refused.returncode == 1
    assert 'uses no focal-family loss' in refused.stderr and not (tmp_path / 'x.py').exists()
