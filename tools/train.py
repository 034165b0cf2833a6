"""Train a detector with focal_plugin; mmdet's tools/train.py arguments.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--fuse]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

``--fuse`` trains any mmdet config with the fused twins of its focal-family
losses (same arguments, same numbers), without writing a config file.

mmdet's own tools/train.py works too with configs that carry
``custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)``.
"""
import argparse

from mmengine.config import DictAction

from focal_plugin.apis.fuse import fuse_config
from focal_plugin.apis.runner_setup import build_runner, load_config, set_local_rank


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector with focal_plugin')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='enable automatically scaling LR')
    parser.add_argument('--fuse', action='store_true',
                        help='replace the focal-family losses by their fused twins')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or without a path from the latest '
                        'checkpoint in the work directory')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    set_local_rank(args.local_rank)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if args.fuse:
        cfg = fuse_config(cfg)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                               'config')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
