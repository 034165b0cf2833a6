"""Checks and shape handling shared by the fused losses of the root ``MODELS``.

The arguments that the losses hand to the ops (gamma, alpha, reduction,
ignore_index, ...) are checked by :mod:`focal_plugin.ops.arguments`, which
the losses call at build time too; this module holds what only the losses
take (unknown config keys, ``use_sigmoid``, ``reduction_override``, pred of
any shape). Each check raises an error that names the argument and what was
expected.
"""
import inspect
from typing import Optional, Tuple

import torch

from ...ops.arguments import AlphaLike, check_bool, check_reduction, check_tensor, parse_alpha

__all__ = [
    'reject_unknown_arguments', 'accepted_arguments', 'resolve_reduction', 'check_use_sigmoid',
    'check_pred_tensor', 'elementwise_rows', 'check_alpha'
]


def reject_unknown_arguments(cls: type, kwargs: dict) -> None:
    """Raises a TypeError listing ``cls``'s accepted arguments if ``kwargs``
    holds any: a misspelt key in a config must not be dropped silently."""
    if kwargs:
        raise TypeError(f'{cls.__name__} got unexpected keyword argument(s) {sorted(kwargs)}; '
                        f'accepted arguments are {accepted_arguments(cls)}')


def accepted_arguments(cls: type) -> Tuple[str, ...]:
    """The names of ``cls.__init__``'s arguments, without self and ``**kwargs``."""
    params = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in params
                 if p.name != 'self' and p.kind is not inspect.Parameter.VAR_KEYWORD)


def resolve_reduction(reduction_override: Optional[str], reduction: str) -> str:
    """mmdet's ``reduction_override`` contract: None keeps ``reduction``.

    Only the override is checked: ``reduction`` was checked at build time.
    The override is checked here, under its own name, rather than left to the
    op, whose error would name ``reduction``.
    """
    if check_reduction(reduction_override, 'reduction_override', optional=True) is None:
        return reduction
    return reduction_override


def check_use_sigmoid(use_sigmoid: bool, loss_name: str) -> None:
    """The family's losses exist in their sigmoid form only, as in mmdet."""
    if check_bool(use_sigmoid, 'use_sigmoid') is not True:
        raise ValueError(f'use_sigmoid=False is not supported: {loss_name} exists only in its '
                         'sigmoid form (as in mmdet); set use_sigmoid=True')


def check_pred_tensor(pred: torch.Tensor) -> None:
    if not isinstance(pred, torch.Tensor) or not pred.is_floating_point():
        raise TypeError('pred must be a floating-point tensor, got '
                        f'{getattr(pred, "dtype", type(pred).__name__)}')


def elementwise_rows(pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]
                     ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Views an elementwise loss's pred/target/weight as the ops' (rows, C).

    pred of any shape: its last axis is the class axis (one class for a 0-d or
    1-D pred). target must have pred's shape. weight follows mmdet's
    ``weight_reduce_loss``: it must broadcast to pred's shape; a weight that
    is constant along the class axis (e.g. (N, 1)) stays one value per row.
    """
    check_pred_tensor(pred)
    check_tensor(target, 'target')
    shape = pred.shape
    if target.shape != shape:
        raise ValueError(f'target must have pred\'s shape {tuple(shape)}, got '
                         f'{tuple(target.shape)}')
    num_classes = shape[-1] if pred.dim() >= 2 else 1
    pred_2d = pred.reshape(-1, num_classes)
    target_2d = target.reshape(-1, num_classes)
    check_tensor(weight, 'weight', optional=True)
    if weight is None:
        return pred_2d, target_2d, None
    try:
        full = torch.broadcast_to(weight, shape)
    except RuntimeError:
        raise ValueError(f'weight of shape {tuple(weight.shape)} must broadcast to pred\'s '
                         f'shape {tuple(shape)}') from None
    if pred.dim() >= 2 and (weight.dim() == 0 or weight.size(-1) == 1):
        return pred_2d, target_2d, full[..., 0].reshape(-1)  # one value per row
    return pred_2d, target_2d, full.reshape(-1, num_classes)


def check_alpha(alpha: AlphaLike,
                optional: bool = True) -> Tuple[Optional[float], Optional[torch.Tensor]]:
    """Returns (scalar alpha, None) or (None, per-class alpha as a float64 tensor).

    Per-class values are checked here, once, so that the op need not read a
    device tensor back at every call; their length is checked against the
    number of classes C at forward time, when C is known.

    Args:
        alpha (float | Sequence[float] | Tensor, optional): The loss's alpha.
        optional (bool): Whether None (no balancing) is accepted. Defaults
            to True.
    """
    scalar, values = parse_alpha(alpha, check_device_values=True, optional=optional)
    if values is not None:
        values = values.to('cpu', torch.float64)
    return scalar, values
