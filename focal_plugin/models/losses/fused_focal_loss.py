"""``FusedFocalLoss``: mmdet's and mmseg's ``FocalLoss`` contracts over the fused op.

It is registered in mmengine's root ``MODELS`` registry, which is the parent
of every OpenMMLab project's ``MODELS`` (mmdet, mmyolo, mmrotate, mmdet3d,
mmseg, mmpretrain), so each of them finds ``type='FusedFocalLoss'`` through
its registry's parent chain. This module imports only torch, mmengine and
focal_plugin's op: the loss needs neither mmdet nor mmcv.
"""
import math
import numbers
from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.registry import MODELS

from ...ops import sigmoid_focal_loss, softmax_focal_loss
from ...ops.arguments import (AlphaLike, AvgFactor, check_bool, check_ignore_index,
                              check_nonnegative, check_reduction, check_tensor)
from .utils import check_alpha, check_pred_tensor, reject_unknown_arguments, resolve_reduction


@MODELS.register_module()
class FusedFocalLoss(nn.Module):
    """`Focal Loss <https://arxiv.org/abs/1708.02002>`_ computed by the fused
    CPU/CUDA kernels of :mod:`focal_plugin.ops`.

    A drop-in for mmdet's ``FocalLoss`` and for mmseg's (sigmoid)
    ``FocalLoss``: it takes the arguments of both and follows both ``forward``
    contracts, so ``type='FocalLoss'`` can become ``type='FusedFocalLoss'`` in
    an mmdet or mmseg config. It adds per-class ``alpha``, ``ignore_index``
    and the softmax focal loss (``use_sigmoid=False``).

    The class axis of ``pred`` is found from the shapes (``class_axis=None``):

    - pred of at most 2 dims, (N, C) or (N,): the class axis is the last;
    - class-index targets: the axis whose removal from pred's shape gives
      target's shape, the last (mmdet: (..., C) logits, (...) labels) or 1
      (mmseg and ``torch.nn.functional.cross_entropy``: (B, C, d1, ..., dk)
      logits, (B, d1, ..., dk) labels). When both give it (d1 = ... = dk = C),
      the shapes do not tell, and ``ValueError`` asks for ``class_axis``;
    - targets of pred's shape (one-hot or soft) are elementwise: the class
      axis is the last, as in mmdet; with per-class ``alpha`` or
      ``class_weight`` and a pred of 3 dims or more, where the class axis
      changes the numbers, ``ValueError`` asks for ``class_axis``.

    With class axis 1 (mmseg's layout), the semantics are those of mmseg's
    ``FocalLoss`` on CUDA: ignored pixels add 0, 'mean' divides by all
    B * d1 * ... * dk * C elements, ``weight`` of the labels' shape weighs
    each pixel, and with a single channel (mmseg's binary segmentation,
    ``out_channels=1``) label 1 is the foreground and label 0 the background.

    Args:
        use_sigmoid (bool): Sigmoid focal loss over C independent binary
            classifiers (class index C is background). If False, softmax focal
            loss over K mutually exclusive classes (labels in [0, K)).
            Defaults to True.
        gamma (float): Focusing parameter, >= 0. Defaults to 2.0.
        alpha (float | Sequence[float] | Tensor, optional): Balance of
            positives: a float in [0, 1], a sequence of per-class values in
            [0, 1] (its length must equal the number of classes C of the
            predictions), or None for no balancing. Defaults to 0.25 (mmdet's
            default; mmseg's ``FocalLoss`` defaults to 0.5).
        reduction (str): 'none', 'mean' or 'sum'. Defaults to 'mean'.
        loss_weight (float): Factor the loss is multiplied by, >= 0.
            Defaults to 1.0.
        activated (bool): The predictions are probabilities (already passed
            through a sigmoid), not logits. Only with ``use_sigmoid=True``.
            Defaults to False.
        ignore_index (int, optional): Class-index target whose rows (pixels)
            are ignored; ``forward``'s ``ignore_index`` overrides it. None
            ignores no label when the class axis is the last and label 255
            when it is axis 1, as mmseg's ``FocalLoss``. Defaults to None.
        class_weight (Sequence[float], optional): Per-class factors (finite,
            >= 0) of each class's loss, as mmseg's ``class_weight``; their
            number must equal C. Sigmoid loss only. Defaults to None.
        class_axis (int, optional): 1 or -1 to fix the class axis of pred
            instead of finding it from the shapes (see above). Defaults to
            None.
        loss_name (str): Name of the loss in the loss dict of mmseg's decode
            heads (which back-propagate names starting with ``loss_``).
            Defaults to 'loss_focal'.
    """

    def __init__(self,
                 use_sigmoid: bool = True,
                 gamma: float = 2.0,
                 alpha: AlphaLike = 0.25,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 activated: bool = False,
                 ignore_index: Optional[int] = None,
                 class_weight: Optional[Sequence[float]] = None,
                 class_axis: Optional[int] = None,
                 loss_name: str = 'loss_focal',
                 **kwargs) -> None:
        super().__init__()
        reject_unknown_arguments(type(self), kwargs)
        self.use_sigmoid = check_bool(use_sigmoid, 'use_sigmoid')
        self.activated = check_bool(activated, 'activated')
        if self.activated and not self.use_sigmoid:
            raise ValueError('activated=True (inputs are sigmoid probabilities) needs '
                             'use_sigmoid=True; use_sigmoid=False takes logits only, '
                             'so set activated=False or use_sigmoid=True')
        self.gamma = check_nonnegative(gamma, 'gamma')
        self.reduction = check_reduction(reduction)
        self.loss_weight = check_nonnegative(loss_weight, 'loss_weight')
        # The number of labels is known at forward time: the op checks then
        # that ignore_index does not collide with one.
        self.ignore_index = None if ignore_index is None else check_ignore_index(ignore_index)
        if class_axis not in (None, 1, -1) or isinstance(class_axis, bool):
            raise ValueError(f'class_axis must be None (found from the shapes), 1 or -1, '
                             f'got {class_axis!r}')
        self.class_axis = class_axis
        if not isinstance(loss_name, str) or not loss_name:
            raise TypeError(f'loss_name must be a non-empty str, got {loss_name!r}')
        self._loss_name = loss_name
        if class_weight is not None and not self.use_sigmoid:
            raise ValueError('class_weight needs use_sigmoid=True (mmseg\'s sigmoid FocalLoss '
                             'contract); with use_sigmoid=False use a per-class alpha')
        self.class_weight, class_weight_values = _check_class_weight(class_weight)
        self.alpha, class_alpha = check_alpha(alpha)
        # A buffer follows the module to the GPU; not persistent, so checkpoints
        # stay interchangeable with mmdet's FocalLoss (which has no state).
        self.register_buffer('class_alpha', class_alpha, persistent=False)
        self.register_buffer('class_weight_values', class_weight_values, persistent=False)

    @property
    def loss_name(self) -> str:
        """str: The key of this loss in the loss dict of mmseg's decode heads."""
        return self._loss_name

    def forward(self,
                pred: torch.Tensor,
                target: torch.Tensor,
                weight: Optional[torch.Tensor] = None,
                avg_factor: AvgFactor = None,
                reduction_override: Optional[str] = None,
                ignore_index: Optional[int] = None) -> torch.Tensor:
        """Computes the loss, following mmdet's and mmseg's loss contracts.

        Args:
            pred (Tensor): Logits (probabilities if ``activated``) of shape
                (N, C), (..., C) or (B, C, d1, ..., dk) (see the class for
                how the class axis is found); a 0-d or 1-D pred is
                elementwise (one class).
            target (Tensor): Class indices of pred's shape without its class
                axis (for the sigmoid loss, index C is background), or
                targets of pred's shape (one-hot or soft, sigmoid loss only),
                which are used elementwise as in mmdet.
            weight (Tensor, optional): Per-row (per-pixel) weight of the
                class-index shape (optionally with a 1 in place of the class
                axis), or any shape that broadcasts to pred's (e.g. per
                element, or the flattened pred.numel() of mmdet's FSAF).
                Defaults to None.
            avg_factor (float | Tensor, optional): Denominator of the 'mean'
                reduction instead of the element count. Defaults to None.
            reduction_override (str, optional): 'none', 'mean' or 'sum', to
                override ``self.reduction``. Defaults to None.
            ignore_index (int, optional): Overrides the module's
                ``ignore_index`` for this call (mmseg's decode heads pass
                theirs). Defaults to None.

        Returns:
            Tensor: ``loss_weight`` times the loss: of pred's shape (sigmoid)
            or pred's shape without the class axis (softmax) for 'none'; 0-d
            otherwise.
        """
        reduction = resolve_reduction(reduction_override, self.reduction)
        check_pred_tensor(pred)
        if self.activated:
            # Probabilities -> logits, so that the one fused op computes the loss.
            # The clamp to [eps, 1 - eps] keeps the logits finite for the dtype.
            pred = torch.logit(pred, eps=torch.finfo(pred.dtype).eps)
        # forward's ignore_index is checked by the op, with the labels it may not take.
        pred, target, weight, ignore_index, restore = self._class_axis_last(
            pred, target, weight, ignore_index)
        pred_2d, target_2d, weight_2d, out_shape = self._as_rows(pred, target, weight)
        if self.class_weight_values is not None:
            weight_2d = self._with_class_weight(pred_2d, weight_2d)
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
            ignore_index=ignore_index)
        if reduction == 'none':
            loss = restore(loss.reshape(out_shape))
        return self.loss_weight * loss

    def _class_axis_last(
        self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor],
        ignore_index: Optional[int]
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], int, Callable]:
        """Moves a class axis 1 of pred (and of same-shape target/weight) last.

        The row logic of :meth:`_as_rows` then serves both layouts. Returns
        (pred, target, weight, ignore_index, restore), where ``restore`` maps
        the unreduced loss of the class-last layout back to pred's layout.
        """
        class_axis = self._find_class_axis(pred, target)
        if ignore_index is None:
            ignore_index = self.ignore_index
        if class_axis == -1:
            return pred, target, weight, -1 if ignore_index is None else ignore_index, _same
        if ignore_index is None:
            ignore_index = 255  # mmseg's FocalLoss.forward default
        shape = pred.shape
        if target.shape == shape:
            target = target.movedim(1, -1)
        elif self.use_sigmoid and shape[1] == 1:
            # mmseg's binary segmentation (one channel): label 1 is the foreground,
            # while the op's label 0 is class 0 and label C = 1 the background.
            target = torch.where(target == 0, 1, torch.where(target == 1, 0, target))
        if isinstance(weight, torch.Tensor) and weight.shape != shape[:1] + shape[2:]:
            if weight.dim() == 1 and weight.numel() == pred.numel() and pred.dim() > 1:
                weight = weight.reshape(shape)  # flattened in pred's own order
            elif weight.dim() < pred.dim():
                # Broadcasting aligns trailing axes: spell the leading ones out first.
                weight = weight.reshape((1, ) * (pred.dim() - weight.dim()) + weight.shape)
            weight = weight.movedim(1, -1)
        restore = _class_last_to_second if self.use_sigmoid else _same
        return pred.movedim(1, -1), target, weight, ignore_index, restore

    def _find_class_axis(self, pred: torch.Tensor, target: torch.Tensor) -> int:
        """The class axis of pred, 1 or -1, from ``class_axis`` or the shapes."""
        if pred.dim() <= 2 or not isinstance(target, torch.Tensor):
            return -1  # (N, C): both layouts are one; _as_rows reports a bad target
        shape = pred.shape
        second_rows, last_rows = shape[:1] + shape[2:], shape[:-1]
        if self.class_axis == -1:
            return -1
        if self.class_axis == 1:
            if target.shape != shape and target.shape != second_rows:
                raise ValueError(f'with class_axis=1, target must have pred\'s shape '
                                 f'{tuple(shape)} (one-hot or soft targets) or '
                                 f'{tuple(second_rows)} (class indices), got '
                                 f'{tuple(target.shape)}')
            return 1
        if target.shape == shape:
            if self.class_alpha is not None or self.class_weight_values is not None:
                raise ValueError(
                    f'targets of pred\'s shape {tuple(shape)} do not tell which axis holds '
                    'the classes, and per-class alpha/class_weight depend on it: set '
                    'class_axis=1 (B, C, d1, ..., dk) or class_axis=-1 (..., C)')
            return -1  # elementwise: the numbers do not depend on the class axis
        fits_last, fits_second = target.shape == last_rows, target.shape == second_rows
        if fits_last and fits_second:
            raise ValueError(
                f'pred of shape {tuple(shape)} with class indices of shape '
                f'{tuple(target.shape)} fits both class axis 1 and the last class axis: set '
                'class_axis=1 (B, C, d1, ..., dk logits, as mmseg) or class_axis=-1 '
                '(..., C logits, as mmdet)')
        if fits_second:
            return 1
        if not fits_last:
            raise ValueError(f'target must have pred\'s shape {tuple(shape)} (one-hot or soft '
                             f'targets), or hold class indices of shape {tuple(last_rows)} '
                             f'(class axis last) or {tuple(second_rows)} (class axis 1), got '
                             f'{tuple(target.shape)}')
        return -1

    def _with_class_weight(self, pred_2d: torch.Tensor,
                           weight_2d: Optional[torch.Tensor]) -> torch.Tensor:
        """Folds ``class_weight`` into the weight: a per-element (N, C) weight."""
        num_classes = pred_2d.size(1)
        if self.class_weight_values.numel() != num_classes:
            raise ValueError(f'class_weight must have length C={num_classes} (the number of '
                             f'classes of pred), got {len(self.class_weight)} values')
        dtype = torch.promote_types(pred_2d.dtype, torch.float32)
        class_weight = self.class_weight_values.to(pred_2d.device, dtype)
        if weight_2d is None:
            return class_weight.expand(pred_2d.shape)
        if weight_2d.dim() == 1:
            weight_2d = weight_2d[:, None]
        return weight_2d * class_weight

    def _as_rows(
        self, pred: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], torch.Size]:
        """Brings pred/target/weight to the op's (rows, classes) layout.

        Returns the reshaped (pred, target, weight) and the shape of the
        unreduced loss.
        """
        check_tensor(target, 'target')
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
        check_tensor(weight, 'weight', optional=True)
        if weight is None:
            return pred_2d, target_2d, weight, out_shape
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
                f'activated={self.activated}, ignore_index={self.ignore_index}, '
                f'class_weight={self.class_weight}, class_axis={self.class_axis}, '
                f'loss_name={self.loss_name!r}')


def _same(loss: torch.Tensor) -> torch.Tensor:
    return loss


def _class_last_to_second(loss: torch.Tensor) -> torch.Tensor:
    return loss.movedim(-1, 1)


def _check_class_weight(
        class_weight: Optional[Sequence[float]]
) -> Tuple[Optional[Tuple[float, ...]], Optional[torch.Tensor]]:
    """Returns (class_weight as a tuple, as a float64 tensor), or (None, None)."""
    if class_weight is None:
        return None, None
    if isinstance(class_weight, torch.Tensor):
        class_weight = class_weight.tolist()
    if (isinstance(class_weight, (str, bytes)) or not isinstance(class_weight, Sequence)
            or not class_weight or not all(
                isinstance(w, numbers.Real) and not isinstance(w, bool) for w in class_weight)):
        raise TypeError('class_weight must be None or a non-empty sequence of per-class '
                        f'numbers, got {class_weight!r}')
    values = tuple(float(w) for w in class_weight)
    if not all(math.isfinite(w) and w >= 0 for w in values):
        raise ValueError(f'class_weight must hold finite numbers >= 0, got {list(values)}')
    return values, torch.tensor(values, dtype=torch.float64)
