"""Calling the family's compiled ops from Python: one path for every loss.

Each public op (``sigmoid_focal_loss``, ``quality_focal_loss``, ...) checks its
arguments and hands the op's positional arguments to :class:`LossOp`, which
picks the training kernel (loss and gradient in one pass) when a gradient is
wanted, falls back to the pure-PyTorch reference where no kernel exists, and
turns the op's unreduced loss or sum into mmdet's reduction.
"""
import math
from typing import Callable, Sequence

import torch

from . import extension
from .arguments import AvgFactor, accumulate_dtype

# ignore_index that no label can take: the members without ignored rows pass it.
NO_IGNORE = -2**63


def finish_reduction(loss: torch.Tensor, reduction: str, avg_factor: AvgFactor,
                     count: int) -> torch.Tensor:
    """Turns an op's 'none' or 'sum' output into mmdet's reduction.

    'mean' averages over ``count`` terms, or divides the sum by ``avg_factor``
    (plus float32 eps, as mmdet's ``weight_reduce_loss`` does, so that an
    avg_factor of 0 gives 0, not NaN). Zero terms give a mean of 0.
    """
    if reduction != 'mean':
        return loss
    if avg_factor is None:
        return loss / max(count, 1)
    return loss / (avg_factor + torch.finfo(torch.float32).eps)


def expected_grad_scale(pred: torch.Tensor, reduction: str, avg_factor: AvgFactor,
                        count: int) -> float:
    """The gradient that the op's summed loss will most likely receive.

    That is the derivative of :func:`finish_reduction` when the reduced loss
    is used as it is (a loss_weight of 1, losses added up): ``1 / avg_factor``
    or ``1 / count`` for 'mean', 1 for 'sum', computed with the same tensor
    operations as autograd's, so that the values agree to the bit. The
    training kernel folds it into the gradient, and the backward, finding it
    there, has nothing left to multiply (a pass over N x C values saved).

    Returns 1 (nothing folded) where folding could lose precision or would
    need a value from the device: float16, whose gradient scaled before a
    GradScaler's factor arrives could underflow; CUDA, where reading
    avg_factor or the incoming gradient would synchronise; a traced call;
    an avg_factor that requires grad; an avg_factor (inf, NaN, -eps) that
    makes the scale 0 or not finite.
    """
    if (reduction != 'mean' or pred.device.type != 'cpu' or pred.dtype == torch.float16
            or torch.compiler.is_compiling()):
        return 1.0
    if isinstance(avg_factor, torch.Tensor) and (avg_factor.device.type != 'cpu'
                                                 or avg_factor.requires_grad):
        return 1.0
    dtype = accumulate_dtype(pred.dtype)
    # Cast back: a float64 avg_factor makes the division float64, and autograd
    # casts the gradient to the loss's dtype.
    scale = finish_reduction(torch.ones((), dtype=dtype), reduction, avg_factor,
                             count).to(dtype).item()
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
        if self.fused_grad and pred.requires_grad and torch.is_grad_enabled():
            # Training: loss and derivative in one pass (see registration.py).
            grad_scale = expected_grad_scale(pred, reduction, avg_factor, count)
            loss, _ = getattr(torch.ops.focal_plugin, f'_{self.name}_with_grad')(*args, grad_scale)
        else:
            loss = getattr(torch.ops.focal_plugin, self.name)(*args)
        return finish_reduction(loss, reduction, avg_factor, count)

