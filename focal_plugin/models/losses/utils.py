"""Configuration checks shared by the fused losses of the root ``MODELS``.

Each check raises an error that names the argument and what was expected, at
build time where the argument comes from a config.
"""
import inspect
from typing import Optional, Tuple

import torch

from ...ops.arguments import REDUCTIONS, AlphaLike, parse_alpha
from ...ops.arguments import check_bool, check_nonnegative

__all__ = [
    'InvalidReductionError', 'reject_unknown_arguments', 'accepted_arguments', 'check_bool',
    'check_nonnegative', 'check_loss_weight', 'check_reduction', 'resolve_reduction',
    'check_use_sigmoid', 'check_pred_tensor', 'elementwise_rows', 'check_alpha'
]


class InvalidReductionError(ValueError, AssertionError):
    """An unknown reduction name.

    mmdet's losses assert on ``reduction_override``; deriving from both
    ValueError and AssertionError keeps code that expects either working.
    """


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


def check_loss_weight(loss_weight: float) -> float:
    return check_nonnegative(loss_weight, 'loss_weight')


def check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise InvalidReductionError(f'reduction must be one of {REDUCTIONS}, got {reduction!r}')
    return reduction


def resolve_reduction(reduction_override: Optional[str], reduction: str) -> str:
    """mmdet's ``reduction_override`` contract: None keeps ``reduction``."""
    if reduction_override is None:
        return reduction
    if reduction_override not in REDUCTIONS:
        raise InvalidReductionError(f'reduction_override must be one of {(None, ) + REDUCTIONS}, '
                                    f'got {reduction_override!r}')
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
    if not isinstance(target, torch.Tensor):
        raise TypeError(f'target must be a torch.Tensor, got {type(target).__name__}')
    shape = pred.shape
    if target.shape != shape:
        raise ValueError(f'target must have pred\'s shape {tuple(shape)}, got '
                         f'{tuple(target.shape)}')
    num_classes = shape[-1] if pred.dim() >= 2 else 1
    pred_2d = pred.reshape(-1, num_classes)
    target_2d = target.reshape(-1, num_classes)
    if weight is None:
        return pred_2d, target_2d, None
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f'weight must be None or a tensor, got {type(weight).__name__}')
    try:
        full = torch.broadcast_to(weight, shape)
    except RuntimeError:
        raise ValueError(f'weight of shape {tuple(weight.shape)} must broadcast to pred\'s '
                         f'shape {tuple(shape)}') from None
    if pred.dim() >= 2 and (weight.dim() == 0 or weight.size(-1) == 1):
        return pred_2d, target_2d, full[..., 0].reshape(-1)  # one value per row
    return pred_2d, target_2d, full.reshape(-1, num_classes)


def check_alpha(alpha: AlphaLike) -> Tuple[Optional[float], Optional[torch.Tensor]]:
    """Returns (scalar alpha, None) or (None, per-class alpha as a float64 tensor).

    Per-class values are checked here, once, so that the op need not read a
    device tensor back at every call; their length is checked against the
    number of classes C at forward time, when C is known.
    """
    scalar, values = parse_alpha(alpha, check_device_values=True)
    if values is not None:
        values = values.to('cpu', torch.float64)
    return scalar, values
