"""Ground truth and checks shared by the dense-head tests."""
import torch
from mmengine.structures import InstanceData


def gt(empty):
    """One image's ground truth: no object, or one box of class 2."""
    if empty:
        return InstanceData(bboxes=torch.empty((0, 4)), labels=torch.LongTensor([]))
    return InstanceData(
        bboxes=torch.Tensor([[23.6667, 23.8757, 238.6326, 151.8874]]), labels=torch.LongTensor([2]))


def total(losses):
    """Sums the per-level losses of loss_by_feat."""
    return {name: sum(values) for name, values in losses.items()}


def assert_trainable(head, losses):
    """The losses back-propagate finite, non-zero gradients into the head."""
    sum(losses.values()).backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
