"""``FusedVarifocalLoss``: mmdet's ``VarifocalLoss`` contract over the fused
varifocal loss op (root ``MODELS``; needs only torch and mmengine)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from ...ops import varifocal_loss
from ...ops.arguments import AlphaLike, AvgFactor, check_bool, check_nonnegative, check_reduction
from .utils import (check_alpha, check_use_sigmoid, elementwise_rows, reject_unknown_arguments,
                    resolve_reduction)


@MODELS.register_module()
class FusedVarifocalLoss(nn.Module):
    """`Varifocal Loss <https://arxiv.org/abs/2008.13367>`_ (VFNet) computed by
    :func:`focal_plugin.ops.varifocal_loss`.

    A drop-in for mmdet's ``VarifocalLoss``: same arguments, defaults,
    ``forward`` contract and numbers. It adds a per-class ``alpha``.

    Args:
        use_sigmoid (bool): Must be True: the loss exists in its sigmoid form
            only, as in mmdet. Defaults to True.
        alpha (float | Sequence[float]): Balance of the negative part (not the
            alpha of the focal loss): a float in [0, 1], or one value in
            [0, 1] per class. Defaults to 0.75.
        gamma (float): Exponent of the negatives' modulating factor, >= 0.
            Defaults to 2.0.
        iou_weighted (bool): Weight the positives by their IoU target.
            Defaults to True.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        loss_weight (float): Factor the loss is multiplied by, >= 0.
            Defaults to 1.0.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 alpha: AlphaLike = 0.75,
                 gamma: float = 2.0,
                 iou_weighted: bool = True,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 **kwargs) -> None:
        super().__init__()
        reject_unknown_arguments(type(self), kwargs)
        check_use_sigmoid(use_sigmoid, 'the varifocal loss')
        self.use_sigmoid = use_sigmoid
        self.alpha, class_alpha = check_alpha(alpha, optional=False)
        # A buffer follows the module to the GPU; not persistent, so that
        # checkpoints stay interchangeable with mmdet's VarifocalLoss.
        self.register_buffer('class_alpha', class_alpha, persistent=False)
        self.gamma = check_nonnegative(gamma, 'gamma')
        self.iou_weighted = check_bool(iou_weighted, 'iou_weighted')
        self.reduction = check_reduction(reduction)
        self.loss_weight = check_nonnegative(loss_weight, 'loss_weight')

    def forward(self,
                pred: torch.Tensor,
                target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None) -> torch.Tensor:
        """Computes the loss, following mmdet's loss contract.

        Args:
            pred (Tensor): Logits of shape (N, C); any shape is taken
                elementwise, with its last axis as the class axis.
            target (Tensor): IoU-aware classification score of pred's shape,
                in [0, 1].
            weight (Tensor, optional): A weight that broadcasts to pred's
                shape, as in mmdet: (N, 1) per row, (N, C) per element.
                Defaults to None.
            avg_factor (float | Tensor, optional): Denominator of the 'mean'
                reduction instead of the number of elements. Defaults to None.
            reduction_override (str, optional): 'none', 'mean' or 'sum', to
                override ``self.reduction``. Defaults to None.

        Returns:
            Tensor: ``loss_weight`` times the loss: of pred's shape for
            'none', otherwise 0-d.
        """
        reduction = resolve_reduction(reduction_override, self.reduction)
        pred_2d, target_2d, weight_2d = elementwise_rows(pred, target, weight)
        alpha = self.class_alpha if self.class_alpha is not None else self.alpha
        loss = varifocal_loss(
            pred_2d,
            target_2d,
            weight_2d,
            alpha=alpha,
            gamma=self.gamma,
            iou_weighted=self.iou_weighted,
            reduction=reduction,
            avg_factor=avg_factor)
        if reduction == 'none':
            loss = loss.reshape(pred.shape)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        alpha = self.class_alpha.tolist() if self.class_alpha is not None else self.alpha
        return (f'alpha={alpha}, gamma={self.gamma}, iou_weighted={self.iou_weighted}, '
                f'reduction={self.reduction!r}, loss_weight={self.loss_weight}')
