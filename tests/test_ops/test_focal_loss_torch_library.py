"""torch.library integration: opcheck, gradcheck, torch.compile, kernel registration."""
import pytest
import torch

from focal_plugin.ops import has_kernel, is_loaded, sigmoid_focal_loss, softmax_focal_loss

from .utils import make_inputs

OPS = torch.ops.focal_plugin


def test_extension_is_built_and_serves_cpu():
    assert is_loaded(), 'focal_plugin._C failed to import: rebuild the extension'
    assert has_kernel(torch.device('cpu'))


def _op_args(pred, target, weight, class_alpha, gamma, alpha, reduce_sum, ignore_index=-1):
    """The focal ops' positional arguments (the focal losses take no score)."""
    return (pred, target, None, weight, class_alpha, ignore_index, gamma, alpha, reduce_sum)


def _sigmoid_samples():
    pred, labels = make_inputs(37, 11, ignore_index=-1)
    soft = torch.rand(37, 11)
    w_row, w_elem = torch.rand(37), torch.rand(37, 11)
    ca = torch.rand(11)
    samples = []
    for reduce_sum in (False, True):
        samples += [
            _op_args(pred.clone().requires_grad_(), labels, None, None, 2.0, 0.25, reduce_sum),
            _op_args(pred.clone().requires_grad_(), soft, w_elem, None, 1.5, None, reduce_sum),
            _op_args(pred.clone().requires_grad_(), labels, w_row, ca, 0.0, None, reduce_sum),
            _op_args(pred.double().requires_grad_(), labels, w_row.double(), None, 3.0, 0.5,
                     reduce_sum),
            _op_args(pred.half(), labels, None, None, 2.0, 0.25, reduce_sum),
        ]
    return samples


def _softmax_samples():
    pred, labels = make_inputs(29, 9, background=False, ignore_index=-1)
    samples = []
    for reduce_sum in (False, True):
        samples += [
            _op_args(pred.clone().requires_grad_(), labels, None, None, 2.0, None, reduce_sum),
            _op_args(pred.clone().requires_grad_(), labels, torch.rand(29), torch.rand(9), 0.5,
                     None, reduce_sum),
            _op_args(pred.bfloat16(), labels, None, None, 1.0, 0.25, reduce_sum),
        ]
    return samples


@pytest.mark.parametrize('args', _sigmoid_samples())
def test_opcheck_sigmoid(args):
    torch.library.opcheck(OPS.sigmoid_focal_loss.default, args)


@pytest.mark.parametrize('args', _softmax_samples())
def test_opcheck_softmax(args):
    torch.library.opcheck(OPS.softmax_focal_loss.default, args)


@pytest.mark.parametrize('args', _sigmoid_samples())
def test_opcheck_sigmoid_with_grad(args):
    torch.library.opcheck(OPS._sigmoid_focal_loss_with_grad.default, args)


def test_training_path_hands_over_the_fused_gradient():
    pred, labels = make_inputs(50, 7)
    x = pred.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(x, labels, reduction='sum')
    assert loss.grad_fn.name().startswith('GeneratedBackwardFor_focal_plugin__sigmoid_focal_'
                                          'loss_with_grad')
    loss.backward()
    expected = OPS._sigmoid_focal_loss_backward(torch.tensor(1.0),
                                                *_op_args(pred, labels, None, None, 2.0, 0.25, True))
    torch.testing.assert_close(x.grad, expected)


@pytest.mark.parametrize('reduction', ['none', 'mean'])
def test_retain_graph_second_backward_recomputes(reduction):
    pred, labels = make_inputs(30, 5)
    x = pred.clone().requires_grad_(True)
    loss = sigmoid_focal_loss(x, labels, reduction=reduction)
    grad_out = torch.rand_like(loss)
    (first, ) = torch.autograd.grad(loss, x, grad_out, retain_graph=True)
    (second, ) = torch.autograd.grad(loss, x, grad_out)
    torch.testing.assert_close(second, first)
    x2 = pred.clone().requires_grad_(True)
    ref = sigmoid_focal_loss(x2, labels, reduction=reduction)
    (expected, ) = torch.autograd.grad(ref, x2, grad_out)
    torch.testing.assert_close(first, expected)


def test_no_grad_path_uses_loss_only_op():
    pred, labels = make_inputs(20, 4)
    with torch.no_grad():
        loss = sigmoid_focal_loss(pred.clone().requires_grad_(True), labels)
    assert loss.grad_fn is None


def test_opcheck_backward_ops():
    pred, labels = make_inputs(16, 5)
    torch.library.opcheck(OPS._sigmoid_focal_loss_backward.default,
                          (torch.rand(16, 5), *_op_args(pred, labels, None, None, 2.0, 0.25, False)))
    labels = labels.clamp(max=4)
    torch.library.opcheck(OPS._softmax_focal_loss_backward.default,
                          (torch.tensor(0.5), *_op_args(pred, labels, None, None, 2.0, None, True)))


@pytest.mark.parametrize('gamma', [0.0, 0.7, 2.0])
@pytest.mark.parametrize('soft', [False, True])
def test_gradcheck_sigmoid(gamma, soft):
    pred, labels = make_inputs(6, 5, dtype=torch.float64, ignore_index=-1)
    target = torch.rand(6, 5, dtype=torch.float64) if soft else labels
    pred.requires_grad_(True)
    for reduction in ('none', 'sum', 'mean'):
        assert torch.autograd.gradcheck(
            lambda x: sigmoid_focal_loss(x, target, torch.rand(6, dtype=torch.float64,
                                                               generator=torch.Generator()
                                                               .manual_seed(1)),
                                         gamma, [0.1, 0.2, 0.3, 0.4, 0.9], reduction), (pred, ))


@pytest.mark.parametrize('gamma', [0.0, 0.7, 2.0])
def test_gradcheck_softmax(gamma):
    pred, labels = make_inputs(6, 5, dtype=torch.float64, background=False, ignore_index=-1)
    pred.requires_grad_(True)
    for reduction in ('none', 'sum', 'mean'):
        assert torch.autograd.gradcheck(
            lambda x: softmax_focal_loss(x, labels, None, gamma, 0.25, reduction), (pred, ))


def test_torch_compile_fullgraph_has_no_graph_break():
    torch._dynamo.reset()

    def loss_fn(pred, labels, weight, avg_factor):
        sig = sigmoid_focal_loss(pred, labels, weight, 2.0, 0.25, 'mean', avg_factor)
        soft = softmax_focal_loss(pred, labels.clamp(max=pred.size(1) - 1), None, 2.0, None)
        return sig + soft

    compiled = torch.compile(loss_fn, fullgraph=True, backend='aot_eager')
    pred, labels = make_inputs(40, 6)
    weight, avg_factor = torch.rand(40), torch.tensor(9.0)
    x1 = pred.clone().requires_grad_(True)
    x2 = pred.clone().requires_grad_(True)
    eager = loss_fn(x1, labels, weight, avg_factor)
    out = compiled(x2, labels, weight, avg_factor)
    torch.testing.assert_close(out, eager)
    eager.backward()
    out.backward()
    torch.testing.assert_close(x2.grad, x1.grad)
    explanation = torch._dynamo.explain(loss_fn)(pred, labels, weight, avg_factor)
    assert explanation.graph_break_count == 0


def test_torch_compile_inductor():
    torch._dynamo.reset()
    compiled = torch.compile(lambda p, t: sigmoid_focal_loss(p, t, reduction='sum'),
                             fullgraph=True)
    pred, labels = make_inputs(33, 7)
    torch.testing.assert_close(compiled(pred, labels),
                               sigmoid_focal_loss(pred, labels, reduction='sum'))


@pytest.mark.parametrize('fused', [True, False])
def test_second_derivative_raises_a_clear_error(fused):
    # The fused gradient is a plain tensor: differentiating it again would
    # silently miss the terms through pred, so create_graph=True refuses.
    pred, labels = make_inputs(12, 4)
    x = pred.clone().requires_grad_(True)
    if fused:
        loss = sigmoid_focal_loss(x, labels)
    else:
        loss = softmax_focal_loss(x, labels.clamp(max=3))
    with pytest.raises(RuntimeError, match='second derivatives .*create_graph=True.* are not '
                       'supported'):
        torch.autograd.grad(loss, x, create_graph=True)
    # The first derivative alone still works.
    (grad, ) = torch.autograd.grad(loss, x)
    assert torch.isfinite(grad).all()


def test_per_class_alpha_list_is_converted_once_per_device_and_dtype():
    from focal_plugin.ops.arguments import split_alpha
    pred = torch.randn(3, 4)
    alpha = [0.1, 0.2, 0.3, 0.4]
    first = split_alpha(alpha, 4, pred)[1]
    assert split_alpha(list(alpha), 4, pred)[1] is first  # no new copy
    assert split_alpha(alpha, 4, pred.double())[1].dtype == torch.float64
    with pytest.raises(ValueError, match='per-class alpha must have length C=5'):
        split_alpha(alpha, 5, torch.randn(3, 5))
    with pytest.raises(ValueError, match='alpha must be'):
        split_alpha([0.1, 2.0, 0.3, 0.4], 4, pred)
