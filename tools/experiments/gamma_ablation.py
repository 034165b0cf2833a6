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
import os.path as osp
import sys

from focal_plugin.apis.experiment import (ROOT, Variant, experiment_parser, parse_experiment_args,
                                          run_and_tabulate)

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
    parser = experiment_parser(
        __doc__.split('\n\n')[0], 'gamma_ablation', DEFAULT_CONFIG,
        'BCCD config to ablate. Defaults to the ready-made one.', list(LOSSES), 400,
        'sized so that 5 losses x 3 seeds finish within about 40 minutes on 2 CPU cores')
    args = parse_experiment_args(parser, argv)
    run_and_tabulate(make_variants(args.config, args.variants), args, 'ablation', 'ablation',
                     __file__, argv)
    return 0


if __name__ == '__main__':
    sys.exit(main())
