"""FocalRetinaHead: mmdet's dense-head unit tests, the all-reduced avg_factor,
equality with RetinaHead + FocalLoss, and a RetinaNet config that builds with it."""
import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip('mmdet')

from mmdet.models.dense_heads import RetinaHead  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402

from .head_test_utils import assert_trainable, gt, total  # noqa: E402
import focal_plugin  # noqa: E402,F401
from focal_plugin.models.dense_heads import FocalRetinaHead  # noqa: E402
from focal_plugin.models.dense_heads import utils as head_utils  # noqa: E402
from focal_plugin.models.losses import FusedFocalLoss  # noqa: E402

S = 256
IMG_METAS = [{'img_shape': (S, S, 3), 'pad_shape': (S, S, 3), 'scale_factor': (1.0, 1.0)}]
TRAIN_CFG = dict(
    assigner=dict(
        type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1),
    sampler=dict(type='PseudoSampler'),
    allowed_border=-1,
    pos_weight=-1,
    debug=False)
TEST_CFG = dict(
    nms_pre=1000,
    min_bbox_size=0,
    score_thr=0.05,
    nms=dict(type='nms', iou_threshold=0.5),
    max_per_img=100)


def build_head(**kwargs):
    cfg = dict(
        type='FocalRetinaHead',
        num_classes=4,
        in_channels=1,
        feat_channels=8,
        stacked_convs=1,
        train_cfg=Config(TRAIN_CFG),
        test_cfg=Config(TEST_CFG))
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def forward(head):
    feats = [torch.rand(1, 1, S // 2**(i + 3), S // 2**(i + 3)) for i in range(5)]
    return head.forward(feats)


def test_defaults_to_fused_focal_loss():
    head = build_head()
    assert isinstance(head, FocalRetinaHead) and isinstance(head.loss_cls, FusedFocalLoss)
    assert head.use_sigmoid_cls and head.cls_out_channels == 4


@pytest.mark.parametrize('prior_prob', [0.01, 0.2])
def test_classification_bias_starts_at_prior(prior_prob):
    head = build_head(prior_prob=prior_prob)
    expected = -math.log((1 - prior_prob) / prior_prob)
    torch.testing.assert_close(head.retina_cls.bias.detach(),
                               torch.full_like(head.retina_cls.bias, expected))
    assert torch.allclose(head.retina_reg.bias, torch.zeros(1))  # untouched
    cls_scores, _ = forward(head)
    # Tiny weights: every output starts at probability ~prior_prob.
    torch.testing.assert_close(cls_scores[0].sigmoid().mean().item(), prior_prob, rtol=1e-2, atol=0)


@pytest.mark.parametrize('bad', [0.0, 1.0, -0.1, '0.01'])
def test_bad_prior_prob(bad):
    with pytest.raises((ValueError, TypeError), match=r'prior_prob must be a float in \(0, 1\)'):
        build_head(prior_prob=bad)


def test_loss_empty_and_non_empty_ground_truth():
    head = build_head()
    cls_scores, bbox_preds = forward(head)
    empty = total(head.loss_by_feat(cls_scores, bbox_preds, [gt(empty=True)], IMG_METAS))
    # No objects: every anchor is background, so only a classification loss.
    assert empty['loss_cls'].item() > 0
    assert empty['loss_bbox'].item() == 0
    one = total(head.loss_by_feat(cls_scores, bbox_preds, [gt(empty=False)], IMG_METAS))
    assert one['loss_cls'].item() > 0
    assert one['loss_bbox'].item() > 0
    assert_trainable(head, one)


def test_predict_returns_consistent_boxes_scores_labels():
    head = build_head(prior_prob=0.3)  # scores above score_thr, so there are detections
    cls_scores, bbox_preds = forward(head)
    (result, ) = head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=IMG_METAS)
    n = len(result)
    assert n > 0
    assert result.bboxes.shape == (n, 4)
    assert result.scores.shape == (n, ) and result.labels.shape == (n, )
    assert ((result.scores >= 0.05) & (result.scores <= 1)).all()
    assert ((result.labels >= 0) & (result.labels < 4)).all()


def test_equals_mmdet_retina_head_with_focal_loss():
    # The same weights and targets give RetinaHead + mmdet's FocalLoss's losses.
    ours = build_head()
    theirs = RetinaHead(
        num_classes=4,
        in_channels=1,
        feat_channels=8,
        stacked_convs=1,
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        train_cfg=Config(TRAIN_CFG),
        test_cfg=Config(TEST_CFG))
    theirs.load_state_dict(ours.state_dict())
    cls_scores, bbox_preds = forward(ours)
    for empty in (True, False):
        a = total(ours.loss_by_feat(cls_scores, bbox_preds, [gt(empty)], IMG_METAS))
        b = total(theirs.loss_by_feat(cls_scores, bbox_preds, [gt(empty)], IMG_METAS))
        for name in ('loss_cls', 'loss_bbox'):
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-8)


def test_avg_factor_is_the_positive_count_averaged_over_ranks(monkeypatch):
    head = build_head()
    cls_scores, bbox_preds = forward(head)
    gts = [gt(empty=False)]
    local = total(head.loss_by_feat(cls_scores, bbox_preds, gts, IMG_METAS))
    anchors, valid = head.get_anchors([c.shape[-2:] for c in cls_scores], IMG_METAS, 'cpu')
    num_pos = float(head.get_targets(anchors, valid, gts, IMG_METAS)[4])
    assert num_pos >= 1

    seen = []

    def fake_reduce_mean(tensor):  # as if the other ranks had 4x as many positives
        seen.append(tensor.clone())
        return tensor * 4.0

    monkeypatch.setattr(head_utils, 'reduce_mean', fake_reduce_mean)
    reduced = total(head.loss_by_feat(cls_scores, bbox_preds, gts, IMG_METAS))
    assert seen and float(seen[0]) == num_pos  # this rank's count went into the all-reduce
    for name in ('loss_cls', 'loss_bbox'):
        torch.testing.assert_close(reduced[name], local[name] / 4.0, rtol=1e-5, atol=0)


def test_avg_factor_is_at_least_one(monkeypatch):
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
    import mmdet
    base = os.path.join(
        os.path.dirname(mmdet.__file__), '.mim', 'configs', 'retinanet',
        'retinanet_r18_fpn_1x_coco.py')
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
