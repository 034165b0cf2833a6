"""Half-precision calls of at least 2^20 elements look zero-target elements up in a table.

The table holds the member's own functor evaluated at every 16-bit pattern, so
the looked-up values must be bitwise those of the direct evaluation, which a
call below the size threshold takes. (cpu/zero_target_table.h)
"""
import pytest
import torch

from focal_plugin.ops import (gaussian_focal_loss, quality_focal_loss, sigmoid_focal_loss,
                              varifocal_loss)

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


def _loss_and_grad(fn, pred):
    x = pred.clone().requires_grad_(True)
    loss = fn(x)
    loss.backward(torch.ones_like(loss))
    return loss.detach(), x.grad


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_table_values_are_bitwise_the_direct_evaluation(dtype):
    g = torch.Generator().manual_seed(0)
    pred = _logits(dtype, g)
    labels, score, soft = _targets(g)
    big = _members(dtype, labels, score, soft, ROWS)
    small = _members(dtype, labels, score, soft, SMALL)
    for (name, fn_big), (_, fn_small) in zip(big, small):
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
    g = torch.Generator().manual_seed(3)
    pred = _logits(dtype, g)
    labels, score, soft = _targets(g)
    big = _members(dtype, labels, score, soft, ROWS)
    small = _members(dtype, labels, score, soft, SMALL)
    grad_output = torch.rand(ROWS, C, generator=g).to(dtype)

    def second_gradient(fn, x):
        x = x.clone().requires_grad_(True)
        loss = fn(x)
        go = grad_output[:x.size(0)] if loss.dim() == 2 else grad_output[:x.size(0), 0]
        torch.autograd.grad(loss, x, go, retain_graph=True)  # the fused gradient
        return torch.autograd.grad(loss, x, go)[0]  # the gradient kernel

    for (name, fn_big), (_, fn_small) in zip(big, small):
        with torch.no_grad():
            _assert_bitwise_equal(fn_big(pred)[:SMALL], fn_small(pred[:SMALL]), name)
        _assert_bitwise_equal(second_gradient(fn_big, pred)[:SMALL],
                              second_gradient(fn_small, pred[:SMALL]), name)
