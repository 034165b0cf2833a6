"""FocalSSDHead: mmdet's dense-head unit tests, sigmoid classification without a
background channel, focal loss over all anchors, and SSD300's config."""
import pytest
import torch

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmengine.config import Config  # noqa: E402

from .head_test_utils import (  # noqa: E402
    assert_dicts_close, assert_empty_and_one_box_gt_losses, assert_predicts_detections,
    assert_trainable, build_dense_head, gt, img_metas, mmdet_config_path, prior_bias, random_feats,
    scale_all_reduced_count, summed_losses)
from focal_plugin.models.dense_heads import FocalSSDHead  # noqa: E402
from focal_plugin.models.losses import FusedFocalLoss  # noqa: E402

S = 300
IMG_METAS = img_metas(S)
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
HEAD = dict(
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
    train_cfg=TRAIN_CFG,
    test_cfg=dict(
        nms_pre=1000,
        nms=dict(type='nms', iou_threshold=0.45),
        min_bbox_size=0,
        score_thr=0.02,
        max_per_img=200))


def build_head(**overrides):
    """A FocalSSDHead from HEAD, updated with ``overrides``."""
    return build_dense_head(HEAD, **overrides)


def forward(head):
    """The head's outputs on random maps of SSD300's 6 levels."""
    return head.forward(random_feats(FEATMAP_SIZES, head.in_channels))


def test_sigmoid_classification_without_background_channel():
    """FusedFocalLoss with sigmoid outputs: one classification channel per
    class and prior, none for the background."""
    head = build_head()
    assert isinstance(head.loss_cls, FusedFocalLoss)
    assert head.use_sigmoid_cls and head.cls_out_channels == 4
    cls_scores, bbox_preds = forward(head)
    for cls_score, bbox_pred, priors in zip(cls_scores, bbox_preds, head.num_base_priors):
        assert cls_score.size(1) == priors * 4  # SSDHead has priors * 5
        assert bbox_pred.size(1) == priors * 4


@pytest.mark.parametrize('prior_prob', [0.01, 0.1])
def test_classification_bias_starts_at_prior(prior_prob):
    """Every level's classification bias starts at -log((1 - pi) / pi), its box
    bias at 0."""
    head = build_head(prior_prob=prior_prob)
    for cls_conv, reg_conv in zip(head.cls_convs, head.reg_convs):
        torch.testing.assert_close(cls_conv[-1].bias.detach(),
                                   torch.full_like(cls_conv[-1].bias, prior_bias(prior_prob)))
        assert (reg_conv[-1].bias == 0).all()  # SSD's Xavier init, bias 0


def test_loss_empty_and_non_empty_ground_truth():
    """No object: only a classification loss (every anchor is background).
    One box: classification and box losses, with finite gradients."""
    head = build_head()
    one_box = assert_empty_and_one_box_gt_losses(
        head, forward(head), IMG_METAS, trained_without_objects=('loss_cls', ))
    assert_trainable(head, one_box)


def test_focal_loss_over_all_anchors_without_hard_negative_mining():
    """The classification loss is the focal loss over every anchor divided by
    the positive count; train_cfg.neg_pos_ratio changes nothing."""
    head = build_head()
    outs = forward(head)
    cls_scores, _ = outs
    gts = [gt(empty=False)]
    loss_cls = summed_losses(head, outs, gts, IMG_METAS)['loss_cls']
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
    torch.testing.assert_close(summed_losses(other, outs, gts, IMG_METAS)['loss_cls'], loss_cls)


def test_avg_factor_is_the_positive_count_averaged_over_ranks(monkeypatch):
    """Both losses are divided by the positive count averaged over all ranks."""
    head = build_head()
    outs = forward(head)
    gts = [gt(empty=False)]
    local = summed_losses(head, outs, gts, IMG_METAS)
    # As if the other ranks had twice as many positives.
    scale_all_reduced_count(monkeypatch, 2.0)
    reduced = summed_losses(head, outs, gts, IMG_METAS)
    expected = {name: loss / 2.0 for name, loss in local.items()}
    assert_dicts_close(reduced, expected, rtol=1e-5, atol=0)


def test_predict_returns_consistent_boxes_scores_labels():
    """predict_by_feat gives detections with consistent boxes, scores and labels."""
    head = build_head(prior_prob=0.1)  # scores above score_thr, so there are detections
    assert_predicts_detections(head, forward(head), IMG_METAS)


def test_box_loss_takes_smoothl1_beta_from_train_cfg():
    """The default SmoothL1 box loss takes train_cfg.smoothl1_beta, as SSDHead
    does; an explicit loss_bbox is used as given."""
    head = build_head(train_cfg=dict(TRAIN_CFG, smoothl1_beta=0.5))
    assert head.loss_bbox.beta == 0.5
    head = build_head(loss_bbox=dict(type='L1Loss', loss_weight=2.0))
    assert type(head.loss_bbox).__name__ == 'L1Loss'


def test_softmax_loss_is_refused():
    """A softmax classification loss is refused: the head has no background channel."""
    with pytest.raises(ValueError, match='loss_cls must have use_sigmoid=True'):
        build_head(loss_cls=dict(type='FusedFocalLoss', use_sigmoid=False))


def test_ssd300_config_builds_with_the_type_swapped():
    """mmdet's SSD300 head config builds as FocalSSDHead with only its type
    changed, and keeps the config's smoothl1_beta."""
    cfg = Config.fromfile(mmdet_config_path('ssd', 'ssd300_coco.py'))
    head_cfg = cfg.model.bbox_head
    head_cfg.type = 'FocalSSDHead'
    head_cfg.in_channels = (1, ) * 6  # keep the test light; the rest is SSD300's
    head = MODELS.build(dict(head_cfg, train_cfg=cfg.model.train_cfg, test_cfg=cfg.model.test_cfg))
    assert isinstance(head, FocalSSDHead) and head.cls_out_channels == 80
    assert head.loss_bbox.beta == cfg.model.train_cfg.smoothl1_beta


def test_mining_ssd_head_trains_as_ssd_head_and_predicts():
    """MiningSSDHead gives SSDHead's losses (softmax cross-entropy with
    hard-negative mining) for the same weights and inputs, with and without
    objects, and its predict_by_feat returns boxes where SSDHead's fails on
    the loss_cls it never sets (mmdet 3.3.0)."""
    from focal_plugin.models.dense_heads import MiningSSDHead
    mining = build_dense_head(HEAD, type='MiningSSDHead')
    stock = build_dense_head(HEAD, type='SSDHead')
    stock.load_state_dict(mining.state_dict())
    assert type(mining) is MiningSSDHead and mining.loss_cls is None
    assert mining.cls_out_channels == 5  # softmax: the background channel is kept
    outs = forward(mining)
    for empty in (True, False):
        assert_dicts_close(
            summed_losses(mining, outs, [gt(empty)], IMG_METAS),
            summed_losses(stock, outs, [gt(empty)], IMG_METAS),
            rtol=0,
            atol=0)
    # Mining keeps neg_pos_ratio negatives per positive: an image without
    # objects trains nothing, unlike the focal loss over all anchors.
    assert_empty_and_one_box_gt_losses(mining, outs, IMG_METAS, trained_without_objects=())
    assert_predicts_detections(mining, outs, IMG_METAS)
    if not hasattr(stock, 'loss_cls'):  # mmdet versions with the bug
        with pytest.raises(AttributeError, match='loss_cls'):
            stock.predict_by_feat(*outs, batch_img_metas=IMG_METAS)
