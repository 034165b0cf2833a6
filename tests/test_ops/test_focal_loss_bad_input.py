"""Bad input gets a clear error naming the argument; edge cases stay finite and correct."""
import math

import pytest
import torch

from focal_plugin.ops import reference, sigmoid_focal_loss, softmax_focal_loss

from .utils import make_inputs

OPS = torch.ops.focal_plugin


@pytest.mark.parametrize('fn', [sigmoid_focal_loss, softmax_focal_loss])
def test_pred_rank_and_dtype(fn):
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match='pred must be a 2-D'):
        fn(torch.randn(4), labels)
    with pytest.raises(ValueError, match='pred must be a 2-D'):
        fn(torch.randn(4, 3, 2), labels)
    with pytest.raises(TypeError, match='pred must be float16, bfloat16, float32 or float64'):
        fn(torch.ones(4, 3, dtype=torch.long), labels)
    with pytest.raises(TypeError, match='pred must be a torch.Tensor'):
        fn([[0.0, 1.0]], labels)


def test_sigmoid_target_shapes():
    pred = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r'float \(soft\) target must have pred\'s shape'):
        sigmoid_focal_loss(pred, torch.rand(4))
    with pytest.raises(ValueError, match=r'class-index target must have shape \(4,\)'):
        sigmoid_focal_loss(pred, torch.zeros(5, dtype=torch.long))
    with pytest.raises(TypeError, match='target must be int64 class indices'):
        sigmoid_focal_loss(pred, torch.zeros(4, dtype=torch.bool))


def test_softmax_rejects_float_target():
    with pytest.raises(TypeError, match='target must be integer class indices'):
        softmax_focal_loss(torch.randn(4, 3), torch.rand(4, 3))


# The reference (the fallback without a kernel) raises the kernel's error too.
@pytest.mark.parametrize('fn', [sigmoid_focal_loss, reference.sigmoid_focal_loss])
@pytest.mark.parametrize('bad', [4, 7, -2])
def test_sigmoid_labels_out_of_range_name_the_value(fn, bad):
    pred = torch.randn(4, 3)
    labels = torch.tensor([0, 1, bad, 3])  # 3 == C is background: valid
    with pytest.raises(ValueError, match=f'target holds label {bad} at row 2; expected a class '
                       r'index or the background label 0\.\.3 or ignore_index=-1'):
        fn(pred, labels)


@pytest.mark.parametrize('fn', [softmax_focal_loss, reference.softmax_focal_loss])
def test_softmax_label_equal_to_k_is_an_error(fn):
    with pytest.raises(ValueError, match=r'target holds label 3 at row 0; expected a class index'):
        fn(torch.randn(2, 3), torch.tensor([3, 0]))


def test_weight_and_alpha_shapes():
    pred, labels = make_inputs(4, 3)
    with pytest.raises(ValueError, match=r'weight must have shape \(4,\) or \(4, 3\)'):
        sigmoid_focal_loss(pred, labels, weight=torch.rand(3))
    with pytest.raises(ValueError, match=r'weight must have shape \(4,\), got'):
        softmax_focal_loss(pred, labels.clamp(max=2), weight=torch.rand(4, 3))
    with pytest.raises(ValueError, match='per-class alpha must have length C=3'):
        sigmoid_focal_loss(pred, labels, alpha=[0.1, 0.2])
    with pytest.raises(ValueError, match=r'alpha must be None, a float in \[0, 1\] .* got 1\.5'):
        sigmoid_focal_loss(pred, labels, alpha=1.5)
    with pytest.raises(ValueError, match=r'per-class floats in \[0, 1\], got \[0\.1\d*, -0\.2'):
        sigmoid_focal_loss(pred, labels, alpha=torch.tensor([0.1, -0.2, 0.3]))
    with pytest.raises(TypeError, match="alpha must be None, a float .* got '0.25'"):
        sigmoid_focal_loss(pred, labels, alpha='0.25')


def test_gamma_reduction_avg_factor_ignore_index():
    pred, labels = make_inputs(4, 3)
    with pytest.raises(ValueError, match='gamma must be a finite number >= 0'):
        sigmoid_focal_loss(pred, labels, gamma=-1.0)
    with pytest.raises(ValueError, match='gamma must be a finite number >= 0'):
        sigmoid_focal_loss(pred, labels, gamma=float('nan'))
    with pytest.raises(ValueError, match='reduction must be one of'):
        sigmoid_focal_loss(pred, labels, reduction='avg')
    with pytest.raises(ValueError, match='avg_factor can not be used with reduction="sum"'):
        sigmoid_focal_loss(pred, labels, reduction='sum', avg_factor=3.0)
    with pytest.raises(ValueError, match='ignore_index=1 collides with a real label'):
        sigmoid_focal_loss(pred, labels, ignore_index=1)


def test_tensors_on_different_devices():
    pred = torch.randn(4, 3)
    with pytest.raises(ValueError, match='target is on meta but pred is on cpu'):
        sigmoid_focal_loss(pred, torch.zeros(4, dtype=torch.long, device='meta'))
    with pytest.raises(ValueError, match='weight is on meta but pred is on cpu'):
        sigmoid_focal_loss(pred, torch.zeros(4, dtype=torch.long),
                           weight=torch.ones(4, device='meta'))


def test_direct_op_calls_are_checked_in_cpp():
    pred, labels = make_inputs(4, 3)
    with pytest.raises(ValueError, match='score is only taken with class-index targets of a '
                       'loss that has scores'):
        OPS.sigmoid_focal_loss(pred, labels, torch.ones(4), None, None, -1, 2.0, 0.25, True)
    with pytest.raises(TypeError, match='weight must have dtype Float'):
        OPS.sigmoid_focal_loss(pred, labels, None, torch.ones(4, dtype=torch.float64), None, -1,
                               2.0, 0.25, False)
    with pytest.raises(ValueError, match='gamma must be a finite number >= 0'):
        OPS.softmax_focal_loss(pred, labels.clamp(max=2), None, None, None, -1, -1.0, None,
                               False)
    with pytest.raises(ValueError, match='alpha must be in'):
        OPS.sigmoid_focal_loss(pred, labels, None, None, None, -1, 2.0, 1.5, False)
    with pytest.raises(ValueError, match='takes no class_alpha'):
        OPS.quality_focal_loss(pred, labels, None, None, torch.ones(3), -1, 2.0, False, True)


@pytest.mark.parametrize('fn,reduction', [(sigmoid_focal_loss, 'mean'),
                                          (sigmoid_focal_loss, 'sum'),
                                          (softmax_focal_loss, 'mean'),
                                          (softmax_focal_loss, 'none')])
def test_empty_batch_gives_zero_and_zero_gradient(fn, reduction):
    pred = torch.randn(0, 5, requires_grad=True)
    loss = fn(pred, torch.zeros(0, dtype=torch.long), reduction=reduction)
    if reduction != 'none':
        assert loss.shape == () and loss.item() == 0.0
    loss.sum().backward()
    assert pred.grad.shape == (0, 5)


@pytest.mark.parametrize('fn', [sigmoid_focal_loss, softmax_focal_loss])
def test_non_contiguous_inputs(fn):
    base, labels = make_inputs(9, 12)
    pred = base[:, ::2]  # (9, 6), non-contiguous
    labels = labels.clamp(max=5)
    weight = torch.rand(18)[::2]
    assert not pred.is_contiguous() and not weight.is_contiguous()
    torch.testing.assert_close(fn(pred, labels, weight, reduction='none'),
                               fn(pred.contiguous(), labels, weight.contiguous(),
                                  reduction='none'))


@pytest.mark.parametrize('fn', [sigmoid_focal_loss, softmax_focal_loss])
def test_nan_logits_propagate(fn):
    pred, labels = make_inputs(6, 4)
    labels = labels.clamp(max=3)
    pred[2, 1] = float('nan')
    pred.requires_grad_(True)
    loss = fn(pred, labels, reduction='none')
    assert torch.isnan(loss[2]).any()
    rest = torch.cat([loss[:2], loss[3:]])
    assert torch.isfinite(rest).all()
    fn(pred, labels, reduction='sum').backward()
    assert torch.isnan(pred.grad[2]).any()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
def test_extreme_logits_finite_and_correct(dtype, gamma):
    values = torch.tensor([-1e4, -100.0, -30.0, -9.0, 0.0, 9.0, 30.0, 100.0, 1e4])
    pred = values.repeat(4, 1).to(dtype)  # (4, 9)
    labels = torch.tensor([0, 4, 8, 9])  # positives at each end, a middle one, background
    x = pred.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(x, labels, gamma=gamma, reduction='none')
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    # The oracle in float64 on the same (rounded) inputs.
    x64 = pred.double().requires_grad_(True)
    ref = reference.sigmoid_focal_loss(x64, labels, gamma=gamma, reduction='none')
    ref.sum().backward()
    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float32: 1e-5, torch.float64: 1e-10}
    grad_ref = torch.nan_to_num(x64.grad)  # (1-p_t)^(gamma-1) makes the oracle's 0 * inf NaN
    # Compared in the output dtype: a true loss of 1e-13 is 0 in float16.
    torch.testing.assert_close(loss.double(), ref.to(dtype).double(), rtol=tol[dtype],
                               atol=1e-30)
    torch.testing.assert_close(x.grad.double(), grad_ref.to(dtype).double(), rtol=tol[dtype],
                               atol=1e-30)
    soft = softmax_focal_loss(x.detach(), labels.clamp(max=8), gamma=gamma, reduction='none')
    assert torch.isfinite(soft).all()


def test_half_precision_matches_mmdet_failure_region():
    # mmcv's fp16 kernel overflows for |logit| beyond ~9; ours stays exact.
    pred = torch.tensor([[12.0, -12.0]], dtype=torch.float16)
    loss = sigmoid_focal_loss(pred, torch.tensor([1]), reduction='none')
    assert torch.isfinite(loss).all()
    expected = reference.sigmoid_focal_loss(pred.double(), torch.tensor([1]), reduction='none')
    torch.testing.assert_close(loss.double(), expected, rtol=2e-3, atol=0)
    assert not math.isnan(loss.sum().item())
