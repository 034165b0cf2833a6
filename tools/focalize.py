"""Convert an mmdet config into one that uses focal_plugin.

    python tools/focalize.py IN_CONFIG OUT_CONFIG
    python tools/focalize.py --fuse IN_CONFIG OUT_CONFIG

IN_CONFIG is a path or ``mmdet::<path>`` (a config of the installed mmdet).
The output inherits from the input and overrides only what changes.

Without ``--fuse``, a one-stage detector becomes RetinaNet-style: the head
(RetinaHead/SSDHead/YOLOV3Head -> focal_plugin's RetinaNet-style subclass, or
FocalLoss -> FusedFocalLoss for heads that already use focal loss), samplers
and hard-negative mining removed, prior-probability bias initialisation.
Two-stage detectors and heads it does not know are refused with the reason.

With ``--fuse``, any detector (one-stage, two-stage, DETR-style, instance
segmentation) keeps its model and gets the fused twin of each of its
focal-family losses (FocalLoss, QualityFocalLoss, VarifocalLoss,
GaussianFocalLoss) with the same arguments. A config without one is refused.
"""
import argparse
import os
import os.path as osp
import sys

from focal_plugin.apis.focalize import FocalizeError, focalize
from focal_plugin.apis.fuse import fuse


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('in_config', help='mmdet config (path or mmdet::...)')
    parser.add_argument('out_config', help='where to write the converted config')
    parser.add_argument('--fuse', action='store_true',
                        help='only swap the focal-family losses for their fused twins')
    parser.add_argument('--force', action='store_true', help='overwrite OUT_CONFIG')
    args = parser.parse_args(argv)
    if osp.exists(args.out_config) and not args.force:
        parser.error(f'{args.out_config} exists; pass --force to overwrite it')
    convert = fuse if args.fuse else focalize
    try:
        text = convert(args.in_config, args.out_config)
    except FocalizeError as err:
        print(f'focalize: cannot convert {args.in_config}: {err}', file=sys.stderr)
        return 1
    os.makedirs(osp.dirname(osp.abspath(args.out_config)), exist_ok=True)
    with open(args.out_config, 'w') as f:
        f.write(text)
    print(text, end='')
    print(f'wrote {args.out_config}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
