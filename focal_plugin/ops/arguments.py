"""Argument checks and normalisation shared by the fused op and the reference.

Every check raises an error that names the argument and what was expected.
None of them reads tensor values from the device (no ``.item()``): label
values are checked by the kernels (CPU: ValueError; CUDA: NaN loss).
"""
import math
import numbers
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch

AlphaLike = Union[None, float, Sequence[float], torch.Tensor]
AvgFactor = Union[None, float, int, torch.Tensor]

REDUCTIONS = ('none', 'mean', 'sum')


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16/float32 accumulate in float32, float64 in float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class FocalArgs(NamedTuple):
    """Normalised arguments, in the form the compiled ops take."""
    pred: torch.Tensor
    target: torch.Tensor  # int64 (N,) or pred-dtype (N, C)
    weight: Optional[torch.Tensor]  # accumulation dtype, (N,) or (N, C)
    class_alpha: Optional[torch.Tensor]  # accumulation dtype, (C,)
    gamma: float
    alpha: Optional[float]  # scalar alpha when class_alpha is None
    reduction: str
    avg_factor: AvgFactor
    ignore_index: int


def check_pred(pred: torch.Tensor, name: str = 'pred') -> None:
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(pred).__name__}')
    if pred.dim() != 2:
        raise ValueError(f'{name} must be a 2-D tensor of logits (N, C), got shape '
                         f'{tuple(pred.shape)}')
    if pred.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f'{name} must be float16, bfloat16, float32 or float64, got {pred.dtype}')
    if pred.size(1) == 0:
        raise ValueError(f'{name} must have at least one class column, got shape '
                         f'{tuple(pred.shape)}')


def check_same_device(pred: torch.Tensor, tensor: torch.Tensor, name: str) -> None:
    if tensor.device != pred.device:
        raise ValueError(f'{name} is on {tensor.device} but pred is on {pred.device}; '
                         'move both to the same device')


def check_gamma(gamma: float) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real):
        raise TypeError(f'gamma must be a real number >= 0, got {gamma!r}')
    gamma = float(gamma)
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f'gamma must be a finite number >= 0, got {gamma!r}')
    return gamma


def check_reduction(reduction: str, avg_factor: AvgFactor) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if avg_factor is not None and reduction == 'sum':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    if isinstance(avg_factor, torch.Tensor) and avg_factor.numel() != 1:
        raise ValueError('avg_factor must be a number or a one-element tensor, got a tensor '
                         f'of shape {tuple(avg_factor.shape)}')


def check_ignore_index(ignore_index: int, num_labels: int) -> int:
    """``num_labels``: labels 0..num_labels-1 are taken (classes and background)."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f'ignore_index must be an int, got {ignore_index!r}')
    if 0 <= ignore_index < num_labels:
        raise ValueError(f'ignore_index={ignore_index} collides with a real label '
                         f'(0..{num_labels - 1}); use a negative value or >= {num_labels}')
    return int(ignore_index)


ALPHA_EXPECTED = 'None, a float in [0, 1] or a 1-D sequence of per-class floats in [0, 1]'


def parse_alpha(alpha: AlphaLike, check_device_values: bool = False
                ) -> Tuple[Optional[float], Optional[torch.Tensor]]:
    """Validates ``alpha`` without knowing the number of classes.

    Args:
        alpha (float | Sequence[float] | Tensor, optional): The balancing
            factor: None, one float, or one float per class.
        check_device_values (bool): Whether to check the values of a tensor
            that is not on the CPU, which reads it back (a device sync).
            Defaults to False.

    Returns:
        tuple: ``(float, None)`` for a scalar, ``(None, Tensor)`` with the
        per-class values (a sequence becomes a float64 CPU tensor), or
        ``(None, None)`` for None.
    """
    if alpha is None:
        return None, None
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f'alpha must be {ALPHA_EXPECTED}, got {alpha!r}')
        return float(alpha), None
    if isinstance(alpha, torch.Tensor):
        values = alpha.detach()
        if not values.is_floating_point():
            raise TypeError(f'alpha must be {ALPHA_EXPECTED}, got a tensor of {values.dtype}')
    elif isinstance(alpha, Sequence) and not isinstance(alpha, (str, bytes)):
        if any(isinstance(a, bool) or not isinstance(a, numbers.Real) for a in alpha):
            raise TypeError(f'alpha must be {ALPHA_EXPECTED}, got {alpha!r}')
        values = torch.tensor([float(a) for a in alpha], dtype=torch.float64)
    else:
        raise TypeError(f'alpha must be {ALPHA_EXPECTED}, got {alpha!r}')
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f'alpha must be {ALPHA_EXPECTED}, got a sequence of shape '
                         f'{tuple(values.shape)}')
    # Values on a device are left to the caller unless asked for: reading them
    # back would sync at every call (FusedFocalLoss checks its alpha once, at build).
    if ((values.device.type == 'cpu' or check_device_values)
            and not torch.compiler.is_compiling()
            and not bool(((values >= 0) & (values <= 1)).all())):
        raise ValueError(f'alpha must be {ALPHA_EXPECTED}, got {values.tolist()}')
    return None, values


def split_alpha(alpha: AlphaLike, num_classes: int, pred: torch.Tensor
                ) -> Tuple[Optional[float], Optional[torch.Tensor]]:
    """Returns (scalar alpha or None, per-class alpha on pred's device or None)."""
    scalar, values = parse_alpha(alpha)
    if values is None:
        return scalar, None
    if values.numel() != num_classes:
        raise ValueError(f'per-class alpha must have length C={num_classes}, got shape '
                         f'{tuple(values.shape)}')
    return None, values.to(device=pred.device, dtype=accumulate_dtype(pred.dtype)).contiguous()


def check_weight(weight: Optional[torch.Tensor], pred: torch.Tensor,
                 per_element_ok: bool) -> Optional[torch.Tensor]:
    if weight is None:
        return None
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f'weight must be None or a tensor, got {type(weight).__name__}')
    n, c = pred.shape
    check_same_device(pred, weight, 'weight')
    if weight.dim() == 2 and weight.size(1) == 1 and weight.size(0) == n:
        weight = weight.reshape(n)  # mmdet passes (N, 1) now and then
    ok = (weight.dim() == 1 and weight.size(0) == n) or (
        per_element_ok and tuple(weight.shape) == (n, c))
    if not ok:
        expected = f'({n},) or ({n}, {c})' if per_element_ok else f'({n},)'
        raise ValueError(f'weight must have shape {expected}, got {tuple(weight.shape)}')
    if weight.is_complex():
        raise TypeError(f'weight must be a real tensor, got {weight.dtype}')
    return weight.to(accumulate_dtype(pred.dtype)).contiguous()


def check_labels_tensor(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    n = pred.size(0)
    if target.dim() != 1 or target.size(0) != n:
        raise ValueError(f'class-index target must have shape ({n},), got {tuple(target.shape)}')
    return target.long().contiguous()


def sigmoid_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                 ignore_index) -> FocalArgs:
    """Checks and normalises the arguments of ``sigmoid_focal_loss``."""
    check_pred(pred)
    n, c = pred.shape
    if not isinstance(target, torch.Tensor):
        raise TypeError(f'target must be a torch.Tensor, got {type(target).__name__}')
    check_same_device(pred, target, 'target')
    if target.is_floating_point():
        if tuple(target.shape) != (n, c):
            raise ValueError(f'float (soft) target must have pred\'s shape ({n}, {c}), got '
                             f'{tuple(target.shape)}; class indices must be an integer '
                             'tensor of shape (N,)')
        target = target.to(pred.dtype).contiguous()
    elif target.dtype == torch.bool or target.is_complex():
        raise TypeError(f'target must be int64 class indices (N,) or float probabilities '
                        f'(N, C), got {target.dtype}')
    else:
        target = check_labels_tensor(target, pred)
    scalar_alpha, class_alpha = split_alpha(alpha, c, pred)
    check_reduction(reduction, avg_factor)
    return FocalArgs(pred, target, check_weight(weight, pred, per_element_ok=True), class_alpha,
                     check_gamma(gamma), scalar_alpha, reduction, avg_factor,
                     check_ignore_index(ignore_index, c + 1))


def softmax_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                 ignore_index) -> FocalArgs:
    """Checks and normalises the arguments of ``softmax_focal_loss``."""
    check_pred(pred)
    n, k = pred.shape
    if not isinstance(target, torch.Tensor):
        raise TypeError(f'target must be a torch.Tensor, got {type(target).__name__}')
    check_same_device(pred, target, 'target')
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise TypeError(f'softmax focal loss target must be integer class indices (N,), got '
                        f'{target.dtype}')
    target = check_labels_tensor(target, pred)
    scalar_alpha, class_alpha = split_alpha(alpha, k, pred)
    check_reduction(reduction, avg_factor)
    return FocalArgs(pred, target, check_weight(weight, pred, per_element_ok=False),
                     class_alpha, check_gamma(gamma), scalar_alpha, reduction, avg_factor,
                     check_ignore_index(ignore_index, k))


def finish_reduction(loss: torch.Tensor, reduction: str, avg_factor: AvgFactor,
                     numel: int) -> torch.Tensor:
    """Turns the op's 'none' or 'sum' output into mmdet's reduction.

    'mean' averages over all elements, or divides the sum by ``avg_factor``
    (plus float32 eps, as mmdet's ``weight_reduce_loss`` does, so that an
    avg_factor of 0 gives 0, not NaN). Zero elements give a mean of 0.
    """
    if reduction != 'mean':
        return loss
    if avg_factor is None:
        return loss / max(numel, 1)
    return loss / (avg_factor + torch.finfo(torch.float32).eps)
