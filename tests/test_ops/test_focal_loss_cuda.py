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

EXACT = dict(rtol=1e-5, atol=1e-6)
HALF = dict(rtol=1e-2, atol=1e-3)


def _tol(dtype):
    return EXACT if dtype in (torch.float32, torch.float64) else HALF


def _assert_close(actual, expected, rtol, atol):
    """``atol`` is relative to ``expected``'s largest magnitude, ``rtol`` to each element.

    'mean' gradients are tiny (at most ~3.5e-6 for sigmoid at C=80): an
    absolute atol of 1e-6 would let a 10% error, or in half precision an
    all-zero gradient, pass. Scaling atol by the tensor's magnitude compares
    every reduction at the same relative precision.
    """
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    scale = expected.double().abs().nan_to_num(0.0).max().item() if expected.numel() else 0.0
    # Never below the dtype's smallest step: under float16's normal range
    # (6.1e-5) values are multiples of 2**-24, where a 'mean' gradient has a
    # bit or two, and the devices agree to one step (measured on an H200:
    # 0.6-3% of the float16 'mean' gradients one step apart, none further).
    finfo = torch.finfo(expected.dtype) if expected.is_floating_point() else None
    step = finfo.tiny * finfo.eps if finfo else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=max(atol * scale, step),
                               equal_nan=True)


def _assert_pair(gpu, cpu, dtype=torch.float32, **tol):
    """Compares the (loss, grad) pairs of :func:`_cpu_and_cuda`."""
    tol = tol or _tol(dtype)
    for name, actual, expected in zip(('loss', 'grad'), gpu, cpu):
        try:
            _assert_close(actual, expected, **tol)
        except AssertionError as err:
            raise AssertionError(f'{name}: {err}') from None


def _raw_op_and_args(name, *tensors, gamma=2.0, alpha=0.25, reduce=False, ignore_index=-1):
    """The raw op ``torch.ops.focal_plugin.<...>`` for ``name`` and its arguments.

    The one place that knows the raw ops' names and how their schema encodes
    the reduction; every other test goes through the public API. ``name`` is
    'sigmoid', 'sigmoid_with_grad', 'sigmoid_backward', 'softmax' or
    'softmax_backward'; ``tensors`` are the op's leading tensor arguments
    (grad_output for the backward ops, pred, target, weight, class_alpha);
    ``reduce``: a summed scalar (True) or per-element (False).
    """
    op_name = {'sigmoid': 'sigmoid_focal_loss', 'sigmoid_with_grad': '_sigmoid_focal_loss_with_grad',
               'sigmoid_backward': '_sigmoid_focal_loss_backward',
               'softmax': 'softmax_focal_loss',
               'softmax_backward': '_softmax_focal_loss_backward'}[name]
    op = getattr(torch.ops.focal_plugin, op_name).default
    leading = tensors[:1] if name.endswith('_backward') else ()
    pred, target, weight, class_alpha = tensors[len(leading):]
    # The focal ops take no score (the quality focal loss's per-label target).
    return op, (*leading, pred, target, None, weight, class_alpha, ignore_index, gamma, alpha,
                reduce)


def _raw(name, *tensors, **kwargs):
    """Calls the raw op (see :func:`_raw_op_and_args`)."""
    op, args = _raw_op_and_args(name, *tensors, **kwargs)
    return op(*args)


def _run(fn, pred, target, device, **kwargs):
    """Loss and gradient of ``fn`` on ``device``; grad_output is all ones."""
    x = pred.detach().clone().to(device).requires_grad_(True)
    t = target.to(device)
    w = kwargs.pop('weight', None)
    loss = fn(x, t, None if w is None else w.to(device), **kwargs)
    loss.sum().backward()
    return loss.detach().cpu(), x.grad.cpu()


def _cpu_and_cuda(fn, pred, target, device='cuda', **kwargs):
    return _run(fn, pred, target, 'cpu', **kwargs), _run(fn, pred, target, device, **kwargs)


def _gpu_memory_gib():
    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() \
        else 0.0


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
@pytest.mark.parametrize('alpha', [0.25, None, 'per_class'])
def test_sigmoid_cuda_matches_cpu(dtype, reduction, alpha):
    pred, labels = make_inputs(3001, 80, dtype=dtype, ignore_index=-1)
    if alpha == 'per_class':
        alpha = torch.rand(80).tolist()
    cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, labels, weight=torch.rand(3001),
                             alpha=alpha, reduction=reduction)
    _assert_pair(gpu, cpu, dtype)


@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0, 2.5])
def test_sigmoid_cuda_hard_labels_with_element_weights(gamma):
    pred, labels = make_inputs(1000, 13, ignore_index=-1)
    cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, labels, weight=torch.rand(1000, 13),
                             gamma=gamma, reduction='none')
    _assert_pair(gpu, cpu)


def test_sigmoid_cuda_soft_targets_and_element_weights():
    pred, _ = make_inputs(500, 7)
    cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, torch.rand(500, 7),
                             weight=torch.rand(500, 7), gamma=1.5)
    _assert_pair(gpu, cpu)


@pytest.mark.parametrize('reduce', [False, True])
def test_sigmoid_cuda_forward_only_kernel_matches_cpu(reduce):
    # Under no_grad the wrapper calls the forward-only op.
    pred, labels = make_inputs(2000, 80, ignore_index=-1)
    weight = torch.rand(2000)
    with torch.no_grad():
        cpu = sigmoid_focal_loss(pred, labels, weight, reduction='sum' if reduce else 'none')
        gpu = sigmoid_focal_loss(pred.cuda(), labels.cuda(), weight.cuda(),
                                 reduction='sum' if reduce else 'none')
    _assert_close(gpu, cpu, **EXACT)


@pytest.mark.parametrize('reduce', [False, True])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_sigmoid_cuda_backward_kernel_matches_cpu(reduce, dtype):
    pred, labels = make_inputs(2000, 80, dtype=dtype, ignore_index=-1)
    grad_output = torch.tensor(0.7) if reduce else torch.rand(2000, 80)
    alpha = torch.rand(80)
    cpu = _raw('sigmoid_backward', grad_output, pred, labels, None, alpha, gamma=1.5, alpha=None,
               reduce=reduce)
    gpu = _raw('sigmoid_backward', grad_output.cuda(), pred.cuda(), labels.cuda(), None,
               alpha.cuda(), gamma=1.5, alpha=None, reduce=reduce)
    _assert_close(gpu, cpu, **_tol(dtype))


def test_sigmoid_cuda_retain_graph_second_backward_uses_backward_kernel():
    pred, labels = make_inputs(700, 9)
    x = pred.cuda().requires_grad_(True)
    loss = sigmoid_focal_loss(x, labels.cuda())
    (first, ) = torch.autograd.grad(loss, x, retain_graph=True)  # fused gradient
    (second, ) = torch.autograd.grad(loss, x)  # recomputed by the backward kernel
    _assert_close(second, first, **EXACT)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('classes', [5, 33, 1000])
def test_softmax_cuda_matches_cpu(dtype, classes):
    pred, labels = make_inputs(777, classes, dtype=dtype, background=False, ignore_index=-1)
    cpu, gpu = _cpu_and_cuda(softmax_focal_loss, pred, labels, alpha=0.5)
    _assert_pair(gpu, cpu, dtype)


@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
@pytest.mark.parametrize('alpha', [None, 'per_class'])
def test_softmax_cuda_reductions_weights_alphas_and_gammas(reduction, gamma, alpha):
    pred, labels = make_inputs(900, 21, background=False, ignore_index=-1)
    if alpha == 'per_class':
        alpha = torch.rand(21).tolist()
    cpu, gpu = _cpu_and_cuda(softmax_focal_loss, pred, labels, weight=torch.rand(900),
                             gamma=gamma, alpha=alpha, reduction=reduction)
    _assert_pair(gpu, cpu)


def test_sigmoid_cuda_grid_larger_than_block_cap():
    # 2.1M elements > 4096 blocks x 256 threads: the grid-stride loop wraps.
    pred, labels = make_inputs(26500, 80, ignore_index=-1)
    for reduction in ('none', 'sum'):
        cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, labels, reduction=reduction)
        _assert_pair(gpu, cpu, rtol=1e-4, atol=1e-6)


def test_softmax_cuda_rows_beyond_block_cap():
    # 40000 rows > 4096 blocks x 8 warps: rows wrap around the grid.
    pred, labels = make_inputs(40000, 10, background=False, ignore_index=-1)
    for reduction in ('none', 'sum'):
        cpu, gpu = _cpu_and_cuda(softmax_focal_loss, pred, labels, reduction=reduction)
        _assert_pair(gpu, cpu, rtol=1e-4, atol=1e-6)


def _opcheck_samples():
    pred, labels = make_inputs(37, 11, ignore_index=-1)
    pred, labels = pred.cuda(), labels.cuda()
    soft = torch.rand(37, 11, device='cuda')
    w_row = torch.rand(37, device='cuda')
    alpha = torch.rand(11, device='cuda')
    classes = labels.clamp(max=10)
    samples = [
        ('sigmoid', (pred.clone().requires_grad_(), labels, w_row, None), {'reduce': True}),
        ('sigmoid', (pred, soft, None, alpha), {'gamma': 1.5, 'alpha': None}),
        ('sigmoid_with_grad', (pred.clone().requires_grad_(), labels, None, alpha),
         {'alpha': None}),
        ('sigmoid_backward', (torch.rand(37, 11, device='cuda'), pred, labels, w_row, None), {}),
        ('softmax', (pred.clone().requires_grad_(), classes, w_row, None), {'reduce': True}),
        ('softmax_backward', (torch.rand(37, device='cuda'), pred, classes, None, alpha),
         {'gamma': 0.5, 'alpha': None}),
    ]
    return [pytest.param(*_raw_op_and_args(name, *tensors, **kwargs), id=name)
            for name, tensors, kwargs in samples]


@pytest.mark.parametrize('op,args', _opcheck_samples() if torch.cuda.is_available() else [])
def test_opcheck_cuda(op, args):
    torch.library.opcheck(op, args)


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


def test_cuda_training_step_backward_needs_no_sync():
    # The training path: fused forward + gradient, autograd's backward (the
    # gradient buffer scaled in place), a second backward through the backward
    # kernel, and softmax's backward. Every input is on the device beforehand
    # (a Python list alpha would be copied host-to-device, which syncs).
    pred, labels = make_inputs(20000, 80, ignore_index=-1)
    x = pred.cuda().requires_grad_(True)
    t = labels.cuda()
    soft_t = labels.clamp(0, 79).cuda()
    weight = torch.rand(20000, device='cuda')
    alpha = torch.rand(80, device='cuda')
    avg_factor = torch.full((), 37.0, device='cuda')
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        loss = sigmoid_focal_loss(x, t, weight, alpha=alpha, avg_factor=avg_factor)
        (fused, ) = torch.autograd.grad(loss, x, retain_graph=True)
        (recomputed, ) = torch.autograd.grad(loss, x)
        soft_loss = softmax_focal_loss(x, soft_t, weight, alpha=alpha, avg_factor=avg_factor)
        soft_loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode('default')
    _assert_close(recomputed, fused, **EXACT)
    expected = _run(sigmoid_focal_loss, pred, labels, 'cpu', weight=weight.cpu(),
                    alpha=alpha.cpu(), avg_factor=37.0)
    _assert_pair((loss, fused), expected)
    expected = _run(softmax_focal_loss, pred, labels.clamp(0, 79), 'cpu', weight=weight.cpu(),
                    alpha=alpha.cpu(), avg_factor=37.0)
    _assert_pair((soft_loss, x.grad), expected)


# ----------------------------------------------------------------------------
# Labels out of range: NaN for the row, on every path, never a wrong number
# ----------------------------------------------------------------------------
# (op, classes, bad label): sigmoid takes 0..C (C = background); softmax 0..K-1.
BAD_LABELS = [
    pytest.param(sigmoid_focal_loss, 4, 5, id='sigmoid-label-C+1'),
    pytest.param(sigmoid_focal_loss, 4, -5, id='sigmoid-negative-not-ignored'),
    pytest.param(softmax_focal_loss, 4, 4, id='softmax-label-K'),
    pytest.param(softmax_focal_loss, 4, -5, id='softmax-negative-not-ignored'),
]


def _bad_label_inputs(classes, bad):
    pred, labels = make_inputs(10, classes, background=False, ignore_index=-1)
    labels[3] = bad
    return pred, labels


def _assert_only_row_3_is_nan(values):
    values = values.cpu()
    assert torch.isnan(values[3]).all(), values[3]
    keep = torch.ones(values.size(0), dtype=torch.bool)
    keep[3] = False
    assert torch.isfinite(values[keep]).all(), values


@pytest.mark.parametrize('fn,classes,bad', BAD_LABELS)
def test_cuda_bad_label_gives_nan_not_a_wrong_number(fn, classes, bad):
    pred, labels = _bad_label_inputs(classes, bad)
    x, t = pred.cuda(), labels.cuda()
    _assert_only_row_3_is_nan(fn(x, t, reduction='none'))  # forward-only kernel
    assert torch.isnan(fn(x, t, reduction='sum')).item()
    trained = x.clone().requires_grad_(True)  # sigmoid: the fused loss + gradient kernel
    assert torch.isnan(fn(trained, t, reduction='sum')).item()
    assert torch.isnan(fn(trained, t, reduction='mean')).item()


@pytest.mark.parametrize('fn,classes,bad', BAD_LABELS)
def test_cuda_bad_label_gradient_is_nan_for_its_row_only(fn, classes, bad):
    pred, labels = _bad_label_inputs(classes, bad)
    x = pred.cuda().requires_grad_(True)
    loss = fn(x, labels.cuda(), reduction='none')
    assert torch.isnan(loss[3]).all()
    # Sum only the good rows: the bad row's gradient must still be NaN (its
    # kernel wrote NaN), and the others exact.
    keep = torch.ones(10, device='cuda')
    keep[3] = 0.0
    grad_output = keep[:, None].expand_as(loss) if loss.dim() == 2 else keep
    # sigmoid: first the fused gradient, then the backward kernel (retained graph).
    grads = [torch.autograd.grad(loss, x, grad_output, retain_graph=True)[0]]
    grads.append(torch.autograd.grad(loss, x, grad_output)[0])
    good = pred.clone()
    good_labels = labels.clone()
    good_labels[3] = -1  # ignored: the other rows' expected gradient
    _, expected = _run(fn, good, good_labels, 'cpu', reduction='sum')
    for grad in grads:
        _assert_only_row_3_is_nan(grad)
        rows = torch.arange(10) != 3
        _assert_close(grad.cpu()[rows], expected[rows], **EXACT)


@pytest.mark.parametrize('fn,classes,bad', BAD_LABELS)
def test_cuda_bad_label_through_the_backward_kernel(fn, classes, bad):
    pred, labels = _bad_label_inputs(classes, bad)
    name = 'sigmoid_backward' if fn is sigmoid_focal_loss else 'softmax_backward'
    grad = _raw(name, torch.tensor(1.0, device='cuda'), pred.cuda(), labels.cuda(), None, None,
                reduce=True)
    _assert_only_row_3_is_nan(grad)


def test_cuda_extreme_half_logits_are_finite():
    pred = torch.tensor([[-1e4, -12.0, 0.0, 12.0, 1e4]], dtype=torch.float16).cuda()
    x = pred.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(x, torch.tensor([3]).cuda(), reduction='none')
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(x.grad).all()
    ref = reference.sigmoid_focal_loss(pred.double().cpu(), torch.tensor([3]), reduction='none')
    torch.testing.assert_close(loss.double().cpu(), ref.half().double(), rtol=2e-3, atol=0)


# ----------------------------------------------------------------------------
# Empty batches: every op, every reduction
# ----------------------------------------------------------------------------
@pytest.mark.parametrize('fn', [sigmoid_focal_loss, softmax_focal_loss])
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
def test_cuda_empty_batch(fn, reduction):
    pred = torch.zeros(0, 80)
    labels = torch.zeros(0, dtype=torch.long)
    cpu, gpu = _cpu_and_cuda(fn, pred, labels, reduction=reduction)
    loss, grad = gpu
    assert loss.shape == cpu[0].shape and grad.shape == (0, 80)
    torch.testing.assert_close(loss, cpu[0], equal_nan=True)
    with torch.no_grad():  # the forward-only kernel
        loss = fn(pred.cuda(), labels.cuda(), reduction=reduction)
    torch.testing.assert_close(loss.cpu(), cpu[0], equal_nan=True)


@pytest.mark.parametrize('name', ['sigmoid_backward', 'softmax_backward'])
@pytest.mark.parametrize('reduce', [False, True])
def test_cuda_empty_batch_backward_kernels(name, reduce):
    pred = torch.zeros(0, 80, device='cuda')
    labels = torch.zeros(0, dtype=torch.long, device='cuda')
    per_element = (0, 80) if name == 'sigmoid_backward' else (0, )
    grad_output = torch.ones((), device='cuda') if reduce else torch.ones(per_element,
                                                                         device='cuda')
    grad = _raw(name, grad_output, pred, labels, None, None, reduce=reduce)
    assert grad.shape == (0, 80) and grad.device == pred.device


# ----------------------------------------------------------------------------
# Devices and streams
# ----------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason='needs 2 GPUs')
@pytest.mark.parametrize('fn', [sigmoid_focal_loss, softmax_focal_loss])
def test_cuda_second_device_while_first_is_current(fn):
    # A kernel launched on the current device (cuda:0) would read cuda:1's
    # memory through the wrong context: an error or wrong numbers.
    pred, labels = make_inputs(3000, 80, background=fn is sigmoid_focal_loss, ignore_index=-1)
    weight, alpha = torch.rand(3000), torch.rand(80)
    with torch.cuda.device(0):
        for reduction in ('none', 'sum', 'mean'):
            cpu, gpu = _cpu_and_cuda(fn, pred, labels, device='cuda:1', weight=weight,
                                     alpha=alpha, reduction=reduction)
            _assert_pair(gpu, cpu)
        x = pred.to('cuda:1')
        with torch.no_grad():
            out = fn(x, labels.to('cuda:1'), weight.to('cuda:1'), alpha=alpha.to('cuda:1'),
                     reduction='none')
        assert out.device == x.device
        assert torch.cuda.current_device() == 0
    torch.cuda.synchronize(1)


@pytest.mark.parametrize('fn', [sigmoid_focal_loss, softmax_focal_loss])
@pytest.mark.parametrize('reduction', ['none', 'sum'])
def test_cuda_runs_on_the_current_stream_after_its_producer(fn, reduction):
    # The input is written on a side stream behind a long-running kernel. An op
    # launched on any other stream (the default one) would read it before the
    # write: all-zero logits, hence wrong numbers.
    pred, labels = make_inputs(4000, 80, background=fn is sigmoid_focal_loss, ignore_index=-1)
    source = pred.cuda()
    t = labels.cuda()
    x = torch.zeros_like(source)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)  # on the order of 0.1 s of GPU time
        x.copy_(source)  # the producer, still queued when the op is launched
        x.requires_grad_(True)
        loss = fn(x, t, reduction=reduction)
        loss.sum().backward()
        loss_cpu, grad_cpu = loss.detach().cpu(), x.grad.cpu()
    expected = _run(fn, pred, labels, 'cpu', reduction=reduction)
    _assert_pair((loss_cpu, grad_cpu), expected)


# ----------------------------------------------------------------------------
# More than 2^31 elements: 64-bit indexing
# ----------------------------------------------------------------------------
def _chunked_reference(fn, pred, labels, rows):
    """float64 loss sum (and per-element loss/gradient of ``rows``) by chunks."""
    total = torch.zeros((), dtype=torch.float64, device=pred.device)
    step = max(1, (1 << 24) // pred.size(1))  # rows per chunk of ~16M elements
    for start in range(0, pred.size(0), step):
        total += fn(pred[start:start + step].double(), labels[start:start + step],
                    reduction='sum')
    x = pred[rows].double().requires_grad_(True)
    loss = fn(x, labels[rows], reduction='none')
    (grad, ) = torch.autograd.grad(loss.sum(), x)
    return total, loss.detach(), grad


@pytest.mark.skipif(_gpu_memory_gib() < 60, reason='needs a GPU with >= 60 GiB of memory')
@pytest.mark.parametrize('fn,classes', [(sigmoid_focal_loss, 80), (softmax_focal_loss, 1000)])
def test_cuda_more_than_2_to_the_31_elements(fn, classes):
    # float16: 4.3 GB per N x C tensor; pred, the 'none' loss (sigmoid) and two
    # gradients live at once.
    border = 2**31 // classes  # the first row with elements at flat index >= 2^31
    n = border + 16384
    g = torch.Generator(device='cuda').manual_seed(0)
    pred = torch.randn(n, classes, generator=g, device='cuda', dtype=torch.float16) * 3
    high = classes + 1 if fn is sigmoid_focal_loss else classes
    labels = torch.randint(0, high, (n, ), generator=g, device='cuda')
    # Rows past 2^31 carry large losses: dropped, or written elsewhere, they
    # would move the sum far beyond the tolerance.
    pred[border:] = 6.0
    if fn is softmax_focal_loss:
        labels[border:] = 0
        pred[border:, 0] = -6.0
    rows = torch.cat([torch.arange(0, 64), torch.arange(border - 64, n)]).cuda()
    ref_sum, ref_loss, ref_grad = _chunked_reference(reference_fn(fn), pred, labels, rows)
    assert ref_loss[64:].sum() > 1e-3 * ref_sum  # the tail matters

    with torch.no_grad():
        total = fn(pred, labels, reduction='sum')
        torch.testing.assert_close(total.double(), ref_sum, rtol=1e-3, atol=0)
        loss = fn(pred, labels, reduction='none')
        _assert_close(loss[rows].double(), ref_loss, rtol=2e-3, atol=1e-3)
        del loss
    x = pred.requires_grad_(True)
    total = fn(x, labels, reduction='sum')
    torch.testing.assert_close(total.detach().double(), ref_sum, rtol=1e-3, atol=0)
    (fused, ) = torch.autograd.grad(total, x, retain_graph=True)
    _assert_close(fused[rows].double(), ref_grad, rtol=2e-3, atol=1e-3)
    del fused
    (recomputed, ) = torch.autograd.grad(total, x)  # sigmoid: the backward kernel
    _assert_close(recomputed[rows].double(), ref_grad, rtol=2e-3, atol=1e-3)


def reference_fn(fn):
    return (reference.sigmoid_focal_loss
            if fn is sigmoid_focal_loss else reference.softmax_focal_loss)


# ----------------------------------------------------------------------------
# Arguments the other tests do not reach on CUDA
# ----------------------------------------------------------------------------
@pytest.mark.parametrize('fn', [sigmoid_focal_loss, softmax_focal_loss])
def test_cuda_ignore_index_255(fn):
    pred, labels = make_inputs(2000, 21, background=fn is sigmoid_focal_loss, ignore_index=255)
    assert (labels == 255).any()
    for reduction in ('none', 'mean'):
        cpu, gpu = _cpu_and_cuda(fn, pred, labels, ignore_index=255, reduction=reduction)
        _assert_pair(gpu, cpu)
    loss, grad = gpu
    assert (grad[labels == 255] == 0).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('reduction', ['none', 'mean'])
def test_cuda_half_soft_targets(dtype, reduction):
    pred, _ = make_inputs(3000, 80, dtype=dtype)
    target = torch.rand(3000, 80).to(dtype)
    cpu, gpu = _cpu_and_cuda(sigmoid_focal_loss, pred, target, weight=torch.rand(3000, 80),
                             gamma=1.5, reduction=reduction)
    _assert_pair(gpu, cpu, dtype)


@pytest.mark.parametrize('classes', [1, 32])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('reduction', ['none', 'sum', 'mean'])
def test_softmax_cuda_one_class_and_one_warp_of_classes(classes, dtype, reduction):
    # K = 1: p = 1, loss and gradient are exactly 0. K = 32: one class per lane.
    pred, labels = make_inputs(5000, classes, dtype=dtype, background=False, ignore_index=-1)
    cpu, gpu = _cpu_and_cuda(softmax_focal_loss, pred, labels, weight=torch.rand(5000),
                             alpha=0.25, reduction=reduction)
    _assert_pair(gpu, cpu, dtype)
    if classes == 1:
        assert not gpu[0].any() and not gpu[1].any()


def test_cuda_per_class_alpha_list_is_copied_to_the_device_once():
    # A Python list alpha is converted and copied host-to-device on first use
    # only; later calls reuse the device copy and do not synchronise.
    pred, labels = make_inputs(1000, 8)
    x, t = pred.cuda(), labels.cuda()
    alpha = [0.1 * i for i in range(1, 9)]
    first = sigmoid_focal_loss(x, t, alpha=alpha)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        second = sigmoid_focal_loss(x, t, alpha=alpha)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert torch.equal(first, second)
