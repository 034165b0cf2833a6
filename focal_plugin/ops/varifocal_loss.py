"""Fused varifocal loss (Zhang et al., "VarifocalNet"), mmdet's
``VarifocalLoss``, over the ``torch.ops.focal_plugin`` custom ops."""
from typing import Optional

import torch

from . import arguments, reference
from .arguments import AlphaLike, AvgFactor
from .loss_op import NO_IGNORE, LossOp

__all__ = ['varifocal_loss']

_VARIFOCAL = LossOp('varifocal_loss', fused_grad=True)


def varifocal_loss(pred: torch.Tensor,
                   target: torch.Tensor,
                   weight: Optional[torch.Tensor] = None,
                   alpha: AlphaLike = 0.75,
                   gamma: float = 2.0,
                   iou_weighted: bool = True,
                   reduction: str = 'mean',
                   avg_factor: AvgFactor = None) -> torch.Tensor:
    """Varifocal loss for IoU-aware classification scores.

    Positives (target > 0) take ``target * BCE(pred, target)`` (``BCE`` alone
    without ``iou_weighted``); negatives take
    ``alpha * |sigmoid(pred) - target|^gamma * BCE(pred, target)``.

    Args:
        pred (Tensor): Logits of shape (N, C).
        target (Tensor): IoU-aware targets (N, C) in [0, 1].
        weight (Tensor, optional): Per-row (N,) or per-element (N, C) weight.
            Defaults to None.
        alpha (float | Sequence[float] | Tensor): Balance of the negatives, in
            [0, 1]: one float (mmdet), or one per class. Defaults to 0.75.
        gamma (float): Exponent of the modulating factor, >= 0. Defaults to 2.0.
        iou_weighted (bool): Weight the positives by their target. Defaults
            to True.
        reduction (str): 'none', 'mean' (over all N*C elements, or the sum
            divided by ``avg_factor``) or 'sum'. Defaults to 'mean'.
        avg_factor (float | Tensor, optional): Denominator of 'mean'.
            Defaults to None.

    Returns:
        Tensor: Per-element loss (N, C) for 'none'; otherwise a 0-dim tensor
        (float32 for reduced-precision inputs).

    Note:
        On CPU a target outside [0, 1] raises a ValueError; on CUDA it makes
        the element's loss and gradient NaN, without synchronising.
    """
    a = arguments.varifocal_args(pred, target, weight, alpha, gamma, iou_weighted, reduction,
                                 avg_factor)
    # A per-class alpha replaces the scalar one in the kernel.
    return _VARIFOCAL(
        (a.pred, a.target, None, a.weight, a.class_alpha, NO_IGNORE),
        (a.alpha if a.alpha is not None else 1.0, a.gamma, a.iou_weighted), reduction,
        avg_factor, pred.numel(), lambda: reference.varifocal_loss_from_args(a))
