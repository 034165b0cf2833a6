"""Focal loss against hard-negative mining (the focal-loss paper's Table 1e),
on an SSD-style detector and real data.

Trains one SSD config (by default SSDLite/MobileNetV2 on BCCD at 320 x 240,
from scratch) three ways, with the same schedule, several seeds each:
  (a) mmdet's SSDHead: softmax cross-entropy, 3 hard negatives per positive;
  (b) FocalSSDHead (the config converted by focal_plugin's focalize): sigmoid
      focal loss, gamma 2, alpha .25, over all anchors, no mining;
  (c) FocalSSDHead with gamma 0 and no alpha: plain sigmoid cross-entropy over
      all anchors, no mining (what happens without either remedy);
and writes a table (mean and spread of VOC mAP, AP50 and per-class AP50 on
the test split) as markdown, CSV and a PNG bar chart. (b) and (c) use the
RetinaNet-style config that `tools/focalize.py` makes of --config; it is
written to the work dir.

Resumable: a finished run leaves `result.json` in its folder and is skipped
when the script runs again; a run whose training finished is only tested; a
half-trained run is started again.

    python tools/experiments/ohem_vs_focal.py [--config CONFIG] [--seeds 0 1 2]
        [--iters 500] [--work-dir work_dirs/ohem_vs_focal] [--cfg-options k=v ...]

The default schedule (500 iterations of batch 8 per run, no validation
during training) is sized for the 9 runs to take under an hour on 2 CPU cores.
"""
import os
import os.path as osp
import sys

from focal_plugin.apis.experiment import (ROOT, Variant, experiment_parser, log,
                                          parse_experiment_args, run_and_tabulate)
from focal_plugin.apis.focalize import FocalizeError, focalize

DEFAULT_CONFIG = osp.join(ROOT, 'configs', 'ssd', 'ssdlite_mobilenetv2-tiny_2k_bccd.py')
VARIANT_NAMES = ('ssd_ohem', 'focal_gamma2', 'focal_gamma0')


def make_variants(config: str, focal_config: str) -> list:
    """The three arms, for a mining SSD config and its focalized twin."""
    return [
        Variant('ssd_ohem', "SSDHead: softmax CE, 3:1 hard-negative mining", config,
                columns=dict(head='SSDHead', loss='softmax CE', mining='3:1')),
        Variant('focal_gamma2', 'FocalSSDHead: FL gamma 2, alpha .25, all anchors',
                focal_config,
                options=['model.bbox_head.loss_cls.gamma=2.0',
                         'model.bbox_head.loss_cls.alpha=0.25'],
                columns=dict(head='FocalSSDHead', loss='FL gamma 2, alpha .25', mining='none')),
        Variant('focal_gamma0', 'FocalSSDHead: sigmoid CE (gamma 0), all anchors',
                focal_config,
                options=['model.bbox_head.loss_cls.gamma=0.0',
                         'model.bbox_head.loss_cls.alpha=None'],
                columns=dict(head='FocalSSDHead', loss='sigmoid CE', mining='none')),
    ]


def check_mining_config(config: str) -> None:
    """--config must be an SSD config that mines hard negatives."""
    from mmengine.config import Config

    cfg = Config.fromfile(config)
    head = cfg.model.get('bbox_head', {}).get('type', None)
    ratio = (cfg.model.get('train_cfg') or {}).get('neg_pos_ratio', None)
    if head not in ('SSDHead', 'MiningSSDHead', 'mmdet.SSDHead') or not ratio:
        raise ValueError(f'--config must be an SSD config with hard-negative mining '
                         f'(bbox_head SSDHead or MiningSSDHead, train_cfg.neg_pos_ratio set); '
                         f'{config!r} has bbox_head {head!r}, neg_pos_ratio {ratio!r}')


def main(argv=None) -> int:
    parser = experiment_parser(
        __doc__.split('\n\n')[0], 'ohem_vs_focal', DEFAULT_CONFIG,
        'SSD config with hard-negative mining (variant a); (b) and (c) are its focalized '
        'twin. Defaults to the ready-made BCCD SSDLite.', VARIANT_NAMES, 500,
        'sized so that 3 variants x 3 seeds finish within an hour on 2 CPU cores')
    args = parse_experiment_args(parser, argv)
    try:
        check_mining_config(args.config)
    except ValueError as e:
        parser.error(str(e))
    os.makedirs(args.work_dir, exist_ok=True)
    focal_config = osp.join(args.work_dir, 'focal_' + osp.basename(args.config))
    try:
        text = focalize(osp.abspath(args.config), focal_config)
    except FocalizeError as e:
        parser.error(f'--config {args.config!r} cannot be focalized: {e}')
    with open(focal_config, 'w') as f:
        f.write(text)
    log('ohem', f'wrote the focalized config {focal_config}')
    variants = [v for v in make_variants(osp.abspath(args.config), focal_config)
                if v.name in args.variants]
    run_and_tabulate(variants, args, 'ohem_vs_focal', 'ohem', __file__, argv)
    return 0


if __name__ == '__main__':
    sys.exit(main())
