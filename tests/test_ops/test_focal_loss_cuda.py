"""GPU tests: run where CUDA and the extension's CUDA kernels exist, skip elsewhere.

They compare the CUDA kernels with the CPU kernels (which the rest of the suite
checks against the oracle): both include the same focal_loss_math.h. Every
CUDA kernel is reached: the forward-only, fused forward+gradient and backward
sigmoid kernels, both softmax kernels, and the second reduction pass on grids
large enough to hit the block cap (kMaxBlocks = 4096 blocks of 256 threads).
"""
import pytest
import torch

from focal_plugin.ops import has_kernel, reference, sigmoid_focal_loss, softmax_focal_loss

from .utils import make_inputs

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_kernel(torch.device('cuda'))),
    reason='needs a CUDA device and the extension built with its CUDA kernel')

OPS = torch.ops.focal_plugin
EXACT = dict(rtol=1e-5, atol=1e-6)
HALF = dict(rtol=1e-2, atol=1e-3)


def _tol(dtype):
    return EXACT if dtype in (torch.float32, torch.float64) else HALF


def _run(fn, pred, target, device, **kwargs):
    """Loss and gradient of ``fn`` on ``device``; grad_output is all ones."""
    x = pred.detach().clone().to(device).requires_grad_(True)
    t = target.to(device)
    w = kwargs.pop('weight', None)
    loss = fn(x, t, None if w is None else w.to(device), **kwargs)
    loss.sum().backward()
    return loss.detach().cpu(), x.grad.cpu()


def _cpu_and_cuda(fn, pred, target, **kwargs):
    return _run(fn, pred, target, 'cpu', **kwargs), _run(fn, pred, target, 'cuda', **kwargs)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
@pytest.mark.parametrize('alpha', [0.25, None, 'per_class'])
def test_sigmoid_cuda_matches_cpu(dtype, reduction, alpha):
    pred, labels = make_inputs(3001, 80, dtype=dtype, ignore_index=-1)
    if alpha == 'per_class':
        alpha = torch.rand(80).tolist()
    cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, labels, weight=torch.rand(3001),
                             alpha=alpha, reduction=reduction)
    torch.testing.assert_close(gpu, cpu, **_tol(dtype))


@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0, 2.5])
def test_sigmoid_cuda_hard_labels_with_element_weights(gamma):
    pred, labels = make_inputs(1000, 13, ignore_index=-1)
    cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, labels, weight=torch.rand(1000, 13),
                             gamma=gamma, reduction='none')
    torch.testing.assert_close(gpu, cpu, **EXACT)


def test_sigmoid_cuda_soft_targets_and_element_weights():
    pred, _ = make_inputs(500, 7)
    cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, torch.rand(500, 7),
                             weight=torch.rand(500, 7), gamma=1.5)
    torch.testing.assert_close(gpu, cpu, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('reduction', [0, 1])
def test_sigmoid_cuda_forward_only_kernel_matches_cpu(reduction):
    # Under no_grad the wrapper calls the forward-only op; call it directly here.
    pred, labels = make_inputs(2000, 80, ignore_index=-1)
    args = (labels, torch.rand(2000), None, 2.0, 0.25, reduction, -1)
    cpu = OPS.sigmoid_focal_loss(pred, *args)
    gpu = OPS.sigmoid_focal_loss(pred.cuda(), *(a.cuda() if torch.is_tensor(a) else a
                                                for a in args))
    torch.testing.assert_close(gpu.cpu(), cpu, **EXACT)


@pytest.mark.parametrize('reduction', [0, 1])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_sigmoid_cuda_backward_kernel_matches_cpu(reduction, dtype):
    pred, labels = make_inputs(2000, 80, dtype=dtype, ignore_index=-1)
    grad_output = torch.rand(2000, 80) if reduction == 0 else torch.tensor(0.7)
    args = (labels, None, torch.rand(80), 1.5, None, reduction, -1)
    cpu = OPS.sigmoid_focal_loss_backward(grad_output, pred, *args)
    gpu = OPS.sigmoid_focal_loss_backward(grad_output.cuda(), pred.cuda(),
                                          *(a.cuda() if torch.is_tensor(a) else a for a in args))
    torch.testing.assert_close(gpu.cpu(), cpu, **_tol(dtype))


def test_sigmoid_cuda_retain_graph_second_backward_uses_backward_kernel():
    pred, labels = make_inputs(700, 9)
    x = pred.cuda().requires_grad_(True)
    loss = sigmoid_focal_loss(x, labels.cuda())
    (first, ) = torch.autograd.grad(loss, x, retain_graph=True)  # fused gradient
    (second, ) = torch.autograd.grad(loss, x)  # recomputed by the backward kernel
    torch.testing.assert_close(second, first, **EXACT)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('classes', [5, 33, 1000])
def test_softmax_cuda_matches_cpu(dtype, classes):
    pred, labels = make_inputs(777, classes, dtype=dtype, background=False, ignore_index=-1)
    cpu, gpu = _cpu_and_cuda(softmax_focal_loss, pred, labels, alpha=0.5)
    torch.testing.assert_close(gpu, cpu, **_tol(dtype))


@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
@pytest.mark.parametrize('alpha', [None, 'per_class'])
def test_softmax_cuda_reductions_weights_alphas_and_gammas(reduction, gamma, alpha):
    pred, labels = make_inputs(900, 21, background=False, ignore_index=-1)
    if alpha == 'per_class':
        alpha = torch.rand(21).tolist()
    cpu, gpu = _cpu_and_cuda(softmax_focal_loss, pred, labels, weight=torch.rand(900),
                             gamma=gamma, alpha=alpha, reduction=reduction)
    torch.testing.assert_close(gpu, cpu, **EXACT)


def test_sigmoid_cuda_grid_larger_than_block_cap():
    # 2.1M elements > 4096 blocks x 256 threads: the grid-stride loop wraps.
    pred, labels = make_inputs(26500, 80, ignore_index=-1)
    for reduction in ('none', 'sum'):
        cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, labels, reduction=reduction)
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-6)


def test_softmax_cuda_rows_beyond_block_cap():
    # 40000 rows > 4096 blocks x 8 warps: rows wrap around the grid.
    pred, labels = make_inputs(40000, 10, background=False, ignore_index=-1)
    for reduction in ('none', 'sum'):
        cpu, gpu = _cpu_and_cuda(softmax_focal_loss, pred, labels, reduction=reduction)
        torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-6)


def _opcheck_samples():
    pred, labels = make_inputs(37, 11, ignore_index=-1)
    pred, labels = pred.cuda(), labels.cuda()
    soft = torch.rand(37, 11, device='cuda')
    w_row = torch.rand(37, device='cuda')
    alpha = torch.rand(11, device='cuda')
    classes = labels.clamp(max=10)
    return [
        ('sigmoid_focal_loss', (pred.clone().requires_grad_(), labels, w_row, None, 2.0, 0.25, 1,
                                -1)),
        ('sigmoid_focal_loss', (pred, soft, None, alpha, 1.5, None, 0, -1)),
        ('sigmoid_focal_loss_with_grad', (pred.clone().requires_grad_(), labels, None, alpha, 2.0,
                                          None, 0, -1)),
        ('sigmoid_focal_loss_backward', (torch.rand(37, 11, device='cuda'), pred, labels, w_row,
                                         None, 2.0, 0.25, 0, -1)),
        ('softmax_focal_loss', (pred.clone().requires_grad_(), classes, w_row, None, 2.0, 0.25, 1,
                                -1)),
        ('softmax_focal_loss_backward', (torch.rand(37, device='cuda'), pred, classes, None, alpha,
                                         0.5, None, 0, -1)),
    ]


@pytest.mark.parametrize('name,args', _opcheck_samples() if torch.cuda.is_available() else [])
def test_opcheck_cuda(name, args):
    torch.library.opcheck(getattr(OPS, name).default, args)


def test_cuda_reduction_is_deterministic_and_needs_no_sync():
    pred, labels = make_inputs(250000, 80)
    x = pred.cuda()
    t = labels.cuda()
    avg_factor = torch.full((), 100.0, device='cuda')  # made before the sync check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')  # any device->host sync raises
    try:
        first = sigmoid_focal_loss(x, t, avg_factor=avg_factor)
        second = sigmoid_focal_loss(x, t, avg_factor=avg_factor)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert torch.equal(first, second)


def test_cuda_bad_label_gives_nan_not_a_wrong_number():
    pred, labels = make_inputs(10, 4)
    labels[3] = 9
    loss = sigmoid_focal_loss(pred.cuda(), labels.cuda(), reduction='none').cpu()
    assert torch.isnan(loss[3]).all() and torch.isfinite(loss[:3]).all()
    soft_labels = labels.clamp(max=3)
    soft_labels[5] = 4  # softmax has no background class
    loss = softmax_focal_loss(pred.cuda(), soft_labels.cuda(), reduction='none').cpu()
    assert torch.isnan(loss[5]) and torch.isfinite(loss[:5]).all()


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
