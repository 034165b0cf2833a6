"""Fused quality focal loss (Li et al., "Generalized Focal Loss"), mmdet's
``QualityFocalLoss``, over the ``torch.ops.focal_plugin`` custom ops."""
from typing import Optional

import torch

from . import arguments, reference
from .arguments import AvgFactor
from .loss_op import NO_IGNORE, LossOp

__all__ = ['quality_focal_loss']

_QUALITY_FOCAL = LossOp('quality_focal_loss', fused_grad=True)


def quality_focal_loss(pred: torch.Tensor,
                       target: torch.Tensor,
                       score: Optional[torch.Tensor] = None,
                       weight: Optional[torch.Tensor] = None,
                       beta: float = 2.0,
                       activated: bool = False,
                       reduction: str = 'mean',
                       avg_factor: AvgFactor = None) -> torch.Tensor:
    """Quality focal loss, QFL = BCE(pred, y) |y - sigmoid(pred)|^beta, summed per row.

    The target y of each element is the joint class-quality score: the
    label's ``score`` in its column and 0 elsewhere (mmdet's tuple target), or
    a soft target given directly.

    Args:
        pred (Tensor): Logits of shape (N, C) (probabilities if ``activated``);
            float16, bfloat16, float32 or float64.
        target (Tensor): Class indices (N,), where 0..C-1 is a class and C is
            background, with ``score``; or soft targets (N, C) in [0, 1].
        score (Tensor, optional): The quality target (e.g. IoU) of each row's
            label, (N,) in [0, 1]; required with class indices. Defaults to
            None.
        weight (Tensor, optional): Per-row (N,) or per-element (N, C) weight.
            Defaults to None.
        beta (float): Exponent of the modulating factor, >= 0. Defaults to 2.0.
        activated (bool): pred holds probabilities, not logits. Defaults to
            False.
        reduction (str): 'none', 'mean' or 'sum'. 'mean' averages the per-row
            losses over N, or divides their sum by ``avg_factor``, as mmdet.
            Defaults to 'mean'.
        avg_factor (float | Tensor, optional): Denominator of 'mean'.
            Defaults to None.

    Returns:
        Tensor: Per-row loss (N,) for 'none', otherwise a 0-dim tensor; both
        float32 for float16/bfloat16 inputs, since a row sums C elements of
        up to ~1e4 (logits of ±1e4), past float16's range.

    Note:
        On CPU a label outside 0..C or a score or target outside [0, 1]
        raises a ValueError (mmdet's QualityFocalLoss treats a label above C as
        background without a word). On CUDA the values are checked inside the
        kernel without synchronising: such a row or element makes the loss and
        its gradient NaN.
    """
    a = arguments.quality_focal_args(pred, target, score, weight, beta, activated, reduction,
                                     avg_factor)
    loss = _QUALITY_FOCAL(
        (a.pred, a.target, a.score, a.weight, None, NO_IGNORE), (a.beta, a.activated),
        reduction, avg_factor, pred.size(0), lambda: reference.quality_focal_loss_from_args(a))
    if reduction == 'none' and loss.dim() == 2:
        # The kernels' unreduced loss is per element; mmdet's is the row sum,
        # taken in the accumulation dtype: C terms of up to ~1e4 each would
        # overflow float16.
        return loss.sum(dim=1, dtype=arguments.accumulate_dtype(pred.dtype))
    return loss
