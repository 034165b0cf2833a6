"""Seeded comparisons of detector variants: train, test and score each
(variant, seed) run, resumably, and tabulate the mean and spread over seeds.

What ``tools/experiments/*.py`` share. Each run is a ``tools/train.py``
subprocess followed by ``tools/test.py --out`` on the config's test split;
AP is computed from the dumped detections with mmdet's ``eval_map`` (Pascal
VOC area AP), so every variant is scored the same way whatever metric its
config logs.
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
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
IOU_THRS = [round(0.5 + 0.05 * i, 2) for i in range(10)]
RESULT_FILE = 'result.json'
# Written once training has finished: the final checkpoint and how long it took.
TRAINED_FILE = 'trained.json'


@dataclass
class Variant:
    """One arm of an experiment.

    Args:
        name (str): Folder-safe name; runs go to ``<work_dir>/<name>_seed<seed>``.
        description (str): What the table's first column says.
        config (str): The config file it trains.
        options (List[str]): ``key=value`` overrides of ``config`` for this
            variant. Defaults to [].
        columns (Dict[str, object]): Extra table columns (name: value), in
            order, that describe the variant. Defaults to {}.
    """
    name: str
    description: str
    config: str
    options: List[str] = field(default_factory=list)
    columns: Dict[str, object] = field(default_factory=dict)


def log(tag: str, msg: str) -> None:
    print(f'[{tag} {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def schedule_options(iters: int) -> List[str]:
    """Overrides that shorten a ready-made config's schedule (linear warm-up,
    then a cosine scheduler as ``param_scheduler[1]``) to ``iters`` iterations,
    with no validation during training and one checkpoint at the end."""
    if iters < 2:
        raise ValueError(f'iters must be >= 2, got {iters}')
    return [f'train_cfg.max_iters={iters}', 'train_cfg.val_interval=1000000',
            f'param_scheduler.1.end={iters}', f'default_hooks.checkpoint.interval={iters}']


def _parse_options(options: Sequence[str]) -> dict:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction, default={})
    return parser.parse_args(['--o', *options]).o if options else {}


def score_predictions(config: str, predictions: str, options: Sequence[str] = ()) -> dict:
    """Scores dumped detections against the config's test split.

    Args:
        config (str): The config whose ``test_dataloader.dataset`` is scored.
        predictions (str): ``tools/test.py --out`` pickle of that split.
        options (Sequence[str]): ``key=value`` overrides applied to the config.
            Defaults to ().

    Returns:
        dict: ``mAP`` (VOC area AP averaged over IoU 0.50:0.95), ``AP50`` and
        ``AP50_<class>`` for each class, as fractions.
    """
    import numpy as np
    from mmdet.evaluation.functional import eval_map
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import focal_plugin  # noqa: F401  (registers the datasets)

    register_all_modules()  # the dataset's pipeline names mmdet's transforms
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(_parse_options(options))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    classes = dataset.metainfo['classes']
    with open(predictions, 'rb') as f:
        preds = {p['img_path']: p['pred_instances'] for p in pickle.load(f)}
    dets, annotations = [], []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        kept = [x for x in info['instances'] if not x.get('ignore_flag', 0)]
        annotations.append(
            dict(bboxes=np.array([x['bbox'] for x in kept], dtype=np.float32).reshape(-1, 4),
                 labels=np.array([x['bbox_label'] for x in kept], dtype=np.int64)))
        pred = preds[info['img_path']]
        boxes, scores, labels = (pred[k].numpy() for k in ('bboxes', 'scores', 'labels'))
        dets.append([np.concatenate([boxes[labels == c], scores[labels == c, None]], 1)
                     for c in range(len(classes))])
    per_iou = {}
    for thr in IOU_THRS:
        mean_ap, results = eval_map(dets, annotations, iou_thr=thr, logger='silent')
        per_iou[thr] = (mean_ap, [float(r['ap']) for r in results])
    scores = dict(mAP=float(np.mean([v[0] for v in per_iou.values()])),
                  AP50=float(per_iou[0.5][0]))
    for name, ap in zip(classes, per_iou[0.5][1]):
        scores[f'AP50_{name}'] = ap
    return scores


def run_variant(variant: Variant, seed: int, run_dir: str, options: Sequence[str] = (),
                python: str = sys.executable) -> dict:
    """Trains and tests one (variant, seed) run and returns its scores.

    A run that finished before (``result.json`` in ``run_dir``) is read back,
    not repeated; one whose training finished (``trained.json``) but whose
    test did not is only tested; any other is trained again from the start.

    Args:
        variant (Variant): What to train.
        seed (int): ``randomness.seed``.
        run_dir (str): The run's work dir (logs, checkpoint, predictions).
        options (Sequence[str]): ``key=value`` overrides for every variant
            (the schedule), applied after the variant's own. Defaults to ().
        python (str): Interpreter for the train and test subprocesses.
            Defaults to the running one.

    Returns:
        dict: The scores of :func:`score_predictions`, plus ``seed`` and
        ``train_seconds``.
    """
    result_file = osp.join(run_dir, RESULT_FILE)
    if osp.isfile(result_file):
        with open(result_file) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    all_options = [*variant.options, f'randomness.seed={seed}',
                   'randomness.deterministic=False', *options]
    trained_file = osp.join(run_dir, TRAINED_FILE)
    if not osp.isfile(trained_file):
        start = time.time()
        _run_logged([python, osp.join(ROOT, 'tools', 'train.py'), variant.config,
                     '--work-dir', run_dir, '--cfg-options', *all_options],
                    osp.join(run_dir, 'train.log'))
        with open(osp.join(run_dir, 'last_checkpoint')) as f:
            trained = dict(checkpoint=f.read().strip(), train_seconds=time.time() - start)
        with open(trained_file, 'w') as f:
            json.dump(trained, f, indent=2)
    with open(trained_file) as f:
        trained = json.load(f)
    checkpoint = trained['checkpoint']
    predictions = osp.join(run_dir, 'test_predictions.pkl')
    _run_logged([python, osp.join(ROOT, 'tools', 'test.py'), variant.config, checkpoint,
                 '--work-dir', run_dir, '--out', predictions, '--cfg-options', *all_options],
                osp.join(run_dir, 'test.log'))
    scores = score_predictions(variant.config, predictions, all_options)
    scores.update(seed=seed, train_seconds=trained['train_seconds'])
    with open(result_file, 'w') as f:
        json.dump(scores, f, indent=2)
    return scores


def _run_logged(command: List[str], log_file: str) -> None:
    with open(log_file, 'w') as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f'{osp.basename(command[1])} failed (exit {done.returncode}); '
                           f'see {log_file}')


def run_experiment(variants: Sequence[Variant], seeds: Sequence[int], work_dir: str,
                   options: Sequence[str], tag: str) -> Dict[str, List[dict]]:
    """Runs every (variant, seed), printing progress and an estimate of the
    time left; returns each variant's list of scores, in seed order."""
    os.makedirs(work_dir, exist_ok=True)
    jobs = [(v, s) for v in variants for s in seeds]
    results: Dict[str, List[dict]] = {v.name: [] for v in variants}
    start, trained = time.time(), 0
    for k, (variant, seed) in enumerate(jobs, 1):
        run_dir = osp.join(work_dir, f'{variant.name}_seed{seed}')
        cached = osp.isfile(osp.join(run_dir, RESULT_FILE))
        log(tag, f'run {k}/{len(jobs)}: {variant.description}, seed {seed}' +
            (' (done before)' if cached else f' -> {run_dir}'))
        scores = run_variant(variant, seed, run_dir, options)
        results[variant.name].append(scores)
        trained += not cached
        elapsed = time.time() - start
        left = ''
        if trained and k < len(jobs):
            left = f', about {elapsed / trained * (len(jobs) - k) / 60:.0f} min left'
        log(tag, f'  mAP {scores["mAP"]:.3f}, AP50 {scores["AP50"]:.3f}; '
            f'{elapsed / 60:.1f} min elapsed{left}')
    return results


def metric_names(results: Dict[str, List[dict]]) -> List[str]:
    per_class = sorted({k for runs in results.values() for r in runs for k in r
                        if k.startswith('AP50_')})
    return ['mAP', 'AP50'] + per_class


def write_tables(variants: Sequence[Variant], results: Dict[str, List[dict]], out_dir: str,
                 stem: str, command: str) -> str:
    """Writes ``<stem>.md`` (a markdown table of mean ± standard deviation
    over seeds, in %), ``<stem>.csv`` (the same as fractions) and
    ``<stem>.png`` (a bar chart of it); returns the markdown table."""
    metrics = metric_names(results)
    rows = []
    for variant in variants:
        runs = results[variant.name]
        row = dict(variant=variant.name, description=variant.description, **variant.columns,
                   seeds=len(runs))
        for m in metrics:
            values = [r[m] for r in runs]
            row[f'{m}_mean'] = statistics.mean(values) if values else float('nan')
            row[f'{m}_std'] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    with open(osp.join(out_dir, f'{stem}.csv'), 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    columns = list(variants[0].columns)
    header = ['variant', *columns, 'seeds', *(m.replace('AP50_', 'AP50 ') for m in metrics)]
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        cells = [row['description'], *(_cell(row[c]) for c in columns), str(row['seeds'])]
        cells += [f"{row[f'{m}_mean'] * 100:.1f} ± {row[f'{m}_std'] * 100:.1f}" for m in metrics]
        lines.append('| ' + ' | '.join(cells) + ' |')
    table = '\n'.join(lines)
    with open(osp.join(out_dir, f'{stem}.md'), 'w') as f:
        f.write(f'Command: `{command}`\n\nAP in %, mean ± standard deviation over seeds; mAP '
                'is VOC area AP averaged over IoU 0.50:0.95 on the test split.\n\n' + table +
                '\n')
    _plot(rows, metrics, osp.join(out_dir, f'{stem}.png'))
    return table


def _cell(value) -> str:
    return f'{value:g}' if isinstance(value, float) else str(value)


def _plot(rows: List[dict], metrics: List[str], out: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np

    width = 0.8 / len(rows)
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 4.5))
    for i, row in enumerate(rows):
        means = [row[f'{m}_mean'] * 100 for m in metrics]
        stds = [row[f'{m}_std'] * 100 for m in metrics]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=stds, capsize=3,
               label=f"{row['description']} ({row['seeds']} seeds)")
    ax.set_xticks(x, [m.replace('AP50_', 'AP50\n') for m in metrics])
    ax.set_ylabel('AP (%), mean ± std over seeds')
    ax.set_ylim(0, 100)
    # Below the axes: a legend inside would cover the bars, which reach 100.
    ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.2), ncol=1)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def experiment_parser(description: str, name: str, default_config: str, config_help: str,
                      variant_names: Sequence[str], default_iters: int,
                      iters_help: str) -> argparse.ArgumentParser:
    """The command line every experiment tool takes.

    Args:
        description (str): The tool's one-line description.
        name (str): The experiment's name: the default work dir is
            ``work_dirs/<name>``.
        default_config (str): ``--config``'s default.
        config_help (str): What ``--config`` must be.
        variant_names (Sequence[str]): The ``--variants`` to choose from.
        default_iters (int): Training iterations per run by default.
        iters_help (str): How ``default_iters`` was sized.

    Returns:
        argparse.ArgumentParser: With --config, --seeds, --variants,
        --work-dir, --iters and --cfg-options.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--config', default=default_config, help=config_help)
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='seeds per variant. Defaults to 0 1 2.')
    parser.add_argument('--variants', nargs='+', default=list(variant_names),
                        choices=list(variant_names), help='variants to run. Defaults to all.')
    parser.add_argument('--work-dir', default=osp.join('work_dirs', name),
                        help=f'where runs and tables go. Defaults to work_dirs/{name}.')
    parser.add_argument('--iters', type=int, default=default_iters,
                        help=f'training iterations per run; {iters_help}. '
                        f'Defaults to {default_iters}.')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='extra key=value overrides for every run (applied after --iters)')
    return parser


def parse_experiment_args(parser: argparse.ArgumentParser,
                          argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parses and checks the arguments of :func:`experiment_parser`; a bad one
    exits with the parser's usage error (status 2)."""
    args = parser.parse_args(argv)
    if args.iters < 2:
        parser.error(f'--iters must be >= 2, got {args.iters}')
    if not osp.isfile(args.config):
        parser.error(f'--config {args.config!r} does not exist')
    return args


def run_and_tabulate(variants: Sequence[Variant], args: argparse.Namespace, stem: str, tag: str,
                     script: str, argv: Optional[Sequence[str]]) -> None:
    """Runs the experiment of parsed ``args`` and prints and writes its tables
    (``<work_dir>/<stem>.md``, ``.csv``, ``.png``)."""
    results = run_experiment(variants, args.seeds, args.work_dir,
                             schedule_options(args.iters) + args.cfg_options, tag)
    print(write_tables(variants, results, args.work_dir, stem, command_line(script, argv)))
    log(tag, f'wrote {osp.join(args.work_dir, stem + ".md")}, .csv and .png')


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    """The command as a user would type it, relative to the repository."""
    return 'python ' + ' '.join([osp.relpath(script, ROOT), *(argv if argv is not None
                                                              else sys.argv[1:])])
