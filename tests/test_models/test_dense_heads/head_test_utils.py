"""Building, inputs, ground truth and checks shared by the dense-head tests.

The test modules call ``pytest.importorskip('mmdet')`` before importing this
module, which needs mmdet.
"""
import math
import os

import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.structures import InstanceData

import focal_plugin  # noqa: F401  (registers the plugin's heads and losses)
from focal_plugin.models.dense_heads import utils as head_utils


def build_dense_head(cfg, **overrides):
    """Builds a head from ``cfg`` updated with ``overrides`` and initialises it.

    ``train_cfg`` and ``test_cfg`` are given as plain dicts and wrapped in
    ``Config``, as a detector hands them to its head: the heads read them by
    attribute (``train_cfg.neg_pos_ratio``) as well as by key.
    """
    cfg = dict(cfg, **overrides)
    for key in ('train_cfg', 'test_cfg'):
        if cfg.get(key) is not None:
            cfg[key] = Config(cfg[key])
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def img_metas(size, batch_size=1):
    """Metas of ``batch_size`` unpadded, unscaled ``size`` x ``size`` images."""
    meta = dict(
        img_shape=(size, size, 3),
        pad_shape=(size, size, 3),
        ori_shape=(size, size, 3),
        batch_input_shape=(size, size),
        scale_factor=(1.0, 1.0))
    return [dict(meta) for _ in range(batch_size)]


def strided_sizes(head, img_size):
    """The size of each level's feature map, img_size // stride, for the
    strides of ``head``'s prior generator."""
    return [(img_size // stride_h, img_size // stride_w)
            for stride_w, stride_h in head.prior_generator.strides]


def random_feats(sizes, in_channels=1, batch_size=1):
    """Random feature maps, one per (height, width) in ``sizes``.

    ``in_channels`` is one channel count for every level or one per level,
    as the heads take it.
    """
    if isinstance(in_channels, int):
        in_channels = [in_channels] * len(sizes)
    assert len(in_channels) == len(sizes)
    return [torch.rand(batch_size, c, h, w) for c, (h, w) in zip(in_channels, sizes)]


def gt(empty):
    """One image's ground truth: no object, or one box of class 2."""
    if empty:
        return InstanceData(bboxes=torch.empty((0, 4)), labels=torch.LongTensor([]))
    return InstanceData(
        bboxes=torch.Tensor([[23.6667, 23.8757, 238.6326, 151.8874]]), labels=torch.LongTensor([2]))


def summed_losses(head, outs, gts, metas):
    """``head.loss_by_feat`` on the forward outputs ``outs``, each loss summed
    over its feature levels."""
    losses = head.loss_by_feat(*outs, gts, metas)
    return {
        name: sum(value) if isinstance(value, (list, tuple)) else value
        for name, value in losses.items()
    }


def assert_empty_and_one_box_gt_losses(head, outs, metas, trained_without_objects):
    """Checks the losses of an image without objects and of one with a box.

    Without objects every prior is a negative: the losses named in
    ``trained_without_objects`` (those that also learn from negatives) are
    positive and every other loss (boxes, and classes where only positives
    train them) is exactly 0. With one box every loss is positive.

    Returns:
        dict: The one-box losses, summed over the levels.
    """
    empty = summed_losses(head, outs, [gt(empty=True)], metas)
    assert set(trained_without_objects) <= empty.keys()
    for name, value in empty.items():
        if name in trained_without_objects:
            assert value.item() > 0, name
        else:
            assert value.item() == 0, name
    one_box = summed_losses(head, outs, [gt(empty=False)], metas)
    assert one_box.keys() == empty.keys()
    for name, value in one_box.items():
        assert value.item() > 0, name
    return one_box


def assert_trainable(head, losses):
    """The losses back-propagate finite, non-zero gradients into the head."""
    sum(losses.values()).backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def assert_dicts_close(actual, expected, rtol, atol):
    """Both dicts (of losses or of gradients) have the same keys and close values."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=rtol, atol=atol, msg=key)


def assert_predicts_detections(head, outs, metas):
    """``predict_by_feat`` on one image gives at least one detection, with
    (n, 4) boxes, scores in [test_cfg.score_thr, 1] and labels in
    [0, num_classes).

    Returns:
        InstanceData: The detections.
    """
    (result, ) = head.predict_by_feat(*outs, batch_img_metas=metas)
    n = len(result)
    assert n > 0
    assert result.bboxes.shape == (n, 4)
    assert result.scores.shape == (n, ) and result.labels.shape == (n, )
    assert ((result.scores >= head.test_cfg.score_thr) & (result.scores <= 1)).all()
    assert ((result.labels >= 0) & (result.labels < head.num_classes)).all()
    return result


def prior_bias(prior_prob):
    """The classification bias at which a sigmoid starts at ``prior_prob``."""
    return -math.log((1 - prior_prob) / prior_prob)


def scale_all_reduced_count(monkeypatch, factor):
    """Makes the heads' all-reduce of the positive count return ``factor``
    times this rank's count, as if the other ranks had ``factor`` times as
    many positives.

    Returns:
        list[Tensor]: Filled with the counts handed to the all-reduce.
    """
    seen = []

    def fake_reduce_mean(tensor):
        seen.append(tensor.clone())
        return tensor * factor

    monkeypatch.setattr(head_utils, 'reduce_mean', fake_reduce_mean)
    return seen


def mmdet_config_path(*parts):
    """The path of a config shipped with mmdet (``mmdet/.mim/configs/...``)."""
    import mmdet
    return os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs', *parts)
