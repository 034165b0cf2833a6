"""Calling the family's compiled ops from Python: one path for every loss.

Each public op (``sigmoid_focal_loss``, ``quality_focal_loss``, ...) checks its
arguments and hands the op's positional arguments to :class:`LossOp`, which
picks the training kernel (loss and gradient in one pass) when a gradient is
wanted, falls back to the pure-PyTorch reference where no kernel exists, and
turns the op's unreduced loss or sum into mmdet's reduction.
"""
import math
import struct
from typing import Callable, Sequence, Union

import torch

from . import extension
from .arguments import AvgFactor, accumulate_dtype

# ignore_index that no label can take: the members without ignored rows pass it.
NO_IGNORE = -2**63


def mean_denominator(avg_factor: AvgFactor, count: int) -> Union[int, float, torch.Tensor]:
    """What 'mean' divides the summed loss by.

    ``count`` terms (at least 1), or ``avg_factor`` plus float32 eps, as
    mmdet's ``weight_reduce_loss`` does, so that an avg_factor of 0 gives 0,
    not NaN.
    """
    if avg_factor is None:
        return max(count, 1)
    return avg_factor + torch.finfo(torch.float32).eps


def finish_reduction(loss: torch.Tensor, reduction: str, avg_factor: AvgFactor,
                     count: int) -> torch.Tensor:
    """Turns an op's 'none' or 'sum' output into mmdet's reduction.

    'mean' divides the sum by :func:`mean_denominator`. Zero terms give a
    mean of 0.
    """
    if reduction != 'mean':
        return loss
    return loss / mean_denominator(avg_factor, count)


def _rounded(dtype: torch.dtype, value: float) -> float:
    """``value`` rounded to float32 (to nearest even), or as it is for float64."""
    if dtype == torch.float64:
        return value
    try:
        return struct.unpack('f', struct.pack('f', value))[0]
    except OverflowError:  # beyond float32's range: it rounds to infinity
        return math.copysign(math.inf, value)


def expected_grad_scale(pred: torch.Tensor, reduction: str,
                        denominator: Union[int, float, torch.Tensor]) -> float:
    """The gradient that the op's summed loss will most likely receive.

    That is the derivative of 'mean' (``loss / denominator``, see
    :func:`mean_denominator`) when the reduced loss is used as it is (a
    loss_weight of 1, losses added up): ``1 / denominator``, rounded as
    autograd's division rounds it, so that the values agree to the bit. The
    training kernel folds it into the gradient, and the backward, finding it
    there, has nothing left to multiply (a pass over N x C values saved). It
    is worked out on the host, without tensor operations: a tensor
    denominator is read once (``item``, free for a CPU scalar), a number not
    at all.

    Returns 1 (nothing folded) where folding could lose precision or would
    need a value from the device: float16, whose gradient scaled before a
    GradScaler's factor arrives could underflow; CUDA, where reading the
    denominator or the incoming gradient would synchronise; a traced call;
    a denominator tensor that requires grad or is not 0-dim (a (1,) one
    would decide the loss's dtype); one (inf, NaN, 0) that makes the scale
    0 or not finite. A scale that autograd does not reproduce costs only the
    multiply it would have saved: the backward checks what arrives.
    """
    if (reduction != 'mean' or pred.device.type != 'cpu' or pred.dtype == torch.float16
            or torch.compiler.is_compiling()):
        return 1.0
    loss_dtype = accumulate_dtype(pred.dtype)
    if isinstance(denominator, torch.Tensor):
        if (denominator.device.type != 'cpu' or denominator.requires_grad
                or denominator.dim() != 0):
            return 1.0
        if denominator.dtype.is_complex:
            return 1.0
        # Autograd divides in the promoted dtype of the loss and the 0-dim
        # denominator (float64 if either is, else float32), then casts the
        # gradient to the loss's dtype.
        quotient_dtype = (torch.float64 if torch.float64 in (loss_dtype, denominator.dtype) else
                          torch.float32)
        divisor = denominator.item()
    else:
        # A Python number is cast to the loss's dtype before dividing.
        quotient_dtype, divisor = loss_dtype, _rounded(loss_dtype, float(denominator))
    if divisor == 0 or not math.isfinite(divisor):
        return 1.0
    # Division of two float32 values in float64, then rounded to float32, is
    # float32 division, correctly rounded: float64 has more than twice the bits.
    scale = _rounded(loss_dtype, _rounded(quotient_dtype, 1.0 / divisor))
    return scale if math.isfinite(scale) and scale != 0.0 else 1.0


class LossOp:
    """One member of the family as Python calls it.

    Args:
        name (str): The op's name in ``torch.ops.focal_plugin``.
        fused_grad (bool): Whether the op has a ``_<name>_with_grad`` training
            kernel (the elementwise members).
    """

    def __init__(self, name: str, fused_grad: bool) -> None:
        self.name = name
        self.fused_grad = fused_grad

    def __call__(self, tensors: Sequence, scalars: Sequence, reduction: str,
                 avg_factor: AvgFactor, count: int,
                 fallback: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Runs the op.

        Args:
            tensors (Sequence): pred, target, score, weight, class_alpha and
                ignore_index, checked and normalised.
            scalars (Sequence): The member's own scalar arguments.
            reduction (str): 'none', 'mean' or 'sum'.
            avg_factor (float | Tensor, optional): Denominator of 'mean'.
            count (int): Number of terms 'mean' averages over.
            fallback (Callable): Computes the loss with the reference from
                the checked arguments, for devices without a kernel.

        Returns:
            Tensor: The op's unreduced loss, or its reduction.
        """
        pred = tensors[0]
        if not extension.has_kernel(pred.device):
            extension.warn_fallback(pred.device)
            return fallback()
        args = (*tensors, *scalars, reduction != 'none')
        denominator = mean_denominator(avg_factor, count) if reduction == 'mean' else None
        if self.fused_grad and pred.requires_grad and torch.is_grad_enabled():
            # Training: loss and derivative in one pass (see registration.py).
            grad_scale = expected_grad_scale(pred, reduction, denominator)
            loss, _ = getattr(torch.ops.focal_plugin, f'_{self.name}_with_grad')(*args, grad_scale)
        else:
            loss = getattr(torch.ops.focal_plugin, self.name)(*args)
        return loss if denominator is None else loss / denominator

