"""FocalYOLOV3Head: mmdet's YOLOv3 head unit tests, focal objectness/classes,
normalisation by the all-reduced positive count, and YOLOv3's config."""
import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402

from .head_test_utils import (  # noqa: E402
    assert_dicts_close, assert_empty_and_one_box_gt_losses, assert_predicts_detections,
    assert_trainable, build_dense_head, gt, img_metas, mmdet_config_path, prior_bias, random_feats,
    scale_all_reduced_count, strided_sizes, summed_losses)
from focal_plugin.models.dense_heads import FocalYOLOV3Head  # noqa: E402
from focal_plugin.models.losses import FusedFocalLoss  # noqa: E402

S = 256
IMG_METAS = img_metas(S)
HEAD = dict(
    type='FocalYOLOV3Head',
    num_classes=4,
    in_channels=[1, 1, 1],
    out_channels=[1, 1, 1],
    train_cfg=dict(
        assigner=dict(type='GridAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0)),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        conf_thr=0.005,
        nms=dict(type='nms', iou_threshold=0.45),
        max_per_img=100))


def build_head(**overrides):
    """A FocalYOLOV3Head from HEAD, updated with ``overrides``."""
    return build_dense_head(HEAD, **overrides)


def forward(head):
    """The head's outputs, (pred_maps, ), on random maps of the 3 levels
    (strides 32, 16, 8)."""
    return head.forward(random_feats(strided_sizes(head, S), head.in_channels))


def test_defaults_to_focal_classes_and_objectness():
    """Without loss configs, classes and objectness both use FusedFocalLoss."""
    head = build_head()
    assert isinstance(head, FocalYOLOV3Head)
    assert isinstance(head.loss_cls, FusedFocalLoss)
    assert isinstance(head.loss_conf, FusedFocalLoss)


@pytest.mark.parametrize('prior_prob', [0.01, 0.3])
def test_objectness_and_class_biases_start_at_prior(prior_prob):
    """The objectness and class biases of every prior start at
    -log((1 - pi) / pi); the box biases do not."""
    head = build_head(prior_prob=prior_prob)
    expected = prior_bias(prior_prob)
    for conv_pred in head.convs_pred:
        bias = conv_pred.bias.detach().view(head.num_base_priors, head.num_attrib)
        torch.testing.assert_close(bias[:, 4:], torch.full_like(bias[:, 4:], expected))
        assert (bias[:, :4] != expected).all()  # box outputs keep YOLOv3's init


def test_loss_empty_and_non_empty_ground_truth():
    """No object: only the objectness loss (every anchor negative), as in
    mmdet's YOLOv3 test. One box: all four losses, with finite gradients."""
    head = build_head()
    one_box = assert_empty_and_one_box_gt_losses(
        head, forward(head), IMG_METAS, trained_without_objects=('loss_conf', ))
    assert one_box.keys() == {'loss_cls', 'loss_conf', 'loss_xy', 'loss_wh'}
    assert_trainable(head, one_box)


def test_losses_are_normalised_by_the_all_reduced_positive_count(monkeypatch):
    """The objectness loss is the focal loss over the positive and negative
    anchors divided by the positive count, and every loss is divided by that
    count averaged over all ranks."""
    head = build_head()
    outs = forward(head)
    (pred_maps, ) = outs
    gts = [gt(empty=False)]
    local = summed_losses(head, outs, gts, IMG_METAS)
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

    # As if the other ranks had twice as many positives.
    scale_all_reduced_count(monkeypatch, 2.0)
    reduced = summed_losses(head, outs, gts, IMG_METAS)
    expected = {name: loss / 2.0 for name, loss in local.items()}
    assert_dicts_close(reduced, expected, rtol=1e-5, atol=0)


def test_predict_returns_consistent_boxes_scores_labels():
    """predict_by_feat gives detections with consistent boxes, scores and labels."""
    head = build_head(prior_prob=0.5)  # scores above the thresholds, so there are detections
    assert_predicts_detections(head, forward(head), IMG_METAS)


def test_loss_by_feat_single_needs_get_targets_first():
    """loss_by_feat_single alone fails clearly: the targets come from loss_by_feat."""
    head = build_head()
    (pred_maps, ) = forward(head)
    with pytest.raises(RuntimeError, match='call loss_by_feat'):
        head.loss_by_feat_single(pred_maps[0], None, None)


def test_yolov3_config_with_sum_reductions_gets_a_clear_error():
    """mmdet's YOLOv3 config, whose losses are sums, is refused with a clear
    error; converted to focal classes and objectness with 'mean' box losses it
    builds."""
    cfg = Config.fromfile(mmdet_config_path('yolo', 'yolov3_d53_8xb8-ms-608-273e_coco.py'))
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
