"""The fused op against the float64 reference oracle and against mmdet's CPU path."""
import math

import pytest
import torch
import torch.nn.functional as F

from focal_plugin.ops import reference, sigmoid_focal_loss, softmax_focal_loss

from .utils import make_inputs, rel_error


def _grad(fn, pred, *args, **kwargs):
    x = pred.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kwargs)
    (g, ) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), g


@pytest.mark.parametrize('gamma', [0.0, 0.5, 1.0, 2.0, 2.5, 5.0])
@pytest.mark.parametrize('alpha', [None, 0.25, 'per_class'])
def test_sigmoid_matches_float64_reference(gamma, alpha):
    pred, labels = make_inputs(300, 13, ignore_index=-1)
    if alpha == 'per_class':
        alpha = torch.linspace(0.1, 0.9, 13).tolist()
    weight = torch.rand(300)
    loss, grad = _grad(sigmoid_focal_loss, pred, labels, weight, gamma, alpha, 'none')
    ref_loss, ref_grad = _grad(reference.sigmoid_focal_loss, pred.double(), labels,
                               weight.double(), gamma, alpha, 'none')
    assert loss.dtype == torch.float32 and loss.shape == pred.shape
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize('reduction,avg_factor', [('mean', None), ('sum', None), ('mean', 37.0),
                                                  ('mean', 'tensor')])
@pytest.mark.parametrize('weight_kind', [None, 'row', 'element'])
def test_sigmoid_matches_mmdet_py_sigmoid_focal_loss(reduction, avg_factor, weight_kind):
    mmdet_focal = pytest.importorskip('mmdet.models.losses.focal_loss')
    n, c = 500, 80
    pred, labels = make_inputs(n, c)
    weight = {None: None, 'row': torch.rand(n), 'element': torch.rand(n, c)}[weight_kind]
    if avg_factor == 'tensor':
        avg_factor = torch.tensor(12.5)
    one_hot = F.one_hot(labels, c + 1)[:, :c]
    ours, our_grad = _grad(sigmoid_focal_loss, pred, labels, weight, 2.0, 0.25, reduction,
                           avg_factor)
    theirs, their_grad = _grad(mmdet_focal.py_sigmoid_focal_loss, pred, one_hot, weight, 2.0,
                               0.25, reduction, avg_factor)
    assert rel_error(ours, theirs) <= 1e-5
    torch.testing.assert_close(our_grad, their_grad, rtol=1e-4, atol=1e-9)


def test_sigmoid_soft_targets_match_torchvision_semantics():
    pred, _ = make_inputs(200, 7)
    target = torch.rand(200, 7)
    loss = sigmoid_focal_loss(pred, target, gamma=2.0, alpha=0.25, reduction='none')
    # torchvision.ops.sigmoid_focal_loss, written out.
    p = torch.sigmoid(pred.double())
    t = target.double()
    ce = F.binary_cross_entropy_with_logits(pred.double(), t, reduction='none')
    p_t = p * t + (1 - p) * (1 - t)
    expected = (0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t)**2
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-12)
    _, grad = _grad(sigmoid_focal_loss, pred, target, None, 1.5, None, 'sum')
    _, ref_grad = _grad(reference.sigmoid_focal_loss, pred.double(), target.double(), None, 1.5,
                        None, 'sum')
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=1e-10)


def test_paper_formula_on_hand_computed_values():
    # FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t), at p = sigmoid(x).
    x = torch.tensor([[2.0, -1.0, 0.5]])
    label = torch.tensor([0])
    loss = sigmoid_focal_loss(x, label, gamma=2.0, alpha=0.25, reduction='none')[0]
    p = [1 / (1 + math.exp(-v)) for v in (2.0, -1.0, 0.5)]
    expected = [
        -0.25 * (1 - p[0])**2 * math.log(p[0]),  # positive: p_t = p
        -0.75 * p[1]**2 * math.log(1 - p[1]),  # negatives: p_t = 1 - p
        -0.75 * p[2]**2 * math.log(1 - p[2]),
    ]
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-6, atol=0)


@pytest.mark.parametrize('gamma', [0.0, 0.5, 2.0])
@pytest.mark.parametrize('alpha', [None, 0.5, 'per_class'])
def test_softmax_matches_float64_reference(gamma, alpha):
    pred, labels = make_inputs(257, 21, background=False, ignore_index=-100)
    if alpha == 'per_class':
        alpha = torch.linspace(0.2, 1.0, 21)
    weight = torch.rand(257)
    loss, grad = _grad(softmax_focal_loss, pred, labels, weight, gamma, alpha, 'none',
                       ignore_index=-100)
    ref_loss, ref_grad = _grad(reference.softmax_focal_loss, pred.double(), labels,
                               weight.double(), gamma, alpha, 'none', ignore_index=-100)
    assert loss.shape == (257, )
    # log p_t = x_t - logsumexp(x) cancels in float32 when p_t -> 1: an absolute
    # floor of a few float32 ulps of |x| (F.cross_entropy behaves the same).
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-5, atol=2e-7)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-5, atol=2e-7)


def test_softmax_gamma0_is_cross_entropy():
    pred, labels = make_inputs(100, 10, background=False)
    ours = softmax_focal_loss(pred, labels, gamma=0.0, alpha=None)
    torch.testing.assert_close(ours, F.cross_entropy(pred, labels), rtol=1e-6, atol=0)


def test_sigmoid_gamma0_alpha_none_is_bce():
    pred, labels = make_inputs(100, 10)
    one_hot = F.one_hot(labels, 11)[:, :10].float()
    ours = sigmoid_focal_loss(pred, labels, gamma=0.0, alpha=None)
    torch.testing.assert_close(ours, F.binary_cross_entropy_with_logits(pred, one_hot),
                               rtol=1e-6, atol=0)


def test_ignored_rows_contribute_nothing():
    pred, labels = make_inputs(50, 4)
    labels[::2] = 255
    full = sigmoid_focal_loss(pred, labels, reduction='none', ignore_index=255)
    assert torch.all(full[::2] == 0)
    kept = sigmoid_focal_loss(pred[1::2], labels[1::2], reduction='sum', ignore_index=255)
    torch.testing.assert_close(full.sum(), kept, rtol=1e-6, atol=0)
    x = pred.clone().requires_grad_(True)
    sigmoid_focal_loss(x, labels, reduction='sum', ignore_index=255).backward()
    assert torch.all(x.grad[::2] == 0) and torch.any(x.grad[1::2] != 0)


def test_mean_reduction_semantics():
    pred, labels = make_inputs(64, 5)
    none = sigmoid_focal_loss(pred, labels, reduction='none')
    torch.testing.assert_close(sigmoid_focal_loss(pred, labels), none.mean(), rtol=1e-6, atol=0)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(
        sigmoid_focal_loss(pred, labels, avg_factor=7), none.sum() / (7 + eps), rtol=1e-6, atol=0)
    # avg_factor 0 (every label ignored) gives 0, not NaN.
    labels[:] = -1
    assert sigmoid_focal_loss(pred, labels, avg_factor=0.0).item() == 0.0


def test_reduced_half_loss_is_float32_and_does_not_overflow():
    pred = torch.full((20000, 80), 8.0, dtype=torch.float16)  # every negative costs ~0.75*8
    labels = torch.full((20000, ), 80)
    total = sigmoid_focal_loss(pred, labels, reduction='sum')
    assert total.dtype == torch.float32
    assert math.isfinite(total.item()) and total.item() > 65504


def test_sigmoid_label_beyond_float_precision_marks_only_its_column():
    # float32 cannot hold 2**24 + 1: a label compared as a float would mark column 2**24.
    classes = 2**24 + 3
    label = 2**24 + 1
    pred = torch.zeros(1, classes)
    loss = sigmoid_focal_loss(pred, torch.tensor([label]), alpha=0.25, reduction='none')[0]
    positive = 0.25 * 0.5**2 * math.log(2.0)  # p = 0.5 at logit 0
    negative = 0.75 * 0.5**2 * math.log(2.0)
    assert loss[label].item() == pytest.approx(positive, rel=1e-6)
    assert loss[label - 1].item() == pytest.approx(negative, rel=1e-6)
    assert loss[label + 1].item() == pytest.approx(negative, rel=1e-6)
    assert (loss == loss[0]).sum().item() == classes - 1


@pytest.mark.parametrize('gamma', [1e10, 16.0, 17.0, 16.5])
def test_large_gamma_matches_reference(gamma):
    pred, labels = make_inputs(64, 9, scale=1.0)
    loss, grad = _grad(sigmoid_focal_loss, pred, labels, None, gamma, 0.25, 'none')
    ref_loss, ref_grad = _grad(reference.sigmoid_focal_loss, pred.double(), labels, None, gamma,
                               0.25, 'none')
    torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-4, atol=1e-30)
    torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-4, atol=1e-30)
