"""Pure-PyTorch focal loss: the test oracle, and the fallback on devices the
compiled extension does not serve (MPS, or when it was not built).

Written straight from the paper (Lin et al., "Focal Loss for Dense Object
Detection"), FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), with plain torch
operations and autograd, independently of the fused kernels' formulation.
It materialises several N x C temporaries; that is the price of being simple.
Same API and semantics as :mod:`focal_plugin.ops.focal_loss`.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from . import arguments
from .arguments import AlphaLike, AvgFactor
from .loss_op import finish_reduction


def sigmoid_focal_loss(pred: torch.Tensor,
                       target: torch.Tensor,
                       weight: Optional[torch.Tensor] = None,
                       gamma: float = 2.0,
                       alpha: AlphaLike = 0.25,
                       reduction: str = 'mean',
                       avg_factor: AvgFactor = None,
                       ignore_index: int = -1) -> torch.Tensor:
    """Reference sigmoid focal loss; see :func:`focal_plugin.ops.sigmoid_focal_loss`."""
    a = arguments.sigmoid_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                               ignore_index)
    acc = arguments.accumulate_dtype(pred.dtype)
    x = a.pred.to(acc)
    n, c = x.shape
    keep = None
    if a.target.is_floating_point():
        y = a.target.to(acc)
    else:
        _check_label_values(a.target, c, a.ignore_index, 'a class index or the background label')
        keep = a.target != a.ignore_index
        labels = torch.where(keep, a.target, torch.full_like(a.target, c))
        y = F.one_hot(labels, c + 1)[:, :c].to(acc)  # label C: background
    p = torch.sigmoid(x)
    # p_t = p*y + (1-p)*(1-y); 1 - p_t is written out so that it does not cancel.
    one_minus_p_t = p * (1 - y) + (1 - p) * y
    # -log(p_t) for 0/1 targets; binary cross-entropy for soft ones (torchvision/mmdet):
    # -[y log p + (1-y) log(1-p)] = y softplus(-x) + (1-y) softplus(x). Written this
    # way, not with F.binary_cross_entropy_with_logits, whose x - x*y + log(...) form
    # cancels and loses digits for |x| ~ 30 even in float64.
    bce = y * _softplus(-x) + (1 - y) * _softplus(x)
    loss = one_minus_p_t.pow(a.gamma) * bce
    if a.class_alpha is not None:
        loss = loss * (a.class_alpha * y + (1 - a.class_alpha) * (1 - y))
    elif a.alpha is not None:
        loss = loss * (a.alpha * y + (1 - a.alpha) * (1 - y))
    if a.weight is not None:
        loss = loss * (a.weight if a.weight.dim() == 2 else a.weight[:, None])
    if keep is not None:
        loss = torch.where(keep[:, None], loss, torch.zeros_like(loss))
    return _reduce(loss, a, n * c, pred.dtype)


def softmax_focal_loss(pred: torch.Tensor,
                       target: torch.Tensor,
                       weight: Optional[torch.Tensor] = None,
                       gamma: float = 2.0,
                       alpha: AlphaLike = None,
                       reduction: str = 'mean',
                       avg_factor: AvgFactor = None,
                       ignore_index: int = -1) -> torch.Tensor:
    """Reference softmax focal loss; see :func:`focal_plugin.ops.softmax_focal_loss`."""
    a = arguments.softmax_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                               ignore_index)
    acc = arguments.accumulate_dtype(pred.dtype)
    x = a.pred.to(acc)
    _check_label_values(a.target, x.size(1) - 1, a.ignore_index, 'a class index')
    keep = a.target != a.ignore_index
    labels = torch.where(keep, a.target, torch.zeros_like(a.target))
    log_p_t = F.log_softmax(x, dim=1).gather(1, labels[:, None])[:, 0]
    p_t = log_p_t.exp()
    loss = -(1 - p_t).pow(a.gamma) * log_p_t
    if a.class_alpha is not None:
        loss = loss * a.class_alpha[labels]
    elif a.alpha is not None:
        loss = loss * a.alpha
    if a.weight is not None:
        loss = loss * a.weight
    loss = torch.where(keep, loss, torch.zeros_like(loss))
    return _reduce(loss, a, x.size(0), pred.dtype)


def _check_label_values(labels: torch.Tensor, max_label: int, ignore_index: int,
                        expected: str) -> None:
    """Raises the CPU kernel's ValueError for a label outside 0..max_label.

    The fallback may read the labels back (a device sync); under torch.compile
    the check is left out, as it would break the graph.
    """
    if torch.compiler.is_compiling() or labels.numel() == 0:
        return
    bad = (labels != ignore_index) & ((labels < 0) | (labels > max_label))
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(f'focal_plugin: target holds label {int(labels[row])} at row {row}; '
                         f'expected {expected} 0..{max_label} or ignore_index={ignore_index}')


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(x)), exact for every x, with an exact gradient.

    F.softplus returns x itself above its threshold (20), which is off by
    exp(-x) there, and so is its gradient; -logsigmoid(-x) has no threshold.
    """
    return -F.logsigmoid(-x)


def _reduce(loss: torch.Tensor, a: arguments.FocalArgs, numel: int,
            dtype: torch.dtype) -> torch.Tensor:
    if a.reduction == 'none':
        return loss.to(dtype)
    return finish_reduction(loss.sum(), a.reduction, a.avg_factor, numel)
