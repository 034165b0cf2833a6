"""FocalSSDHead: mmdet's dense-head unit tests, sigmoid classification without a
background channel, focal loss over all anchors, and SSD300's config."""
import math
import os

import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402

from .head_test_utils import assert_trainable, gt, total  # noqa: E402
import focal_plugin  # noqa: E402,F401
from focal_plugin.models.dense_heads import FocalSSDHead  # noqa: E402
from focal_plugin.models.dense_heads import utils as head_utils  # noqa: E402
from focal_plugin.models.losses import FusedFocalLoss  # noqa: E402

S = 300
IMG_METAS = [{'img_shape': (S, S, 3), 'pad_shape': (S, S, 3), 'scale_factor': (1.0, 1.0)}]
FEATMAP_SIZES = [(size, size) for size in (38, 19, 10, 5, 3, 1)]
# SSD300's training config, hard-negative mining ratio included.
TRAIN_CFG = dict(
    assigner=dict(
        type='MaxIoUAssigner',
        pos_iou_thr=0.5,
        neg_iou_thr=0.5,
        min_pos_iou=0.,
        ignore_iof_thr=-1,
        gt_max_assign_all=False),
    sampler=dict(type='PseudoSampler'),
    smoothl1_beta=1.,
    allowed_border=-1,
    pos_weight=-1,
    neg_pos_ratio=3,
    debug=False)
TEST_CFG = dict(
    nms_pre=1000,
    nms=dict(type='nms', iou_threshold=0.45),
    min_bbox_size=0,
    score_thr=0.02,
    max_per_img=200)


def build_head(train_cfg=TRAIN_CFG, **kwargs):
    cfg = dict(
        type='FocalSSDHead',
        num_classes=4,
        in_channels=(1, 1, 1, 1, 1, 1),
        anchor_generator=dict(
            type='SSDAnchorGenerator',
            scale_major=False,
            input_size=S,
            basesize_ratio_range=(0.15, 0.9),
            strides=[8, 16, 32, 64, 100, 300],
            ratios=[[2], [2, 3], [2, 3], [2, 3], [2], [2]]),
        train_cfg=Config(train_cfg),
        test_cfg=Config(TEST_CFG))
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def forward(head):
    return head.forward([torch.rand(1, 1, h, w) for h, w in FEATMAP_SIZES])


def test_sigmoid_classification_without_background_channel():
    head = build_head()
    assert isinstance(head.loss_cls, FusedFocalLoss)
    assert head.use_sigmoid_cls and head.cls_out_channels == 4
    cls_scores, bbox_preds = forward(head)
    for cls_score, bbox_pred, priors in zip(cls_scores, bbox_preds, head.num_base_priors):
        assert cls_score.size(1) == priors * 4  # SSDHead has priors * 5
        assert bbox_pred.size(1) == priors * 4


@pytest.mark.parametrize('prior_prob', [0.01, 0.1])
def test_classification_bias_starts_at_prior(prior_prob):
    head = build_head(prior_prob=prior_prob)
    expected = -math.log((1 - prior_prob) / prior_prob)
    for cls_conv, reg_conv in zip(head.cls_convs, head.reg_convs):
        torch.testing.assert_close(cls_conv[-1].bias.detach(),
                                   torch.full_like(cls_conv[-1].bias, expected))
        assert (reg_conv[-1].bias == 0).all()  # SSD's Xavier init, bias 0


def test_loss_empty_and_non_empty_ground_truth():
    head = build_head()
    cls_scores, bbox_preds = forward(head)
    empty = total(head.loss_by_feat(cls_scores, bbox_preds, [gt(empty=True)], IMG_METAS))
    assert empty['loss_cls'].item() > 0
    assert empty['loss_bbox'].item() == 0
    one = total(head.loss_by_feat(cls_scores, bbox_preds, [gt(empty=False)], IMG_METAS))
    assert one['loss_cls'].item() > 0
    assert one['loss_bbox'].item() > 0
    assert_trainable(head, one)


def test_focal_loss_over_all_anchors_without_hard_negative_mining():
    head = build_head()
    cls_scores, bbox_preds = forward(head)
    gts = [gt(empty=False)]
    loss_cls = total(head.loss_by_feat(cls_scores, bbox_preds, gts, IMG_METAS))['loss_cls']
    anchors, valid = head.get_anchors(FEATMAP_SIZES, IMG_METAS, 'cpu')
    labels, label_weights, _, _, avg_factor = head.get_targets(anchors, valid, gts, IMG_METAS)
    all_scores = torch.cat([s.permute(0, 2, 3, 1).reshape(-1, 4) for s in cls_scores])
    all_labels = torch.cat([lab.reshape(-1) for lab in labels])
    all_weights = torch.cat([w.reshape(-1) for w in label_weights])
    assert (all_weights == 1).all()  # every anchor takes part
    num_pos = int((all_labels < 4).sum())
    assert 0 < num_pos < all_labels.numel() // 100  # mining would have kept <= 4 * num_pos
    expected = FusedFocalLoss()(all_scores, all_labels, all_weights, avg_factor=num_pos)
    assert float(avg_factor) == num_pos
    torch.testing.assert_close(loss_cls, expected, rtol=1e-5, atol=0)
    # neg_pos_ratio plays no part.
    no_mining_cfg = {k: v for k, v in TRAIN_CFG.items() if k != 'neg_pos_ratio'}
    other = build_head(train_cfg=no_mining_cfg)
    other.load_state_dict(head.state_dict())
    torch.testing.assert_close(
        total(other.loss_by_feat(cls_scores, bbox_preds, gts, IMG_METAS))['loss_cls'], loss_cls)


def test_avg_factor_is_the_positive_count_averaged_over_ranks(monkeypatch):
    head = build_head()
    cls_scores, bbox_preds = forward(head)
    gts = [gt(empty=False)]
    local = total(head.loss_by_feat(cls_scores, bbox_preds, gts, IMG_METAS))
    monkeypatch.setattr(head_utils, 'reduce_mean', lambda tensor: tensor * 2.0)
    reduced = total(head.loss_by_feat(cls_scores, bbox_preds, gts, IMG_METAS))
    for name in ('loss_cls', 'loss_bbox'):
        torch.testing.assert_close(reduced[name], local[name] / 2.0, rtol=1e-5, atol=0)


def test_predict_returns_consistent_boxes_scores_labels():
    head = build_head(prior_prob=0.1)  # scores above score_thr, so there are detections
    cls_scores, bbox_preds = forward(head)
    (result, ) = head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=IMG_METAS)
    n = len(result)
    assert n > 0
    assert result.bboxes.shape == (n, 4)
    assert result.scores.shape == (n, ) and result.labels.shape == (n, )
    assert ((result.scores >= 0.02) & (result.scores <= 1)).all()
    assert ((result.labels >= 0) & (result.labels < 4)).all()


def test_box_loss_takes_smoothl1_beta_from_train_cfg():
    head = build_head(train_cfg=dict(TRAIN_CFG, smoothl1_beta=0.5))
    assert head.loss_bbox.beta == 0.5
    head = build_head(loss_bbox=dict(type='L1Loss', loss_weight=2.0))
    assert type(head.loss_bbox).__name__ == 'L1Loss'


def test_softmax_loss_is_refused():
    with pytest.raises(ValueError, match='loss_cls must have use_sigmoid=True'):
        build_head(loss_cls=dict(type='FusedFocalLoss', use_sigmoid=False))


def test_ssd300_config_builds_with_the_type_swapped():
    import mmdet
    path = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs', 'ssd', 'ssd300_coco.py')
    cfg = Config.fromfile(path)
    head_cfg = cfg.model.bbox_head
    head_cfg.type = 'FocalSSDHead'
    head_cfg.in_channels = (1, ) * 6  # keep the test light; the rest is SSD300's
    head = MODELS.build(dict(head_cfg, train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg))
    assert isinstance(head, FocalSSDHead) and head.cls_out_channels == 80
    assert head.loss_bbox.beta == cfg.model.train_cfg.smoothl1_beta
