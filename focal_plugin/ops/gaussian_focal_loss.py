"""Fused gaussian focal loss (Law and Deng, "CornerNet"), mmdet's
``GaussianFocalLoss``, over the ``torch.ops.focal_plugin`` custom ops."""
from typing import Optional

import torch

from . import arguments, reference
from .arguments import AvgFactor
from .loss_op import NO_IGNORE, LossOp

__all__ = ['gaussian_focal_loss']

_GAUSSIAN_FOCAL = LossOp('gaussian_focal_loss', fused_grad=True)


def gaussian_focal_loss(pred: torch.Tensor,
                        target: torch.Tensor,
                        weight: Optional[torch.Tensor] = None,
                        alpha: float = 2.0,
                        gamma: float = 4.0,
                        pos_weight: float = 1.0,
                        neg_weight: float = 1.0,
                        logits: bool = False,
                        reduction: str = 'mean',
                        avg_factor: AvgFactor = None) -> torch.Tensor:
    """Focal loss for gaussian heatmap targets (CornerNet, CenterNet).

    Per element, with positives where the target is exactly 1:
    ``pos_weight [t == 1] (1 - p)^alpha (-log p) + neg_weight (1 - t)^gamma
    p^alpha (-log(1 - p))``.

    Args:
        pred (Tensor): Probabilities p of shape (N, C), as mmdet's heads pass
            them (both logs take mmdet's eps of 1e-12); logits with
            ``logits=True``.
        target (Tensor): Gaussian heatmap (N, C), normally in [0, 1]. Other
            values follow the formula, as in mmdet (whose CenterNetUpdateHead
            fills the heatmap of an image without objects with num_classes).
        weight (Tensor, optional): Per-row (N,) or per-element (N, C) weight.
            Defaults to None.
        alpha (float): Exponent of the prediction, >= 0. Defaults to 2.0.
        gamma (float): Exponent of the negatives' target, >= 0. Defaults to 4.0.
        pos_weight (float): Weight of the positive term, >= 0. Defaults to 1.0.
        neg_weight (float): Weight of the negative term, >= 0. Defaults to 1.0.
        logits (bool): pred holds logits: p = sigmoid(pred) with exact
            log-sigmoids and no eps, finite for any logit. Defaults to False.
        reduction (str): 'none', 'mean' (over all N*C elements, or the sum
            divided by ``avg_factor``) or 'sum'. Defaults to 'mean'.
        avg_factor (float | Tensor, optional): Denominator of 'mean'.
            Defaults to None.

    Returns:
        Tensor: Per-element loss (N, C) for 'none'; otherwise a 0-dim tensor
        (float32 for reduced-precision inputs).
    """
    a = arguments.gaussian_focal_args(pred, target, weight, alpha, gamma, pos_weight, neg_weight,
                                      logits, reduction, avg_factor)
    return _GAUSSIAN_FOCAL(
        (a.pred, a.target, None, a.weight, None, NO_IGNORE),
        (a.alpha, a.gamma, a.pos_weight, a.neg_weight, a.logits), reduction, avg_factor,
        pred.numel(), lambda: reference.gaussian_focal_loss_from_args(a))
