"""GPU tests: run where CUDA and the extension's CUDA kernels exist, skip elsewhere.

They compare the CUDA kernels with the CPU kernels (which the rest of the suite
checks against the oracle): both include the same focal_loss_math.h.
"""
import pytest
import torch

from focal_plugin.ops import has_kernel, reference, sigmoid_focal_loss, softmax_focal_loss

from .utils import make_inputs

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_kernel(torch.device('cuda'))),
    reason='needs a CUDA device and the extension built with its CUDA kernel')


def _run(fn, pred, target, device, **kwargs):
    x = pred.to(device).requires_grad_(True)
    t = target.to(device)
    w = kwargs.pop('weight', None)
    loss = fn(x, t, None if w is None else w.to(device), **kwargs)
    loss.sum().backward()
    return loss.detach().cpu(), x.grad.cpu()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
@pytest.mark.parametrize('alpha', [0.25, None, 'per_class'])
def test_sigmoid_cuda_matches_cpu(dtype, reduction, alpha):
    pred, labels = make_inputs(3001, 80, dtype=dtype, ignore_index=-1)
    if alpha == 'per_class':
        alpha = torch.rand(80).tolist()
    weight = torch.rand(3001)
    cpu = _run(sigmoid_focal_loss, pred, labels, 'cpu', weight=weight, alpha=alpha,
               reduction=reduction)
    gpu = _run(sigmoid_focal_loss, pred, labels, 'cuda', weight=weight, alpha=alpha,
               reduction=reduction)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype in (torch.float32, torch.float64) else dict(
        rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(gpu[0], cpu[0], **tol)
    torch.testing.assert_close(gpu[1], cpu[1], **tol)


def test_sigmoid_cuda_soft_targets_and_element_weights():
    pred, _ = make_inputs(500, 7)
    soft = torch.rand(500, 7)
    weight = torch.rand(500, 7)
    cpu = _run(sigmoid_focal_loss, pred, soft, 'cpu', weight=weight, gamma=1.5)
    gpu = _run(sigmoid_focal_loss, pred, soft, 'cuda', weight=weight, gamma=1.5)
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('classes', [5, 33, 1000])
def test_softmax_cuda_matches_cpu(dtype, classes):
    pred, labels = make_inputs(777, classes, dtype=dtype, background=False, ignore_index=-1)
    cpu = _run(softmax_focal_loss, pred, labels, 'cpu', alpha=0.5)
    gpu = _run(softmax_focal_loss, pred, labels, 'cuda', alpha=0.5)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(gpu, cpu, **tol)


def test_cuda_reduction_is_deterministic_and_needs_no_sync():
    pred, labels = make_inputs(250000, 80)
    x = pred.cuda()
    t = labels.cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')  # any device->host sync raises
    try:
        first = sigmoid_focal_loss(x, t, avg_factor=torch.tensor(100.0, device='cuda'))
        second = sigmoid_focal_loss(x, t, avg_factor=torch.tensor(100.0, device='cuda'))
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert torch.equal(first, second)


def test_cuda_bad_label_gives_nan_not_a_wrong_number():
    pred, labels = make_inputs(10, 4)
    labels[3] = 9
    loss = sigmoid_focal_loss(pred.cuda(), labels.cuda(), reduction='none').cpu()
    assert torch.isnan(loss[3]).all() and torch.isfinite(loss[:3]).all()


def test_cuda_extreme_half_logits_are_finite():
    pred = torch.tensor([[-1e4, -12.0, 0.0, 12.0, 1e4]], dtype=torch.float16).cuda()
    x = pred.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(x, torch.tensor([3]).cuda(), reduction='none')
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    ref = reference.sigmoid_focal_loss(pred.double().cpu(), torch.tensor([3]), reduction='none')
    torch.testing.assert_close(loss.double().cpu(), ref.half().double(), rtol=2e-3, atol=0)


def test_cuda_empty_batch():
    x = torch.zeros(0, 80, device='cuda', requires_grad=True)
    loss = sigmoid_focal_loss(x, torch.zeros(0, dtype=torch.long, device='cuda'))
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (0, 80)
