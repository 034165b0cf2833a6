"""FusedGaussianFocalLoss: mmdet's GaussianFocalLoss numbers (heatmap and pos_inds
paths), the logits mode, registry, bad input."""
import pytest
import torch

from focal_plugin.models.losses import FusedGaussianFocalLoss
from .family_utils import (assert_bad_reduction_override, assert_finite_extremes,
                           assert_same_as_stock, build_both, max_rel_error, value_and_grad)

mmdet_losses = pytest.importorskip('mmdet.models.losses')

SHAPE = (2, 3, 6, 7)  # CenterNetHead's (B, C, H, W)


def heatmap(shape=SHAPE):
    target = torch.rand(shape, dtype=torch.float64)
    target[torch.rand(shape) < 0.05] = 1.0  # the peaks
    target.view(-1)[:3] = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    return target


def probabilities(shape=SHAPE):
    # CenterNetHead's sigmoid output, with exact 0 and 1 as a saturated sigmoid gives.
    pred = torch.rand(shape, dtype=torch.float64)
    pred.view(-1)[:4] = torch.tensor([0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    return pred


@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('weight_shape', [None, (1, 3, 1, 1), SHAPE])
def test_matches_mmdet(reduction, weight_shape):
    cfg = dict(
        alpha=1.5,
        gamma=3.0,
        reduction=reduction,
        loss_weight=0.8,
        pos_weight=0.25,
        neg_weight=0.75)
    stock = mmdet_losses.GaussianFocalLoss(**cfg)
    fused = build_both('FusedGaussianFocalLoss', **cfg)
    weight = None if weight_shape is None else torch.rand(weight_shape, dtype=torch.float64)
    assert_same_as_stock(fused, stock, probabilities(), heatmap(), weight=weight)


@pytest.mark.parametrize('reduction_override', ['none', 'mean'])
def test_avg_factor_and_reduction_override_match_mmdet(reduction_override):
    stock = mmdet_losses.GaussianFocalLoss(reduction='sum')
    fused = FusedGaussianFocalLoss(reduction='sum')
    for avg_factor in (3.5, torch.tensor(11.0, dtype=torch.float64), 0.0):
        assert_same_as_stock(
            fused,
            stock,
            probabilities(),
            heatmap(),
            avg_factor=avg_factor,
            reduction_override=reduction_override)


def test_gamma_zero_counts_the_peaks_as_negatives_too():
    # (1 - y)^0 = 1 at y = 1: mmdet's negative part then covers the peaks as well.
    stock, fused = mmdet_losses.GaussianFocalLoss(gamma=0.0), FusedGaussianFocalLoss(gamma=0.0)
    assert_same_as_stock(fused, stock, probabilities(), heatmap())


@pytest.mark.parametrize('reduction, avg_factor', [('mean', None), ('mean', 4.0), ('sum', None)])
def test_pos_inds_path_matches_mmdet(reduction, avg_factor):
    # CenterNetUpdateHead: (N, C) probabilities, positives given by index.
    cfg = dict(pos_weight=0.25, neg_weight=0.75, loss_weight=1.5, reduction=reduction)
    stock, fused = mmdet_losses.GaussianFocalLoss(**cfg), FusedGaussianFocalLoss(**cfg)
    pred, target = probabilities((40, 4)).clamp(1e-4, 1 - 1e-4), heatmap((40, 4))
    pos_inds, pos_labels = torch.tensor([0, 7, 7, 31]), torch.tensor([2, 0, 3, 1])
    assert_same_as_stock(fused, stock, pred, target, pos_inds, pos_labels, avg_factor=avg_factor)


def test_logits_mode_is_finite_and_matches_the_probability_mode():
    stock, fused = mmdet_losses.GaussianFocalLoss(), FusedGaussianFocalLoss(logits=True)
    x = torch.randn(SHAPE, dtype=torch.float64) * 3
    target = heatmap()
    loss, grad = value_and_grad(fused, x, target)
    stock_loss, stock_grad = value_and_grad(lambda z, y: stock(z.sigmoid(), y), x, target)
    # mmdet's log(p + 1e-12) differs from log(p) by ~1e-12 / p.
    assert max_rel_error(loss, stock_loss) < 1e-8 and max_rel_error(grad, stock_grad) < 1e-6
    assert_finite_extremes(
        FusedGaussianFocalLoss(logits=True),
        lambda p: (torch.tensor([[1.0, 0.0, 0.5], [1.0, 1.0, 0.0]]), ),
        dtypes=(torch.float16, torch.bfloat16, torch.float32))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_probability_mode_is_finite_at_0_and_1_in_reduced_precision(dtype):
    pred = torch.tensor([[0.0, 1.0, 0.0, 1.0]], dtype=dtype)
    target = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=dtype)
    value, grad = value_and_grad(FusedGaussianFocalLoss(), pred, target)
    # The two wrong certainties cost -log(1e-12) each: 2 * 27.6 / 4 elements.
    torch.testing.assert_close(value, torch.tensor(13.8155), rtol=1e-4, atol=0)
    # Their gradient is -1/1e-12, which float16 can not hold (logits=True avoids it).
    assert torch.isfinite(grad).all() == (dtype == torch.bfloat16)


# ----------------------------------------------------------------------------
# Bad input and bad config
# ----------------------------------------------------------------------------
def test_bad_forward_arguments():
    loss = FusedGaussianFocalLoss()
    pred, target = torch.rand(4, 3), torch.rand(4, 3)
    pos = (torch.tensor([0, 2]), torch.tensor([1, 1]))
    assert_bad_reduction_override(loss, pred, target)
    with pytest.raises(ValueError, match=r"target must have pred's shape \(4, 3\), got \(4,\)"):
        loss(pred, torch.rand(4))
    with pytest.raises(ValueError, match='reduction="none" can not be used with pos_inds'):
        loss(pred, target, *pos, reduction_override='none')
    with pytest.raises(ValueError, match="weight can not be used with pos_inds .*ignores it"):
        loss(pred, target, *pos, weight=torch.ones(4, 3))
    with pytest.raises(ValueError, match='pos_inds and pos_labels must be given together'):
        loss(pred, target, pos[0])
    with pytest.raises(ValueError, match='pos_inds and pos_labels must have the same length'):
        loss(pred, target, pos[0], torch.tensor([1]))
    with pytest.raises(TypeError, match='pos_labels must be a 1-D integer tensor'):
        loss(pred, target, pos[0], torch.tensor([1.0, 1.0]))
    with pytest.raises(ValueError, match=r'pred must be \(N, C\) with pos_inds'):
        loss(pred[None], target[None], *pos)


@pytest.mark.parametrize('cfg, error, pattern', [
    (dict(alpha=-1.0), ValueError, 'alpha must be a finite number >= 0, got -1.0'),
    (dict(gamma=-4.0), ValueError, 'gamma must be a finite number >= 0'),
    (dict(pos_weight=float('nan')), ValueError, 'pos_weight must be a finite number >= 0'),
    (dict(neg_weight=-0.5), ValueError, 'neg_weight must be a finite number >= 0'),
    (dict(logits=1), TypeError, 'logits must be True or False'),
    (dict(reduction=None), ValueError, 'reduction must be one of'),
    (dict(reduction=None), AssertionError, 'reduction must be one of'),
    (dict(pos_weigth=0.5), TypeError, r"unexpected keyword argument\(s\) \['pos_weigth'\]; "
     r"accepted arguments are \('alpha', 'gamma', 'reduction', 'loss_weight', 'pos_weight', "
     r"'neg_weight', 'logits'\)"),
])
def test_bad_config(cfg, error, pattern):
    with pytest.raises(error, match=pattern):
        build_both('FusedGaussianFocalLoss', **cfg)
