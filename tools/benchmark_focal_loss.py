"""Benchmark the fused focal-loss family against the peers, in one run.

Forward + backward time and peak extra memory of each fused loss against:

- focal: ``sigmoid_focal_loss`` at RetinaNet shapes against mmdet's
  ``FocalLoss`` (on CPU its pure-PyTorch path, one-hot target and
  ``py_sigmoid_focal_loss``; on a GPU mmcv's CUDA op, or that same Python
  path where mmcv was built without CUDA) and ``torch.compile``
  (Inductor) of the same formula (the package's reference);
- qfl / vfl: ``quality_focal_loss`` / ``varifocal_loss`` at an RTMDet-like
  shape (8 images x 8400 priors x 80 classes) against mmdet's
  ``QualityFocalLoss`` / ``VarifocalLoss`` and ``torch.compile`` of mmdet's
  loss function;
- gaussian: ``gaussian_focal_loss`` on CenterNet's heatmap (8 x 80 x 128 x
  128, eight objects per image drawn as CenterNet's head draws its targets:
  nearly every element 0) against mmdet's ``GaussianFocalLoss`` and
  ``torch.compile`` of it;

The fused side calls the ops, which need only torch (as on a bare GPU
machine); the registry classes add a reshape and argument checks on top.
- every case: ``copy_`` of a tensor of pred's size, the memory-bandwidth floor.

All variants of a case run round-robin in the same process, and the table
shows ratios measured in that same run, so a noisy machine shifts every
column together. On a GPU each sample is 10 calls queued back to back and
one synchronisation (``CUDA_CALLS_PER_SAMPLE``), per call. Peak extra
memory is measured as the growth of the process's resident set (CPU;
/proc/self VmHWM after resetting it) or of the CUDA caching allocator's peak
(GPU), in units of one float32 buffer of pred's size.
On CPU the free memory that glibc keeps in its heap is handed back
(``malloc_trim``) before each measurement: blocks served from it would
otherwise already be resident, and a variant's temporaries would not show.
Between calls focal_plugin keeps its freed CPU output blocks for reuse (see
``focal_plugin.ops.empty_cpu_cache``); the memory figure empties that cache
first, so the gradient buffer is counted.

The peers' CPU times depend on the allocator. With glibc's defaults
(``--malloc default``) a freed block above its mmap threshold (dynamic, at
most 32 MiB) goes back to the system, and the next call faults its pages in
again: a large part of the peers' time at these shapes. ``--malloc retain``
makes glibc keep freed memory for reuse (no mmap for large blocks, no
trimming), as a caching allocator such as jemalloc or tcmalloc would, so the
peers' temporaries cost their arithmetic only.

Cases are ``LOSS:SHAPE:DTYPE`` (``focal:250000x80:float32``,
``gaussian:8x80x128x128:bfloat16``); a bare ``NxC:DTYPE`` is a focal case.

Example::

    python tools/benchmark_focal_loss.py                       # CPU, all cases
    python tools/benchmark_focal_loss.py --device cuda --repeat 20
    python tools/benchmark_focal_loss.py --cases qfl:8x8400x80:float32 --out bench.json
"""
import argparse
import ctypes
import importlib
import json
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from focal_plugin.ops import (empty_cpu_cache, extension, gaussian_focal_loss,
                              quality_focal_loss, reference, sigmoid_focal_loss,
                              varifocal_loss)

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
LOSSES = ('focal', 'qfl', 'vfl', 'gaussian')
DEFAULT_CASES = [
    'focal:250000x80:float32', 'focal:20000x80:float32', 'focal:250000x80:bfloat16',
    'focal:250000x80:float16', 'qfl:8x8400x80:float32', 'qfl:8x8400x80:bfloat16',
    'vfl:8x8400x80:float32', 'vfl:8x8400x80:bfloat16', 'gaussian:8x80x128x128:float32',
    'gaussian:8x80x128x128:bfloat16'
]
# The fused loss's row in every table, and the peers it is compared with.
OURS = 'focal_plugin'
MMDET_CPU = 'mmdet (CPU path)'
MMCV_CUDA = 'mmcv CUDA op (mmdet FocalLoss on GPU)'
MMDET_GPU = 'mmdet (on GPU)'
MMDET_PY_GPU = "mmdet FocalLoss's Python path (on GPU; mmcv without CUDA ops)"
COMPILED = 'torch.compile(formula)'
COPY = 'copy_ (bandwidth floor)'

# On a GPU a sample is this many calls queued back to back, then one
# synchronisation, per call: as in training, where the host queues kernels
# ahead of the device, a call costs the longer of its host time (Python,
# dispatcher, launches) and its device time, not their sum plus a sync.
CUDA_CALLS_PER_SAMPLE = 10


def calls_per_sample(device: torch.device) -> int:
    return CUDA_CALLS_PER_SAMPLE if device.type == 'cuda' else 1

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


# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def retain_freed_memory() -> None:
    """Makes glibc keep freed memory for reuse: large blocks come from the
    heap instead of mmap, and the heap is never trimmed (``--malloc retain``)."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        done = libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    except (OSError, AttributeError):  # not glibc
        done = False
    if not done:
        raise SystemExit('--malloc retain needs glibc (mallopt); this C library has none')


def _release_free_heap_memory() -> None:
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def peak_extra_bytes(fn: Callable[[], None], device: torch.device) -> Optional[int]:
    """Peak memory that one call of ``fn`` adds on top of what exists before it.

    focal_plugin's CPU output cache is emptied first, so its gradient buffer
    counts as new memory, as it does for the peers. On CPU it is the smaller
    of two measured calls: with transparent huge pages, a call that happens
    to grow the heap by a few bytes faults in a whole 2 MiB page; memory a
    call needs shows up in both.
    """
    fn()  # warm caches and allocator pools first
    if device.type == 'cuda':
        empty_cpu_cache()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    peaks = []
    for _ in range(2):
        empty_cpu_cache()
        _release_free_heap_memory()
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')  # resets VmHWM to the current RSS
        except OSError:
            return None
        base = _status_bytes('VmRSS:')
        fn()
        peaks.append(_status_bytes('VmHWM:') - base)
    return min(peaks)


def _fwd_bwd(pred: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]):
    def run():
        x = pred.detach().requires_grad_(True)
        loss_fn(x).backward()
        return x.grad

    return run


def _mmdet_losses() -> Optional[object]:
    try:
        from mmdet.models import losses
    except ImportError:
        log('mmdet is not installed: skipping its losses and torch.compile of their formulas')
        return None
    return losses


def _mmcv_has_cuda_ops() -> bool:
    """Whether mmcv's compiled ops include CUDA kernels (mmdet's FocalLoss needs
    them on a GPU)."""
    try:
        from mmcv.ops import get_compiling_cuda_version
    except ImportError:
        return False
    return get_compiling_cuda_version() != 'not available'


def centernet_heatmap(shape: tuple, g: torch.Generator,
                      objects_per_image: int = 8) -> torch.Tensor:
    """A (B, C, H, W) heatmap as mmdet's CenterNet head draws its targets.

    Each object is a gaussian of radius r (2 to 11 pixels, sigma = (2r + 1) /
    6) around its centre, which is exactly 1, in its class's map, merged by
    maximum (``gen_gaussian_target``); everything else is 0. Other shapes are
    taken as (1, prod(leading dims), H, W).
    """
    h, w = shape[-2:]
    images = shape[0] if len(shape) == 4 else 1
    maps = int(torch.tensor(shape[:-2]).prod()) // images
    heatmap = torch.zeros(images, maps, h, w)
    ys = torch.arange(h, dtype=torch.float32)[:, None]
    xs = torch.arange(w, dtype=torch.float32)[None, :]
    for image in range(images):
        for _ in range(objects_per_image):
            cls = int(torch.randint(0, maps, (1, ), generator=g))
            cy, cx = (int(v) for v in torch.randint(0, min(h, w), (2, ), generator=g))
            r = int(torch.randint(2, 12, (1, ), generator=g))
            sigma = (2 * r + 1) / 6
            blob = torch.exp(-((ys - cy)**2 + (xs - cx)**2) / (2 * sigma * sigma))
            blob[((ys - cy).abs() > r) | ((xs - cx).abs() > r)] = 0.0
            torch.maximum(heatmap[image, cls], blob, out=heatmap[image, cls])
    return heatmap.reshape(shape)


def make_inputs(loss: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> tuple:
    """pred and the loss's other arguments, like a training step's."""
    g = torch.Generator().manual_seed(0)
    pred = (torch.randn(*shape, generator=g) * 3).to(device=device, dtype=dtype)
    rows, classes = (shape[0], shape[1]) if loss == 'focal' else (
        int(torch.tensor(shape[:-1]).prod()), shape[-1])
    positive = torch.rand(rows, generator=g) < 0.01  # ~1% positives, as in dense detectors
    labels = torch.full((rows, ), classes, dtype=torch.long)
    labels[positive] = torch.randint(0, classes, (int(positive.sum()), ), generator=g)
    avg_factor = positive.sum().clamp_min(1).float().to(device)
    if loss == 'focal':
        return pred, (labels.to(device), ), avg_factor
    if loss == 'qfl':
        pred = pred.reshape(rows, classes)
        # In pred's dtype: mmdet's QualityFocalLoss fails on float32 scores with
        # reduced-precision predictions.
        score = torch.rand(rows, generator=g).to(device=device, dtype=dtype)
        return pred, ((labels.to(device), score), ), avg_factor
    if loss == 'vfl':
        pred = pred.reshape(rows, classes)
        target = torch.zeros(rows, classes)
        keep = labels < classes
        target[keep, labels[keep]] = torch.rand(int(keep.sum()), generator=g)
        return pred, (target.to(device=device, dtype=dtype), ), avg_factor
    # gaussian: probabilities in, and a heatmap as CenterNet's head draws it.
    heatmap = centernet_heatmap(shape, g)
    prob = pred.float().sigmoid().clamp(1e-4, 1 - 1e-4).to(dtype)
    return prob, (heatmap.to(device=device, dtype=dtype), ), avg_factor


def make_variants(loss: str, pred: torch.Tensor, args: tuple,
                  avg_factor: torch.Tensor) -> Dict[str, Callable[[], None]]:
    """Forward + backward of each implementation on the same inputs."""
    mmdet = _mmdet_losses()
    if loss == 'focal':
        labels = args[0]
        variants = {
            OURS: _fwd_bwd(pred, lambda x: sigmoid_focal_loss(x, labels, avg_factor=avg_factor))
        }
        if mmdet is not None and pred.is_cuda and not _mmcv_has_cuda_ops():
            # mmdet's FocalLoss calls mmcv's CUDA op on a GPU; an mmcv built
            # without CUDA has none, so time the path FocalLoss takes on CPU
            # (one-hot target, py_sigmoid_focal_loss) on the GPU instead.
            from mmdet.models.losses.focal_loss import py_sigmoid_focal_loss
            classes = pred.size(1)
            variants[MMDET_PY_GPU] = _fwd_bwd(
                pred, lambda x: py_sigmoid_focal_loss(
                    x, F.one_hot(labels, classes + 1)[:, :classes], None, 2.0, 0.25, 'mean',
                    avg_factor))
        elif mmdet is not None:
            stock = mmdet.FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25)
            variants[MMCV_CUDA if pred.is_cuda else MMDET_CPU] = _fwd_bwd(
                pred, lambda x: stock(x, labels, avg_factor=avg_factor))
        compiled = torch.compile(reference.sigmoid_focal_loss, dynamic=False)
        variants[COMPILED] = _fwd_bwd(
            pred, lambda x: compiled(x, labels, None, 2.0, 0.25, 'mean', avg_factor))
    else:
        fused, stock_name, formula = {
            'qfl': (lambda x: quality_focal_loss(x, *args[0], avg_factor=avg_factor),
                    'QualityFocalLoss', 'gfocal_loss.quality_focal_loss'),
            'vfl': (lambda x: varifocal_loss(x, args[0], avg_factor=avg_factor), 'VarifocalLoss',
                    'varifocal_loss.varifocal_loss'),
            # Elementwise: the (B, C, H, W) heatmap as rows of its last axis.
            'gaussian': (lambda x: gaussian_focal_loss(
                x.reshape(-1, x.size(-1)), args[0].reshape(-1, x.size(-1)),
                avg_factor=avg_factor), 'GaussianFocalLoss',
                         'gaussian_focal_loss.gaussian_focal_loss'),
        }[loss]
        variants = {OURS: _fwd_bwd(pred, fused)}
        if mmdet is not None:
            stock = getattr(mmdet, stock_name)()
            variants[MMDET_GPU if pred.is_cuda else MMDET_CPU] = _fwd_bwd(
                pred, lambda x: stock(x, *args, avg_factor=avg_factor))
            module, function = formula.split('.')
            compiled = torch.compile(
                getattr(importlib.import_module(f'mmdet.models.losses.{module}'), function),
                dynamic=False)
            variants[COMPILED] = _fwd_bwd(
                pred, lambda x: compiled(x, *args, avg_factor=avg_factor))
    src, dst = pred.detach().clone(), torch.empty_like(pred)
    variants[COPY] = lambda: dst.copy_(src)
    return variants


def time_round_robin(variants: Dict[str, Callable], repeat: int, device: torch.device,
                     time_limit: float) -> Dict[str, List[float]]:
    times: Dict[str, List[float]] = {name: [] for name in variants}
    for name, fn in variants.items():  # warm-up (and torch.compile's compilation)
        t0 = time.perf_counter()
        fn()
        log(f'  warm-up {name}: {time.perf_counter() - t0:.2f} s')
    calls = calls_per_sample(device)
    for r in range(repeat):
        for name, fn in variants.items():
            if device.type == 'cuda':
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            if device.type == 'cuda':
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / calls)
        spent = sum(sum(v) for v in times.values())
        log(f'  round {r + 1}/{repeat} done ({spent:.1f} s so far)')
        if spent > time_limit and r >= 2:
            log(f'  stopping after {r + 1} rounds: time limit {time_limit:.0f} s')
            break
    return times


def parse_case(spec: str) -> tuple:
    """``LOSS:SHAPE:DTYPE`` (or ``NxC:DTYPE`` for focal) -> (loss, shape, dtype name)."""
    parts = spec.split(':')
    if len(parts) == 2:
        parts = ['focal'] + parts
    if len(parts) != 3:
        raise ValueError(spec)
    loss, shape, dtype = parts
    dims = shape.split('x')
    if (loss not in LOSSES or dtype not in DTYPES
            or not all(d.isdigit() and int(d) > 0 for d in dims)
            or (loss == 'focal' and len(dims) != 2) or len(dims) < 2):
        raise ValueError(spec)
    return loss, tuple(int(d) for d in dims), dtype


def time_case(spec: str, device: torch.device, repeat: int, time_limit: float) -> dict:
    loss, shape, dtype_name = parse_case(spec)
    log(f'case {loss} {"x".join(map(str, shape))} {dtype_name} on {device}')
    pred, args, avg_factor = make_inputs(loss, shape, DTYPES[dtype_name], device)
    variants = make_variants(loss, pred, args, avg_factor)
    times = time_round_robin(variants, repeat, device, time_limit)
    rows = {
        name: {
            'median_ms': statistics.median(times[name]) * 1e3,
            'min_ms': min(times[name]) * 1e3,
            'runs': len(times[name]),
        }
        for name in variants
    }
    ours = rows[OURS]['median_ms']
    for row in rows.values():
        row['focal_plugin_speedup'] = row['median_ms'] / ours
    floor_ms = rows[COPY]['median_ms'] * FUSED_TRAFFIC / COPY_TRAFFIC
    return {
        'case': f'{loss}:{"x".join(map(str, shape))}:{dtype_name}', 'loss': loss,
        'shape': 'x'.join(map(str, shape)), 'dtype': dtype_name, 'device': str(device),
        'threads': torch.get_num_threads(), 'rows': rows,
        'calls_per_sample': calls_per_sample(device),
        'cpu_kernels': extension.cpu_isa() if device.type == 'cpu' else None,
        'fraction_of_bandwidth_floor': floor_ms / ours,
    }


def measure_memory(result: dict) -> None:
    """Adds each variant's peak extra memory to a timed case's rows."""
    loss, shape, dtype_name = parse_case(result['case'])
    device = torch.device(result['device'])
    log(f'memory of {result["case"]}')
    pred, args, avg_factor = make_inputs(loss, shape, DTYPES[dtype_name], device)
    for name, fn in make_variants(loss, pred, args, avg_factor).items():
        peak = peak_extra_bytes(fn, device)
        result['rows'][name]['peak_extra_buffers'] = (None if peak is None else
                                                      peak / (pred.numel() * 4))


def format_table(results: List[dict]) -> str:
    lines = [
        '| case | implementation | fwd+bwd median (ms) | focal_plugin speed-up | '
        'peak extra memory (fp32 buffers of pred\'s size) |',
        '|---|---|---:|---:|---:|',
    ]
    for res in results:
        for name, row in res['rows'].items():
            peak = row['peak_extra_buffers']
            peak_s = 'n/a' if peak is None else f'{peak:.2f}'
            lines.append(f"| {res['loss']} {res['shape']} {res['dtype']} | {name} | "
                         f"{row['median_ms']:.1f} | {row['focal_plugin_speedup']:.1f}x | "
                         f'{peak_s} |')
    lines.append('')
    for res in results:
        lines.append(f"- {res['loss']} {res['shape']} {res['dtype']}: focal_plugin runs at "
                     f"{res['fraction_of_bandwidth_floor']:.0%} of the memory-bandwidth floor "
                     f"(copy_ time x {FUSED_TRAFFIC}/{COPY_TRAFFIC}); {res['threads']} threads, "
                     f"{res['device']}" + (f", {res['cpu_kernels']} kernels"
                                           if res.get('cpu_kernels') else '') +
                     f", --malloc {res.get('malloc', 'default')}.")
    return '\n'.join(lines)


# CPU targets: (loss, shape, dtype) -> minimum speed-up over mmdet's CPU path.
# The focal case keeps its original 20x; each family member needs 10x. Every
# target case must also beat torch.compile and add at most one buffer of
# pred's size (the gradient).
CPU_TARGETS = {('focal', '250000x80', 'float32'): 20.0}
for _loss, _shape in (('qfl', '8x8400x80'), ('vfl', '8x8400x80'),
                      ('gaussian', '8x80x128x128')):
    for _dtype in ('float32', 'bfloat16'):
        CPU_TARGETS[(_loss, _shape, _dtype)] = 10.0


def check_targets(results: List[dict]) -> List[str]:
    """The CPU targets, for the cases of CPU_TARGETS that were run."""
    verdicts = []
    for res in results:
        key = (res['loss'], res['shape'], res['dtype'])
        if res['device'] != 'cpu' or key not in CPU_TARGETS:
            continue
        case = ' '.join(key)
        rows = res['rows']
        mmdet = rows.get(MMDET_CPU)
        if mmdet is not None:
            s = mmdet['focal_plugin_speedup']
            verdicts.append(f"{'PASS' if s >= CPU_TARGETS[key] else 'FAIL'}: {case}: "
                            f">= {CPU_TARGETS[key]:.0f}x faster than mmdet's CPU path "
                            f'(measured {s:.1f}x)')
        if COMPILED in rows:
            s = rows[COMPILED]['focal_plugin_speedup']
            verdicts.append(f"{'PASS' if s > 1 else 'FAIL'}: {case}: faster than torch.compile "
                            f'of the formula (measured {s:.2f}x)')
        peak = rows[OURS]['peak_extra_buffers']
        if peak is not None:
            # One gradient buffer in pred's dtype, in a block of the output cache
            # (rounded up to 2 MiB), plus 1% for the call's small tensors.
            numel = 1
            for d in res['shape'].split('x'):
                numel *= int(d)
            itemsize = DTYPES[res['dtype']].itemsize
            allowed = (numel * itemsize + 2 * 2**20) / (numel * 4) + 0.01
            verdicts.append(f"{'PASS' if peak <= allowed else 'FAIL'}: {case}: peak extra "
                            f'memory <= one gradient buffer in pred\'s dtype ({allowed:.2f} '
                            f'fp32 buffers with the 2 MiB block rounding; measured {peak:.2f})')
    return verdicts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cpu', help='cpu or cuda. Defaults to cpu.')
    parser.add_argument('--cases', nargs='+', default=DEFAULT_CASES,
                        help='LOSS:SHAPE:DTYPE specs, LOSS in focal, qfl, vfl, gaussian. '
                        'Defaults to RetinaNet, RTMDet and CenterNet shapes.')
    parser.add_argument('--repeat', type=int, default=7, help='Timed rounds. Defaults to 7.')
    parser.add_argument('--time-limit', type=float, default=120.0,
                        help='Seconds of timed rounds per case before stopping early '
                        '(at least 3 rounds run). Defaults to 120.')
    parser.add_argument('--malloc', choices=('default', 'retain'), default='default',
                        help="glibc's handling of freed CPU memory: 'default' as configured, "
                        "or 'retain' it for reuse, as a caching allocator would (see the "
                        "module's docstring). Defaults to default.")
    parser.add_argument('--out', help='Also write the results as JSON to this file.')
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f'--repeat must be >= 1, got {args.repeat}')
    for spec in args.cases:
        try:
            parse_case(spec)
        except ValueError:
            parser.error(f'--cases takes LOSS:SHAPE:DTYPE (or NxC:DTYPE for focal) with LOSS in '
                         f'{LOSSES}, SHAPE like 8x8400x80 and DTYPE in {sorted(DTYPES)}, got '
                         f'{spec!r}')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.malloc == 'retain':
        retain_freed_memory()
    device = torch.device(args.device)
    results = [time_case(spec, device, args.repeat, args.time_limit) for spec in args.cases]
    for result in results:
        result['malloc'] = args.malloc
        measure_memory(result)
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
