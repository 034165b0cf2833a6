"""FusedFocalLoss as a drop-in for mmseg 1.x's sigmoid ``FocalLoss``.

mmseg's FocalLoss cannot serve as the oracle on CPU: its CPU path keeps only
the background column of the one-hot labels (``target[:, num_classes]``). The
oracle here is its CUDA path written out: mmcv's ``sigmoid_focal_loss``
formula, then mmseg's ``final_weight`` (per-pixel weight x class_weight x
valid mask) and ``weight_reduce_loss``.
"""
import pytest
import torch
import torch.nn.functional as F
from mmengine.registry import MODELS

from focal_plugin.models.losses import FusedFocalLoss


def mmseg_cuda_focal_loss(pred, label, weight=None, gamma=2.0, alpha=0.5, class_weight=None,
                          ignore_index=255, reduction='mean', loss_weight=1.0):
    """mmseg 1.2.2 FocalLoss.forward on CUDA, with mmcv's kernel formula, in float64."""
    shape = pred.shape
    num_classes = shape[1]
    x = pred.double().transpose(0, 1).reshape(num_classes, -1).t()  # (N, C)
    label = label.reshape(-1)
    valid = (label != ignore_index).view(-1, 1).double()
    label = torch.where(label == ignore_index, torch.zeros_like(label), label)
    if num_classes == 1:  # binary segmentation: label 1 is the foreground
        one_hot = F.one_hot(label, 2)[:, 1:].double()
    else:
        one_hot = F.one_hot(label, num_classes + 1)[:, :num_classes].double()
    # mmcv/ops/csrc/common/cuda/sigmoid_focal_loss_cuda_kernel.cuh
    p = torch.sigmoid(x)
    alpha_t = torch.as_tensor(alpha, dtype=torch.float64)
    loss = -(alpha_t * one_hot * (1 - p)**gamma * torch.log(p) + (1 - alpha_t) *
             (1 - one_hot) * p**gamma * torch.log(1 - p))
    final_weight = torch.ones(1, num_classes, dtype=torch.float64)
    if weight is not None:
        final_weight = final_weight * weight.double().reshape(-1, 1)
    if class_weight is not None:
        final_weight = final_weight * torch.tensor(class_weight, dtype=torch.float64)
    loss = loss * final_weight * valid
    if reduction == 'mean':
        loss = loss.mean()
    elif reduction == 'sum':
        loss = loss.sum()
    else:
        loss = loss.t().reshape(num_classes, shape[0], *shape[2:]).transpose(0, 1)
    return loss_weight * loss


def seg_inputs(b=2, c=5, h=6, w=7, ignored=0.2, scale=3.0):
    pred = torch.randn(b, c, h, w) * scale
    label = torch.randint(0, c, (b, h, w))
    label[torch.rand(b, h, w) < ignored] = 255
    return pred, label


def test_loss_name_is_a_property_with_mmsegs_default():
    assert FusedFocalLoss().loss_name == 'loss_focal'
    loss = MODELS.build(dict(type='FusedFocalLoss', loss_name='loss_focal_aux'))
    assert loss.loss_name == 'loss_focal_aux'
    with pytest.raises(AttributeError):
        loss.loss_name = 'other'


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'none'])
@pytest.mark.parametrize('options', [
    dict(),
    dict(alpha=0.25, gamma=1.5),
    dict(class_weight=[1.0, 0.5, 2.0, 0.0, 3.0]),
    dict(alpha=[0.1, 0.2, 0.3, 0.4, 0.9], class_weight=[0.5, 1, 1, 1, 2], loss_weight=0.7),
])
def test_matches_mmsegs_cuda_path(reduction, options):
    pred, label = seg_inputs()
    loss = FusedFocalLoss(alpha=options.get('alpha', 0.5), **{
        k: v
        for k, v in options.items() if k != 'alpha'
    })
    x = pred.clone().requires_grad_(True)
    ours = loss(x, label, ignore_index=255, reduction_override=reduction)
    theirs_x = pred.double().requires_grad_(True)
    theirs = mmseg_cuda_focal_loss(
        theirs_x, label, reduction=reduction, **{'alpha': 0.5, **options})
    assert ours.shape == theirs.shape == ((2, 5, 6, 7) if reduction == 'none' else ())
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-7)
    grad_ours, = torch.autograd.grad(ours.sum(), x)
    grad_theirs, = torch.autograd.grad(theirs.sum(), theirs_x)
    torch.testing.assert_close(grad_ours.double(), grad_theirs, rtol=1e-4, atol=1e-7)


def test_ignored_pixels_add_nothing_and_mean_counts_every_element():
    pred, label = seg_inputs(ignored=0.5)
    loss = FusedFocalLoss(alpha=0.5)
    none = loss(pred, label, ignore_index=255, reduction_override='none')
    assert (none.permute(0, 2, 3, 1)[label == 255] == 0).all()
    assert (none.permute(0, 2, 3, 1)[label != 255] > 0).all()
    torch.testing.assert_close(
        loss(pred, label, ignore_index=255), none.sum() / pred.numel(), rtol=1e-6, atol=0)


def test_per_pixel_weight_of_mmsegs_sampler_and_broadcast_weights():
    # OHEMPixelSampler hands a (B, H, W) weight; (B, 1, H, W) and (B, C, H, W) also fit.
    pred, label = seg_inputs()
    pixel_weight = torch.rand(2, 6, 7)
    loss = FusedFocalLoss(alpha=0.5, class_weight=[1.0, 2.0, 1.0, 0.5, 1.0])
    expected = mmseg_cuda_focal_loss(
        pred, label, pixel_weight, class_weight=[1.0, 2.0, 1.0, 0.5, 1.0])
    for weight in (pixel_weight, pixel_weight[:, None], pixel_weight[:, None].expand(2, 5, 6, 7),
                   pixel_weight[:, None].expand(2, 5, 6, 7).reshape(-1)):
        torch.testing.assert_close(
            loss(pred, label, weight, ignore_index=255).double(), expected, rtol=1e-5, atol=0)
    # A weight per class and pixel, the same for every image: broadcast from the left.
    class_pixel = torch.rand(5, 6, 7)
    torch.testing.assert_close(
        FusedFocalLoss(alpha=0.5)(pred, label, class_pixel, ignore_index=255,
                                  reduction_override='none'),
        FusedFocalLoss(alpha=0.5)(pred, label, ignore_index=255, reduction_override='none') *
        class_pixel)


def test_binary_segmentation_with_one_channel_takes_label_1_as_foreground():
    # mmseg's decode head with num_classes=2, out_channels=1.
    pred, _ = seg_inputs(c=1)
    label = torch.randint(0, 2, (2, 6, 7))
    label[0, 0] = 255
    ours = FusedFocalLoss(alpha=0.25)(pred, label, ignore_index=255, reduction_override='none')
    theirs = mmseg_cuda_focal_loss(pred, label, alpha=0.25, reduction='none')
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-7)
    # Label 1 is the positive: a large logit costs almost nothing there.
    assert ours[label[:, None] == 1][pred[label[:, None] == 1] > 5].max() < 1e-3


def test_forward_ignore_index_overrides_the_modules():
    pred, label = seg_inputs(ignored=0.0)
    label[0, :2] = 7
    loss = FusedFocalLoss(alpha=0.5, ignore_index=255)
    torch.testing.assert_close(
        loss(pred, label, ignore_index=7).double(),
        mmseg_cuda_focal_loss(pred, label, ignore_index=7),
        rtol=1e-5,
        atol=0)
    with pytest.raises(ValueError, match='label 7'):  # the module's 255 does not ignore 7
        loss(pred, label)
    with pytest.raises(TypeError, match='ignore_index must be an int'):
        loss(pred, label, ignore_index=2.5)
    # Ignoring a real class would make the labels ambiguous: the op refuses it.
    with pytest.raises(ValueError, match='ignore_index=3 collides with a real label'):
        loss(pred, label, ignore_index=3)


def test_default_ignore_index_is_255_with_class_axis_1_and_none_with_class_axis_last():
    # mmseg heads that do not pass ignore_index (DDRHead, PIDHead) rely on
    # FocalLoss.forward's default of 255.
    pred, label = seg_inputs()
    loss = FusedFocalLoss(alpha=0.5)
    torch.testing.assert_close(
        loss(pred, label).double(), mmseg_cuda_focal_loss(pred, label), rtol=1e-5, atol=0)
    # Class axis last (mmdet): no label is ignored, so 255 is out of range.
    rows = pred.permute(0, 2, 3, 1).reshape(-1, 5)
    with pytest.raises(ValueError, match='label 255'):
        loss(rows, label.reshape(-1))


def test_point_head_layout_b_c_p():
    # PointHead: (B, C, P) logits, (B, P) labels.
    pred, label = torch.randn(2, 5, 9), torch.randint(0, 5, (2, 9))
    label[1, 2] = 255
    torch.testing.assert_close(
        FusedFocalLoss(alpha=0.5)(pred, label, ignore_index=255).double(),
        mmseg_cuda_focal_loss(pred, label),
        rtol=1e-5,
        atol=0)


# ----------------------------------------------------------------------------
# Which axis holds the classes: found from the shapes, never guessed
# ----------------------------------------------------------------------------
def test_class_index_target_that_fits_both_layouts_asks_for_class_axis():
    # (B, C, H, W) = (2, 4, 4, 4): labels (2, 4, 4) fit class axis 1 and the last.
    pred, label = torch.randn(2, 4, 4, 4), torch.randint(0, 4, (2, 4, 4))
    with pytest.raises(ValueError, match='fits both class axis 1 and the last class axis: set '
                       'class_axis=1'):
        FusedFocalLoss()(pred, label)
    second = FusedFocalLoss(class_axis=1, reduction='none')(pred, label)
    torch.testing.assert_close(
        second,
        FusedFocalLoss(reduction='none')(
            pred.permute(0, 2, 3, 1).reshape(-1, 4), label.reshape(-1)).reshape(
                2, 4, 4, 4).permute(0, 3, 1, 2))
    last = FusedFocalLoss(class_axis=-1, reduction='none')(pred, label)
    torch.testing.assert_close(
        last,
        FusedFocalLoss(reduction='none')(pred.reshape(-1, 4), label.reshape(-1)).reshape(
            2, 4, 4, 4))
    assert not torch.allclose(second, last)


def test_shapes_that_fit_one_layout_pick_it():
    pred = torch.randn(2, 3, 5, 7)
    loss = FusedFocalLoss(reduction='none')
    # (B, H, W) labels: class axis 1; (B, C, H) labels: class axis last.
    labels_second = torch.randint(0, 4, (2, 5, 7))
    by_second = loss(pred, labels_second, ignore_index=255)
    assert by_second.shape == pred.shape
    torch.testing.assert_close(
        by_second,
        loss(pred.permute(0, 2, 3, 1).reshape(-1, 3), labels_second.reshape(-1),
             ignore_index=255).reshape(2, 5, 7, 3).permute(0, 3, 1, 2))
    labels_last = torch.randint(0, 8, (2, 3, 5))
    torch.testing.assert_close(
        loss(pred, labels_last),
        loss(pred.reshape(-1, 7), labels_last.reshape(-1)).reshape(pred.shape))
    with pytest.raises(ValueError, match=r'class indices of shape \(2, 3, 5\) \(class axis '
                       r'last\) or \(2, 5, 7\) \(class axis 1\), got \(2, 3\)'):
        loss(pred, torch.zeros(2, 3, dtype=torch.long))


def test_same_shape_targets_are_elementwise_and_per_class_options_need_class_axis():
    pred = torch.randn(2, 4, 5, 5)
    target = (torch.rand(2, 4, 5, 5) > 0.7).float()
    # Without per-class options, the layout does not change a single number.
    torch.testing.assert_close(
        FusedFocalLoss(reduction='none')(pred, target),
        FusedFocalLoss(reduction='none', class_axis=1)(pred, target))
    with pytest.raises(ValueError, match='do not tell which axis holds the classes'):
        FusedFocalLoss(class_weight=[1.0, 2.0, 3.0, 4.0])(pred, target)
    with pytest.raises(ValueError, match='set class_axis=1'):
        FusedFocalLoss(alpha=[0.1, 0.2, 0.3, 0.4])(pred, target)
    cw = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(
        FusedFocalLoss(class_weight=cw.tolist(), class_axis=1, reduction='none')(pred, target),
        FusedFocalLoss(reduction='none')(pred, target) * cw[:, None, None])
    torch.testing.assert_close(
        FusedFocalLoss(class_weight=[1.0, 2.0, 3.0, 4.0, 5.0], class_axis=-1,
                       reduction='none')(pred, target[..., :1].expand(2, 4, 5, 5)),
        FusedFocalLoss(reduction='none')(pred, target[..., :1].expand(2, 4, 5, 5)) *
        torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])[:5])


def test_class_axis_1_rejects_a_target_without_that_layout():
    with pytest.raises(ValueError, match=r'with class_axis=1, target must have pred\'s shape'):
        FusedFocalLoss(class_axis=1)(torch.randn(2, 3, 4, 5), torch.zeros(2, 3, 4).long())


# ----------------------------------------------------------------------------
# class_weight in the mmdet layout, and bad configuration
# ----------------------------------------------------------------------------
def test_class_weight_in_the_rows_layout_scales_each_class():
    pred, labels = torch.randn(50, 4) * 2, torch.randint(0, 5, (50, ))
    weight = torch.rand(50)
    cw = torch.tensor([0.5, 1.0, 2.0, 0.0])
    ours = FusedFocalLoss(class_weight=cw.tolist(), reduction='sum')(pred, labels, weight)
    expected = (FusedFocalLoss(reduction='none')(pred, labels, weight) * cw).sum()
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize('kwargs,error,pattern', [
    (dict(class_weight=[1.0, -1.0]), ValueError, 'class_weight must hold finite numbers >= 0'),
    (dict(class_weight=[1.0, float('nan')]), ValueError, 'class_weight must hold finite'),
    (dict(class_weight='weights.npy'), TypeError, 'class_weight must be None or a non-empty'),
    (dict(class_weight=[]), TypeError, 'class_weight must be None or a non-empty'),
    (dict(class_weight=[1.0], use_sigmoid=False), ValueError,
     'class_weight needs use_sigmoid=True'),
    (dict(class_axis=0), ValueError, r'class_axis must be None .*, 1 or -1, got 0'),
    (dict(class_axis=True), ValueError, 'class_axis must be None'),
    (dict(loss_name=3), TypeError, 'loss_name must be a non-empty str'),
])
def test_bad_mmseg_arguments_fail_at_build(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        MODELS.build(dict(type='FusedFocalLoss', **kwargs))


def test_class_weight_of_wrong_length_names_it_and_c_at_forward():
    pred, label = seg_inputs(c=5)
    with pytest.raises(ValueError, match=r'class_weight must have length C=5 .* got 3 values'):
        FusedFocalLoss(class_weight=[1.0, 1.0, 1.0])(pred, label)


# ----------------------------------------------------------------------------
# Through mmseg's own decode head
# ----------------------------------------------------------------------------
def _seg_data_samples(labels):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples = []
    for label in labels:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=label[None])
        samples.append(sample)
    return samples


def test_mmseg_decode_head_uses_it_as_loss_decode():
    pytest.importorskip('mmseg')
    from mmseg.registry import MODELS as MMSEG_MODELS
    from mmseg.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    focal = dict(type='FusedFocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.5,
                 class_weight=[1.0, 2.0, 0.5, 1.0], loss_weight=2.0)
    with DefaultScope.overwrite_default_scope('mmseg'):
        head = MMSEG_MODELS.build(
            dict(type='FCNHead', in_channels=8, channels=8, num_convs=1, num_classes=4,
                 loss_decode=[focal, dict(focal, loss_name='loss_focal_2', gamma=1.0)]))
    assert type(head.loss_decode[0]) is FusedFocalLoss
    seg_logits = torch.randn(2, 4, 8, 8) * 2
    labels = torch.randint(0, 4, (2, 16, 16))
    labels[:, :3] = 255
    losses = head.loss_by_feat(seg_logits, _seg_data_samples(labels))
    assert set(losses) == {'loss_focal', 'loss_focal_2', 'acc_seg'}
    # The head resizes the logits to the labels' size before the loss.
    resized = F.interpolate(seg_logits, size=(16, 16), mode='bilinear', align_corners=False)
    for name, gamma in (('loss_focal', 2.0), ('loss_focal_2', 1.0)):
        expected = mmseg_cuda_focal_loss(resized, labels, gamma=gamma, alpha=0.5,
                                         class_weight=[1.0, 2.0, 0.5, 1.0], loss_weight=2.0)
        torch.testing.assert_close(losses[name].double(), expected, rtol=1e-5, atol=0)
