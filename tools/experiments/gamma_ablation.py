"""The focal-loss paper's gamma/alpha ablation (its Table 1), on real data.

Trains the BCCD RetinaNet-style config with
  (a) sigmoid cross-entropy (gamma 0, no alpha),
  (b) alpha-balanced cross-entropy (gamma 0, alpha 0.75),
  (c) focal loss gamma 2, alpha 0.25,
  (d) focal loss gamma 1 and gamma 5 (alpha 0.25),
with the same schedule and prior-probability initialisation, several seeds
each, and writes a table (mean and spread of mAP, AP50 and per-class AP) as
markdown and CSV. Each run is a `tools/train.py` subprocess followed by
`tools/test.py --out` on the test split; AP is computed from the dumped
detections with mmdet's `eval_map` (VOC area AP), so every variant is scored
the same way whatever metric the config logs.

Resumable: a finished run leaves `result.json` in its folder and is skipped
when the script runs again; a half-finished run is started again.

    python tools/experiments/gamma_ablation.py [--config CONFIG] [--seeds 0 1 2]
        [--iters 400] [--work-dir work_dirs/gamma_ablation] [--cfg-options k=v ...]

The default schedule (400 iterations of batch 8 per run, no validation
during training) ran the 15 runs in 37 minutes on 2 CPU cores.
"""
import argparse
import csv
import json
import os
import os.path as osp
import pickle
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'retinanet', 'retinanet_r18-tiny_fpn_2k_bccd.py')

# name: (gamma, alpha, description)
VARIANTS = {
    'ce': (0.0, None, 'sigmoid CE'),
    'ce_alpha0.75': (0.0, 0.75, 'alpha-balanced CE (alpha .75)'),
    'fl_gamma1': (1.0, 0.25, 'FL gamma 1, alpha .25'),
    'fl_gamma2': (2.0, 0.25, 'FL gamma 2, alpha .25'),
    'fl_gamma5': (5.0, 0.25, 'FL gamma 5, alpha .25'),
}
IOU_THRS = [0.5 + 0.05 * i for i in range(10)]


def log(msg: str) -> None:
    print(f'[ablation {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run_one(config: str, run_dir: str, gamma: float, alpha: Optional[float], seed: int,
            extra_options: List[str], python: str) -> dict:
    """Trains and tests one (variant, seed); returns its scores."""
    result_file = osp.join(run_dir, 'result.json')
    if osp.isfile(result_file):
        with open(result_file) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    options = [f'model.bbox_head.loss_cls.gamma={gamma}',
               f'model.bbox_head.loss_cls.alpha={alpha}', f'randomness.seed={seed}',
               'randomness.deterministic=False'] + extra_options
    start = time.time()
    with open(osp.join(run_dir, 'train.log'), 'w') as out:
        subprocess.run([python, osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir',
                        run_dir, '--cfg-options', *options], check=True, stdout=out,
                       stderr=subprocess.STDOUT)
    train_seconds = time.time() - start
    with open(osp.join(run_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    predictions = osp.join(run_dir, 'test_predictions.pkl')
    with open(osp.join(run_dir, 'test.log'), 'w') as out:
        subprocess.run([python, osp.join(ROOT, 'tools', 'test.py'), config, checkpoint,
                        '--work-dir', run_dir, '--out', predictions, '--cfg-options',
                        *options], check=True, stdout=out, stderr=subprocess.STDOUT)
    scores = score_predictions(config, predictions, options)
    scores.update(gamma=gamma, alpha=alpha, seed=seed, train_seconds=train_seconds)
    with open(result_file, 'w') as f:
        json.dump(scores, f, indent=2)
    return scores


def score_predictions(config: str, predictions: str, options: List[str]) -> dict:
    """mAP (VOC area AP averaged over IoU .50:.95), AP50 and per-class AP50."""
    import numpy as np
    from mmdet.evaluation.functional import eval_map
    from mmdet.registry import DATASETS
    from mmengine.config import Config, DictAction

    from mmdet.utils import register_all_modules

    import focal_plugin  # noqa: F401  (registers the datasets)

    register_all_modules()  # the dataset's pipeline names mmdet's transforms
    cfg = Config.fromfile(config)
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(['--o', *options]).o)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    classes = dataset.metainfo['classes']
    with open(predictions, 'rb') as f:
        preds = {p['img_path']: p['pred_instances'] for p in pickle.load(f)}
    dets, annotations = [], []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        inst = info['instances']
        keep = [not x.get('ignore_flag', 0) for x in inst]
        bboxes = np.array([x['bbox'] for x in inst], dtype=np.float32).reshape(-1, 4)
        labels = np.array([x['bbox_label'] for x in inst], dtype=np.int64)
        annotations.append(dict(bboxes=bboxes[keep] if len(inst) else bboxes,
                                labels=labels[keep] if len(inst) else labels))
        pred = preds[info['img_path']]
        boxes = pred['bboxes'].numpy()
        scores = pred['scores'].numpy()
        plabels = pred['labels'].numpy()
        dets.append([np.concatenate([boxes[plabels == c], scores[plabels == c, None]], 1)
                     for c in range(len(classes))])
    per_iou = {}
    for thr in IOU_THRS:
        mean_ap, results = eval_map(dets, annotations, iou_thr=thr, logger='silent')
        per_iou[round(thr, 2)] = (mean_ap, [float(r['ap']) for r in results])
    out = dict(mAP=float(np.mean([v[0] for v in per_iou.values()])),
               AP50=float(per_iou[0.5][0]))
    for name, ap in zip(classes, per_iou[0.5][1]):
        out[f'AP50_{name}'] = ap
    return out


def summarise(results: Dict[str, List[dict]], out_dir: str, command: str) -> str:
    metrics = ['mAP', 'AP50'] + sorted(
        {k for runs in results.values() for r in runs for k in r if k.startswith('AP50_')})
    rows = []
    for name, runs in results.items():
        gamma, alpha, desc = VARIANTS[name]
        row = dict(variant=name, description=desc, gamma=gamma, alpha=alpha, seeds=len(runs))
        for m in metrics:
            values = [r[m] for r in runs]
            row[f'{m}_mean'] = statistics.mean(values) if values else float('nan')
            row[f'{m}_std'] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    with open(osp.join(out_dir, 'ablation.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    header = '| loss | gamma | alpha | seeds | ' + ' | '.join(
        m.replace('AP50_', 'AP50 ') for m in metrics) + ' |'
    lines = [header, '|' + '---|' * (4 + len(metrics))]
    for row in rows:
        cells = [f"{row[f'{m}_mean'] * 100:.1f} ± {row[f'{m}_std'] * 100:.1f}" for m in metrics]
        lines.append(f"| {row['description']} | {row['gamma']:g} | {row['alpha']} | "
                     f"{row['seeds']} | " + ' | '.join(cells) + ' |')
    table = '\n'.join(lines)
    with open(osp.join(out_dir, 'ablation.md'), 'w') as f:
        f.write(f'Command: `{command}`\n\nAP in %, mean ± standard deviation over seeds; mAP '
                'is VOC area AP averaged over IoU 0.50:0.95 on the test split.\n\n' + table +
                '\n')
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='BCCD config to ablate. Defaults to the ready-made one.')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='seeds per variant. Defaults to 0 1 2.')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS),
                        help='variants to run. Defaults to all.')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', 'gamma_ablation'),
                        help='where runs and tables go. Defaults to work_dirs/gamma_ablation.')
    parser.add_argument('--iters', type=int, default=400,
                        help='training iterations per run; sized so that 5 losses x 3 seeds '
                        'finish within about 40 minutes on 2 CPU cores. Defaults to 400.')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='extra key=value overrides for every run (applied after --iters)')
    args = parser.parse_args(argv)
    if args.iters < 2:
        parser.error(f'--iters must be >= 2, got {args.iters}')
    schedule = [f'train_cfg.max_iters={args.iters}', 'train_cfg.val_interval=1000000',
                f'param_scheduler.1.end={args.iters}',
                f'default_hooks.checkpoint.interval={args.iters}']
    if not osp.isfile(args.config):
        parser.error(f'--config {args.config!r} does not exist')
    os.makedirs(args.work_dir, exist_ok=True)
    command = 'python ' + ' '.join([osp.relpath(__file__, ROOT)] + (argv or sys.argv[1:]))
    jobs = [(v, s) for v in args.variants for s in args.seeds]
    results: Dict[str, List[dict]] = {v: [] for v in args.variants}
    start = time.time()
    for k, (variant, seed) in enumerate(jobs, 1):
        gamma, alpha, desc = VARIANTS[variant]
        run_dir = osp.join(args.work_dir, f'{variant}_seed{seed}')
        cached = osp.isfile(osp.join(run_dir, 'result.json'))
        log(f'run {k}/{len(jobs)}: {desc}, seed {seed}' + (' (done before)' if cached else ''))
        res = run_one(args.config, run_dir, gamma, alpha, seed, schedule + args.cfg_options,
                      sys.executable)
        results[variant].append(res)
        elapsed = time.time() - start
        log(f'  mAP {res["mAP"]:.3f}, AP50 {res["AP50"]:.3f}; {elapsed / 60:.1f} min elapsed')
    table = summarise(results, args.work_dir, command)
    print(table)
    log(f'wrote {osp.join(args.work_dir, "ablation.md")} and ablation.csv')
    return 0


if __name__ == '__main__':
    sys.exit(main())
