"""``FusedFocalLoss``: mmdet's ``FocalLoss`` contract over the fused focal-loss op.

It is registered in mmengine's root ``MODELS`` registry, which is the parent
of every OpenMMLab project's ``MODELS`` (mmdet, mmyolo, mmrotate, mmdet3d,
mmseg, mmpretrain), so each of them finds ``type='FusedFocalLoss'`` through
its registry's parent chain. This module imports only torch, mmengine and
focal_plugin's op: the loss needs neither mmdet nor mmcv.
"""
import numbers
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from ...ops import sigmoid_focal_loss, softmax_focal_loss
from ...ops.arguments import AlphaLike, AvgFactor, check_gamma
from .utils import (check_alpha, check_bool, check_loss_weight, check_reduction,
                    reject_unknown_arguments, resolve_reduction)


@MODELS.register_module()
class FusedFocalLoss(nn.Module):
    """`Focal Loss <https://arxiv.org/abs/1708.02002>`_ computed by the fused
    CPU/CUDA kernels of :mod:`focal_plugin.ops`.

    A drop-in for mmdet's ``FocalLoss``: it takes the same arguments and
    follows the same ``forward`` contract, so ``type='FocalLoss'`` can become
    ``type='FusedFocalLoss'`` in any mmdet config. It adds per-class
    ``alpha``, ``ignore_index`` and the softmax focal loss
    (``use_sigmoid=False``).

    Args:
        use_sigmoid (bool): Sigmoid focal loss over C independent binary
            classifiers (class index C is background). If False, softmax focal
            loss over K mutually exclusive classes (labels in [0, K)).
            Defaults to True.
        gamma (float): Focusing parameter, >= 0. Defaults to 2.0.
        alpha (float | Sequence[float] | Tensor, optional): Balance of
            positives: a float in [0, 1], a sequence of per-class values in
            [0, 1] (its length must equal the number of classes C of the
            predictions), or None for no balancing. Defaults to 0.25.
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        loss_weight (float): Factor the loss is multiplied by, >= 0.
            Defaults to 1.0.
        activated (bool): The predictions are probabilities (already passed
            through a sigmoid), not logits. Only with ``use_sigmoid=True``.
            Defaults to False.
        ignore_index (int): Class-index target whose rows are ignored.
            Defaults to -1.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: AlphaLike = 0.25,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False,
                 ignore_index: int = -1,
                 **kwargs) -> None:
        super().__init__()
        reject_unknown_arguments(type(self), kwargs)
        self.use_sigmoid = check_bool(use_sigmoid, 'use_sigmoid')
        self.activated = check_bool(activated, 'activated')
        if self.activated and not self.use_sigmoid:
            raise ValueError('activated=True (inputs are sigmoid probabilities) needs '
                             'use_sigmoid=True; use_sigmoid=False takes logits only, '
                             'so set activated=False or use_sigmoid=True')
        self.gamma = check_gamma(gamma)
        self.reduction = check_reduction(reduction)
        self.loss_weight = check_loss_weight(loss_weight)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
            raise TypeError(f'ignore_index must be an int, got {ignore_index!r}')
        self.ignore_index = int(ignore_index)
        self.alpha, class_alpha = check_alpha(alpha)
        # A buffer follows the module to the GPU; not persistent, so checkpoints
        # stay interchangeable with mmdet's FocalLoss (which has no state).
        self.register_buffer('class_alpha', class_alpha, persistent=False)

    def forward(self,
                pred: torch.Tensor,
                target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None) -> torch.Tensor:
        """Computes the loss, following mmdet's loss contract.

        Args:
            pred (Tensor): Logits (probabilities if ``activated``) of shape
                (N, C). Any other shape is taken with its last axis as the
                class axis; a 0-d or 1-D pred is elementwise (one class).
            target (Tensor): Class indices of shape ``pred.shape[:-1]`` (for
                the sigmoid loss, index C is background), or targets of
                pred's shape (one-hot or soft, sigmoid loss only), which are
                used elementwise as in mmdet.
            weight (Tensor, optional): Per-row weight of shape
                ``pred.shape[:-1]`` (optionally with a trailing 1), or any
                shape that broadcasts to pred's (e.g. per element, or the
                flattened (N * C,) of mmdet's FSAF). Defaults to None.
            avg_factor (float | Tensor, optional): Denominator of the 'mean'
                reduction instead of the element count. Defaults to None.
            reduction_override (str, optional): 'none', 'mean' or 'sum', to
                override ``self.reduction``. Defaults to None.

        Returns:
            Tensor: ``loss_weight`` times the loss: of pred's shape (sigmoid)
            or ``pred.shape[:-1]`` (softmax) for 'none'; 0-d otherwise.
        """
        reduction = resolve_reduction(reduction_override, self.reduction)
        if not isinstance(pred, torch.Tensor) or not pred.is_floating_point():
            raise TypeError('pred must be a floating-point tensor, got '
                            f'{getattr(pred, "dtype", type(pred).__name__)}')
        if self.activated:
            # Probabilities -> logits, so that the one fused op computes the loss.
            # The clamp to [eps, 1 - eps] keeps the logits finite for the dtype.
            pred = torch.logit(pred, eps=torch.finfo(pred.dtype).eps)
        pred_2d, target_2d, weight_2d, out_shape = self._as_rows(pred, target, weight)
        loss_fn = sigmoid_focal_loss if self.use_sigmoid else softmax_focal_loss
        alpha = self.class_alpha if self.class_alpha is not None else self.alpha
        loss = loss_fn(
            pred_2d,
            target_2d,
            weight_2d,
            gamma=self.gamma,
            alpha=alpha,
            reduction=reduction,
            avg_factor=avg_factor,
            ignore_index=self.ignore_index)
        if reduction == 'none':
            loss = loss.reshape(out_shape)
        return self.loss_weight * loss

    def _as_rows(
        self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Size]:
        """Brings pred/target/weight to the op's (rows, classes) layout.

        Returns the reshaped (pred, target, weight) and the shape of the
        unreduced loss.
        """
        if not isinstance(target, torch.Tensor):
            raise TypeError(f'target must be a torch.Tensor, got {type(target).__name__}')
        shape = pred.shape
        if not self.use_sigmoid and pred.dim() < 2:
            raise ValueError('use_sigmoid=False needs pred with a class axis (..., K), got '
                             f'shape {tuple(shape)}')
        num_classes = shape[-1] if pred.dim() >= 2 else 1
        pred_2d = pred.reshape(-1, num_classes)
        num_rows = pred_2d.size(0)
        if target.shape == shape:
            # Same shape as pred: one-hot or soft targets, elementwise (as mmdet's
            # FocalLoss when pred.dim() == target.dim()); softmax rejects them in the op.
            if self.use_sigmoid and not target.is_floating_point():
                target = target.to(pred.dtype)
            target_2d = target.reshape(num_rows, num_classes)
        elif pred.dim() >= 2 and target.shape == shape[:-1]:
            target_2d = target.reshape(num_rows)  # class indices, one per row
        else:
            raise ValueError(f'target must have pred\'s shape {tuple(shape)} (one-hot or soft '
                             f'targets) or {tuple(shape[:-1])} (class indices), got '
                             f'{tuple(target.shape)}')
        out_shape = shape if self.use_sigmoid else shape[:-1]
        if weight is None:
            return pred_2d, target_2d, weight, out_shape
        if not isinstance(weight, torch.Tensor):
            raise TypeError(f'weight must be None or a tensor, got {type(weight).__name__}')
        row_shapes = (shape[:-1], shape[:-1] + (1, )) if pred.dim() >= 2 else (shape, )
        # Size by size, not `weight.shape in row_shapes`: under torch.compile with
        # dynamic shapes the sizes are symbolic, and tuple membership does not
        # compare them by value.
        if any(weight.dim() == len(rows) and all(w == r for w, r in zip(weight.shape, rows))
               for rows in row_shapes):
            weight_2d = weight.reshape(num_rows)
        elif weight.dim() == 1 and weight.numel() == pred.numel():
            weight_2d = weight.reshape(num_rows, num_classes)  # mmdet's flattened (N * C,)
        else:
            try:
                weight_2d = torch.broadcast_to(weight, shape).reshape(num_rows, num_classes)
            except RuntimeError:
                raise ValueError(f'weight of shape {tuple(weight.shape)} does not fit pred of '
                                 f'shape {tuple(shape)}: expected {tuple(row_shapes[0])} per '
                                 'row, or a shape that broadcasts to pred\'s') from None
        return pred_2d, target_2d, weight_2d, out_shape

    def extra_repr(self) -> str:
        alpha = self.class_alpha.tolist() if self.class_alpha is not None else self.alpha
        return (f'use_sigmoid={self.use_sigmoid}, gamma={self.gamma}, alpha={alpha}, '
                f'reduction={self.reduction!r}, loss_weight={self.loss_weight}, '
                f'activated={self.activated}, ignore_index={self.ignore_index}')
