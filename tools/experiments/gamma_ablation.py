"""The focal-loss paper's gamma/alpha ablation (its Table 1), on real data.

Trains the BCCD RetinaNet-style config with
  (a) sigmoid cross-entropy (gamma 0, no alpha),
  (b) alpha-balanced cross-entropy (gamma 0, alpha 0.75),
  (c) focal loss gamma 2, alpha 0.25,
  (d) focal loss gamma 1 and gamma 5 (alpha 0.25),
with the same schedule and prior-probability initialisation, several seeds
each, and writes a table (mean and spread of mAP, AP50 and per-class AP) as
markdown, CSV and a PNG bar chart. Each run is trained, tested on the test
split and scored by focal_plugin.apis.experiment.

Resumable: a finished run leaves `result.json` in its folder and is skipped
when the script runs again; a run whose training finished is only tested; a
half-trained run is started again.

    python tools/experiments/gamma_ablation.py [--config CONFIG] [--seeds 0 1 2]
        [--iters 400] [--work-dir work_dirs/gamma_ablation] [--cfg-options k=v ...]

The default schedule (400 iterations of batch 8 per run, no validation
during training) ran the 15 runs in 37 minutes on 2 CPU cores.
"""
import argparse
import os.path as osp
import sys

from focal_plugin.apis.experiment import (ROOT, Variant, command_line, log, run_experiment,
                                          schedule_options, write_tables)

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'retinanet', 'retinanet_r18-tiny_fpn_2k_bccd.py')

# name: (gamma, alpha, description)
LOSSES = {
    'ce': (0.0, None, 'sigmoid CE'),
    'ce_alpha0.75': (0.0, 0.75, 'alpha-balanced CE (alpha .75)'),
    'fl_gamma1': (1.0, 0.25, 'FL gamma 1, alpha .25'),
    'fl_gamma2': (2.0, 0.25, 'FL gamma 2, alpha .25'),
    'fl_gamma5': (5.0, 0.25, 'FL gamma 5, alpha .25'),
}


def make_variants(config: str, names) -> list:
    return [
        Variant(name, desc, config,
                options=[f'model.bbox_head.loss_cls.gamma={gamma}',
                         f'model.bbox_head.loss_cls.alpha={alpha}'],
                columns=dict(gamma=gamma, alpha=alpha))
        for name, (gamma, alpha, desc) in LOSSES.items() if name in names
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='BCCD config to ablate. Defaults to the ready-made one.')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='seeds per variant. Defaults to 0 1 2.')
    parser.add_argument('--variants', nargs='+', default=list(LOSSES), choices=list(LOSSES),
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
    if not osp.isfile(args.config):
        parser.error(f'--config {args.config!r} does not exist')
    variants = make_variants(args.config, args.variants)
    results = run_experiment(variants, args.seeds, args.work_dir,
                             schedule_options(args.iters) + args.cfg_options, 'ablation')
    print(write_tables(variants, results, args.work_dir, 'ablation', command_line(__file__, argv)))
    log('ablation', f'wrote {osp.join(args.work_dir, "ablation.md")}, .csv and .png')
    return 0


if __name__ == '__main__':
    sys.exit(main())
