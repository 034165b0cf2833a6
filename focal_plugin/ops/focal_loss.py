"""Fused focal loss (Lin et al.): the sigmoid and softmax forms over the
``torch.ops.focal_plugin`` custom ops.

Devices without a kernel fall back to the pure-PyTorch
:mod:`focal_plugin.ops.reference`, with one warning.
"""
from typing import Optional

import torch

from . import arguments, reference
from .arguments import AlphaLike, AvgFactor
from .loss_op import LossOp

__all__ = ['sigmoid_focal_loss', 'softmax_focal_loss']

_SIGMOID_FOCAL = LossOp('sigmoid_focal_loss', fused_grad=True)
_SOFTMAX_FOCAL = LossOp('softmax_focal_loss', fused_grad=False)


def sigmoid_focal_loss(pred: torch.Tensor,
                       target: torch.Tensor,
                       weight: Optional[torch.Tensor] = None,
                       gamma: float = 2.0,
                       alpha: AlphaLike = 0.25,
                       reduction: str = 'mean',
                       avg_factor: AvgFactor = None,
                       ignore_index: int = -1) -> torch.Tensor:
    """Sigmoid focal loss, FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t).

    Args:
        pred (Tensor): Logits of shape (N, C); float16, bfloat16, float32 or
            float64.
        target (Tensor): Either integer class indices of shape (N,), where
            0..C-1 is a class, C is background (all C outputs negative) and
            ``ignore_index`` drops the row; or float probabilities of shape
            (N, C) in [0, 1] (soft targets: p_t = p*y + (1-p)*(1-y) and the
            loss is alpha_t (1-p_t)^gamma BCE(p, y), as torchvision and mmdet).
        weight (Tensor, optional): Per-row (N,) or per-element (N, C) weight.
            Defaults to None.
        gamma (float): Focusing parameter, >= 0. Defaults to 2.0.
        alpha (float | Sequence[float] | Tensor, optional): Balance of
            positives; a float in [0, 1] (alpha for positives, 1 - alpha for
            negatives), a length-C per-class vector, or None for no balancing.
            Defaults to 0.25.
        reduction (str): 'none', 'mean' or 'sum'. 'mean' averages over all
            N*C elements, or divides the sum by ``avg_factor``. Defaults to
            'mean'.
        avg_factor (float | Tensor, optional): Denominator of 'mean' (mmdet
            semantics); not allowed with 'sum'. Defaults to None.
        ignore_index (int): Class-index target value whose rows are ignored
            (loss and gradient 0). Defaults to -1.

    Returns:
        Tensor: Per-element loss (N, C) in pred's dtype for 'none'; otherwise a
        0-dim tensor, float32 for float16/bfloat16/float32 inputs (a sum over
        millions of anchors must not overflow half precision).

    Note:
        On CPU a label outside 0..C (other than ``ignore_index``) raises a
        ValueError. On CUDA the labels are checked inside the kernel without
        synchronising: such a row makes the loss and its gradient NaN.
        Gradients flow to ``pred`` only.
    """
    a = arguments.sigmoid_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                               ignore_index)
    return _SIGMOID_FOCAL(
        (a.pred, a.target, None, a.weight, a.class_alpha, a.ignore_index), (a.gamma, a.alpha),
        reduction, avg_factor, pred.numel(), lambda: reference.sigmoid_focal_loss_from_args(a))


def softmax_focal_loss(pred: torch.Tensor,
                       target: torch.Tensor,
                       weight: Optional[torch.Tensor] = None,
                       gamma: float = 2.0,
                       alpha: AlphaLike = None,
                       reduction: str = 'mean',
                       avg_factor: AvgFactor = None,
                       ignore_index: int = -1) -> torch.Tensor:
    """Softmax focal loss, FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), p = softmax.

    Args:
        pred (Tensor): Logits of shape (N, K).
        target (Tensor): Integer labels (N,) in [0, K), or ``ignore_index``.
        weight (Tensor, optional): Per-row weight (N,). Defaults to None.
        gamma (float): Focusing parameter, >= 0. Defaults to 2.0.
        alpha (float | Sequence[float] | Tensor, optional): A float (the same
            factor for every row), a length-K vector (alpha_t = alpha[label]),
            or None. Defaults to None.
        reduction (str): 'none', 'mean' or 'sum'; 'mean' averages over the N
            rows, or divides the sum by ``avg_factor``. Defaults to 'mean'.
        avg_factor (float | Tensor, optional): Denominator of 'mean'.
            Defaults to None.
        ignore_index (int): Label whose rows are ignored. Defaults to -1.

    Returns:
        Tensor: Per-row loss (N,) for 'none', otherwise a 0-dim tensor
        (float32 for reduced-precision inputs).
    """
    a = arguments.softmax_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                               ignore_index)
    return _SOFTMAX_FOCAL(
        (a.pred, a.target, None, a.weight, a.class_alpha, a.ignore_index), (a.gamma, a.alpha),
        reduction, avg_factor, pred.size(0), lambda: reference.softmax_focal_loss_from_args(a))
