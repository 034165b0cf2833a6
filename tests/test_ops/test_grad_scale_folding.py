"""The training kernels fold the expected reduction gradient into theirs.

With 'mean', the gradient that reaches the op's summed loss is usually
``1 / avg_factor`` (or ``1 / N``). ``loss_op.expected_grad_scale`` predicts it,
the ``_with_grad`` kernel multiplies its gradient by it, and the backward,
finding exactly that value, hands the buffer over without another pass. Any
other incoming gradient (a loss_weight, a GradScaler's factor) must still give
the right gradient.
"""
from unittest import mock

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from focal_plugin.ops import (gaussian_focal_loss, quality_focal_loss, sigmoid_focal_loss,
                              varifocal_loss)
from focal_plugin.ops import loss_op
from focal_plugin.ops.loss_op import expected_grad_scale, finish_reduction, mean_denominator

from .utils import make_inputs


class _OpLog(TorchDispatchMode):
    """Names of the aten ops run while it is active."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _losses(dtype):
    pred, labels = make_inputs(64, 9, dtype=dtype, seed=3)
    score = torch.rand(64, generator=torch.Generator().manual_seed(1))
    soft = torch.zeros(64, 9, dtype=dtype)
    soft[::5, 2] = 0.75
    heat = torch.rand(64, 9, generator=torch.Generator().manual_seed(2)).to(dtype)
    return pred, {
        'sigmoid_focal': lambda x, **kw: sigmoid_focal_loss(x, labels, **kw),
        'quality_focal': lambda x, **kw: quality_focal_loss(x, labels, score.to(dtype), **kw),
        'varifocal': lambda x, **kw: varifocal_loss(x, soft, **kw),
        'gaussian_focal': lambda x, **kw: gaussian_focal_loss(x.sigmoid(), heat, **kw),
    }


def _grad(fn, pred, outer=None, **kwargs):
    x = pred.detach().clone().requires_grad_(True)
    with _OpLog() as log:
        loss = fn(x, **kwargs)
        (loss if outer is None else outer(loss)).backward()
    return x.grad, log.names


def _unfolded_grad(fn, pred, outer=None, **kwargs):
    """The same gradient with nothing folded: the backward multiplies."""
    with mock.patch.object(loss_op, 'expected_grad_scale', lambda *args: 1.0):
        return _grad(fn, pred, outer, **kwargs)[0]


AVG_FACTORS = [None, 37.0, torch.tensor(37.0), torch.tensor(37.0, dtype=torch.float64)]


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('avg_factor', AVG_FACTORS, ids=['none', 'float', 'tensor', 'tensor64'])
@pytest.mark.parametrize('member', ['sigmoid_focal', 'quality_focal', 'varifocal',
                                    'gaussian_focal'])
def test_mean_backward_hands_the_folded_gradient_over(dtype, avg_factor, member):
    pred, losses = _losses(dtype)
    fn = losses[member]
    grad, ops = _grad(fn, pred, avg_factor=avg_factor)
    assert 'mul_.Tensor' not in ops and 'mul.Tensor' not in ops, ops
    # One rounding of the scaled gradient instead of two (bfloat16: up to a
    # unit in the last place apart, two after gaussian's sigmoid backward).
    expected = _unfolded_grad(fn, pred, avg_factor=avg_factor)
    rtol = {torch.bfloat16: 1.6e-2}.get(dtype, 2e-7)
    torch.testing.assert_close(grad, expected, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('outer', [lambda l: 3 * l, lambda l: l * 1024.0, lambda l: l.exp()],
                         ids=['loss_weight', 'grad_scaler', 'nonlinear'])
def test_other_incoming_gradients_are_still_applied(dtype, outer):
    pred, losses = _losses(dtype)
    fn = losses['quality_focal']
    grad, ops = _grad(fn, pred, outer, avg_factor=37.0)
    assert 'mul_.Tensor' in ops, ops
    expected = _unfolded_grad(fn, pred, outer, avg_factor=37.0)
    rtol = {torch.bfloat16: 1.6e-2, torch.float16: 2e-3}.get(dtype, 5e-7)
    torch.testing.assert_close(grad, expected, rtol=rtol, atol=1e-12)


def test_sum_with_an_unweighted_loss_skips_the_multiply_too():
    pred, losses = _losses(torch.float32)
    grad, ops = _grad(losses['varifocal'], pred, reduction='sum')
    assert 'mul_.Tensor' not in ops, ops
    assert torch.equal(grad, _unfolded_grad(losses['varifocal'], pred, reduction='sum'))


def test_retain_graph_second_backward_recomputes_unscaled():
    pred, losses = _losses(torch.float32)
    x = pred.detach().clone().requires_grad_(True)
    loss = losses['quality_focal'](x, avg_factor=37.0)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    loss.backward()
    torch.testing.assert_close(x.grad, first, rtol=1e-6, atol=1e-9)


AVG_FACTORS_OF_EVERY_KIND = [
    None, 37.0, 3, 0.1, 1e-7, 3e38, 123456789.0,
    torch.tensor(0.1), torch.tensor(1e-30), torch.tensor(37),
    torch.tensor(7.0, dtype=torch.float64), torch.tensor(0.1, dtype=torch.float64),
    torch.tensor(0.3, dtype=torch.bfloat16), torch.tensor(0.3, dtype=torch.float16),
]


@pytest.mark.parametrize('pred_dtype', [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize('count', [5, 3**17])
def test_expected_grad_scale_predicts_autograds_value(pred_dtype, count):
    # The prediction is worked out on the host; autograd's own division decides.
    pred = torch.zeros(5, 3, dtype=pred_dtype, requires_grad=True)
    loss_dtype = torch.float64 if pred_dtype == torch.float64 else torch.float32
    for avg_factor in AVG_FACTORS_OF_EVERY_KIND:
        loss_input = torch.zeros((), dtype=loss_dtype, requires_grad=True)
        finish_reduction(loss_input, 'mean', avg_factor, count).backward()
        predicted = expected_grad_scale(pred, 'mean', mean_denominator(avg_factor, count))
        assert predicted == loss_input.grad.item(), (avg_factor, predicted, loss_input.grad)


def test_expected_grad_scale_runs_no_tensor_operation():
    pred = torch.zeros(5, 3, requires_grad=True)
    with _OpLog() as log:
        expected_grad_scale(pred, 'mean', mean_denominator(37.0, 5))
    assert log.names == []
    denominator = mean_denominator(torch.tensor(37.0), 5)
    with _OpLog() as log:
        expected_grad_scale(pred, 'mean', denominator)
    assert log.names == ['_local_scalar_dense.default'], log.names


@pytest.mark.parametrize('case', ['float16', 'sum', 'none', 'requires_grad', 'compiling', 'inf',
                                  'nan', 'minus_eps'])
def test_expected_grad_scale_folds_nothing_where_it_should_not(case, monkeypatch):
    pred = torch.zeros(5, 3, dtype=torch.float16 if case == 'float16' else torch.float32)
    reduction = case if case in ('sum', 'none') else 'mean'
    avg_factor = {
        'requires_grad': torch.tensor(4.0, requires_grad=True),
        'inf': float('inf'),
        'nan': float('nan'),
        'minus_eps': -torch.finfo(torch.float32).eps,
    }.get(case, 4.0)
    if case == 'compiling':
        monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    assert expected_grad_scale(pred, reduction, mean_denominator(avg_factor, 5)) == 1.0


@pytest.mark.parametrize('avg_factor', [float('inf'), float('nan'), 0.0])
def test_training_with_an_unusual_avg_factor_gives_mmdets_gradient(avg_factor):
    pred, losses = _losses(torch.float32)
    grad, _ = _grad(losses['quality_focal'], pred, avg_factor=avg_factor)
    expected = _unfolded_grad(losses['quality_focal'], pred, avg_factor=avg_factor)
    torch.testing.assert_close(grad, expected, rtol=2e-7, atol=0, equal_nan=True)
