"""``FusedGaussianFocalLoss``: mmdet's ``GaussianFocalLoss`` contract over the
fused gaussian focal loss op (root ``MODELS``; needs only torch and mmengine)."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from ...ops import gaussian_focal_loss
from ...ops.arguments import AvgFactor, check_bool, check_nonnegative, check_reduction
from .utils import (check_pred_tensor, elementwise_rows, reject_unknown_arguments,
                    resolve_reduction)


@MODELS.register_module()
class FusedGaussianFocalLoss(nn.Module):
    """The focal loss on a gaussian heatmap target of `CornerNet
    <https://arxiv.org/abs/1808.01244>`_ and CenterNet, computed by
    :func:`focal_plugin.ops.gaussian_focal_loss`.

    A drop-in for mmdet's ``GaussianFocalLoss``: same arguments, defaults,
    ``forward`` contract and numbers. It adds ``logits``.

    Args:
        alpha (float): Exponent of the prediction's modulating factor, >= 0.
            Defaults to 2.0.
        gamma (float): Exponent of the negatives' (1 - target) factor, >= 0.
            Defaults to 4.0.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        loss_weight (float): Factor the loss is multiplied by, >= 0.
            Defaults to 1.0.
        pos_weight (float): Factor of the positive part, >= 0. Defaults to 1.0.
        neg_weight (float): Factor of the negative part, >= 0. Defaults to 1.0.
        logits (bool): pred holds logits instead of probabilities: the loss
            then takes log-sigmoids, finite for every logit, instead of
            mmdet's log(p + 1e-12). The head must then not apply the sigmoid.
            Defaults to False.
    """

    def __init__(self,
                 alpha: float = 2.0,
                 gamma: float = 4.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 pos_weight: float = 1.0,
                 neg_weight: float = 1.0,
                 logits: bool = False,
                 **kwargs) -> None:
        super().__init__()
        reject_unknown_arguments(type(self), kwargs)
        self.alpha = check_nonnegative(alpha, 'alpha')
        self.gamma = check_nonnegative(gamma, 'gamma')
        self.reduction = check_reduction(reduction)
        self.loss_weight = check_nonnegative(loss_weight, 'loss_weight')
        self.pos_weight = check_nonnegative(pos_weight, 'pos_weight')
        self.neg_weight = check_nonnegative(neg_weight, 'neg_weight')
        self.logits = check_bool(logits, 'logits')

    def forward(self,
                pred: torch.Tensor,
                target: torch.Tensor,
                pos_inds: Optional[torch.Tensor] = None,
                pos_labels: Optional[torch.Tensor] = None,
                weight: Optional[torch.Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None) -> torch.Tensor:
        """Computes the loss, following mmdet's loss contract.

        Without ``pos_inds`` the positives are the elements where the target
        is 1. With ``pos_inds`` and ``pos_labels`` (CenterNetUpdateHead) they
        are ``pred[pos_inds, pos_labels]`` instead: the negative part is taken
        over all elements and the positive part over those M predictions, and
        each part is reduced on its own (mean over its own elements, or divided
        by ``avg_factor``), as mmdet's ``gaussian_focal_loss_with_pos_inds``.

        Args:
            pred (Tensor): Probabilities (logits if ``logits``) of any shape,
                e.g. CenterNetHead's (B, C, H, W); (N, C) with ``pos_inds``.
            target (Tensor): Gaussian heatmap of pred's shape, normally in
                [0, 1]; other values (and integer heatmaps) follow mmdet's
                formula.
            pos_inds (Tensor, optional): Rows of the positives (M,).
                Defaults to None.
            pos_labels (Tensor, optional): Classes of the positives (M,).
                Defaults to None.
            weight (Tensor, optional): A weight that broadcasts to pred's
                shape, as in mmdet. Not allowed with ``pos_inds``: mmdet
                ignores it there without a word, this loss raises a
                ValueError. Defaults to None.
            avg_factor (float | Tensor, optional): Denominator of the 'mean'
                reduction instead of the number of elements. Defaults to None.
            reduction_override (str, optional): 'none', 'mean' or 'sum', to
                override ``self.reduction``. Defaults to None.

        Returns:
            Tensor: ``loss_weight`` times the loss: of pred's shape for
            'none' (not allowed with ``pos_inds``), otherwise 0-d.
        """
        reduction = resolve_reduction(reduction_override, self.reduction)
        if (isinstance(target, torch.Tensor) and isinstance(pred, torch.Tensor)
                and not target.is_floating_point() and not target.dtype == torch.bool):
            # An integer heatmap works in mmdet's formula: CenterNetUpdateHead
            # builds one for a batch without objects.
            target = target.to(pred.dtype)
        if pos_inds is not None or pos_labels is not None:
            return self.loss_weight * self._loss_with_pos_inds(pred, target, pos_inds, pos_labels,
                                                               weight, reduction, avg_factor)
        pred_2d, target_2d, weight_2d = elementwise_rows(pred, target, weight)
        loss = self._loss(pred_2d, target_2d, weight_2d, self.pos_weight, self.neg_weight,
                          reduction, avg_factor)
        if reduction == 'none':
            loss = loss.reshape(pred.shape)
        return self.loss_weight * loss

    def _loss(self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
              pos_weight: float, neg_weight: float, reduction: str,
              avg_factor: AvgFactor) -> torch.Tensor:
        return gaussian_focal_loss(
            pred,
            target,
            weight,
            alpha=self.alpha,
            gamma=self.gamma,
            pos_weight=pos_weight,
            neg_weight=neg_weight,
            logits=self.logits,
            reduction=reduction,
            avg_factor=avg_factor)

    def _loss_with_pos_inds(self, pred: torch.Tensor, target: torch.Tensor,
                            pos_inds: Optional[torch.Tensor], pos_labels: Optional[torch.Tensor],
                            weight: Optional[torch.Tensor], reduction: str,
                            avg_factor: AvgFactor) -> torch.Tensor:
        """mmdet's ``gaussian_focal_loss_with_pos_inds``, as two calls of the op."""
        if pos_inds is None or pos_labels is None:
            raise ValueError('pos_inds and pos_labels must be given together, got '
                             f'pos_inds={_describe(pos_inds)}, pos_labels={_describe(pos_labels)}')
        if weight is not None:
            raise ValueError('weight can not be used with pos_inds (mmdet\'s GaussianFocalLoss '
                             'ignores it there); pass weight=None')
        if reduction == 'none':
            raise ValueError('reduction="none" can not be used with pos_inds: the positive '
                             'and negative parts have different shapes; use "mean" or "sum"')
        check_pred_tensor(pred)
        if pred.dim() != 2:
            raise ValueError(f'pred must be (N, C) with pos_inds, got shape {tuple(pred.shape)}')
        for name, index in (('pos_inds', pos_inds), ('pos_labels', pos_labels)):
            if (not isinstance(index, torch.Tensor) or index.is_floating_point()
                    or index.is_complex() or index.dtype == torch.bool or index.dim() != 1):
                raise TypeError(f'{name} must be a 1-D integer tensor, got {_describe(index)}')
        if pos_inds.shape != pos_labels.shape:
            raise ValueError(f'pos_inds and pos_labels must have the same length, got '
                             f'{pos_inds.numel()} and {pos_labels.numel()}')
        # The negative part over every element, the positive part over the
        # gathered positives with a target of 1; the op zeroes the other part.
        negative = self._loss(pred, target, None, 0.0, self.neg_weight, reduction, avg_factor)
        pos_pred = pred[pos_inds].gather(1, pos_labels[:, None].long())
        positive = self._loss(pos_pred, torch.ones_like(pos_pred), None, self.pos_weight, 0.0,
                              reduction, avg_factor)
        return positive + negative

    def extra_repr(self) -> str:
        return (f'alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}, '
                f'loss_weight={self.loss_weight}, pos_weight={self.pos_weight}, '
                f'neg_weight={self.neg_weight}, logits={self.logits}')


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f'a {value.dtype} tensor of shape {tuple(value.shape)}'
    return repr(value)
