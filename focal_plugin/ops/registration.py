"""torch.library registrations of the family's compiled ops: fake tensors and autograd.

The ops are declared in C++ (``TORCH_LIBRARY``, generated from the family's
descriptors in ``csrc/focal_loss_family.h``) with CPU and CUDA kernels; this
module registers, for every member, the fake (meta) implementations of its
ops and its autograd formula, so they work under ``torch.compile(fullgraph=True)``,
``opcheck`` and autograd. Every op takes
``(pred, target, score, weight, class_alpha, ignore_index, *scalars, sum)``.
"""
import torch

from .arguments import accumulate_dtype

# (name, the unreduced loss is per element (True) or per row (False)).
FAMILY = (
    ('sigmoid_focal_loss', True),
    ('quality_focal_loss', True),
    ('varifocal_loss', True),
    ('gaussian_focal_loss', True),
    ('softmax_focal_loss', False),
)

_NUM_TENSOR_INPUTS = 5  # pred, target, score, weight, class_alpha


def op_names() -> tuple:
    """Every op of the family in ``torch.ops.focal_plugin``, private ones included."""
    names = ()
    for name, elementwise in FAMILY:
        names += (name, f'_{name}_backward') + ((f'_{name}_with_grad', ) if elementwise else ())
    return names


def _loss_like(pred: torch.Tensor, elementwise: bool, reduce_sum: bool) -> torch.Tensor:
    if reduce_sum:
        return pred.new_empty((), dtype=accumulate_dtype(pred.dtype))
    return pred.new_empty(pred.shape if elementwise else pred.shape[:1])


def _no_second_derivative(name: str) -> None:
    # create_graph=True: the fused gradient is a plain tensor, not a function
    # of pred that autograd could differentiate again.
    if torch.is_grad_enabled():
        raise RuntimeError(
            f'focal_plugin.{name}: second derivatives (backward with create_graph=True, '
            'e.g. a gradient penalty) are not supported by the fused kernels; compute that '
            'term with focal_plugin.ops.reference, which is plain differentiable PyTorch')


def _gradients(grad_pred: torch.Tensor, num_inputs: int) -> tuple:
    return (grad_pred, ) + (None, ) * (num_inputs - 1)


def _register(name: str, elementwise: bool) -> None:
    ops = torch.ops.focal_plugin
    backward_op = getattr(ops, f'_{name}_backward')

    @torch.library.register_fake(f'focal_plugin::{name}')
    def _fake_forward(pred, *args):
        return _loss_like(pred, elementwise, args[-1])

    @torch.library.register_fake(f'focal_plugin::_{name}_backward')
    def _fake_backward(grad_output, pred, *args):
        return torch.empty_like(pred, memory_format=torch.contiguous_format)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[:_NUM_TENSOR_INPUTS])
        ctx.params = inputs[_NUM_TENSOR_INPUTS:]

    def backward_formula(ctx, grad_output):
        _no_second_derivative(name)
        grad_pred = None
        if ctx.needs_input_grad[0]:
            grad_pred = backward_op(grad_output, *ctx.saved_tensors, *ctx.params)
        return _gradients(grad_pred, len(ctx.needs_input_grad))

    torch.library.register_autograd(f'focal_plugin::{name}', backward_formula,
                                    setup_context=setup_context)
    if elementwise:
        _register_with_grad(name, backward_op)


def _arrived_as_folded(grad_loss: torch.Tensor, grad_scale: float) -> bool:
    """Whether the loss's incoming gradient is exactly the one folded in.

    Read on the host only for a CPU scalar (free there); a CUDA value would
    synchronise, so CUDA gradients are always multiplied.
    """
    return (grad_loss.dim() == 0 and grad_loss.device.type == 'cpu'
            and grad_loss.item() == grad_scale)


def _register_with_grad(name: str, backward_op) -> None:
    """``_<name>_with_grad`` returns (loss, grad_scale * d loss / d pred).

    Its backward hands that buffer to autograd, multiplied in place by
    grad_output / grad_scale, or untouched when the gradient that arrives is
    the one the caller folded in (see ``loss_op.expected_grad_scale``): the
    transcendental functions run once per element per training step, and
    the only N x C buffer is the gradient itself. A second backward through
    the same graph (``retain_graph=True``) finds the buffer handed over and
    recomputes with ``_<name>_backward``.
    """
    qualname = f'focal_plugin::_{name}_with_grad'
    # Position of `sum` among the inputs; grad_scale (optional) follows it.
    sum_index = [arg.name for arg in getattr(torch.ops.focal_plugin,
                                             name).default._schema.arguments].index('sum')

    @torch.library.register_fake(qualname)
    def _fake(pred, *args):
        grad = torch.empty_like(pred, memory_format=torch.contiguous_format)
        return _loss_like(pred, True, args[sum_index - 1]), grad

    def setup_context(ctx, inputs, output):
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # else autograd builds an N x C zeros for output[1]
        ctx.save_for_backward(*inputs[:_NUM_TENSOR_INPUTS])
        ctx.params = inputs[_NUM_TENSOR_INPUTS:sum_index + 1]  # those of _<name>_backward
        ctx.grad_scale = inputs[sum_index + 1] if len(inputs) > sum_index + 1 else 1.0
        ctx.fused_grad = output[1]

    def backward_formula(ctx, grad_loss, _grad_of_grad):
        _no_second_derivative(name)
        fused_grad, ctx.fused_grad = ctx.fused_grad, None
        grad_pred = None
        if ctx.needs_input_grad[0] and grad_loss is not None:  # None: the loss was not used
            eager = type(fused_grad) is torch.Tensor
            if fused_grad is None:
                grad_pred = backward_op(grad_loss, *ctx.saved_tensors, *ctx.params)
            elif eager and _arrived_as_folded(grad_loss, ctx.grad_scale):
                grad_pred = fused_grad  # hand the buffer over as it is
            else:
                factor = grad_loss if ctx.grad_scale == 1.0 else grad_loss / ctx.grad_scale
                if eager:
                    grad_pred = fused_grad.mul_(factor)  # scaled in place, handed over
                else:
                    # Traced (torch.compile / AOTAutograd: fake or functional tensors):
                    # out of place, and the compiler plans the buffers.
                    grad_pred = fused_grad * factor
        return _gradients(grad_pred, len(ctx.needs_input_grad))

    torch.library.register_autograd(qualname, backward_formula, setup_context=setup_context)


def register_family() -> None:
    """Registers every member's fake and autograd implementations (once, at import)."""
    for name, elementwise in FAMILY:
        _register(name, elementwise)
