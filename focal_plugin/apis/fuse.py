"""Swap every mmdet focal-family loss of a config for its fused twin.

Unlike :func:`focal_plugin.apis.focalize.focalize`, nothing but the loss
``type`` changes: the heads, samplers and every loss argument stay as they
are, so any detector that uses ``FocalLoss``, ``QualityFocalLoss``,
``VarifocalLoss`` or ``GaussianFocalLoss`` (one-stage, two-stage, DETR-style,
instance segmentation) computes the same numbers with the fused kernels.

- :func:`fuse_config` does it in memory (``tools/train.py CONFIG --fuse``);
- :func:`fuse` writes a config that inherits from the input and overrides
  only the loss types (``tools/focalize.py --fuse IN OUT``).
"""
import copy
from typing import Dict, List, Optional, Tuple, Union

from mmengine.config import Config

from .focalize import (FocalizeError, base_reference, format_value,
                       resolve_config_path)

# mmdet's focal-family losses and their fused twins in focal_plugin, which
# take the same arguments and compute the same numbers.
FUSED_TWINS: Dict[str, str] = {
    'FocalLoss': 'FusedFocalLoss',
    'QualityFocalLoss': 'FusedQualityFocalLoss',
    'VarifocalLoss': 'FusedVarifocalLoss',
    'GaussianFocalLoss': 'FusedGaussianFocalLoss',
}
# Configs may name mmdet's losses through its registry scope.
MMDET_SCOPE = 'mmdet.'
PLUGIN_IMPORT = 'focal_plugin'

Path = Tuple[Union[str, int], ...]


class FuseError(FocalizeError):
    """The config cannot be fused; the message names the config and says why."""


def stock_loss_name(loss_type) -> Optional[str]:
    """The mmdet loss that ``loss_type`` names, if it is a focal-family loss.

    Args:
        loss_type: A config's ``type`` value: a name, possibly scoped
            (``'mmdet.FocalLoss'``), or a class in lazy-import configs.

    Returns:
        str, optional: ``'FocalLoss'``, ``'QualityFocalLoss'``,
        ``'VarifocalLoss'`` or ``'GaussianFocalLoss'``; None for anything else.
    """
    if not isinstance(loss_type, str):
        return None
    name = loss_type[len(MMDET_SCOPE):] if loss_type.startswith(MMDET_SCOPE) else loss_type
    return name if name in FUSED_TWINS else None


def find_focal_losses(node, path: Path = ()) -> List[Tuple[Path, str]]:
    """Every focal-family loss config under ``node``, depth first.

    Args:
        node: A (nested) config value: dicts, lists, tuples, leaves.
        path (tuple): The keys and list indices that lead to ``node``.
            Defaults to ().

    Returns:
        list[tuple[tuple, str]]: The path of each loss dict and the mmdet loss
        it names.
    """
    found: List[Tuple[Path, str]] = []
    if isinstance(node, dict):
        name = stock_loss_name(node.get('type'))
        if name is not None:
            found.append((path, name))
        for key, value in node.items():
            found += find_focal_losses(value, path + (key, ))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            found += find_focal_losses(value, path + (index, ))
    return found


def _get(node, path: Path):
    for key in path:
        node = node[key]
    return node


def _check_detr_quality_focal_loss(model: dict, path: Path, config_name: str) -> None:
    """Refuses QualityFocalLoss in mmdet's DETR-style heads.

    Their losses branch on ``isinstance(self.loss_cls, QualityFocalLoss)`` to
    pass (label, IoU score) targets; any other class gets class labels, so a
    twin there would train on the wrong targets instead of failing.
    """
    from mmdet.models.dense_heads import DETRHead
    from mmdet.registry import MODELS
    head = _get(model, path[:-1]) if path else None
    head_type = head.get('type') if isinstance(head, dict) else None
    head_cls = MODELS.get(head_type) if isinstance(head_type, str) else head_type
    if isinstance(head_cls, type) and issubclass(head_cls, DETRHead):
        raise FuseError(
            f'{config_name}: model.{".".join(map(str, path))} is a QualityFocalLoss in '
            f'{head_type}, whose loss passes IoU-score targets only to mmdet\'s own '
            'QualityFocalLoss class (an isinstance check); fusing it would train on the wrong '
            'targets, so this config is not fused')


def fuse_config(cfg: Config) -> Config:
    """A copy of ``cfg`` whose focal-family losses are the fused twins.

    Only the losses' ``type`` changes (``FocalLoss`` -> ``FusedFocalLoss``,
    ``QualityFocalLoss`` -> ``FusedQualityFocalLoss``, ``VarifocalLoss`` ->
    ``FusedVarifocalLoss``, ``GaussianFocalLoss`` -> ``FusedGaussianFocalLoss``,
    also when scoped as ``mmdet.<name>``), wherever it sits in ``cfg.model``.
    ``custom_imports`` gains ``focal_plugin`` and ``runner_type`` becomes
    ``FocalRunner`` unless the config names a runner of its own, so that a dump
    of the result (the runner writes one into the work dir) loads by itself.

    Args:
        cfg (Config): A resolved mmdet config.

    Returns:
        Config: The fused copy; ``cfg`` is left as it is.

    Raises:
        FuseError: When the model has no focal-family loss, or has one that a
            twin cannot replace.
    """
    name = cfg.filename or 'the config'
    model = cfg.get('model')
    if model is None:
        raise FuseError(f'{name} has no `model`: not a detector config')
    losses = find_focal_losses(model)
    if not losses:
        raise FuseError(
            f'{name}: its model ({model.get("type")}) uses no focal-family loss '
            f'({", ".join(FUSED_TWINS)}), so there is nothing to fuse')
    for path, stock in losses:
        if stock == 'QualityFocalLoss':
            _check_detr_quality_focal_loss(model, path, name)
    fused = copy.deepcopy(cfg)
    for path, stock in losses:
        _get(fused.model, path)['type'] = FUSED_TWINS[stock]
    fused.merge_from_dict(plugin_settings(cfg))
    return fused


def plugin_settings(cfg: Config) -> dict:
    """``custom_imports`` and ``runner_type`` that load focal_plugin.

    The config's own imports are kept (a child's ``imports`` list replaces the
    base's), and so is a runner it names other than mmengine's ``Runner``.
    """
    imports = cfg.get('custom_imports', {})
    modules = list(imports.get('imports', []))
    if isinstance(imports.get('imports'), str):
        modules = [imports['imports']]
    if PLUGIN_IMPORT not in modules:
        modules.append(PLUGIN_IMPORT)
    settings = dict(custom_imports=dict(
        imports=modules, allow_failed_imports=imports.get('allow_failed_imports', False)))
    if cfg.get('runner_type', 'Runner') == 'Runner':
        settings['runner_type'] = 'FocalRunner'
    return settings


def fuse_overrides(cfg: Config) -> Tuple[dict, List[str]]:
    """The ``model`` overrides of a child config that fuses ``cfg``, and what they change.

    A dict on the way to a loss gets a nested ``dict(... type=<twin>)``, which
    mmengine merges into the base. mmengine's inheritance replaces a list as a
    whole (cascade RoI heads, lists of bbox heads), so a list that holds a
    focal-family loss is written out in full, with only the loss types changed.

    Returns:
        tuple[dict, list[str]]: ``dict(model=...)`` and one line per loss.
    """
    fused = fuse_config(cfg)
    losses = find_focal_losses(cfg.model)
    model_override: dict = {}
    changes = []
    for path, stock in losses:
        where = 'model.' + '.'.join(map(str, path))
        changes.append(f'{where}: {_get(cfg.model, path)["type"]} -> {FUSED_TWINS[stock]}')
        cut = next((i for i, key in enumerate(path) if isinstance(key, int)), None)
        node = model_override
        if cut is None:
            for key in path:
                node = node.setdefault(key, {})
            node['type'] = FUSED_TWINS[stock]
        else:
            for key in path[:cut - 1]:
                node = node.setdefault(key, {})
            whole = _get(fused.model, path[:cut])
            node[path[cut - 1]] = whole.to_dict() if hasattr(whole, 'to_dict') else \
                copy.deepcopy(whole)
    return dict(model=model_override), changes


def render_fused_config(base: str, cfg: Config, overrides: dict, changes: List[str]) -> str:
    """The text of the fused child config of ``base``."""
    settings = plugin_settings(cfg)
    imports = settings['custom_imports']
    lines = ['# Generated by tools/focalize.py --fuse: the fused focal-family losses in',
             f'#   {base}', '# with the same arguments; nothing else changes.']
    lines += [f'# - {c}' for c in changes]
    lines += [
        f'_base_ = [{base!r}]',
        '',
        f'custom_imports = dict(imports={imports["imports"]!r}, '
        f'allow_failed_imports={imports["allow_failed_imports"]!r})',
    ]
    if 'runner_type' in settings:
        lines.append(f"runner_type = {settings['runner_type']!r}  # resume/test from "
                     'checkpoints under torch >= 2.6')
    lines.append('')
    for key, value in overrides.items():
        lines.append(f'{key} = {format_value(value)}')
    return '\n'.join(lines) + '\n'


def fuse(in_config: str, out_config: Optional[str] = None) -> str:
    """The text of a config that inherits from ``in_config`` with fused losses.

    Args:
        in_config (str): A config path, or ``mmdet::<path>`` in the installed
            mmdet's configs.
        out_config (str, optional): Where the text will be written; a local
            ``in_config`` is then referenced relative to it. Defaults to None
            (referenced as given).

    Returns:
        str: The config's text.

    Raises:
        FuseError: When ``in_config`` has no focal-family loss (see
            :func:`fuse_config`).
    """
    cfg = Config.fromfile(resolve_config_path(in_config))
    overrides, changes = fuse_overrides(cfg)
    return render_fused_config(base_reference(in_config, out_config), cfg, overrides, changes)
