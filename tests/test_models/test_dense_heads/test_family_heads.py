"""mmdet's own heads of the focal-loss family (GFL, TOOD, VFNet, RTMDet,
CenterNet, CenterNet-update) give the same losses and gradients with the
fused losses as with their stock losses."""
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.structures import InstanceData

pytest.importorskip('mmdet')

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

from .head_test_utils import (  # noqa: E402
    assert_dicts_close, img_metas, random_feats, summed_losses)
import focal_plugin  # noqa: E402,F401

register_all_modules()

S = 128
ANCHORS = dict(
    type='AnchorGenerator',
    ratios=[1.0],
    octave_base_scale=8,
    scales_per_octave=1,
    strides=[8, 16, 32, 64, 128])
ATSS_TRAIN_CFG = dict(
    assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1, debug=False)
SMALL = dict(num_classes=4, in_channels=1, feat_channels=8, stacked_convs=1, norm_cfg=None)
QFL = dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0)
GIOU = dict(type='GIoULoss', loss_weight=2.0)
GAUSSIAN = dict(type='GaussianFocalLoss', pos_weight=0.25, neg_weight=0.75, loss_weight=1.0)

# head config, the attribute of its family loss (also the key of that loss in
# loss_by_feat's dict), (number of feature levels, stride of the first)
HEADS = {
    'GFLHead': (dict(
        type='GFLHead',
        anchor_generator=ANCHORS,
        train_cfg=ATSS_TRAIN_CFG,
        loss_cls=QFL,
        loss_bbox=GIOU,
        **SMALL), 'loss_cls', (5, 8)),
    'TOODHead': (dict(
        type='TOODHead',
        anchor_generator=ANCHORS,
        train_cfg=dict(
            initial_epoch=4,
            initial_assigner=dict(type='ATSSAssigner', topk=9),
            assigner=dict(type='TaskAlignedAssigner', topk=13),
            alpha=1,
            beta=6,
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        loss_cls=dict(QFL, activated=True),
        loss_bbox=GIOU,
        **SMALL), 'loss_cls', (5, 8)),
    'VFNetHead': (dict(
        type='VFNetHead',
        train_cfg=ATSS_TRAIN_CFG,
        loss_cls=dict(
            type='VarifocalLoss',
            use_sigmoid=True,
            alpha=0.75,
            gamma=2.0,
            iou_weighted=True,
            loss_weight=1.0),
        **SMALL), 'loss_cls', (5, 8)),
    'RTMDetHead': (dict(
        type='RTMDetHead',
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        train_cfg=dict(
            assigner=dict(type='DynamicSoftLabelAssigner', topk=13),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        loss_cls=QFL,
        loss_bbox=GIOU,
        **SMALL), 'loss_cls', (3, 8)),
    'CenterNetHead': (dict(
        type='CenterNetHead',
        num_classes=4,
        in_channels=1,
        feat_channels=4,
        loss_center_heatmap=dict(type='GaussianFocalLoss', loss_weight=1.0),
        test_cfg=dict(topk=100, local_maximum_kernel=3,
                      max_per_img=100)), 'loss_center_heatmap', (1, 4)),
    # The pos_inds path of the gaussian focal loss (all but an empty batch).
    'CenterNetUpdateHead': (dict(type='CenterNetUpdateHead', loss_cls=GAUSSIAN,
                                 **SMALL), 'loss_cls', (5, 8)),
}


def fused_config(cfg, loss_key):
    """The same head with the family loss replaced by its fused twin."""
    loss_cfg = dict(cfg[loss_key])
    loss_cfg['type'] = 'Fused' + loss_cfg['type']
    return dict(cfg, **{loss_key: loss_cfg})


def ground_truth(*num_objects):
    """A batch of images with the given numbers of objects (at most 2 each)."""
    boxes = torch.tensor([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 120.0, 100.0]])
    labels = torch.tensor([2, 0])
    return [InstanceData(bboxes=boxes[:n], labels=labels[:n]) for n in num_objects]


def losses_and_gradients(head, feats, gts):
    """The losses (summed over the levels) and the gradient of each parameter
    that has one."""
    losses = summed_losses(head, head.forward(feats), gts, img_metas(S, len(gts)))
    params = [p for p in head.parameters() if p.requires_grad]
    grads = torch.autograd.grad(sum(losses.values()), params, allow_unused=True)
    names = [name for name, p in head.named_parameters() if p.requires_grad]
    detached = {k: v.detach() for k, v in losses.items()}
    return detached, {name: g for name, g in zip(names, grads) if g is not None}


@pytest.fixture
def after_initial_epochs():
    """TOODHead reads the epoch from the message hub; past its initial epochs
    it uses loss_cls (before, the FocalLoss of initial_loss_cls)."""
    hub = MessageHub.get_current_instance()
    previous = hub.get_info('epoch')
    hub.update_info('epoch', 10)
    yield
    hub.update_info('epoch', previous)


def build_pair(name):
    """The stock head and its fused twin, with the same weights."""
    cfg, loss_key, _ = HEADS[name]
    torch.manual_seed(0)
    stock = MODELS.build(cfg)
    stock.init_weights()
    fused = MODELS.build(fused_config(cfg, loss_key))
    assert type(getattr(fused, loss_key)).__name__.startswith('Fused')
    fused.load_state_dict(stock.state_dict())
    return stock, fused


def features(name):
    """Random maps for a batch of 2 images at the head's levels."""
    _, _, (levels, stride) = HEADS[name]
    sizes = [(S // (stride * 2**i), S // (stride * 2**i)) for i in range(levels)]
    return random_feats(sizes, batch_size=2)


# CenterNetUpdateHead fills an image without objects with the heatmap value
# num_classes instead of 0 (mmdet 3.3.0); the fused loss follows the formula
# there too, so the empty-image batches equal stock as well.
BATCHES = {'objects': (2, 1), 'one_empty_image': (2, 0), 'no_object': (0, 0)}
CASES = [
    pytest.param(name, objects, id=f'{name}-{batch}') for name in sorted(HEADS)
    for batch, objects in BATCHES.items()
]


@pytest.mark.parametrize('name, num_objects', CASES)
def test_fused_family_loss_equals_stock_in_mmdet_head(name, num_objects, after_initial_epochs):
    """With the same weights and inputs, the head gives the same losses and
    parameter gradients with the fused family loss as with the stock one."""
    loss_key = HEADS[name][1]
    stock, fused = build_pair(name)
    feats = features(name)
    stock_losses, stock_grads = losses_and_gradients(stock, feats, ground_truth(*num_objects))
    fused_losses, fused_grads = losses_and_gradients(fused, feats, ground_truth(*num_objects))
    assert_dicts_close(fused_losses, stock_losses, rtol=1e-4, atol=1e-7)
    assert stock_losses[loss_key] > 0
    assert stock_grads  # the comparison below is not vacuous
    assert_dicts_close(fused_grads, stock_grads, rtol=1e-4, atol=1e-6)
