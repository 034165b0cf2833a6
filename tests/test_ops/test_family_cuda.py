"""GPU tests of the family's elementwise members (quality focal, varifocal,
gaussian focal): run where CUDA and the extension's CUDA kernels exist, skip
elsewhere. Their CUDA kernel is the one generic elementwise kernel the sigmoid
focal loss uses (tests/test_ops/test_focal_loss_cuda.py); these check each
member's functor on the device against the CPU kernels, which the rest of the
suite checks against mmdet's losses.
"""
import functools

import pytest
import torch

from focal_plugin.ops import gaussian_focal_loss, has_kernel, quality_focal_loss, varifocal_loss

from .test_focal_loss_cuda import _assert_close, _tol
from .utils import make_inputs

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_kernel(torch.device('cuda'))),
    reason='needs a CUDA device and the extension built with its CUDA kernel')

NO_IGNORE = -2**63


def _inputs(n, c, dtype, seed=0):
    pred, labels = make_inputs(n, c, dtype=dtype, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    soft = torch.rand(n, c, generator=g)
    soft[torch.rand(n, c, generator=g) < 0.7] = 0.0
    soft[torch.rand(n, c, generator=g) < 0.02] = 1.0
    return pred, labels, torch.rand(n, generator=g), soft.to(dtype)


# Each member as f(pred, labels, score, soft, **kwargs) -> loss.
MEMBERS = {
    'qfl_labels': lambda x, labels, score, soft, **kw: quality_focal_loss(x, labels, score, **kw),
    'qfl_soft': lambda x, labels, score, soft, **kw: quality_focal_loss(x, soft, beta=1.5, **kw),
    'qfl_activated': lambda x, labels, score, soft, **kw: quality_focal_loss(
        x, labels, score, activated=True, **kw),
    'vfl': lambda x, labels, score, soft, **kw: varifocal_loss(x, soft, **kw),
    'vfl_class_alpha': lambda x, labels, score, soft, **kw: varifocal_loss(
        x, soft, alpha=torch.linspace(0.1, 0.9, x.size(1), device=x.device), gamma=0.5, **kw),
    'gaussian': lambda x, labels, score, soft, **kw: gaussian_focal_loss(x, soft, **kw),
    'gaussian_logits': lambda x, labels, score, soft, **kw: gaussian_focal_loss(
        x, soft, logits=True, **kw),
}

# The members that take probabilities, and how logits become them. This runs
# on the device the logits are on: a test comparing devices turns them into
# probabilities on the CPU first, so that both devices see the same inputs
# (CUDA's sigmoid and CPU's differ in the last bit, which the logarithms near
# p = 1 magnify: 8e-5 relative in float64 on an H200 when each device made
# its own).
TO_PROBABILITY = {
    'qfl_activated': lambda x: x.float().sigmoid().to(x.dtype),
    'gaussian': lambda x: x.float().sigmoid().clamp(1e-4, 1 - 1e-4).to(x.dtype),
}


def _member_input(member, pred):
    """pred as ``member`` takes it: logits, or probabilities made from them."""
    return TO_PROBABILITY[member](pred) if member in TO_PROBABILITY else pred


def _run(member, pred, labels, score, soft, device, **kwargs):
    x = _member_input(member, pred.detach()).clone().to(device).requires_grad_(True)
    loss = MEMBERS[member](x, labels.to(device), score.to(device), soft.to(device), **kwargs)
    loss.sum().backward()
    return loss.detach().cpu(), x.grad.cpu()


@pytest.mark.parametrize('member', sorted(MEMBERS))
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
def test_family_cuda_matches_cpu(member, dtype, reduction):
    # 26500 x 80 elements: more than kMaxBlocks * 256, so the grid-stride loop
    # and the second reduction pass both run.
    inputs = _inputs(26500, 80, dtype)
    cpu = _run(member, *inputs, 'cpu', reduction=reduction)
    gpu = _run(member, *inputs, 'cuda', reduction=reduction)
    tol = _tol(dtype)
    if member == 'qfl_soft' and dtype == torch.float32:
        # beta = 1.5: the gradient holds |p - y|^0.5, whose slope is unbounded
        # where the prediction meets its target. There one ulp of p (CUDA's
        # and CPU's expf differ by that) moves the gradient by up to ~sqrt(ulp)
        # times its factors, 1e-4 of the largest gradient (measured on an
        # H200: 1.3e-6, at p - y = 3e-6).
        tol = dict(tol, atol=1e-4)
    for actual, expected in zip(gpu, cpu):
        _assert_close(actual, expected, **tol)


@pytest.mark.parametrize('member', sorted(MEMBERS))
def test_family_cuda_reduction_is_deterministic_and_needs_no_sync(member):
    pred, labels, score, soft = (t.cuda() for t in _inputs(20000, 80, torch.float32))
    x = _member_input(member, pred).clone().requires_grad_(True)
    avg_factor = torch.full((), 50.0, device='cuda')
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')  # any device->host sync raises
    try:
        losses = [MEMBERS[member](x, labels, score, soft, avg_factor=avg_factor) for _ in range(2)]
        losses[0].backward()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert torch.equal(losses[0], losses[1])
    assert bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize('member', sorted(MEMBERS))
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
def test_family_cuda_empty_batch(member, reduction):
    x = torch.zeros(0, 7, device='cuda', requires_grad=True)
    empty = torch.zeros(0, device='cuda')
    loss = MEMBERS[member](x, empty.long(), empty, torch.zeros(0, 7, device='cuda'),
                           reduction=reduction)
    loss.sum().backward()
    assert loss.numel() == 0 or loss.item() == 0.0
    assert x.grad.shape == (0, 7)


@pytest.mark.parametrize('case', ['label_above_background', 'negative_label', 'score_above_one',
                                  'target_above_one'])
def test_family_cuda_bad_targets_give_nan_not_a_wrong_number(case):
    pred, labels, score, soft = _inputs(64, 5, torch.float32)
    if case == 'label_above_background':
        labels[3] = 6
    elif case == 'negative_label':
        labels[3] = -5
    elif case == 'score_above_one':
        score[3] = 1.5
    else:
        soft[3, 2] = 1.5
    fn = functools.partial(varifocal_loss, target=soft.cuda()) if case == 'target_above_one' \
        else functools.partial(quality_focal_loss, target=labels.cuda(), score=score.cuda())
    x = pred.cuda().requires_grad_(True)
    loss = fn(x, reduction='none')
    assert bool(loss[3].isnan().all()) if loss.dim() == 1 else bool(loss[3, 2].isnan())
    assert bool(torch.isfinite(loss[:3]).all()) and bool(torch.isfinite(loss[4:]).all())
    total = fn(x, reduction='sum')
    total.backward()
    assert total.isnan() and bool(x.grad[3].isnan().any()) and bool(
        torch.isfinite(x.grad[4:]).all())


def test_family_cuda_opcheck():
    pred, labels, score, soft = (t.cuda() for t in _inputs(37, 11, torch.float32))
    ops = torch.ops.focal_plugin
    samples = [
        (ops.quality_focal_loss, (pred.clone().requires_grad_(), labels, score, None, None,
                                  NO_IGNORE, 2.0, False, True)),
        (ops._quality_focal_loss_with_grad, (pred.clone().requires_grad_(), soft, None, None,
                                             None, NO_IGNORE, 2.0, False, False)),
        (ops.varifocal_loss, (pred.clone().requires_grad_(), soft, None, torch.rand(37, device='cuda'),
                              torch.rand(11, device='cuda'), NO_IGNORE, 0.75, 2.0, True, True)),
        (ops._gaussian_focal_loss_backward, (torch.rand(37, 11, device='cuda'), pred, soft, None,
                                             None, None, NO_IGNORE, 2.0, 4.0, 1.0, 1.0, True,
                                             False)),
    ]
    for op, args in samples:
        torch.library.opcheck(op.default, args)


@pytest.mark.parametrize('reduce_sum', [True, False])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_family_cuda_with_grad_folds_grad_scale(dtype, reduce_sum):
    pred, labels, score, _ = (t.cuda() for t in _inputs(37, 11, dtype))
    op = torch.ops.focal_plugin._quality_focal_loss_with_grad
    args = (labels, score.float(), None, None, NO_IGNORE, 2.0, False, reduce_sum)
    loss, grad = op(pred, *args)
    scaled_loss, scaled_grad = op(pred, *args, 0.25)
    assert torch.equal(scaled_loss, loss)
    rtol = 8e-3 if dtype == torch.bfloat16 else 1e-6
    torch.testing.assert_close(scaled_grad, grad * 0.25, rtol=rtol, atol=1e-7)
    _, cpu_grad = op(pred.cpu(), *(a.cpu() if torch.is_tensor(a) else a for a in args),
                            0.25)
    torch.testing.assert_close(scaled_grad.cpu(), cpu_grad, rtol=rtol, atol=1e-6)
