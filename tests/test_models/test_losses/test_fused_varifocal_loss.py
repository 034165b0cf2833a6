"""FusedVarifocalLoss: mmdet's VarifocalLoss numbers in every mode, registry, bad input."""
import pytest
import torch

from focal_plugin.models.losses import FusedVarifocalLoss
from .family_utils import (assert_bad_reduction_override, assert_finite_extremes,
                           assert_same_as_stock, build_both, value_and_grad)

mmdet_losses = pytest.importorskip('mmdet.models.losses')

N, C = 48, 5


def iou_target(n=N, c=C):
    target = torch.zeros(n, c, dtype=torch.float64)
    rows = torch.arange(0, n, 3)
    target[rows, torch.randint(0, c, rows.shape)] = torch.rand(rows.shape, dtype=torch.float64)
    target[0, 0] = 1.0
    return target


def logits(n=N, c=C):
    pred = torch.randn(n, c, dtype=torch.float64) * 4
    pred[1, :3] = torch.tensor([30.0, -30.0, 0.0], dtype=torch.float64)
    return pred


@pytest.mark.parametrize('iou_weighted', [True, False])
@pytest.mark.parametrize('reduction', ['none', 'mean', 'sum'])
@pytest.mark.parametrize('weight_shape', [None, (N, 1), (N, C)])
def test_matches_mmdet(iou_weighted, reduction, weight_shape):
    cfg = dict(
        alpha=0.6, gamma=1.5, iou_weighted=iou_weighted, reduction=reduction, loss_weight=1.3)
    stock = mmdet_losses.VarifocalLoss(**cfg)
    fused = build_both('FusedVarifocalLoss', **cfg)
    weight = None if weight_shape is None else torch.rand(weight_shape, dtype=torch.float64)
    assert_same_as_stock(fused, stock, logits(), iou_target(), weight)


@pytest.mark.parametrize('reduction_override', ['none', 'mean'])
def test_avg_factor_and_reduction_override_match_mmdet(reduction_override):
    stock, fused = mmdet_losses.VarifocalLoss(reduction='sum'), FusedVarifocalLoss(reduction='sum')
    for avg_factor in (3.5, torch.tensor(11.0, dtype=torch.float64), 0.0):
        assert_same_as_stock(
            fused,
            stock,
            logits(),
            iou_target(),
            avg_factor=avg_factor,
            reduction_override=reduction_override)


def test_any_shape_is_elementwise_as_in_mmdet():
    stock, fused = mmdet_losses.VarifocalLoss(reduction='none'), FusedVarifocalLoss(
        reduction='none')
    pred, target = logits(24, 5).reshape(2, 3, 4, 5), iou_target(24, 5).reshape(2, 3, 4, 5)
    assert_same_as_stock(fused, stock, pred, target, torch.rand(2, 3, 4, 1).double())
    assert_same_as_stock(fused, stock, pred[0, 0, 0], target[0, 0, 0])


def test_gradient_flows_through_the_modulating_factor():
    # mmdet does not detach sigmoid(pred) in alpha * |p - y|^gamma: a negative's
    # gradient is that of BCE * alpha p^gamma, not of BCE times a constant.
    x = torch.tensor([[0.3]], dtype=torch.float64)
    _, grad = value_and_grad(FusedVarifocalLoss(alpha=1.0, gamma=2.0), x, torch.zeros(1, 1))
    p = torch.sigmoid(x)
    bce = -torch.log1p(-p)
    expected = p * p**2 + bce * 2 * p**2 * (1 - p)  # d/dx [bce * p^2]
    torch.testing.assert_close(grad, expected)


def test_per_class_alpha_balances_each_class_negatives():
    pred, target = logits(), iou_target()
    alpha = [0.1, 0.9, 0.5, 0.0, 1.0]
    fused = FusedVarifocalLoss(alpha=alpha, reduction='none')
    assert fused.class_alpha.dtype == torch.float64
    loss, grad = value_and_grad(fused, pred, target)
    for column, value in enumerate(alpha):
        stock = mmdet_losses.VarifocalLoss(alpha=value, reduction='none')
        stock_loss, stock_grad = value_and_grad(stock, pred, target)
        torch.testing.assert_close(loss[:, column], stock_loss[:, column])
        torch.testing.assert_close(grad[:, column], stock_grad[:, column])
    assert 'class_alpha' not in fused.state_dict()  # checkpoints stay mmdet's
    with pytest.raises(ValueError, match='alpha must have length C=5'):
        FusedVarifocalLoss(alpha=[0.5, 0.5])(pred, target)


def test_reduced_precision_extremes_stay_finite():
    for iou_weighted in (True, False):
        loss = FusedVarifocalLoss(iou_weighted=iou_weighted, reduction='sum')
        assert_finite_extremes(loss, lambda p: (torch.tensor([[0.0, 0.7, 0.0], [1.0, 0.0, 0.2]]), ))


# ----------------------------------------------------------------------------
# Bad input and bad config
# ----------------------------------------------------------------------------
def test_bad_forward_arguments():
    loss = FusedVarifocalLoss()
    pred = torch.randn(3, 5)
    assert_bad_reduction_override(loss, pred, torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"target must have pred's shape \(3, 5\), got \(3,\)"):
        loss(pred, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r'target holds 1.5 at \(0, 0\); expected values in \[0, 1\]'):
        loss(pred, torch.full((3, 5), 1.5))
    with pytest.raises(ValueError, match=r'target holds -0.25 at \(0, 0\)'):
        loss(pred, torch.full((3, 5), -0.25))
    with pytest.raises(TypeError, match='target must be a float tensor'):
        loss(pred, torch.zeros(3, 5, dtype=torch.long))
    with pytest.raises(TypeError, match='pred must be a floating-point tensor'):
        loss(torch.zeros(3, 5, dtype=torch.long), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r'weight of shape \(4,\) must broadcast to pred'):
        loss(pred, torch.zeros(3, 5), torch.ones(4))
    with pytest.raises(ValueError, match='avg_factor can not be used with reduction="sum"'):
        loss(pred, torch.zeros(3, 5), avg_factor=2.0, reduction_override='sum')


@pytest.mark.parametrize('cfg, error, pattern', [
    (dict(use_sigmoid=False), ValueError, 'use_sigmoid=False is not supported'),
    (dict(alpha=1.5), ValueError, 'alpha must be .* in \\[0, 1\\].*got 1.5'),
    (dict(alpha=-0.1), ValueError, 'alpha must be'),
    (dict(alpha=float('nan')), ValueError, 'alpha must be'),
    (dict(alpha=None), TypeError, 'alpha must be a float in \\[0, 1\\].*got None'),
    (dict(alpha=[0.5, 1.2]), ValueError, r'alpha must be .* got \[0.5, 1.2\]'),
    (dict(alpha='0.5'), TypeError, 'alpha must be'),
    (dict(gamma=-2.0), ValueError, 'gamma must be a finite number >= 0, got -2.0'),
    (dict(gamma=float('nan')), ValueError, 'gamma must be a finite number >= 0'),
    (dict(iou_weighted=None), TypeError, 'iou_weighted must be True or False'),
    (dict(reduction='elementwise_mean'), ValueError, 'reduction must be one of'),
    (dict(reduction='elementwise_mean'), AssertionError, 'reduction must be one of'),
    (dict(loss_weight=float('inf')), ValueError, 'loss_weight must be a finite number'),
    (dict(iou_weight=True), TypeError, r"unexpected keyword argument\(s\) \['iou_weight'\]; "
     r"accepted arguments are \('use_sigmoid', 'alpha', 'gamma', 'iou_weighted', 'reduction', "
     r"'loss_weight'\)"),
])
def test_bad_config(cfg, error, pattern):
    with pytest.raises(error, match=pattern):
        build_both('FusedVarifocalLoss', **cfg)
