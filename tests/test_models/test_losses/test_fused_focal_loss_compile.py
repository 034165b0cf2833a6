"""FusedFocalLoss under torch.compile with dynamic (symbolic) shapes.

mmengine's ``compile=True`` compiles with automatic dynamic shapes: from the
second image size on, the head's scores have symbolic sizes (products of the
feature maps' sizes), while the per-anchor targets and weights may keep
concrete ones. The loss must match them by value.
"""
import pytest
import torch

from focal_plugin.models.losses import FusedFocalLoss

CLASSES = 6


def _weight(kind, n):
    return {
        'row': torch.rand(n),
        'row_n1': torch.rand(n, 1),
        'element': torch.rand(n, CLASSES),
        'flat_element': torch.rand(n * CLASSES),
    }[kind]


def _head_loss(loss):
    """A head's loss step: scores (B, C, H, W) to rows, as mmdet's heads do."""

    def run(scores, labels, weight):
        pred = scores.permute(0, 2, 3, 1).reshape(-1, CLASSES)
        return loss(pred, labels, weight, avg_factor=5.0)

    return run


@pytest.mark.parametrize('use_sigmoid,weight_kind', [(True, 'row'), (True, 'row_n1'),
                                                     (True, 'element'),
                                                     (True, 'flat_element'), (False, 'row')])
@pytest.mark.parametrize('reduction', ['mean', 'none'])
def test_symbolic_scores_with_concrete_weights_match_eager(use_sigmoid, weight_kind, reduction):
    torch._dynamo.reset()
    loss = FusedFocalLoss(use_sigmoid=use_sigmoid, gamma=2.0, alpha=0.25, reduction=reduction)
    eager = _head_loss(loss)
    compiled = torch.compile(eager, backend='aot_eager', dynamic=True)
    for width in (5, 7):
        scores = torch.randn(2, CLASSES, 4, width, requires_grad=True)
        n = 2 * 4 * width
        labels = torch.randint(0, CLASSES + 1 if use_sigmoid else CLASSES, (n, ))
        weight = _weight(weight_kind, n)
        torch._dynamo.mark_static(labels)  # the anchor targets' sizes stay concrete
        torch._dynamo.mark_static(weight)
        actual = compiled(scores, labels, weight)
        expected = eager(scores, labels, weight)
        torch.testing.assert_close(actual, expected)
        (grad, ) = torch.autograd.grad(actual.sum(), scores)
        (expected_grad, ) = torch.autograd.grad(expected.sum(), scores)
        torch.testing.assert_close(grad, expected_grad)
