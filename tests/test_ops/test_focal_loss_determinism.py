"""Reductions are deterministic: bitwise-identical results for 1 and 2 threads."""
import pytest
import torch

from focal_plugin.ops import sigmoid_focal_loss, softmax_focal_loss

from .utils import make_inputs


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('fn,dtype', [(sigmoid_focal_loss, torch.float32),
                                      (sigmoid_focal_loss, torch.bfloat16),
                                      (softmax_focal_loss, torch.float32)])
def test_bitwise_identical_across_thread_counts(fn, dtype, restore_threads):
    # Many chunks of rows (16384 elements each), so the threads really split work.
    pred, labels = make_inputs(6007, 80, dtype=dtype)
    labels = labels.clamp(max=79)
    weight = torch.rand(6007)
    results = []
    for threads in (1, 2, 1):
        torch.set_num_threads(threads)
        x = pred.clone().requires_grad_(True)
        loss = fn(x, labels, weight, reduction='sum')
        loss.backward()
        results.append((loss.detach(), x.grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0])
        assert torch.equal(grad, results[0][1])
