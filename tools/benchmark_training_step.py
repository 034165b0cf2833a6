"""Benchmark whole training steps of mmdet detectors, stock against fused.

For each detector, the stock mmdet config and its ``fuse_config`` twin (the
same model with the fused focal-family losses) each run in a process of
their own, on the same fixed random batch and the same initial weights:
build the model, then forward, loss, backward and an SGD step, timed per step
after one warm-up step. Each process reports its time per step, its peak
resident set (``ru_maxrss``, the whole process: model, activations and
losses) and its first-iteration losses; the table compares the two.

Detectors (mmdet 3.3.0 configs, pretrained weights dropped: nothing is
downloaded): RetinaNet R50-FPN (FocalLoss), RTMDet-s (QualityFocalLoss),
VFNet R50 (VarifocalLoss), CenterNet R18 (GaussianFocalLoss).

Example::

    python tools/benchmark_training_step.py                          # CPU, all
    python tools/benchmark_training_step.py --detectors rtmdet_s --steps 5 --out step.json
    python tools/benchmark_training_step.py --device cuda
"""
import argparse
import json
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

# name: (mmdet config, input size (H, W) at which it trains)
DETECTORS = {
    'retinanet_r50': ('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', (640, 640)),
    'rtmdet_s': ('mmdet::rtmdet/rtmdet_s_8xb32-300e_coco.py', (640, 640)),
    'vfnet_r50': ('mmdet::vfnet/vfnet_r50_fpn_1x_coco.py', (640, 640)),
    'centernet_r18': ('mmdet::centernet/centernet_r18_8xb16-crop512-140e_coco.py', (512, 512)),
}
VARIANTS = ('stock', 'fused')


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_batch(size: tuple, batch_size: int, num_classes: int, seed: int) -> dict:
    """A fixed random batch: uint8 images and a few ground-truth boxes each."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    h, w = size
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8))
        n = 5
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.25, h * 0.25]) + 16
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             pad_shape=(h, w), batch_input_shape=(h, w),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], dim=1),
            labels=torch.randint(0, num_classes, (n, ), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def run_worker(detector: str, variant: str, steps: int, batch_size: int, size: tuple,
               device: str) -> dict:
    """One variant in this process: build, warm up, time ``steps`` steps."""
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    from focal_plugin.apis.fuse import fuse_config
    from focal_plugin.apis.focalize import resolve_config_path
    from focal_plugin.apis.runner_setup import strip_pretrained

    register_all_modules()
    import focal_plugin  # noqa: F401  (registers the fused losses)
    config, _ = DETECTORS[detector]
    cfg = Config.fromfile(resolve_config_path(config))
    if variant == 'fused':
        cfg = fuse_config(cfg)
    strip_pretrained(cfg.model)
    # The same initial weights in both processes: the losses hold no
    # parameters and draw no random numbers, so the seeded build is identical.
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).to(device)
    model.init_weights()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    num_classes = cfg.model.get('bbox_head', {}).get('num_classes', 80)
    batch = make_batch(size, batch_size, num_classes, seed=1)

    def step() -> Dict[str, float]:
        data = model.data_preprocessor(batch, True)
        losses = model(**data, mode='loss')
        loss, log_vars = model.parse_losses(losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device == 'cuda':
            torch.cuda.synchronize()
        return {k: float(torch.as_tensor(v).detach()) for k, v in log_vars.items()
                if k.startswith('loss')}

    first = step()  # warm-up; its losses are the first iteration's
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        log(f'  {detector} {variant}: step {i + 1}/{steps} {times[-1]:.2f} s')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    result = dict(detector=detector, variant=variant, step_s=statistics.median(times),
                  steps=steps, peak_rss_mb=peak / 2**20, first_losses=first,
                  threads=torch.get_num_threads(), device=device)
    if device == 'cuda':
        result['peak_cuda_mb'] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_variant(detector: str, variant: str, args: argparse.Namespace) -> dict:
    """Runs one variant in a fresh process (its own peak memory)."""
    size = args.image_size or DETECTORS[detector][1]
    cmd = [sys.executable, osp.abspath(__file__), '--worker', detector, variant,
           '--steps', str(args.steps), '--batch-size', str(args.batch_size),
           '--image-size', str(size[0]), str(size[1]), '--device', args.device]
    log(f'{detector} {variant}: {size[0]}x{size[1]}, batch {args.batch_size}')
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f'{detector} {variant} failed (exit {out.returncode}); its log is '
                           'above')
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(stock: dict, fused: dict) -> dict:
    diffs = [abs(fused['first_losses'][k] - v) / max(abs(v), 1e-12)
             for k, v in stock['first_losses'].items()]
    return dict(detector=stock['detector'], speedup=stock['step_s'] / fused['step_s'],
                stock=stock, fused=fused, first_loss_max_rel_diff=max(diffs))


def format_table(rows: List[dict]) -> str:
    lines = [
        '| detector | stock step (s) | fused step (s) | speed-up | stock peak RSS (MB) | '
        'fused peak RSS (MB) | first-iteration losses, max rel. difference |',
        '|---|---:|---:|---:|---:|---:|---:|',
    ]
    for r in rows:
        lines.append(f"| {r['detector']} | {r['stock']['step_s']:.2f} | {r['fused']['step_s']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['stock']['peak_rss_mb']:.0f} | "
                     f"{r['fused']['peak_rss_mb']:.0f} | {r['first_loss_max_rel_diff']:.1e} |")
    return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--detectors', nargs='+', default=list(DETECTORS), choices=DETECTORS,
                        help='Detectors to run. Defaults to all.')
    parser.add_argument('--steps', type=int, default=3,
                        help='Timed steps per variant, after one warm-up step. Defaults to 3.')
    parser.add_argument('--batch-size', type=int, default=2, help='Defaults to 2.')
    parser.add_argument('--image-size', type=int, nargs=2, metavar=('H', 'W'),
                        help="Input size. Defaults to each detector's training size.")
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'],
                        help='Defaults to cpu.')
    parser.add_argument('--out', help='Also write the results as JSON to this file.')
    parser.add_argument('--worker', nargs=2, metavar=('DETECTOR', 'VARIANT'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1:
        parser.error(f'--steps and --batch-size must be >= 1, got {args.steps} and '
                     f'{args.batch_size}')
    if args.worker and (args.worker[0] not in DETECTORS or args.worker[1] not in VARIANTS):
        parser.error(f'--worker takes a detector of {list(DETECTORS)} and a variant of '
                     f'{list(VARIANTS)}, got {args.worker}')
    if args.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            parser.error('--device cuda: no CUDA device is available')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(*args.worker, args.steps, args.batch_size,
                                    tuple(args.image_size), args.device)))
        return 0
    rows = [compare(run_variant(d, 'stock', args), run_variant(d, 'fused', args))
            for d in args.detectors]
    print(format_table(rows))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
