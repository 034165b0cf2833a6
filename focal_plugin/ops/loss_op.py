"""Calling the family's compiled ops from Python: one path for every loss.

Each public op (``sigmoid_focal_loss``, ``quality_focal_loss``, ...) checks its
arguments and hands the op's positional arguments to :class:`LossOp`, which
picks the training kernel (loss and gradient in one pass) when a gradient is
wanted, falls back to the pure-PyTorch reference where no kernel exists, and
turns the op's unreduced loss or sum into mmdet's reduction.
"""
from typing import Callable, Sequence

import torch

from . import extension
from .arguments import AvgFactor

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
            loss, _ = getattr(torch.ops.focal_plugin, f'_{self.name}_with_grad')(*args)
        else:
            loss = getattr(torch.ops.focal_plugin, self.name)(*args)
        return finish_reduction(loss, reduction, avg_factor, count)

