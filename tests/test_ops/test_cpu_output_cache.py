"""The CPU output cache (cpu_output_cache.h): a freed output is reused, a live one never."""
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from focal_plugin.ops import (cpu_cache_bytes, empty_cpu_cache, is_loaded, reference,
                              sigmoid_focal_loss, softmax_focal_loss)

from .utils import make_inputs

pytestmark = pytest.mark.skipif(not is_loaded(), reason='the C++ extension is not built')

MIB = 1 << 20


@pytest.fixture(autouse=True)
def empty_cache():
    empty_cpu_cache()
    yield
    empty_cpu_cache()


def _elementwise_loss(n, c=512, seed=0):
    """The per-element sigmoid focal loss of an n x c float32 input (1 MiB per 512 rows)."""
    pred, labels = make_inputs(n, c, seed=seed)
    return sigmoid_focal_loss(pred, labels, reduction='none')


def test_freed_output_is_reused_by_the_next_call():
    first = _elementwise_loss(1024)
    address, nbytes = first.data_ptr(), first.nbytes
    assert cpu_cache_bytes() == 0
    del first
    assert cpu_cache_bytes() == nbytes
    second = _elementwise_loss(1024, seed=1)
    assert second.data_ptr() == address
    assert cpu_cache_bytes() == 0


def test_reused_block_holds_the_new_values():
    _elementwise_loss(1024, seed=0)  # freed at once: its block is cached
    assert cpu_cache_bytes() > 0
    pred, labels = make_inputs(1024, 512, seed=1)
    loss = sigmoid_focal_loss(pred, labels, reduction='none')
    expected = reference.sigmoid_focal_loss(pred, labels, reduction='none')
    torch.testing.assert_close(loss, expected)


def test_live_output_is_never_reused_or_overwritten():
    first = _elementwise_loss(1024, seed=0)
    kept = first.clone()
    second = _elementwise_loss(1024, seed=1)
    assert second.data_ptr() != first.data_ptr()
    assert torch.equal(first, kept)
    assert not torch.equal(second, kept)


def test_view_keeps_the_block_alive():
    first = _elementwise_loss(1024)
    row = first[3]
    kept = row.clone()
    del first
    assert cpu_cache_bytes() == 0  # the view still uses the block
    second = _elementwise_loss(1024, seed=1)
    assert torch.equal(row, kept)
    del row
    assert cpu_cache_bytes() == second.nbytes


def test_gradient_buffer_is_reused_across_training_steps():
    pred, labels = make_inputs(8192, 80)  # a 2.5 MiB gradient
    addresses = set()
    for _ in range(4):
        x = pred.clone().requires_grad_(True)
        softmax_focal_loss(x, labels.clamp(max=79)).backward()
        addresses.add(x.grad.data_ptr())
        del x
    assert len(addresses) == 1


def test_small_outputs_bypass_the_cache():
    small = _elementwise_loss(256)  # 0.5 MiB
    assert small.nbytes < MIB
    del small
    assert cpu_cache_bytes() == 0


def test_block_is_not_reused_for_an_output_under_half_its_size():
    big = _elementwise_loss(4096)  # 8 MiB
    big_address, big_bytes = big.data_ptr(), big.nbytes
    del big
    small = _elementwise_loss(1024)  # 2 MiB: would pin 8 MiB
    assert small.data_ptr() != big_address
    assert cpu_cache_bytes() == big_bytes
    half = _elementwise_loss(2048)  # 4 MiB: exactly half, may reuse it
    assert half.data_ptr() == big_address


def test_at_most_four_freed_blocks_are_kept():
    outputs = [_elementwise_loss(512 * (k + 1)) for k in range(6)]  # 1..6 MiB
    sizes = [out.nbytes for out in outputs]
    while outputs:
        outputs.pop(0)
    # Freed in order 1..6 MiB; the two least recently freed are evicted.
    assert cpu_cache_bytes() == sum(sizes[2:])
    assert empty_cpu_cache() == sum(sizes[2:])
    assert cpu_cache_bytes() == 0
    assert empty_cpu_cache() == 0


def test_outputs_are_correct_when_called_from_many_threads():
    inputs = [make_inputs(1024, 512, seed=seed) for seed in range(8)]
    expected = [reference.sigmoid_focal_loss(p, t, reduction='none') for p, t in inputs]

    def run(k):
        results = []
        for _ in range(5):  # frees and reuses blocks while other threads do too
            pred, labels = inputs[k]
            results.append(sigmoid_focal_loss(pred, labels, reduction='none'))
            if len(results) > 2:
                del results[0]
        return results[-1]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(8)))
    for actual, wanted in zip(results, expected):
        torch.testing.assert_close(actual, wanted)
    assert len({out.data_ptr() for out in results}) == len(results)


def test_output_resizes_like_at_empty_and_returns_its_block():
    out = _elementwise_loss(1024)
    kept = out.clone()
    out.resize_(2048, 512)  # moves to the CPU allocator's memory
    assert torch.equal(out[:1024], kept)
    assert cpu_cache_bytes() == kept.nbytes
