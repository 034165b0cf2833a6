"""Fused focal loss: the public API over the ``torch.ops.focal_plugin`` custom ops.

The ops are declared in C++ (``TORCH_LIBRARY``) with CPU and CUDA kernels;
this module registers their fake (meta) implementations and their autograd
formula, so they work under ``torch.compile(fullgraph=True)``, ``opcheck``
and autograd. Devices without a kernel fall back to the pure-PyTorch
:mod:`focal_plugin.ops.reference`, with one warning.
"""
from typing import Optional

import torch

from . import arguments, extension, reference
from .arguments import AlphaLike, AvgFactor

__all__ = ['sigmoid_focal_loss', 'softmax_focal_loss']

_REDUCTION_CODE = {'none': 0, 'sum': 1, 'mean': 1}


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
    if not extension.has_kernel(pred.device):
        extension.warn_fallback(pred.device)
        return reference.sigmoid_focal_loss(pred, target, weight, gamma, alpha, reduction,
                                            avg_factor, ignore_index)
    op_args = (a.pred, a.target, a.weight, a.class_alpha, a.gamma, a.alpha,
               _REDUCTION_CODE[reduction], a.ignore_index)
    if pred.requires_grad and torch.is_grad_enabled():
        # Training: loss and derivative in one pass (see _register_with_grad).
        loss, _ = torch.ops.focal_plugin.sigmoid_focal_loss_with_grad(*op_args)
    else:
        loss = torch.ops.focal_plugin.sigmoid_focal_loss(*op_args)
    return arguments.finish_reduction(loss, reduction, avg_factor, pred.numel())


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
    if not extension.has_kernel(pred.device):
        extension.warn_fallback(pred.device)
        return reference.softmax_focal_loss(pred, target, weight, gamma, alpha, reduction,
                                            avg_factor, ignore_index)
    loss = torch.ops.focal_plugin.softmax_focal_loss(a.pred, a.target, a.weight, a.class_alpha,
                                                     a.gamma, a.alpha,
                                                     _REDUCTION_CODE[reduction], a.ignore_index)
    return arguments.finish_reduction(loss, reduction, avg_factor, pred.size(0))


# --------------------------------------------------------------------------
# torch.library registrations: fake tensors and autograd.
# --------------------------------------------------------------------------
def _register(op_name: str, loss_shape) -> None:
    qualname = f'focal_plugin::{op_name}'
    backward = getattr(torch.ops.focal_plugin, f'{op_name}_backward')

    @torch.library.register_fake(qualname)
    def _fake_forward(pred, target, weight, class_alpha, gamma, alpha, reduction,
                      ignore_index):
        if reduction == 0:
            return pred.new_empty(loss_shape(pred))
        return pred.new_empty((), dtype=arguments.accumulate_dtype(pred.dtype))

    @torch.library.register_fake(f'{qualname}_backward')
    def _fake_backward(grad_output, pred, target, weight, class_alpha, gamma, alpha,
                       reduction, ignore_index):
        return torch.empty_like(pred, memory_format=torch.contiguous_format)

    def setup_context(ctx, inputs, output):
        pred, target, weight, class_alpha, gamma, alpha, reduction, ignore_index = inputs
        ctx.save_for_backward(pred, target, weight, class_alpha)
        ctx.params = (gamma, alpha, reduction, ignore_index)

    def backward_formula(ctx, grad_output):
        pred, target, weight, class_alpha = ctx.saved_tensors
        grad_pred = None
        if ctx.needs_input_grad[0]:
            grad_pred = backward(grad_output, pred, target, weight, class_alpha, *ctx.params)
        return grad_pred, None, None, None, None, None, None, None

    torch.library.register_autograd(qualname, backward_formula, setup_context=setup_context)


def _register_with_grad() -> None:
    """``sigmoid_focal_loss_with_grad`` returns (loss, d loss / d pred).

    Its backward scales that derivative in place by grad_output and hands it
    to autograd: the transcendental functions run once per element per
    training step, and the only N x C buffer is the gradient itself. A second
    backward through the same graph (``retain_graph=True``) finds the buffer
    handed over and recomputes with ``sigmoid_focal_loss_backward``.
    """
    qualname = 'focal_plugin::sigmoid_focal_loss_with_grad'

    @torch.library.register_fake(qualname)
    def _fake(pred, target, weight, class_alpha, gamma, alpha, reduction, ignore_index):
        grad = torch.empty_like(pred, memory_format=torch.contiguous_format)
        if reduction == 0:
            return pred.new_empty(pred.shape), grad
        return pred.new_empty((), dtype=arguments.accumulate_dtype(pred.dtype)), grad

    def setup_context(ctx, inputs, output):
        pred, target, weight, class_alpha, gamma, alpha, reduction, ignore_index = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # else autograd builds an N x C zeros for output[1]
        ctx.save_for_backward(pred, target, weight, class_alpha)
        ctx.unit_grad = output[1]
        ctx.params = (gamma, alpha, reduction, ignore_index)

    def backward_formula(ctx, grad_loss, _grad_of_grad):
        unit_grad, ctx.unit_grad = ctx.unit_grad, None
        grad_pred = None
        if ctx.needs_input_grad[0]:
            if grad_loss is None:  # the loss was not used
                grad_pred = None
            elif unit_grad is not None and type(unit_grad) is torch.Tensor:
                grad_pred = unit_grad.mul_(grad_loss)  # eager: hand the buffer over
            elif unit_grad is not None:
                # Traced (torch.compile / AOTAutograd: fake or functional tensors):
                # out of place, and the compiler plans the buffers.
                grad_pred = unit_grad * grad_loss
            else:
                pred, target, weight, class_alpha = ctx.saved_tensors
                grad_pred = torch.ops.focal_plugin.sigmoid_focal_loss_backward(
                    grad_loss, pred, target, weight, class_alpha, *ctx.params)
        return grad_pred, None, None, None, None, None, None, None

    torch.library.register_autograd(qualname, backward_formula, setup_context=setup_context)


if extension.is_loaded():
    _register('sigmoid_focal_loss', lambda pred: pred.shape)
    _register('softmax_focal_loss', lambda pred: pred.shape[:1])
    _register_with_grad()
