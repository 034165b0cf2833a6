"""Argument checks and normalisation shared by the fused ops and the reference.

Each argument is checked by one function here. The losses of
:mod:`focal_plugin.models` call the same functions on their config at build
time, so that a bad config fails there with the message the op would give.

Every check raises an error that names the argument and what was expected.
None of them reads tensor values from the device (no ``.item()``): label,
score and target values are checked by the kernels (CPU: ValueError; CUDA:
NaN loss). Under ``torch.compile`` a float argument may arrive as a symbolic
``torch.SymFloat`` (one compiled graph serves every gamma); its value is then
checked by the compiled op when the graph runs, not here.
"""
import math
import numbers
from typing import Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch

AlphaLike = Union[None, float, Sequence[float], torch.Tensor]
AvgFactor = Union[None, float, int, torch.Tensor]

REDUCTIONS = ('none', 'mean', 'sum')


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16/float32 accumulate in float32, float64 in float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class FocalArgs(NamedTuple):
    """Normalised arguments, in the form the compiled ops take."""
    pred: torch.Tensor
    target: torch.Tensor  # int64 (N,) or pred-dtype (N, C)
    weight: Optional[torch.Tensor]  # accumulation dtype, (N,) or (N, C)
    class_alpha: Optional[torch.Tensor]  # accumulation dtype, (C,)
    gamma: float
    alpha: Optional[float]  # scalar alpha when class_alpha is None
    reduction: str
    avg_factor: AvgFactor
    ignore_index: int


def check_tensor(value: Optional[torch.Tensor], name: str, optional: bool = False) -> None:
    """Checks that ``value`` is a tensor (or None, if ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, torch.Tensor):
        expected = 'None or a torch.Tensor' if optional else 'a torch.Tensor'
        raise TypeError(f'{name} must be {expected}, got {type(value).__name__}')


def check_pred(pred: torch.Tensor, name: str = 'pred') -> None:
    check_tensor(pred, name)
    if pred.dim() != 2:
        raise ValueError(f'{name} must be a 2-D tensor (N rows, C classes), got shape '
                         f'{tuple(pred.shape)}')
    if pred.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f'{name} must be float16, bfloat16, float32 or float64, got {pred.dtype}')
    if pred.size(1) == 0:
        raise ValueError(f'{name} must have at least one class column, got shape '
                         f'{tuple(pred.shape)}')


def check_same_device(pred: torch.Tensor, tensor: torch.Tensor, name: str) -> None:
    if tensor.device != pred.device:
        raise ValueError(f'{name} is on {tensor.device} but pred is on {pred.device}; '
                         'move both to the same device')


def _traced(value) -> bool:
    """Whether a Python scalar may be symbolic: a float graph input under
    ``torch.compile`` (dynamo then traces these checks with fake values)."""
    return isinstance(value, torch.SymFloat) or torch.compiler.is_compiling()


def check_nonnegative(value: float, name: str) -> float:
    """Checks a finite real number >= 0 (an exponent such as gamma or beta, a weight).

    Returns it as a float, or unchanged when it is traced (see the module's note).
    """
    if _traced(value):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f'{name} must be a real number >= 0, got {value!r}')
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f'{name} must be a finite number >= 0, got {value!r}')
    return value


def check_bool(value: bool, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}')
    return value


class InvalidReductionError(ValueError, AssertionError):
    """An unknown reduction name.

    mmdet's losses assert on ``reduction_override``; deriving from both
    ValueError and AssertionError keeps code that expects either working.
    """


def check_reduction(reduction: Optional[str],
                    name: str = 'reduction',
                    optional: bool = False) -> Optional[str]:
    """Checks a reduction name: the ops' ``reduction``, the losses' config
    ``reduction`` and their ``forward``'s ``reduction_override``.

    Args:
        reduction (str, optional): 'none', 'mean' or 'sum'.
        name (str): The argument's name in the error. Defaults to 'reduction'.
        optional (bool): Whether None is accepted too (mmdet's
            ``reduction_override``, where None keeps the loss's reduction).
            Defaults to False.

    Returns:
        str, optional: ``reduction``, unchanged.

    Raises:
        InvalidReductionError: For any other value.
    """
    accepted = ((None, ) if optional else ()) + REDUCTIONS
    if reduction not in accepted:
        raise InvalidReductionError(f'{name} must be one of {accepted}, got {reduction!r}')
    return reduction


def check_avg_factor(avg_factor: AvgFactor, reduction: str) -> None:
    """Checks ``avg_factor`` against a checked ``reduction``, as mmdet's
    ``weight_reduce_loss`` does."""
    if avg_factor is not None and reduction == 'sum':
        raise ValueError('avg_factor can not be used with reduction="sum"')
    if isinstance(avg_factor, torch.Tensor) and avg_factor.numel() != 1:
        raise ValueError('avg_factor must be a number or a one-element tensor, got a tensor '
                         f'of shape {tuple(avg_factor.shape)}')


def check_ignore_index(ignore_index: int, num_labels: Optional[int] = None) -> int:
    """Checks ``ignore_index``: an int that no label can take.

    Args:
        ignore_index (int): The label whose rows are ignored.
        num_labels (int, optional): Labels 0..num_labels-1 are taken (classes
            and background). None, where they are not known yet (a loss's
            config), checks the type only. Defaults to None.

    Returns:
        int: ``ignore_index`` as a Python int.
    """
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f'ignore_index must be an int, got {ignore_index!r}')
    if num_labels is not None and 0 <= ignore_index < num_labels:
        raise ValueError(f'ignore_index={ignore_index} collides with a real label '
                         f'(0..{num_labels - 1}); use a negative value or >= {num_labels}')
    return int(ignore_index)


ALPHA_EXPECTED = 'a float in [0, 1] or a 1-D sequence of per-class floats in [0, 1]'


def parse_alpha(alpha: AlphaLike,
                check_device_values: bool = False,
                optional: bool = True) -> Tuple[Optional[float], Optional[torch.Tensor]]:
    """Validates ``alpha`` without knowing the number of classes.

    Args:
        alpha (float | Sequence[float] | Tensor, optional): The balancing
            factor: None, one float, or one float per class.
        check_device_values (bool): Whether to check the values of a tensor
            that is not on the CPU, which reads it back (a device sync).
            Defaults to False.
        optional (bool): Whether None (no balancing) is accepted; the
            varifocal loss needs an alpha. Defaults to True.

    Returns:
        tuple: ``(float, None)`` for a scalar, ``(None, Tensor)`` with the
        per-class values (a sequence becomes a float64 CPU tensor), or
        ``(None, None)`` for None.
    """
    expected = f'None, {ALPHA_EXPECTED}' if optional else ALPHA_EXPECTED
    if alpha is None:
        if optional:
            return None, None
        raise TypeError(f'alpha must be {expected}, got None')
    if _traced(alpha) and not isinstance(alpha, (torch.Tensor, Sequence)):
        return alpha, None
    if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool):
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f'alpha must be {expected}, got {alpha!r}')
        return float(alpha), None
    if isinstance(alpha, torch.Tensor):
        values = alpha.detach()
        if not values.is_floating_point():
            raise TypeError(f'alpha must be {expected}, got a tensor of {values.dtype}')
    elif isinstance(alpha, Sequence) and not isinstance(alpha, (str, bytes)):
        if any(isinstance(a, bool) or not isinstance(a, numbers.Real) for a in alpha):
            raise TypeError(f'alpha must be {expected}, got {alpha!r}')
        values = torch.tensor([float(a) for a in alpha], dtype=torch.float64)
    else:
        raise TypeError(f'alpha must be {expected}, got {alpha!r}')
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f'alpha must be {expected}, got a sequence of shape '
                         f'{tuple(values.shape)}')
    # Values on a device are left to the caller unless asked for: reading them
    # back would sync at every call (FusedFocalLoss checks its alpha once, at build).
    if ((values.device.type == 'cpu' or check_device_values)
            and not torch.compiler.is_compiling()
            and not bool(((values >= 0) & (values <= 1)).all())):
        raise ValueError(f'alpha must be {expected}, got {values.tolist()}')
    return None, values


# Per-class alphas given as Python sequences, already on a device: copying a
# list to the GPU at every call would block the host. Keyed by the values,
# the device and the dtype; small, since a model has a handful of losses.
_CLASS_ALPHA_CACHE: Dict[tuple, torch.Tensor] = {}
_CLASS_ALPHA_CACHE_SIZE = 32


def split_alpha(alpha: AlphaLike,
                num_classes: int,
                pred: torch.Tensor,
                optional: bool = True) -> Tuple[Optional[float], Optional[torch.Tensor]]:
    """Returns (scalar alpha or None, per-class alpha on pred's device or None).

    A per-class alpha given as a sequence is converted once per device and
    dtype and then reused; a tensor is the caller's to place (on pred's
    device, it is used without a copy). ``optional``: see :func:`parse_alpha`.
    """
    cacheable = (isinstance(alpha, Sequence) and not isinstance(alpha, (str, bytes))
                 and not torch.compiler.is_compiling())
    dtype = accumulate_dtype(pred.dtype)
    if cacheable:
        key = (tuple(alpha), pred.device, dtype)
        try:
            cached = _CLASS_ALPHA_CACHE.get(key)
        except TypeError:  # unhashable entries: parse_alpha names the problem
            cached, cacheable = None, False
        if cached is not None:
            _check_class_count(cached, num_classes)
            return None, cached
    scalar, values = parse_alpha(alpha, optional=optional)
    if values is None:
        return scalar, None
    _check_class_count(values, num_classes)
    values = values.to(device=pred.device, dtype=dtype).contiguous()
    if cacheable:
        if len(_CLASS_ALPHA_CACHE) >= _CLASS_ALPHA_CACHE_SIZE:
            _CLASS_ALPHA_CACHE.pop(next(iter(_CLASS_ALPHA_CACHE)))
        _CLASS_ALPHA_CACHE[key] = values
    return None, values


def _check_class_count(values: torch.Tensor, num_classes: int) -> None:
    if values.numel() != num_classes:
        raise ValueError(f'per-class alpha must have length C={num_classes}, got shape '
                         f'{tuple(values.shape)}')


def check_weight(weight: Optional[torch.Tensor], pred: torch.Tensor,
                 per_element_ok: bool) -> Optional[torch.Tensor]:
    check_tensor(weight, 'weight', optional=True)
    if weight is None:
        return None
    n, c = pred.shape
    check_same_device(pred, weight, 'weight')
    if weight.dim() == 2 and weight.size(1) == 1 and weight.size(0) == n:
        weight = weight.reshape(n)  # mmdet passes (N, 1) now and then
    ok = (weight.dim() == 1 and weight.size(0) == n) or (
        per_element_ok and tuple(weight.shape) == (n, c))
    if not ok:
        expected = f'({n},) or ({n}, {c})' if per_element_ok else f'({n},)'
        raise ValueError(f'weight must have shape {expected}, got {tuple(weight.shape)}')
    if weight.is_complex():
        raise TypeError(f'weight must be a real tensor, got {weight.dtype}')
    return weight.to(accumulate_dtype(pred.dtype)).contiguous()


def check_labels_tensor(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    n = pred.size(0)
    if target.dim() != 1 or target.size(0) != n:
        raise ValueError(f'class-index target must have shape ({n},), got {tuple(target.shape)}')
    return target.long().contiguous()


def check_soft_target(target: torch.Tensor, pred: torch.Tensor,
                      name: str = 'target') -> torch.Tensor:
    """A float target of pred's shape, as pred's dtype; values in [0, 1] are
    checked by the kernels."""
    check_tensor(target, name)
    check_same_device(pred, target, name)
    if not target.is_floating_point():
        raise TypeError(f'{name} must be a float tensor of pred\'s shape '
                        f'{tuple(pred.shape)} with values in [0, 1], got {target.dtype}')
    if target.shape != pred.shape:
        raise ValueError(f'{name} must have pred\'s shape {tuple(pred.shape)}, got '
                         f'{tuple(target.shape)}')
    return target.to(pred.dtype).contiguous()


def check_labels_or_soft_target(target: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Class indices (N,) as int64, or a soft (N, C) target as pred's dtype."""
    check_tensor(target, 'target')
    check_same_device(pred, target, 'target')
    if target.is_floating_point():
        if target.shape != pred.shape:
            raise ValueError(f'float (soft) target must have pred\'s shape '
                             f'{tuple(pred.shape)}, got {tuple(target.shape)}; class indices '
                             'must be an integer tensor of shape (N,)')
        return target.to(pred.dtype).contiguous()
    if target.dtype == torch.bool or target.is_complex():
        raise TypeError(f'target must be int64 class indices (N,) or float probabilities '
                        f'(N, C), got {target.dtype}')
    return check_labels_tensor(target, pred)


def check_score(score: Optional[torch.Tensor], target: torch.Tensor,
                pred: torch.Tensor) -> Optional[torch.Tensor]:
    """The per-row score that goes with class-index targets; values in [0, 1]
    are checked by the kernels."""
    if target.is_floating_point():
        if score is not None:
            raise ValueError('score goes with class-index targets (labels (N,), scores (N,)); '
                             'a soft (N, C) target already holds the scores, so pass '
                             'score=None')
        return None
    n = pred.size(0)
    if score is None:
        raise ValueError(f'class-index targets need score, the quality target (N,) = ({n},) '
                         'of each label, in [0, 1]')
    if not isinstance(score, torch.Tensor) or not score.is_floating_point():
        raise TypeError(f'score must be a float tensor of shape ({n},), got '
                        f'{getattr(score, "dtype", type(score).__name__)}')
    check_same_device(pred, score, 'score')
    if score.dim() != 1 or score.size(0) != n:
        raise ValueError(f'score must have shape ({n},) like the labels and pred\'s rows, got '
                         f'{tuple(score.shape)}')
    return score.to(accumulate_dtype(pred.dtype)).contiguous()


def sigmoid_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                 ignore_index) -> FocalArgs:
    """Checks and normalises the arguments of ``sigmoid_focal_loss``."""
    check_pred(pred)
    c = pred.size(1)
    target = check_labels_or_soft_target(target, pred)
    scalar_alpha, class_alpha = split_alpha(alpha, c, pred)
    check_reduction(reduction)
    check_avg_factor(avg_factor, reduction)
    return FocalArgs(pred, target, check_weight(weight, pred, per_element_ok=True), class_alpha,
                     check_nonnegative(gamma, 'gamma'), scalar_alpha, reduction, avg_factor,
                     check_ignore_index(ignore_index, c + 1))


def softmax_args(pred, target, weight, gamma, alpha, reduction, avg_factor,
                 ignore_index) -> FocalArgs:
    """Checks and normalises the arguments of ``softmax_focal_loss``."""
    check_pred(pred)
    k = pred.size(1)
    check_tensor(target, 'target')
    check_same_device(pred, target, 'target')
    if target.is_floating_point() or target.dtype == torch.bool or target.is_complex():
        raise TypeError(f'softmax focal loss target must be integer class indices (N,), got '
                        f'{target.dtype}')
    target = check_labels_tensor(target, pred)
    scalar_alpha, class_alpha = split_alpha(alpha, k, pred)
    check_reduction(reduction)
    check_avg_factor(avg_factor, reduction)
    return FocalArgs(pred, target, check_weight(weight, pred, per_element_ok=False),
                     class_alpha, check_nonnegative(gamma, 'gamma'), scalar_alpha, reduction,
                     avg_factor, check_ignore_index(ignore_index, k))


class QualityFocalArgs(NamedTuple):
    """Normalised arguments of ``quality_focal_loss``."""
    pred: torch.Tensor
    target: torch.Tensor  # int64 (N,) or pred-dtype (N, C)
    score: Optional[torch.Tensor]  # accumulation dtype (N,), with class indices
    weight: Optional[torch.Tensor]
    beta: float
    activated: bool
    reduction: str
    avg_factor: AvgFactor


def quality_focal_args(pred, target, score, weight, beta, activated, reduction,
                       avg_factor) -> QualityFocalArgs:
    """Checks and normalises the arguments of ``quality_focal_loss``."""
    check_pred(pred)
    target = check_labels_or_soft_target(target, pred)
    check_reduction(reduction)
    check_avg_factor(avg_factor, reduction)
    return QualityFocalArgs(pred, target, check_score(score, target, pred),
                            check_weight(weight, pred, per_element_ok=True),
                            check_nonnegative(beta, 'beta'), check_bool(activated, 'activated'),
                            reduction, avg_factor)


class VarifocalArgs(NamedTuple):
    """Normalised arguments of ``varifocal_loss``."""
    pred: torch.Tensor
    target: torch.Tensor  # pred-dtype (N, C)
    weight: Optional[torch.Tensor]
    class_alpha: Optional[torch.Tensor]
    alpha: Optional[float]  # when class_alpha is None
    gamma: float
    iou_weighted: bool
    reduction: str
    avg_factor: AvgFactor


def varifocal_args(pred, target, weight, alpha, gamma, iou_weighted, reduction,
                   avg_factor) -> VarifocalArgs:
    """Checks and normalises the arguments of ``varifocal_loss``."""
    check_pred(pred)
    target = check_soft_target(target, pred)
    scalar_alpha, class_alpha = split_alpha(alpha, pred.size(1), pred, optional=False)
    check_reduction(reduction)
    check_avg_factor(avg_factor, reduction)
    return VarifocalArgs(pred, target, check_weight(weight, pred, per_element_ok=True),
                         class_alpha, scalar_alpha, check_nonnegative(gamma, 'gamma'),
                         check_bool(iou_weighted, 'iou_weighted'), reduction, avg_factor)


class GaussianFocalArgs(NamedTuple):
    """Normalised arguments of ``gaussian_focal_loss``."""
    pred: torch.Tensor
    target: torch.Tensor  # pred-dtype (N, C)
    weight: Optional[torch.Tensor]
    alpha: float
    gamma: float
    pos_weight: float
    neg_weight: float
    logits: bool
    reduction: str
    avg_factor: AvgFactor


def gaussian_focal_args(pred, target, weight, alpha, gamma, pos_weight, neg_weight, logits,
                        reduction, avg_factor) -> GaussianFocalArgs:
    """Checks and normalises the arguments of ``gaussian_focal_loss``."""
    check_pred(pred)
    target = check_soft_target(target, pred)
    check_reduction(reduction)
    check_avg_factor(avg_factor, reduction)
    return GaussianFocalArgs(pred, target, check_weight(weight, pred, per_element_ok=True),
                             check_nonnegative(alpha, 'alpha'), check_nonnegative(gamma, 'gamma'),
                             check_nonnegative(pos_weight, 'pos_weight'),
                             check_nonnegative(neg_weight, 'neg_weight'),
                             check_bool(logits, 'logits'), reduction, avg_factor)
