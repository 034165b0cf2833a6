"""FusedQualityFocalLoss: mmdet's QualityFocalLoss numbers in every mode, registry, bad input."""
import pytest
import torch

from focal_plugin.models.losses import FusedQualityFocalLoss
from .family_utils import (assert_bad_reduction_override, assert_finite_extremes,
                           assert_same_as_stock, build_both)

mmdet_losses = pytest.importorskip('mmdet.models.losses')

N, C = 48, 5


def tuple_target(n=N, c=C):
    labels = torch.randint(0, c + 1, (n, ))  # c: background
    scores = torch.rand(n, dtype=torch.float64)
    scores[:4] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    return labels, scores


def soft_target(n=N, c=C):
    target = torch.rand(n, c, dtype=torch.float64)
    return target * (torch.rand(n, c) < 0.3)  # mostly zeros, as IoU-aware targets are


def logits(n=N, c=C):
    pred = torch.randn(n, c, dtype=torch.float64) * 4
    pred[0, :3] = torch.tensor([30.0, -30.0, 0.0], dtype=torch.float64)
    return pred


@pytest.mark.parametrize('activated', [False, True])
@pytest.mark.parametrize('target_kind', ['tuple', 'soft'])
@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('weighted', [False, True])
def test_matches_mmdet(activated, target_kind, reduction, weighted):
    stock = mmdet_losses.QualityFocalLoss(
        activated=activated, beta=1.5, reduction=reduction, loss_weight=0.7)
    fused = build_both(
        'FusedQualityFocalLoss',
        activated=activated,
        beta=1.5,
        reduction=reduction,
        loss_weight=0.7)
    target = tuple_target() if target_kind == 'tuple' else soft_target()
    weight = torch.rand(N, dtype=torch.float64) if weighted else None
    pred = logits().sigmoid() if activated else logits()
    assert_same_as_stock(fused, stock, pred, target, weight)


@pytest.mark.parametrize('target_kind', ['tuple', 'soft'])
@pytest.mark.parametrize('reduction_override', ['none', 'mean'])
def test_avg_factor_and_reduction_override_match_mmdet(target_kind, reduction_override):
    stock = mmdet_losses.QualityFocalLoss(reduction='sum')
    fused = FusedQualityFocalLoss(reduction='sum')
    target = tuple_target() if target_kind == 'tuple' else soft_target()
    for avg_factor in (3.5, torch.tensor(11.0, dtype=torch.float64), 0.0):
        assert_same_as_stock(
            fused,
            stock,
            logits(),
            target,
            torch.rand(N).double(),
            avg_factor=avg_factor,
            reduction_override=reduction_override)


def test_all_background_and_empty_inputs():
    stock, fused = mmdet_losses.QualityFocalLoss(reduction='sum'), FusedQualityFocalLoss()
    labels = torch.full((N, ), C)
    assert_same_as_stock(
        fused, stock, logits(), (labels, torch.rand(N).double()), reduction_override='sum')
    empty = torch.empty(0, C, dtype=torch.float64, requires_grad=True)
    loss = fused(empty, (torch.empty(0, dtype=torch.long), torch.empty(0).double()), avg_factor=1.0)
    loss.backward()
    assert loss.item() == 0 and empty.grad.shape == (0, C)


def test_per_element_weight_extends_the_per_row_weight():
    # mmdet takes a per-row weight only; a per-element one that is constant
    # along each row must give the same loss and gradient.
    fused = FusedQualityFocalLoss(reduction='none')
    row_weight = torch.rand(N, dtype=torch.float64)
    target = tuple_target()
    assert_same_as_stock(
        fused, fused, logits(), target, row_weight[:, None].expand(N, C), rtol=1e-12, atol=0)
    element_weight = torch.rand(N, C, dtype=torch.float64)
    element_weight[:, 0] = 0
    pred = logits()
    pred_moved = pred.clone()
    pred_moved[:, 0] += 5  # a column with weight 0 must not count
    torch.testing.assert_close(
        fused(pred, target, element_weight), fused(pred_moved, target, element_weight))


def test_scalar_weight_broadcasts_over_rows():
    stock, fused = mmdet_losses.QualityFocalLoss(), FusedQualityFocalLoss()
    assert_same_as_stock(fused, stock, logits(), tuple_target(),
                         torch.tensor(0.3, dtype=torch.float64))


@pytest.mark.parametrize('activated', [False, True])
def test_reduced_precision_extremes_stay_finite(activated):
    loss = FusedQualityFocalLoss(activated=activated)
    # Probabilities of exactly 0 and 1 (saturated sigmoids) when activated. Their
    # gradient with respect to p is ~1e11 (mmdet's BCE clamps p(1 - p) at 1e-12):
    # past float16's range, so there only bfloat16 can hold it.
    extremes = dict(
        dtypes=(torch.bfloat16, ), values=[[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]]) if activated else {}
    for target in ((torch.tensor([0, 3]), torch.tensor([0.9, 0.2])), torch.full((2, 3), 0.5)):
        assert_finite_extremes(loss, lambda p: (target, ), **extremes)


def test_none_reduction_of_float16_is_float32_rows():
    loss = FusedQualityFocalLoss(reduction='none')
    pred = torch.full((2, 80), -1e4, dtype=torch.float16)
    out = loss(pred, torch.ones(2, 80, dtype=torch.float16))
    # Each row sums 80 elements of 1e4: past float16's range, so the rows are float32.
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and out.shape == (2, )


# ----------------------------------------------------------------------------
# Bad input and bad config
# ----------------------------------------------------------------------------
@pytest.mark.parametrize('labels, scores, error, pattern', [
    (torch.tensor([0, 6, 1]), torch.rand(3), ValueError, r'label 6 at row 1; expected a class index or '
     r'the background label 0..5'),
    (torch.tensor([0, -1, 1]), torch.rand(3), ValueError, 'label -1 at row 1'),
    (torch.tensor([0, 1]), torch.rand(3), ValueError, r'class-index target must have shape \(3,\)'),
    (torch.tensor([0, 1, 2
                   ]), torch.rand(4), ValueError, r'score must have shape \(3,\) like the labels .*got \(4,\)'),
    (torch.tensor([0, 1, 2]), torch.tensor([0.5, 1.5, 0.1]), ValueError,
     r'score holds 1.5 at row 1; expected a value in \[0, 1\]'),
    (torch.tensor([0, 1, 2]), torch.tensor(
        [0.5, float('nan'), 0.1]), ValueError, r'score holds nan at row 1'),
    (torch.tensor([0, 1, 2]), torch.tensor([-0.1, 0.5, 0.1]), ValueError, 'score holds -0.1 at row 0'),
    (torch.tensor([0, 1, 2]), torch.tensor([0, 1, 1
                                            ]), TypeError, 'score must be a float tensor'),
    (torch.tensor([0.0, 1.0, 2.0]), torch.rand(3), ValueError, r"float \(soft\) target must have pred's shape"),
])
def test_bad_tuple_targets(labels, scores, error, pattern):
    with pytest.raises(error, match=pattern):
        FusedQualityFocalLoss()(torch.randn(3, 5), (labels, scores))


@pytest.mark.parametrize('target, error, pattern', [
    (torch.rand(3, 4), ValueError, r"target must have pred's shape \(3, 5\), got \(3, 4\)"),
    (torch.full((3, 5), 1.25), ValueError, r'target holds 1.25 at \(0, 0\); expected values in \[0, 1\]'),
    (torch.zeros(3, dtype=torch.long), ValueError, 'class-index targets need score'),
    ((torch.zeros(3, dtype=torch.long), ), TypeError, 'must be a tuple .* of length 1'),
    ([torch.zeros(3, dtype=torch.long)] * 3, TypeError, 'of length 3'),
])
def test_bad_soft_targets(target, error, pattern):
    with pytest.raises(error, match=pattern):
        FusedQualityFocalLoss()(torch.randn(3, 5), target)


def test_bad_forward_arguments():
    loss = FusedQualityFocalLoss()
    target = (torch.tensor([0, 1, 5]), torch.rand(3))
    assert_bad_reduction_override(loss, torch.randn(3, 5), target)
    with pytest.raises(TypeError, match='pred must be a floating-point tensor'):
        loss(torch.zeros(3, 5, dtype=torch.long), target)
    with pytest.raises(ValueError, match=r'pred must be a 2-D tensor \(N rows, C classes\)'):
        loss(torch.randn(3, 5, 2), target)
    with pytest.raises(ValueError, match=r'weight must have shape \(3,\) or \(3, 5\)'):
        loss(torch.randn(3, 5), target, torch.rand(4))
    with pytest.raises(ValueError, match='avg_factor can not be used with reduction="sum"'):
        loss(torch.randn(3, 5), target, avg_factor=2.0, reduction_override='sum')


@pytest.mark.parametrize('cfg, error, pattern', [
    (dict(use_sigmoid=False), ValueError, 'use_sigmoid=False is not supported'),
    (dict(use_sigmoid=1), TypeError, 'use_sigmoid must be True or False'),
    (dict(beta=-1.0), ValueError, 'beta must be a finite number >= 0, got -1.0'),
    (dict(beta=float('inf')), ValueError, 'beta must be a finite number >= 0'),
    (dict(beta='2'), TypeError, 'beta must be a real number'),
    (dict(reduction='avg'), ValueError, "reduction must be one of .* got 'avg'"),
    (dict(reduction='avg'), AssertionError, 'reduction must be one of'),
    (dict(loss_weight=-1), ValueError, 'loss_weight must be a finite number >= 0'),
    (dict(activated='yes'), TypeError, 'activated must be True or False'),
    (dict(betta=2.0), TypeError, r"unexpected keyword argument\(s\) \['betta'\]; accepted "
     r"arguments are \('use_sigmoid', 'beta', 'reduction', 'loss_weight', 'activated'\)"),
])
def test_bad_config(cfg, error, pattern):
    with pytest.raises(error, match=pattern):
        build_both('FusedQualityFocalLoss', **cfg)
