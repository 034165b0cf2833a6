"""Benchmark the fused focal-loss op against the peers, in one run.

Forward + backward time and peak extra memory of ``sigmoid_focal_loss`` at
RetinaNet shapes, against:

- mmdet's ``FocalLoss`` on CPU (its pure-PyTorch path: one-hot target and
  ``py_sigmoid_focal_loss``), which is what mmdet runs without a GPU;
- ``torch.compile`` (Inductor) of the same formula (the package's reference);
- on a GPU, mmcv's CUDA ``sigmoid_focal_loss``;
- ``copy_`` of a tensor of the same size: the memory-bandwidth floor.

All variants of a case run round-robin in the same process, and the table
shows ratios measured in that same run, so a noisy machine shifts every
column together. Peak extra memory is measured as the growth of the process's
resident set (CPU; /proc/self VmHWM after resetting it) or of the CUDA
caching allocator's peak (GPU), in units of one N x C float32 buffer.
Between calls focal_plugin keeps its freed CPU output blocks for reuse (see
``focal_plugin.ops.empty_cpu_cache``); the memory figure empties that cache
first, so the gradient buffer is counted.

Example::

    python tools/benchmark_focal_loss.py                       # CPU, all cases
    python tools/benchmark_focal_loss.py --device cuda --repeat 20
    python tools/benchmark_focal_loss.py --cases 20000x80:float32 --out bench.json
"""
import argparse
import json
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

from focal_plugin.ops import empty_cpu_cache, reference, sigmoid_focal_loss

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
DEFAULT_CASES = ['250000x80:float32', '20000x80:float32', '250000x80:bfloat16',
                 '250000x80:float16']

# Memory traffic in units of one N x C tensor: forward reads pred; backward
# reads pred and writes the gradient. copy_ reads one and writes one.
FUSED_TRAFFIC, COPY_TRAFFIC = 3, 2


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _status_bytes(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'{key} not in /proc/self/status')


def peak_extra_bytes(fn: Callable[[], None], device: torch.device) -> Optional[int]:
    """Peak memory that one call of ``fn`` adds on top of what exists before it.

    focal_plugin's CPU output cache is emptied first, so its gradient buffer
    counts as new memory, as it does for the peers.
    """
    fn()  # warm caches and allocator pools first
    empty_cpu_cache()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # resets VmHWM to the current RSS
    except OSError:
        return None
    base = _status_bytes('VmRSS:')
    fn()
    return _status_bytes('VmHWM:') - base


def make_variants(pred: torch.Tensor, labels: torch.Tensor,
                  avg_factor: torch.Tensor) -> Dict[str, Callable[[], None]]:
    """Forward + backward of each implementation on the same inputs."""

    def fwd_bwd(loss_fn):
        def run():
            x = pred.detach().requires_grad_(True)
            loss = loss_fn(x)
            loss.backward()
            return x.grad
        return run

    variants = {
        'focal_plugin': fwd_bwd(lambda x: sigmoid_focal_loss(x, labels, avg_factor=avg_factor)),
    }
    try:
        from mmdet.models.losses import FocalLoss
    except ImportError:
        log('mmdet is not installed: skipping its FocalLoss')
    else:
        mmdet_loss = FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25)
        if pred.is_cuda:
            name = 'mmcv CUDA op (mmdet FocalLoss on GPU)'
        else:
            name = 'mmdet FocalLoss (CPU path)'
        variants[name] = fwd_bwd(lambda x: mmdet_loss(x, labels, avg_factor=avg_factor))

    compiled = torch.compile(reference.sigmoid_focal_loss, dynamic=False)
    variants['torch.compile(reference)'] = fwd_bwd(
        lambda x: compiled(x, labels, None, 2.0, 0.25, 'mean', avg_factor))

    src, dst = pred.detach().clone(), torch.empty_like(pred)
    variants['copy_ (bandwidth floor)'] = lambda: dst.copy_(src)
    return variants


def time_round_robin(variants: Dict[str, Callable], repeat: int, device: torch.device,
                     time_limit: float) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for name, fn in variants.items():  # warm-up (and torch.compile's compilation)
        t0 = time.perf_counter()
        fn()
        log(f'  warm-up {name}: {time.perf_counter() - t0:.2f} s')
    for r in range(repeat):
        for name, fn in variants.items():
            if device.type == 'cuda':
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
        spent = sum(sum(v) for v in times.values())
        log(f'  round {r + 1}/{repeat} done ({spent:.1f} s so far)')
        if spent > time_limit and r >= 2:
            log(f'  stopping after {r + 1} rounds: time limit {time_limit:.0f} s')
            break
    return times


def run_case(spec: str, device: torch.device, repeat: int, time_limit: float) -> dict:
    shape, dtype_name = spec.split(':')
    n, c = (int(v) for v in shape.split('x'))
    dtype = DTYPES[dtype_name]
    log(f'case N={n} C={c} {dtype_name} on {device}')
    g = torch.Generator().manual_seed(0)
    pred = (torch.randn(n, c, generator=g) * 3).to(device=device, dtype=dtype)
    # RetinaNet-like labels: ~1% positives, the rest background (label C).
    labels = torch.full((n, ), c, dtype=torch.long)
    pos = torch.rand(n, generator=g) < 0.01
    labels[pos] = torch.randint(0, c, (int(pos.sum()), ), generator=g)
    labels = labels.to(device)
    avg_factor = pos.sum().clamp_min(1).float().to(device)

    variants = make_variants(pred, labels, avg_factor)
    times = time_round_robin(variants, repeat, device, time_limit)
    buffer = n * c * 4
    rows = {}
    for name, fn in variants.items():
        peak = peak_extra_bytes(fn, device)
        rows[name] = {
            'median_ms': statistics.median(times[name]) * 1e3,
            'min_ms': min(times[name]) * 1e3,
            'runs': len(times[name]),
            'peak_extra_buffers': None if peak is None else peak / buffer,
        }
    ours = rows['focal_plugin']['median_ms']
    for row in rows.values():
        row['focal_plugin_speedup'] = row['median_ms'] / ours
    floor_ms = rows['copy_ (bandwidth floor)']['median_ms'] * FUSED_TRAFFIC / COPY_TRAFFIC
    return {
        'case': spec, 'n': n, 'c': c, 'dtype': dtype_name, 'device': str(device),
        'threads': torch.get_num_threads(), 'rows': rows,
        'fraction_of_bandwidth_floor': floor_ms / ours,
    }


def format_table(results: List[dict]) -> str:
    lines = [
        '| case | implementation | fwd+bwd median (ms) | focal_plugin speed-up | '
        'peak extra memory (N x C fp32 buffers) |',
        '|---|---|---:|---:|---:|',
    ]
    for res in results:
        for name, row in res['rows'].items():
            peak = row['peak_extra_buffers']
            peak_s = 'n/a' if peak is None else f'{peak:.2f}'
            lines.append(f"| {res['n']}x{res['c']} {res['dtype']} | {name} | "
                         f"{row['median_ms']:.1f} | {row['focal_plugin_speedup']:.1f}x | "
                         f'{peak_s} |')
    lines.append('')
    for res in results:
        lines.append(f"- {res['n']}x{res['c']} {res['dtype']}: focal_plugin runs at "
                     f"{res['fraction_of_bandwidth_floor']:.0%} of the memory-bandwidth floor "
                     f"(copy_ time x {FUSED_TRAFFIC}/{COPY_TRAFFIC}); {res['threads']} threads, "
                     f"{res['device']}.")
    return '\n'.join(lines)


def check_targets(results: List[dict]) -> List[str]:
    """The CPU targets of the op issue, for float32 N=250000 C=80."""
    verdicts = []
    for res in results:
        if not (res['device'] == 'cpu' and res['n'] == 250000 and res['c'] == 80
                and res['dtype'] == 'float32'):
            continue
        rows = res['rows']
        ours = rows['focal_plugin']
        mmdet = rows.get('mmdet FocalLoss (CPU path)')
        if mmdet is not None:
            s = mmdet['focal_plugin_speedup']
            verdicts.append(f"{'PASS' if s >= 20 else 'FAIL'}: >= 20x faster than mmdet's CPU "
                            f'path (measured {s:.1f}x)')
        s = rows['torch.compile(reference)']['focal_plugin_speedup']
        verdicts.append(f"{'PASS' if s > 1 else 'FAIL'}: faster than torch.compile of the "
                        f'formula (measured {s:.2f}x)')
        if ours['peak_extra_buffers'] is not None:
            p = ours['peak_extra_buffers']
            verdicts.append(f"{'PASS' if p <= 1.05 else 'FAIL'}: peak extra memory <= one "
                            f'N x C gradient buffer (measured {p:.2f} buffers)')
    return verdicts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', help='cpu or cuda. Defaults to cpu.')
    parser.add_argument('--cases', nargs='+', default=DEFAULT_CASES,
                        help='NxC:dtype specs. Defaults to RetinaNet shapes.')
    parser.add_argument('--repeat', type=int, default=7, help='Timed rounds. Defaults to 7.')
    parser.add_argument('--time-limit', type=float, default=120.0,
                        help='Seconds of timed rounds per case before stopping early '
                        '(at least 3 rounds run). Defaults to 120.')
    parser.add_argument('--out', help='Also write the results as JSON to this file.')
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f'--repeat must be >= 1, got {args.repeat}')
    for spec in args.cases:
        shape, _, dtype = spec.partition(':')
        dims = shape.split('x')
        valid_dims = len(dims) == 2 and all(d.isdigit() and int(d) > 0 for d in dims)
        if dtype not in DTYPES or not valid_dims:
            parser.error(f'--cases takes NxC:dtype with dtype in {sorted(DTYPES)}, got {spec!r}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    results = [run_case(spec, device, args.repeat, args.time_limit) for spec in args.cases]
    print(format_table(results))
    verdicts = check_targets(results)
    if verdicts:
        print()
        print('\n'.join(f'- {v}' for v in verdicts))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'results': results, 'targets': verdicts}, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
