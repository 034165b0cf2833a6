"""FocalRetinaHead: mmdet's dense-head unit tests, the all-reduced avg_factor,
equality with RetinaHead + FocalLoss, and a RetinaNet config that builds with it."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402

from .head_test_utils import (  # noqa: E402
    assert_dicts_close, assert_empty_and_one_box_gt_losses, assert_predicts_detections,
    assert_trainable, build_dense_head, gt, img_metas, mmdet_config_path, prior_bias, random_feats,
    scale_all_reduced_count, strided_sizes, summed_losses)
from focal_plugin.models.dense_heads import FocalRetinaHead  # noqa: E402
from focal_plugin.models.dense_heads import utils as head_utils  # noqa: E402
from focal_plugin.models.losses import FusedFocalLoss  # noqa: E402

S = 256
IMG_METAS = img_metas(S)
HEAD = dict(
    type='FocalRetinaHead',
    num_classes=4,
    in_channels=1,
    feat_channels=8,
    stacked_convs=1,
    train_cfg=dict(
        assigner=dict(
            type='MaxIoUAssigner',
            pos_iou_thr=0.5,
            neg_iou_thr=0.4,
            min_pos_iou=0,
            ignore_iof_thr=-1),
        sampler=dict(type='PseudoSampler'),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=1000,
        min_bbox_size=0,
        score_thr=0.05,
        nms=dict(type='nms', iou_threshold=0.5),
        max_per_img=100))


def build_head(**overrides):
    """A FocalRetinaHead from HEAD, updated with ``overrides``."""
    return build_dense_head(HEAD, **overrides)


def forward(head):
    """The head's outputs on random maps of the 5 levels (strides 8 to 128)."""
    return head.forward(random_feats(strided_sizes(head, S), head.in_channels))


def test_defaults_to_fused_focal_loss():
    """Without a loss_cls the head uses FusedFocalLoss with sigmoid outputs,
    one channel per class and none for the background."""
    head = build_head()
    assert isinstance(head, FocalRetinaHead) and isinstance(head.loss_cls, FusedFocalLoss)
    assert head.use_sigmoid_cls and head.cls_out_channels == 4


@pytest.mark.parametrize('prior_prob', [0.01, 0.2])
def test_classification_bias_starts_at_prior(prior_prob):
    """The classification bias starts at -log((1 - pi) / pi), the box bias at 0,
    and the first classification scores at probability ~pi."""
    head = build_head(prior_prob=prior_prob)
    torch.testing.assert_close(head.retina_cls.bias.detach(),
                               torch.full_like(head.retina_cls.bias, prior_bias(prior_prob)))
    assert torch.allclose(head.retina_reg.bias, torch.zeros(1))  # untouched
    cls_scores, _ = forward(head)
    # Tiny weights: every output starts at probability ~prior_prob.
    torch.testing.assert_close(cls_scores[0].sigmoid().mean().item(), prior_prob, rtol=1e-2, atol=0)


@pytest.mark.parametrize('bad', [0.0, 1.0, -0.1, '0.01'])
def test_bad_prior_prob(bad):
    """A prior_prob outside (0, 1), or not a number, is refused with a clear error."""
    with pytest.raises((ValueError, TypeError), match=r'prior_prob must be a float in \(0, 1\)'):
        build_head(prior_prob=bad)


def test_loss_empty_and_non_empty_ground_truth():
    """No object: only a classification loss (every anchor is background).
    One box: classification and box losses, with finite gradients."""
    head = build_head()
    one_box = assert_empty_and_one_box_gt_losses(
        head, forward(head), IMG_METAS, trained_without_objects=('loss_cls', ))
    assert_trainable(head, one_box)


def test_predict_returns_consistent_boxes_scores_labels():
    """predict_by_feat gives detections with consistent boxes, scores and labels."""
    head = build_head(prior_prob=0.3)  # scores above score_thr, so there are detections
    assert_predicts_detections(head, forward(head), IMG_METAS)


def test_equals_mmdet_retina_head_with_focal_loss():
    """With the same weights and inputs, the losses equal those of mmdet's
    RetinaHead with its FocalLoss (gamma 2, alpha 0.25), with and without objects."""
    ours = build_head()
    theirs = build_dense_head(
        HEAD,
        type='RetinaHead',
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
    theirs.load_state_dict(ours.state_dict())
    outs = forward(ours)
    for empty in (True, False):
        assert_dicts_close(
            summed_losses(ours, outs, [gt(empty)], IMG_METAS),
            summed_losses(theirs, outs, [gt(empty)], IMG_METAS),
            rtol=1e-5,
            atol=1e-8)


def test_avg_factor_is_the_positive_count_averaged_over_ranks(monkeypatch):
    """The losses are divided by this rank's positive count averaged over all
    ranks, not by the local count."""
    head = build_head()
    outs = forward(head)
    cls_scores, _ = outs
    gts = [gt(empty=False)]
    local = summed_losses(head, outs, gts, IMG_METAS)
    anchors, valid = head.get_anchors([c.shape[-2:] for c in cls_scores], IMG_METAS, 'cpu')
    num_pos = float(head.get_targets(anchors, valid, gts, IMG_METAS)[4])
    assert num_pos >= 1

    # As if the other ranks had 4x as many positives.
    seen = scale_all_reduced_count(monkeypatch, 4.0)
    reduced = summed_losses(head, outs, gts, IMG_METAS)
    assert seen and float(seen[0]) == num_pos  # this rank's count went into the all-reduce
    expected = {name: loss / 4.0 for name, loss in local.items()}
    assert_dicts_close(reduced, expected, rtol=1e-5, atol=0)


def test_avg_factor_is_at_least_one(monkeypatch):
    """No positive on any rank still divides by 1, not 0."""
    monkeypatch.setattr(head_utils, 'reduce_mean', lambda tensor: tensor * 0.0)
    assert float(head_utils.all_reduced_avg_factor(3, 'cpu')) == 1.0


def _all_reduce_worker(rank, world_size, port, counts, results):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world_size)
    try:
        results[rank] = float(head_utils.all_reduced_avg_factor(counts[rank], 'cpu'))
    finally:
        dist.destroy_process_group()


def test_all_reduced_avg_factor_across_two_gloo_ranks():
    """Two real gloo ranks with 5 and 0 positives both divide by 2.5."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    # fork: the workers inherit the imported modules (CPU only, no CUDA state to break).
    context = mp.get_context('fork')
    results = context.Manager().dict()
    mp.start_processes(
        _all_reduce_worker, args=(2, port, [5, 0], results), nprocs=2, start_method='fork')
    assert dict(results) == {0: 2.5, 1: 2.5}  # every rank divides by the same count


def test_retinanet_config_builds_with_focal_retina_head(tmp_path):
    """A config that inherits mmdet's RetinaNet and swaps in FocalRetinaHead and
    FusedFocalLoss builds, keeping the rest of the head's settings."""
    base = mmdet_config_path('retinanet', 'retinanet_r18_fpn_1x_coco.py')
    config = tmp_path / 'retinanet_r18_fpn_focal.py'
    config.write_text(f"""_base_ = {base!r}
custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)
model = dict(
    bbox_head=dict(
        type='FocalRetinaHead',
        loss_cls=dict(type='FusedFocalLoss', gamma=2.0, alpha=0.25, loss_weight=1.0)))
""")
    cfg = Config.fromfile(str(config))
    register_all_modules()
    model = MODELS.build(cfg.model)
    assert type(model.bbox_head) is FocalRetinaHead
    assert type(model.bbox_head.loss_cls) is FusedFocalLoss
    assert model.bbox_head.num_classes == 80 and model.bbox_head.cls_out_channels == 80
    # The config's head settings were kept, e.g. the anchor generator.
    assert model.bbox_head.prior_generator.num_base_priors[0] == 9
