"""FocalYOLOV3Head: mmdet's YOLOv3 head unit tests, focal objectness/classes,
normalisation by the all-reduced positive count, and YOLOv3's config."""
import math
import os

import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402

from .head_test_utils import gt, total  # noqa: E402
import focal_plugin  # noqa: E402,F401
from focal_plugin.models.dense_heads import FocalYOLOV3Head  # noqa: E402
from focal_plugin.models.dense_heads import utils as head_utils  # noqa: E402
from focal_plugin.models.losses import FusedFocalLoss  # noqa: E402

S = 256
IMG_METAS = [{
    'img_shape': (S, S, 3),
    'pad_shape': (S, S, 3),
    'scale_factor': (1.0, 1.0),
    'ori_shape': (S, S, 3)
}]
TRAIN_CFG = dict(
    assigner=dict(type='GridAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0))
TEST_CFG = dict(
    nms_pre=1000,
    min_bbox_size=0,
    score_thr=0.05,
    conf_thr=0.005,
    nms=dict(type='nms', iou_threshold=0.45),
    max_per_img=100)


def build_head(**kwargs):
    cfg = dict(
        type='FocalYOLOV3Head',
        num_classes=4,
        in_channels=[1, 1, 1],
        out_channels=[1, 1, 1],
        train_cfg=Config(TRAIN_CFG),
        test_cfg=Config(TEST_CFG))
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def forward(head):
    feats = [
        torch.rand(1, 1, S // stride[1], S // stride[0]) for stride in head.prior_generator.strides
    ]
    return head.forward(feats)


def test_defaults_to_focal_classes_and_objectness():
    head = build_head()
    assert isinstance(head, FocalYOLOV3Head)
    assert isinstance(head.loss_cls, FusedFocalLoss)
    assert isinstance(head.loss_conf, FusedFocalLoss)


@pytest.mark.parametrize('prior_prob', [0.01, 0.3])
def test_objectness_and_class_biases_start_at_prior(prior_prob):
    head = build_head(prior_prob=prior_prob)
    expected = -math.log((1 - prior_prob) / prior_prob)
    for conv_pred in head.convs_pred:
        bias = conv_pred.bias.detach().view(head.num_base_priors, head.num_attrib)
        torch.testing.assert_close(bias[:, 4:], torch.full_like(bias[:, 4:], expected))
        assert (bias[:, :4] != expected).all()  # box outputs keep YOLOv3's init


def test_loss_empty_and_non_empty_ground_truth():
    head = build_head()
    (pred_maps, ) = forward(head)
    empty = total(head.loss_by_feat(pred_maps, [gt(empty=True)], IMG_METAS))
    # No objects: only objectness is trained (every anchor negative), as in mmdet's YOLOv3 test.
    assert empty['loss_conf'].item() > 0
    for name in ('loss_cls', 'loss_xy', 'loss_wh'):
        assert empty[name].item() == 0, name
    one = total(head.loss_by_feat(pred_maps, [gt(empty=False)], IMG_METAS))
    for name in ('loss_cls', 'loss_conf', 'loss_xy', 'loss_wh'):
        assert one[name].item() > 0, name
    sum(one.values()).backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_losses_are_normalised_by_the_all_reduced_positive_count(monkeypatch):
    head = build_head()
    (pred_maps, ) = forward(head)
    gts = [gt(empty=False)]
    local = total(head.loss_by_feat(pred_maps, gts, IMG_METAS))
    num_pos = float(head._avg_factor)

    # Objectness by hand: focal loss over the positive and negative anchors / positives.
    anchors = head.prior_generator.grid_priors([p.shape[-2:] for p in pred_maps], device='cpu')
    flags = head.responsible_flags([p.shape[-2:] for p in pred_maps], gts[0].bboxes, 'cpu')
    target_maps, neg_maps = head.get_targets([anchors], [flags], gts)
    target = torch.cat([t.reshape(-1, head.num_attrib) for t in target_maps])
    trained = torch.cat([n.reshape(-1) for n in neg_maps]).float() + target[:, 4]
    conf = torch.cat([p.permute(0, 2, 3, 1).reshape(-1, head.num_attrib)[:, 4] for p in pred_maps])
    assert num_pos == target[:, 4].sum().item() >= 1
    expected = FusedFocalLoss(reduction='sum')(conf, target[:, 4], trained) / num_pos
    torch.testing.assert_close(local['loss_conf'], expected, rtol=1e-5, atol=0)

    monkeypatch.setattr(head_utils, 'reduce_mean', lambda tensor: tensor * 2.0)
    reduced = total(head.loss_by_feat(pred_maps, gts, IMG_METAS))
    for name in ('loss_cls', 'loss_conf', 'loss_xy', 'loss_wh'):
        torch.testing.assert_close(reduced[name], local[name] / 2.0, rtol=1e-5, atol=0)


def test_predict_returns_consistent_boxes_scores_labels():
    head = build_head(prior_prob=0.5)  # scores above the thresholds, so there are detections
    (pred_maps, ) = forward(head)
    (result, ) = head.predict_by_feat(pred_maps, batch_img_metas=IMG_METAS)
    n = len(result)
    assert n > 0
    assert result.bboxes.shape == (n, 4)
    assert result.scores.shape == (n, ) and result.labels.shape == (n, )
    assert ((result.scores >= 0.05) & (result.scores <= 1)).all()
    assert ((result.labels >= 0) & (result.labels < 4)).all()


def test_loss_by_feat_single_needs_get_targets_first():
    head = build_head()
    (pred_maps, ) = forward(head)
    with pytest.raises(RuntimeError, match='call loss_by_feat'):
        head.loss_by_feat_single(pred_maps[0], None, None)


def test_yolov3_config_with_sum_reductions_gets_a_clear_error():
    import mmdet
    path = os.path.join(
        os.path.dirname(mmdet.__file__), '.mim', 'configs', 'yolo',
        'yolov3_d53_8xb8-ms-608-273e_coco.py')
    cfg = Config.fromfile(path)
    head_cfg = cfg.model.bbox_head
    head_cfg.type = 'FocalYOLOV3Head'
    head_cfg.in_channels = head_cfg.out_channels = [1, 1, 1]  # keep the test light
    head_cfg.update(train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg)
    # YOLOv3's configs sum every loss over the batch.
    with pytest.raises(ValueError, match="loss_cls must have reduction='mean', got 'sum'"):
        MODELS.build(head_cfg)
    # Converted RetinaNet-style: focal classes and objectness, 'mean' box losses.
    head_cfg.loss_cls = dict(type='FusedFocalLoss', use_sigmoid=True)
    head_cfg.loss_conf = dict(type='FusedFocalLoss', use_sigmoid=True)
    head_cfg.loss_xy.reduction = head_cfg.loss_wh.reduction = 'mean'
    head = MODELS.build(head_cfg)
    assert isinstance(head, FocalYOLOV3Head) and head.loss_xy.loss_weight == 2.0
