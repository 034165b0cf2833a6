"""Helpers shared by the tests of the focal-loss family's registry classes."""
import pytest
import torch
from mmengine.registry import MODELS, Registry

# float64 against mmdet's classes: mmdet's binary_cross_entropy_with_logits
# loses up to ~1e-9 relative for logits of ~15 (its x - x*y + log(1 + exp(-x))
# and its gradient sigmoid(x) - y cancel); the fused losses do not.
RTOL, ATOL = 1e-7, 1e-14

# What mmyolo, mmrotate, mmdet3d, ... have: a scoped child of mmengine's MODELS
# (a scope can be registered once per process).
_DOWNSTREAM_MODELS = Registry('model', parent=MODELS, scope='focal_family_downstream')


def value_and_grad(loss_fn, pred, *args, **kwargs):
    """The loss and the gradient of its sum with respect to ``pred``."""
    x = pred.detach().clone().requires_grad_(True)
    loss = loss_fn(x, *args, **kwargs)
    (grad, ) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad


def max_rel_error(actual, expected):
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs() / expected.abs().clamp_min(1e-30)).max().item()


def assert_same_as_stock(fused, stock, pred, *args, rtol=RTOL, atol=ATOL, **kwargs):
    """Loss and gradient of ``fused`` equal ``stock``'s on the same call."""
    loss, grad = value_and_grad(fused, pred, *args, **kwargs)
    stock_loss, stock_grad = value_and_grad(stock, pred, *args, **kwargs)
    assert loss.shape == stock_loss.shape
    torch.testing.assert_close(loss, stock_loss, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, stock_grad, rtol=rtol, atol=atol)
    assert stock_loss.abs().sum() > 0  # a comparison of zeros would prove nothing


def build_both(loss_type, **cfg):
    """Builds the fused loss through mmengine's root registry, a downstream
    project's child registry and mmdet's registry; all must give the class."""
    from mmdet.registry import MODELS as MMDET_MODELS
    built = [
        registry.build(dict(type=loss_type, **cfg))
        for registry in (MODELS, _DOWNSTREAM_MODELS, MMDET_MODELS)
    ]
    assert len({type(loss) for loss in built}) == 1
    return built[0]


def assert_bad_reduction_override(loss, *args):
    """mmdet asserts; ours raises an error that is both kinds."""
    for error in (AssertionError, ValueError):
        with pytest.raises(error, match='reduction_override must be one of'):
            loss(*args, reduction_override='average')


EXTREME_LOGITS = [[1e4, -1e4, 0.0], [-1e4, 1e4, 30.0]]


def assert_finite_extremes(loss,
                           make_args,
                           dtypes=(torch.float16, torch.bfloat16),
                           values=EXTREME_LOGITS):
    """Loss and gradient stay finite for logits of ±1e4 (or other extreme
    ``values`` of shape (2, 3)) in reduced precision.

    ``make_args(pred)`` returns the loss's other positional arguments.
    """
    for dtype in dtypes:
        pred = torch.tensor(values, dtype=dtype)
        value, grad = value_and_grad(loss, pred, *make_args(pred))
        assert torch.isfinite(value).all() and torch.isfinite(grad).all(), dtype
        assert grad.dtype == dtype
        # Computed in float32: close to the float64 loss of the same inputs.
        # Soft targets of pred's shape are taken in pred's dtype, as mmdet's
        # target.type_as(pred) does: round them the same way for the oracle.
        args = [a.to(dtype) if isinstance(a, torch.Tensor) and a.shape == pred.shape else a
                for a in make_args(pred)]
        expected = loss(pred.double(), *as_float64(args))
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-5)


def as_float64(obj):
    """Floating-point tensors (also inside tuples) in float64; the rest as is."""
    if isinstance(obj, (tuple, list)):
        return type(obj)(as_float64(item) for item in obj)
    if isinstance(obj, torch.Tensor) and obj.is_floating_point():
        return obj.double()
    return obj
