"""Half-precision calls of at least 2^20 elements look zero-target elements up in a table.

The table holds the member's own functor evaluated at every 16-bit pattern, so
the looked-up values must be bitwise those of the direct evaluation, which a
call below the size threshold takes. (cpu/zero_target_table.h)
"""
import pytest
import torch

from focal_plugin.ops import (gaussian_focal_loss, quality_focal_loss, reference,
                              sigmoid_focal_loss, varifocal_loss)

TABLE_MIN_ELEMENTS = 16 * 2**16
C = 80
ROWS = TABLE_MIN_ELEMENTS // C + 7  # just above the threshold
SMALL = 512  # rows evaluated again in a call below it


def _logits(dtype, generator):
    x = torch.randn(ROWS, C, generator=generator) * 4
    # Extremes, zeros of both signs and values that round to subnormals.
    extremes = torch.tensor([1e4, -1e4, 3e4, -3e4, 0.0, -0.0, 1e-40, -1e-40, 88.0, -88.0])
    x[0, :extremes.numel()] = extremes
    x[1, :4] = torch.tensor([float('inf'), -float('inf'), float('nan'), 17.0])
    return x.to(dtype)


def _targets(generator):
    labels = torch.randint(0, C + 1, (ROWS, ), generator=generator)
    score = torch.rand(ROWS, generator=generator)
    soft = torch.zeros(ROWS, C)
    fg = labels < C
    soft[fg, labels[fg]] = torch.rand(int(fg.sum()), generator=generator)
    return labels, score, soft


def _members(dtype, labels, score, soft, rows):
    """(name, loss of pred[:rows]) for every elementwise member with mostly zero targets."""
    heatmap = soft.clone()
    heatmap[::97, 3] = 1.0  # gaussian peaks
    return [
        ('focal', lambda x: sigmoid_focal_loss(x, labels[:rows], reduction='none')),
        ('qfl', lambda x: quality_focal_loss(x, labels[:rows], score[:rows].to(dtype),
                                             reduction='none')),
        ('qfl-soft', lambda x: quality_focal_loss(x, soft[:rows].to(dtype), reduction='none')),
        ('vfl', lambda x: varifocal_loss(x, soft[:rows].to(dtype), reduction='none')),
        ('gaussian-logits', lambda x: gaussian_focal_loss(x, heatmap[:rows].to(dtype),
                                                          logits=True, reduction='none')),
    ]


def _assert_bitwise_equal(actual, expected, name):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True,
                               msg=lambda message: f"{name}: {message}")
    # assert_close takes -0.0 for 0.0; the bit patterns do not. (NaNs, equal
    # as NaNs above, may carry either operand's payload.)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    numbers = ~actual.isnan()
    assert torch.equal(actual.view(bits)[numbers], expected.view(bits)[numbers]), (
        f'{name}: the bit patterns differ (signed zeros?)')


def _calls(dtype, seed):
    """pred, the generator, and (name, call on all ROWS, call on the first SMALL)
    for every member."""
    g = torch.Generator().manual_seed(seed)
    pred = _logits(dtype, g)
    labels, score, soft = _targets(g)
    big = _members(dtype, labels, score, soft, ROWS)
    small = _members(dtype, labels, score, soft, SMALL)
    return pred, g, [(name, fn_big, fn_small) for (name, fn_big), (_, fn_small) in zip(big, small)]


def _loss_and_grad(fn, pred):
    x = pred.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward(torch.ones_like(loss))
    return loss.detach(), x.grad


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_table_values_are_bitwise_the_direct_evaluation(dtype):
    pred, _, calls = _calls(dtype, seed=0)
    for name, fn_big, fn_small in calls:
        loss_big, grad_big = _loss_and_grad(fn_big, pred)
        loss_small, grad_small = _loss_and_grad(fn_small, pred[:SMALL])
        _assert_bitwise_equal(loss_big[:SMALL], loss_small, name)
        _assert_bitwise_equal(grad_big[:SMALL], grad_small, name)
        assert torch.isfinite(grad_big[2:]).all(), name


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_table_with_weights_matches_the_direct_evaluation(dtype):
    # The table holds weight-1 values; a weight multiplies them, where the
    # functor may multiply it into another factor first: one rounding apart.
    g = torch.Generator().manual_seed(1)
    pred = _logits(dtype, g)[2:]
    labels, score, soft = (t[2:] for t in _targets(g))
    weight = torch.rand(ROWS - 2, C, generator=g)
    for fn in (lambda x, n: varifocal_loss(x, soft[:n].to(dtype), weight=weight[:n],
                                           reduction='none'),
               lambda x, n: sigmoid_focal_loss(x, labels[:n], weight[:n], reduction='none')):
        loss_big, grad_big = _loss_and_grad(lambda x: fn(x, ROWS - 2), pred)
        loss_small, grad_small = _loss_and_grad(lambda x: fn(x, SMALL), pred[:SMALL])
        one_rounding = 2 * torch.finfo(dtype).eps
        torch.testing.assert_close(loss_big[:SMALL], loss_small, rtol=one_rounding, atol=0)
        torch.testing.assert_close(grad_big[:SMALL], grad_small, rtol=one_rounding, atol=0)


def test_table_path_is_bitwise_identical_across_thread_counts():
    g = torch.Generator().manual_seed(2)
    pred = _logits(torch.bfloat16, g)[2:]
    labels, score, _ = (t[2:] for t in _targets(g))
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            x = pred.clone().requires_grad_(True)
            loss = quality_focal_loss(x, labels, score.bfloat16(), reduction='sum')
            loss.backward()
            results.append((loss.detach(), x.grad))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_loss_only_and_gradient_only_tables_are_bitwise_the_direct_evaluation(dtype):
    # Inference tabulates the loss alone, and a second backward through the
    # same graph (retain_graph) the gradient alone: one value per entry
    # instead of the training kernel's (loss, gradient) pairs.
    pred, g, calls = _calls(dtype, seed=3)
    grad_output = torch.rand(ROWS, C, generator=g).to(dtype)

    def second_gradient(fn, x):
        x = x.clone().requires_grad_(True)
        loss = fn(x)
        go = grad_output[:x.size(0)] if loss.dim() == 2 else grad_output[:x.size(0), 0]
        torch.autograd.grad(loss, x, go, retain_graph=True)  # the fused gradient
        return torch.autograd.grad(loss, x, go)[0]  # the gradient kernel

    for name, fn_big, fn_small in calls:
        with torch.no_grad():
            _assert_bitwise_equal(fn_big(pred)[:SMALL], fn_small(pred[:SMALL]), name)
        _assert_bitwise_equal(second_gradient(fn_big, pred)[:SMALL],
                              second_gradient(fn_small, pred[:SMALL]), name)


def _background_heavy_targets(rows, classes, generator):
    """Labels that are mostly background (runs of rows), a few foreground and
    ignored rows, and per-row weights that stay the same for a while: the
    shapes of the runs of background rows the kernel looks up as one stretch."""
    labels = torch.full((rows, ), classes)
    foreground = torch.rand(rows, generator=generator) < 0.02
    labels[foreground] = torch.randint(0, classes, (int(foreground.sum()), ), generator=generator)
    labels[torch.rand(rows, generator=generator) < 0.005] = -1  # ignore_index
    # Weights change every 37 rows, so that runs end where they change; 0.0
    # and -0.0 are different weights for the signs of the results.
    levels = torch.tensor([1.0, 0.5, 0.0, -0.0, 2.0])
    weight = levels[torch.arange(rows) // 37 % levels.numel()]
    score = torch.rand(rows, generator=generator)
    return labels, weight, score


@pytest.mark.parametrize('classes', [80, 76, 3])
def test_background_runs_are_bitwise_the_direct_evaluation(classes):
    # Runs of background rows are looked up across row boundaries: with 76
    # or 3 classes a vector spans rows, and the last values of a run are
    # evaluated directly.
    g = torch.Generator().manual_seed(4)
    rows = TABLE_MIN_ELEMENTS // classes + 7
    pred = (torch.randn(rows, classes, generator=g) * 4).bfloat16()
    labels, weight, score = _background_heavy_targets(rows, classes, g)
    qfl_labels = labels.clamp(min=0)  # QFL takes no ignore_index
    members = [
        ('focal', lambda x, n, w: sigmoid_focal_loss(x, labels[:n], w, reduction='none',
                                                     ignore_index=-1)),
        ('qfl', lambda x, n, w: quality_focal_loss(x, qfl_labels[:n], score[:n].bfloat16(), w,
                                                   reduction='none')),
    ]
    small = 2000
    for name, fn in members:
        for w in (None, weight):
            big_loss, big_grad = _loss_and_grad(
                lambda x: fn(x, rows, None if w is None else w), pred)
            small_loss, small_grad = _loss_and_grad(
                lambda x: fn(x, small, None if w is None else w[:small]), pred[:small])
            _assert_bitwise_equal(big_loss[:small], small_loss, name)
            _assert_bitwise_equal(big_grad[:small], small_grad, name)


@pytest.mark.parametrize('classes', [80, 3])
def test_background_runs_sum_like_the_reference(classes):
    g = torch.Generator().manual_seed(5)
    rows = TABLE_MIN_ELEMENTS // classes + 7
    pred = (torch.randn(rows, classes, generator=g) * 4).bfloat16()
    labels, weight, score = _background_heavy_targets(rows, classes, g)
    labels = labels.clamp(min=0)
    x = pred.clone().requires_grad_(True)
    loss = quality_focal_loss(x, labels, score.bfloat16(), weight, reduction='sum')
    loss.backward()
    expected = reference.quality_focal_loss(pred.double(), labels, score.bfloat16().double(),
                                            weight.double(), reduction='sum')
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0)


def test_table_is_filled_again_when_the_parameters_change():
    # A thread keeps its last table and uses it again for a call with the
    # same member, dtype, outputs and parameters: every change must refill it.
    g = torch.Generator().manual_seed(6)
    pred = _logits(torch.bfloat16, g)
    labels, score, _ = _targets(g)
    calls = [
        ('qfl beta 2', lambda x, n: quality_focal_loss(x, labels[:n], score[:n].bfloat16(),
                                                        reduction='none')),
        ('qfl beta 1.5', lambda x, n: quality_focal_loss(
            x, labels[:n], score[:n].bfloat16(), beta=1.5, reduction='none')),
        ('focal gamma 2', lambda x, n: sigmoid_focal_loss(x, labels[:n], reduction='none')),
        ('focal gamma 2, alpha .5', lambda x, n: sigmoid_focal_loss(
            x, labels[:n], alpha=0.5, reduction='none')),
        ('qfl beta 2 again', lambda x, n: quality_focal_loss(
            x, labels[:n], score[:n].bfloat16(), reduction='none')),
    ]
    for name, fn in calls + calls[::-1]:  # training: the (loss, gradient) tables
        loss_big, grad_big = _loss_and_grad(lambda x: fn(x, ROWS), pred)
        loss_small, grad_small = _loss_and_grad(lambda x: fn(x, SMALL), pred[:SMALL])
        _assert_bitwise_equal(loss_big[:SMALL], loss_small, name)
        _assert_bitwise_equal(grad_big[:SMALL], grad_small, name)
    with torch.no_grad():  # inference: the loss-only tables
        for name, fn in calls + calls[::-1]:
            _assert_bitwise_equal(fn(pred, ROWS)[:SMALL], fn(pred[:SMALL], SMALL), name)
    for dtype in (torch.float16, torch.bfloat16):  # the same parameters, another dtype
        x = pred.to(dtype)
        fn = calls[0][1]
        _assert_bitwise_equal(fn(x, ROWS)[:SMALL], fn(x[:SMALL], SMALL), str(dtype))


def test_table_is_filled_again_when_denormals_are_flushed():
    # torch.set_flush_denormal changes the functor's results near 0; a table
    # from the other mode must not be used. (One thread: the mode is per thread.)
    g = torch.Generator().manual_seed(7)
    pred = _logits(torch.bfloat16, g)
    pred[2:40, :20] = torch.linspace(-33.0, -27.0, 20).bfloat16()  # losses ~e^(3x): denormal
    labels = torch.full((ROWS, ), C)

    def losses():
        big = sigmoid_focal_loss(pred, labels, reduction='none')
        small = sigmoid_focal_loss(pred[:SMALL], labels[:SMALL], reduction='none')
        return big[:SMALL], small

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        results = {}
        for flush in (True, False, True, False):
            if not torch.set_flush_denormal(flush):
                pytest.skip('this CPU cannot flush denormals')
            big, small = losses()
            _assert_bitwise_equal(big, small, f'flush_denormal={flush}')
            results[flush] = big
        assert not torch.equal(results[False].view(torch.int16), results[True].view(torch.int16))
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
