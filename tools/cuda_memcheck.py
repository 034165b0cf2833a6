"""Run every CUDA kernel of the focal-loss family once, small, for a sanitizer.

Each op runs on odd shapes (not multiples of a block or a warp, one of them
spanning many blocks so the two-pass reduction has several partials) in each
of its kernels: the fused loss-and-gradient kernel (training), the
forward-only kernel (``torch.no_grad``) and the backward kernel (a second
backward through ``retain_graph``), for every reduction. Each CUDA result is
compared with the same call on CPU, so a kernel that reads or writes out of
bounds shows twice: in the sanitizer's report and as a mismatch here.

Meant to run under NVIDIA's compute-sanitizer, which checks every access of
every kernel (tools/gpu_check.sh does this when it finds the sanitizer)::

    compute-sanitizer --tool memcheck --error-exitcode 9 python tools/cuda_memcheck.py
    compute-sanitizer --tool racecheck --error-exitcode 9 python tools/cuda_memcheck.py

It exits 1 if a CUDA result differs from CPU, 2 without a CUDA device.
"""
import sys
from typing import Callable, Dict, List, Tuple

import torch

from focal_plugin.ops import (gaussian_focal_loss, quality_focal_loss, sigmoid_focal_loss,
                              softmax_focal_loss, varifocal_loss)

SHAPES = [(37, 7), (9001, 33)]  # one block; many blocks with a ragged tail
DTYPES = [torch.float32, torch.float16]
REDUCTIONS = ['none', 'sum', 'mean']


def _avg_factor(reduction: str, value):
    """avg_factor for 'mean' (mmdet rejects it with 'sum'; 'none' ignores it)."""
    return value if reduction == 'mean' else None


def make_case(loss: str, rows: int, classes: int, dtype: torch.dtype,
              g: torch.Generator) -> Tuple[torch.Tensor, Callable]:
    """pred (CPU) and a function of (pred, device, reduction) that calls the op."""
    pred = (torch.randn(rows, classes, generator=g) * 4).to(dtype)
    labels = torch.randint(0, classes + 1, (rows, ), generator=g)  # classes = background
    row_weight = torch.rand(rows, generator=g)
    if loss == 'sigmoid':
        labels[::11] = -1  # ignored rows
        weight = torch.rand(rows, classes, generator=g)
        return pred, lambda x, dev, red: sigmoid_focal_loss(
            x, labels.to(dev), weight.to(dev), reduction=red,
            avg_factor=_avg_factor(red, 17.0))
    if loss == 'softmax':
        labels = labels.clamp_max(classes - 1)
        labels[::13] = -1
        alpha = torch.rand(classes, generator=g).tolist()
        return pred, lambda x, dev, red: softmax_focal_loss(
            x, labels.to(dev), row_weight.to(dev), alpha=alpha, reduction=red)
    if loss == 'qfl':
        score = torch.rand(rows, generator=g).to(dtype)
        return pred, lambda x, dev, red: quality_focal_loss(
            x, labels.to(dev), score.to(dev), row_weight.to(dev), reduction=red,
            avg_factor=_avg_factor(red, torch.tensor(5.0, device=dev)))
    if loss == 'vfl':
        target = torch.zeros(rows, classes)
        keep = labels < classes
        target[keep, labels[keep]] = torch.rand(int(keep.sum()), generator=g)
        target = target.to(dtype)
        return pred, lambda x, dev, red: varifocal_loss(x, target.to(dev), reduction=red)
    # gaussian: probabilities in, a heatmap with a few exact 1s.
    prob = pred.float().sigmoid().clamp(1e-3, 1 - 1e-3).to(dtype)
    heat = torch.rand(rows, classes, generator=g)**4
    heat[torch.rand(rows, classes, generator=g) < 0.01] = 1.0
    heat = heat.to(dtype)
    return prob, lambda x, dev, red: gaussian_focal_loss(x, heat.to(dev), reduction=red)


def run_kernels(pred: torch.Tensor, call: Callable, device: str,
                reduction: str) -> Dict[str, torch.Tensor]:
    """Loss and gradient through each kernel: training, forward-only, backward."""
    out = {}
    x = pred.to(device).requires_grad_(True)
    loss = call(x, device, reduction)
    grad_out = torch.ones_like(loss)
    (g1, ) = torch.autograd.grad(loss, x, grad_out, retain_graph=True)  # fused kernel
    (g2, ) = torch.autograd.grad(loss, x, grad_out * 0.5)  # backward kernel
    with torch.no_grad():
        out['forward'] = call(pred.to(device), device, reduction)
    out.update(train_loss=loss.detach(), train_grad=g1, backward_grad=g2)
    return {k: v.float().cpu() for k, v in out.items()}


def main() -> int:
    if not torch.cuda.is_available():
        print('cuda_memcheck: no CUDA device', file=sys.stderr)
        return 2
    g = torch.Generator().manual_seed(0)
    failures: List[str] = []
    count = 0
    for loss in ('sigmoid', 'softmax', 'qfl', 'vfl', 'gaussian'):
        for rows, classes in SHAPES:
            for dtype in DTYPES:
                pred, call = make_case(loss, rows, classes, dtype, g)
                for reduction in REDUCTIONS:
                    cpu = run_kernels(pred, call, 'cpu', reduction)
                    cuda = run_kernels(pred, call, 'cuda', reduction)
                    torch.cuda.synchronize()
                    tol = 1e-4 if dtype == torch.float32 else 2e-2
                    for key in cpu:
                        count += 1
                        if not torch.allclose(cuda[key], cpu[key], rtol=tol, atol=tol,
                                              equal_nan=True):
                            err = (cuda[key] - cpu[key]).abs().nan_to_num(float('inf')).max()
                            failures.append(f'{loss} {rows}x{classes} {dtype} {reduction} '
                                            f'{key}: max |cuda - cpu| = {err:.3g}')
                print(f'{loss} {rows}x{classes} {str(dtype)[6:]}: every kernel, every reduction '
                      'ran', flush=True)
    for line in failures:
        print('MISMATCH', line)
    print(f'{count - len(failures)}/{count} CUDA results match CPU')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
