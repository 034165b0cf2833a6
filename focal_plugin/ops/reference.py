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
    return sigmoid_focal_loss_from_args(
        arguments.sigmoid_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                               ignore_index))


def sigmoid_focal_loss_from_args(a: arguments.FocalArgs) -> torch.Tensor:
    """:func:`sigmoid_focal_loss` of arguments already checked by
    :func:`~focal_plugin.ops.arguments.sigmoid_args` (the fused op's fallback)."""
    acc = arguments.accumulate_dtype(a.pred.dtype)
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
    return _reduce(loss, a, n * c, a.pred.dtype)


def softmax_focal_loss(pred: torch.Tensor,
                       target: torch.Tensor,
                       weight: Optional[torch.Tensor] = None,
                       gamma: float = 2.0,
                       alpha: AlphaLike = None,
                       reduction: str = 'mean',
                       avg_factor: AvgFactor = None,
                       ignore_index: int = -1) -> torch.Tensor:
    """Reference softmax focal loss; see :func:`focal_plugin.ops.softmax_focal_loss`."""
    return softmax_focal_loss_from_args(
        arguments.softmax_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                               ignore_index))


def softmax_focal_loss_from_args(a: arguments.FocalArgs) -> torch.Tensor:
    """:func:`softmax_focal_loss` of arguments already checked by
    :func:`~focal_plugin.ops.arguments.softmax_args` (the fused op's fallback)."""
    acc = arguments.accumulate_dtype(a.pred.dtype)
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
    return _reduce(loss, a, x.size(0), a.pred.dtype)


def _check_label_values(labels: torch.Tensor, max_label: int, ignore_index: Optional[int],
                        expected: str) -> None:
    """Raises the CPU kernel's ValueError for a label outside 0..max_label
    (and other than ``ignore_index``, if given).

    The fallback may read the labels back (a device sync); under torch.compile
    the check is left out, as it would break the graph.
    """
    if torch.compiler.is_compiling() or labels.numel() == 0:
        return
    bad = (labels < 0) | (labels > max_label)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        ignored = '' if ignore_index is None else f' or ignore_index={ignore_index}'
        raise ValueError(f'focal_plugin: target holds label {int(labels[row])} at row {row}; '
                         f'expected {expected} 0..{max_label}{ignored}')


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


# --------------------------------------------------------------------------
# The focal-loss family: quality focal, varifocal and gaussian focal loss.
# Written from mmdet 3.3.0's formulas (gfocal_loss.py, varifocal_loss.py,
# gaussian_focal_loss.py), in the numerically careful forms of the sigmoid
# focal loss above.
# --------------------------------------------------------------------------
def _check_unit_values(values: torch.Tensor, name: str) -> None:
    """Raises the CPU kernels' ValueError for a score or target outside [0, 1]
    (NaN included); skipped under torch.compile, like the label check."""
    if torch.compiler.is_compiling() or values.numel() == 0:
        return
    outside = ~((values >= 0) & (values <= 1))
    if bool(outside.any()):
        index = outside.nonzero()[0].tolist()
        value = values[tuple(index)].item()
        if values.dim() == 1:
            raise ValueError(f'focal_plugin: {name} holds {value:g} at row {index[0]}; expected '
                             'a value in [0, 1]')
        raise ValueError(f'focal_plugin: {name} holds {value:g} at ({index[0]}, {index[1]}); '
                         'expected values in [0, 1]')


def _finish_family(loss: torch.Tensor, reduction: str, avg_factor: AvgFactor, count: int,
                   dtype: torch.dtype) -> torch.Tensor:
    if reduction == 'none':
        return loss.to(dtype)
    return finish_reduction(loss.sum(), reduction, avg_factor, count)


def _weighted(loss: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    if weight is None:
        return loss
    return loss * (weight if weight.dim() == 2 else weight[:, None])


def quality_focal_loss(pred: torch.Tensor,
                       target: torch.Tensor,
                       score: Optional[torch.Tensor] = None,
                       weight: Optional[torch.Tensor] = None,
                       beta: float = 2.0,
                       activated: bool = False,
                       reduction: str = 'mean',
                       avg_factor: AvgFactor = None) -> torch.Tensor:
    """Reference Quality Focal Loss (Li et al., "Generalized Focal Loss").

    Per element, BCE(p, y) * |y - p|^beta, summed over the C classes of a
    row. With class labels and scores, y is the row's score at its label's
    column and 0 elsewhere (label C: background, all y = 0); this one formula
    is mmdet's ``quality_focal_loss``, ``quality_focal_loss_with_prob`` and
    ``quality_focal_loss_tensor_target`` (their negatives are the y = 0 case).

    Arguments and result as for :func:`focal_plugin.ops.quality_focal_loss`.
    """
    return quality_focal_loss_from_args(
        arguments.quality_focal_args(pred, target, score, weight, beta, activated, reduction,
                                     avg_factor))


def quality_focal_loss_from_args(a: arguments.QualityFocalArgs) -> torch.Tensor:
    """:func:`quality_focal_loss` of arguments already checked by
    :func:`~focal_plugin.ops.arguments.quality_focal_args` (the fused op's fallback)."""
    pred = a.pred
    n, c = pred.shape
    acc = arguments.accumulate_dtype(pred.dtype)
    if a.score is None:
        y = a.target.to(acc)
        _check_unit_values(y, 'target')
    else:
        _check_label_values(a.target, c, None, 'a class index or the background label')
        _check_unit_values(a.score, 'score')
        columns = torch.arange(c, device=pred.device)
        y = torch.where(a.target[:, None] == columns, a.score[:, None], a.score.new_zeros(()))
    weight, beta, activated = a.weight, a.beta, a.activated
    x = pred.to(acc)
    if activated:
        # mmdet's BCE on probabilities: its logs are clamped at -100 and its
        # gradient's denominator p(1 - p) at 1e-12, so that p = 0 or 1 (a
        # saturated sigmoid) stays finite; autograd through log would give 0/0.
        bce = F.binary_cross_entropy(x, y, reduction='none')
        distance = (y - x).abs()
    else:
        bce = y * _softplus(-x) + (1 - y) * _softplus(x)
        # y - sigmoid(x), written so that 1 - sigmoid(x) does not cancel for y near 1.
        distance = (y * torch.sigmoid(-x) - (1 - y) * torch.sigmoid(x)).abs()
    loss = _weighted(bce * distance.pow(beta), weight).sum(dim=1)
    return _finish_family(loss, a.reduction, a.avg_factor, n, acc)


def varifocal_loss(pred: torch.Tensor,
                   target: torch.Tensor,
                   weight: Optional[torch.Tensor] = None,
                   alpha: AlphaLike = 0.75,
                   gamma: float = 2.0,
                   iou_weighted: bool = True,
                   reduction: str = 'mean',
                   avg_factor: AvgFactor = None) -> torch.Tensor:
    """Reference Varifocal Loss (Zhang et al., "VarifocalNet").

    Per element, BCE(p, y) times y (or 1 if not ``iou_weighted``) where
    y > 0, and times alpha p^gamma where y = 0. As in mmdet, the gradient
    flows through p in the modulating factor too.

    Arguments and result as for :func:`focal_plugin.ops.varifocal_loss`.
    """
    return varifocal_loss_from_args(
        arguments.varifocal_args(pred, target, weight, alpha, gamma, iou_weighted, reduction,
                                 avg_factor))


def varifocal_loss_from_args(a: arguments.VarifocalArgs) -> torch.Tensor:
    """:func:`varifocal_loss` of arguments already checked by
    :func:`~focal_plugin.ops.arguments.varifocal_args` (the fused op's fallback)."""
    pred = a.pred
    n, c = pred.shape
    y = a.target.to(arguments.accumulate_dtype(pred.dtype))
    _check_unit_values(y, 'target')
    weight, scalar_alpha, class_alpha, gamma = a.weight, a.alpha, a.class_alpha, a.gamma
    iou_weighted = a.iou_weighted
    x = pred.to(y.dtype)
    bce = y * _softplus(-x) + (1 - y) * _softplus(x)
    negative_balance = class_alpha if class_alpha is not None else scalar_alpha
    # |p - y|^gamma at y = 0 is p^gamma, taken as exp(gamma log p): finite with a
    # finite gradient where p underflows to 0 (p^gamma's is inf * 0 for gamma < 1).
    negative_factor = negative_balance * torch.exp(gamma * F.logsigmoid(x))
    positive_factor = y if iou_weighted else torch.ones_like(y)
    loss = bce * torch.where(y > 0, positive_factor, negative_factor)
    return _finish_family(_weighted(loss, weight), a.reduction, a.avg_factor, n * c, pred.dtype)


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
    """Reference gaussian focal loss (CornerNet, CenterNet).

    Per element, ``pos_weight * [y == 1] * -log(p) (1 - p)^alpha +
    neg_weight * -log(1 - p) p^alpha (1 - y)^gamma`` on a gaussian heatmap y.

    Arguments and result as for :func:`focal_plugin.ops.gaussian_focal_loss`.
    """
    return gaussian_focal_loss_from_args(
        arguments.gaussian_focal_args(pred, target, weight, alpha, gamma, pos_weight, neg_weight,
                                      logits, reduction, avg_factor))


def gaussian_focal_loss_from_args(a: arguments.GaussianFocalArgs) -> torch.Tensor:
    """:func:`gaussian_focal_loss` of arguments already checked by
    :func:`~focal_plugin.ops.arguments.gaussian_focal_args` (the fused op's fallback)."""
    pred = a.pred
    n, c = pred.shape
    # Any heatmap value follows the formula, as in mmdet (see the fused op).
    y = a.target.to(arguments.accumulate_dtype(pred.dtype))
    weight, alpha, gamma, logits = a.weight, a.alpha, a.gamma, a.logits
    pos_weight, neg_weight = a.pos_weight, a.neg_weight
    x = pred.to(y.dtype)
    if logits:
        log_p, log_1mp = F.logsigmoid(x), F.logsigmoid(-x)
        # p^alpha as exp(alpha log p): no underflow to 0 ** (alpha - 1) in the gradient.
        p_alpha, one_minus_p_alpha = torch.exp(alpha * log_p), torch.exp(alpha * log_1mp)
    else:
        eps = 1e-12  # mmdet's, so that p = 0 or 1 gives a finite loss
        log_p, log_1mp = torch.log(x + eps), torch.log(1 - x + eps)
        p_alpha, one_minus_p_alpha = x.pow(alpha), (1 - x).pow(alpha)
    pos_loss = -log_p * one_minus_p_alpha * (y == 1)
    neg_loss = -log_1mp * p_alpha * (1 - y).pow(gamma)
    loss = pos_weight * pos_loss + neg_weight * neg_loss
    return _finish_family(_weighted(loss, weight), a.reduction, a.avg_factor, n * c, pred.dtype)
