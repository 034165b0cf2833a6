"""Turn a one-stage mmdet config into a RetinaNet-style config that uses focal_plugin.

RetinaNet-style (Lin et al.): sigmoid classification over all anchors with the
focal loss, no sampling or hard-negative mining, normalised by the number of
positives, classification bias initialised from a prior probability. The
output is a short, readable config that inherits from the input (``_base_``)
and overrides only what the conversion changes.
"""
import os.path as osp
import re
from typing import Dict, List, Optional, Tuple

from mmengine.config import Config

# The focal heads' own default loss, so converted configs say what the heads use.
from focal_plugin.models.dense_heads.utils import FOCAL_LOSS

PRIOR_PROB = 0.01

# One-stage heads that get a RetinaNet-style subclass from focal_plugin: the
# new head, the losses it computes with the focal loss, and other overrides
# (FocalYOLOV3Head divides every loss by the positive count, so YOLOv3's
# summed box losses become reduction='mean').
HEAD_CONVERSIONS: Dict[str, Tuple[str, Tuple[str, ...], dict]] = {
    'RetinaHead': ('FocalRetinaHead', ('loss_cls', ), {}),
    'SSDHead': ('FocalSSDHead', ('loss_cls', ), {}),
    'MiningSSDHead': ('FocalSSDHead', ('loss_cls', ), {}),
    'YOLOV3Head': ('FocalYOLOV3Head', ('loss_cls', 'loss_conf'),
                   dict(loss_xy=dict(reduction='mean'), loss_wh=dict(reduction='mean'))),
}
# train_cfg keys that sample or mine negatives, which focal loss replaces.
MINING_KEYS = ('neg_pos_ratio', )
TWO_STAGE_KEYS = ('rpn_head', 'roi_head')


class FocalizeError(ValueError):
    """The config cannot be converted; the message says why."""


def resolve_config_path(config: str) -> str:
    """Local path, or ``mmdet::<path>`` inside the installed mmdet's configs."""
    if config.startswith('mmdet::'):
        import mmdet
        path = osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', config[len('mmdet::'):])
    else:
        path = config
    if not osp.isfile(path):
        raise FocalizeError(f'config {config!r} does not exist')
    return path


def base_reference(in_config: str, out_config: Optional[str]) -> str:
    """How a config written to ``out_config`` names ``in_config`` in its ``_base_``.

    ``mmdet::`` names stay as they are, except where mmengine cannot parse
    them (its pattern wants a first folder of word characters, which
    ``legacy_1.x/`` is not): those become the installed file's path. A local
    path becomes relative to the output's folder, so that the pair can be
    moved together.
    """
    if in_config.startswith('mmdet::'):
        if re.match(r'\w*::\w*/', in_config) is None:
            return resolve_config_path(in_config)
        return in_config
    if out_config is None:
        return in_config
    return osp.relpath(osp.abspath(in_config), osp.dirname(osp.abspath(out_config)))


def focalize_overrides(cfg: Config) -> Tuple[dict, List[str]]:
    """The config overrides that make ``cfg`` RetinaNet-style, and what they change.

    Raises:
        FocalizeError: For two-stage detectors and heads it does not know.
    """
    model = cfg.get('model')
    if model is None:
        raise FocalizeError('the config has no `model`: not a detector config')
    two_stage = [k for k in TWO_STAGE_KEYS if k in model]
    if two_stage:
        raise FocalizeError(
            f'{model.get("type")} is a two-stage detector (it has {", ".join(two_stage)}): its '
            'RPN and RoI heads sample a balanced set of proposals, which is the problem focal '
            'loss solves for one-stage detectors; focalize converts one-stage detectors only')
    head = model.get('bbox_head')
    if head is None:
        raise FocalizeError(f'{model.get("type")} has no `bbox_head`: focalize converts '
                            'one-stage detectors with a dense bbox_head')
    head_type = head.get('type')
    changes: List[str] = []
    head_override: dict = {}
    if head_type in HEAD_CONVERSIONS:
        new_type, focal_losses, extra = HEAD_CONVERSIONS[head_type]
        head_override['type'] = new_type
        head_override['prior_prob'] = PRIOR_PROB
        for loss in focal_losses:
            # _delete_ replaces the base's loss config; mmengine keeps the key
            # literally when the base has none (SSD's head hard-codes its loss).
            head_override[loss] = dict(_delete_=True, **FOCAL_LOSS) if loss in head \
                else dict(FOCAL_LOSS)
        head_override.update(extra)
        changes.append(f'{head_type} -> {new_type} (sigmoid over all anchors, prior-prob '
                       f'bias {PRIOR_PROB}, loss normalised by all-reduced positives)')
        changes.append(f'{", ".join(focal_losses)} -> FusedFocalLoss(gamma=2.0, alpha=0.25)')
        if extra:
            changes.append(f'{", ".join(extra)}: reduction sum -> mean (divided by positives)')
    elif head.get('loss_cls', {}).get('type') == 'FocalLoss':
        # Already RetinaNet-style (FCOS, ATSS, ...): the fused op is a drop-in.
        head_override['loss_cls'] = dict(type='FusedFocalLoss')
        changes.append(f'{head_type}.loss_cls: FocalLoss -> FusedFocalLoss (same arguments)')
    else:
        known = sorted(HEAD_CONVERSIONS)
        raise FocalizeError(
            f'bbox_head {head_type!r} with loss_cls {head.get("loss_cls", {}).get("type")!r} is '
            f'not a head focalize knows how to convert: it converts {", ".join(known)} and '
            'heads that already use FocalLoss')

    overrides: dict = dict(model=dict(bbox_head=head_override))
    train_cfg = model.get('train_cfg')
    if train_cfg is not None:
        train_cfg = train_cfg.to_dict() if hasattr(train_cfg, 'to_dict') else dict(train_cfg)
        mined = [k for k in MINING_KEYS if k in train_cfg]
        sampler = train_cfg.get('sampler')
        resample = sampler is not None and sampler.get('type') != 'PseudoSampler'
        if mined or resample:
            new_train_cfg = {k: v for k, v in train_cfg.items() if k not in MINING_KEYS}
            if resample:
                new_train_cfg['sampler'] = dict(type='PseudoSampler')
                changes.append(f'train_cfg.sampler {sampler.get("type")} -> PseudoSampler')
            if mined:
                changes.append(f'train_cfg: removed hard-negative mining ({", ".join(mined)})')
            overrides['model']['train_cfg'] = dict(_delete_=True, **new_train_cfg)
    return overrides, changes


def format_value(value, indent: int = 0) -> str:
    """Python source of ``value`` in OpenMMLab config style (dict(...)).

    Dicts whose keys are not all identifiers are written as ``{...}`` literals,
    which ``dict(key=...)`` cannot express.
    """
    pad = ' ' * (indent + 4)
    if isinstance(value, dict):
        if not value:
            return 'dict()'
        if all(isinstance(k, str) and k.isidentifier() for k in value):
            items = [f'{pad}{k}={format_value(v, indent + 4)}' for k, v in value.items()]
            return 'dict(\n' + ',\n'.join(items) + ')'
        items = [f'{pad}{k!r}: {format_value(v, indent + 4)}' for k, v in value.items()]
        return '{\n' + ',\n'.join(items) + '}'
    if isinstance(value, list) and any(isinstance(v, dict) for v in value):
        # one element per line: lists of dicts are cascade stages or heads
        items = [f'{pad}{format_value(v, indent + 4)}' for v in value]
        return '[\n' + ',\n'.join(items) + ']'
    if isinstance(value, (list, tuple)):
        inner = ', '.join(format_value(v, indent + 4) for v in value)
        return f'[{inner}]' if isinstance(value, list) else (
            f'({inner}, )' if len(value) == 1 else f'({inner})')
    return repr(value)


def render_config(base: str, overrides: dict, changes: List[str]) -> str:
    """The text of the output config."""
    lines = ['# Generated by tools/focalize.py: a RetinaNet-style version of', f'#   {base}']
    lines += [f'# - {c}' for c in changes]
    lines += [
        f"_base_ = '{base}'",
        '',
        "custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)",
        "runner_type = 'FocalRunner'  # resume/test from checkpoints under torch >= 2.6",
        '',
    ]
    for key, value in overrides.items():
        lines.append(f'{key} = {format_value(value)}')
    return '\n'.join(lines) + '\n'


def focalize(in_config: str, out_config: Optional[str] = None) -> str:
    """Converts ``in_config`` (a path or ``mmdet::...``) and returns the text.

    Args:
        in_config (str): The one-stage detector config to convert.
        out_config (str, optional): Where the text will be written; a local
            ``in_config`` is then referenced relative to it. Defaults to None
            (referenced as given).

    Returns:
        str: The RetinaNet-style config's text.
    """
    cfg = Config.fromfile(resolve_config_path(in_config))
    overrides, changes = focalize_overrides(cfg)
    return render_config(base_reference(in_config, out_config), overrides, changes)
