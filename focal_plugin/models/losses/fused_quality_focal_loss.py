"""``FusedQualityFocalLoss``: mmdet's ``QualityFocalLoss`` contract over the
fused quality focal loss op (root ``MODELS``; needs only torch and mmengine)."""
from typing import Optional, Tuple, Union

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from ...ops import quality_focal_loss
from ...ops.arguments import AvgFactor, check_bool, check_nonnegative, check_reduction
from .utils import (check_pred_tensor, check_use_sigmoid, reject_unknown_arguments,
                    resolve_reduction)

QualityTarget = Union[Tuple[torch.Tensor, torch.Tensor], torch.Tensor]


@MODELS.register_module()
class FusedQualityFocalLoss(nn.Module):
    """`Quality Focal Loss <https://arxiv.org/abs/2006.04388>`_ (GFL, TOOD,
    RTMDet) computed by :func:`focal_plugin.ops.quality_focal_loss`.

    A drop-in for mmdet's ``QualityFocalLoss``: same arguments, defaults,
    ``forward`` contract and numbers.

    Args:
        use_sigmoid (bool): Must be True: the loss exists in its sigmoid form
            only, as in mmdet. Defaults to True.
        beta (float): Exponent of the modulating factor |y - p|^beta, >= 0.
            Defaults to 2.0.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        loss_weight (float): Factor the loss is multiplied by, >= 0.
            Defaults to 1.0.
        activated (bool): The predictions are probabilities (already passed
            through a sigmoid), not logits. Defaults to False.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 beta: float = 2.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False,
                 **kwargs) -> None:
        super().__init__()
        reject_unknown_arguments(type(self), kwargs)
        check_use_sigmoid(use_sigmoid, 'the quality focal loss')
        self.use_sigmoid = use_sigmoid
        self.beta = check_nonnegative(beta, 'beta')
        self.reduction = check_reduction(reduction)
        self.loss_weight = check_nonnegative(loss_weight, 'loss_weight')
        self.activated = check_bool(activated, 'activated')

    def forward(self,
                pred: torch.Tensor,
                target: QualityTarget,
                weight: Optional[torch.Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None) -> torch.Tensor:
        """Computes the loss, following mmdet's loss contract.

        Args:
            pred (Tensor): Logits (probabilities if ``activated``) of shape
                (N, C), the joint classification and quality score.
            target (tuple[Tensor] | Tensor): Either a tuple of the class
                labels (N,) (label C is background) and their quality scores
                (N,) in [0, 1], or a soft target of pred's shape in [0, 1].
            weight (Tensor, optional): Per-row weight (N,), as in mmdet, or a
                per-element weight (N, C). Defaults to None.
            avg_factor (float | Tensor, optional): Denominator of the 'mean'
                reduction instead of the number of rows. Defaults to None.
            reduction_override (str, optional): 'none', 'mean' or 'sum', to
                override ``self.reduction``. Defaults to None.

        Returns:
            Tensor: ``loss_weight`` times the loss: per row (N,) for 'none'
            (float32 for float16/bfloat16 pred: a row sums C elements),
            otherwise 0-d.
        """
        reduction = resolve_reduction(reduction_override, self.reduction)
        check_pred_tensor(pred)
        if isinstance(target, torch.Tensor):
            labels, score = target, None
        elif isinstance(target, (tuple, list)) and len(target) == 2:
            labels, score = target
        else:
            got = type(target).__name__
            if isinstance(target, (tuple, list)):
                got += f' of length {len(target)}'
            raise TypeError('target must be a tuple (labels (N,), scores (N,)) or a soft target '
                            f'tensor of pred\'s shape, got {got}')
        if isinstance(weight, torch.Tensor) and weight.dim() == 0:
            weight = weight.expand(pred.shape[:1])  # a scalar broadcasts over the rows
        loss = quality_focal_loss(
            pred,
            labels,
            score,
            weight,
            beta=self.beta,
            activated=self.activated,
            reduction=reduction,
            avg_factor=avg_factor)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return (f'beta={self.beta}, reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}, activated={self.activated}')
