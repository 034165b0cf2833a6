# RTMDet-tiny (CSPNeXt backbone and PAFPN, RTMDet's shared-conv head with
# DynamicSoftLabelAssigner) with the fused QualityFocalLoss, trained from
# scratch on 2 CPU cores in a few minutes on the generated synthetic shapes.
# Data, schedule, optimiser and evaluation (COCO bbox mAP on the val split)
# are the RetinaNet demo's, which this config inherits; only the model differs.
_base_ = '../retinanet/retinanet_r18-tiny_fpn_2k_synthetic.py'

# mmdet's RTMDet-tiny (rtmdet_tiny_8xb32-300e_coco.py) with: 3 classes, plain
# BN instead of SyncBN (one process), no pretrained backbone, and
# FusedQualityFocalLoss in place of QualityFocalLoss (same arguments).
norm_cfg = dict(type='BN')
act_cfg = dict(type='SiLU', inplace=True)
model = dict(
    _delete_=True,
    type='RTMDet',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[103.53, 116.28, 123.675],
        std=[57.375, 57.12, 58.395],
        bgr_to_rgb=False,
        batch_augments=None),
    backbone=dict(
        type='CSPNeXt',
        arch='P5',
        expand_ratio=0.5,
        deepen_factor=0.167,
        widen_factor=0.375,
        channel_attention=True,
        norm_cfg=norm_cfg,
        act_cfg=act_cfg,
        init_cfg=None),
    neck=dict(
        type='CSPNeXtPAFPN',
        in_channels=[96, 192, 384],
        out_channels=96,
        num_csp_blocks=1,
        expand_ratio=0.5,
        norm_cfg=norm_cfg,
        act_cfg=act_cfg),
    bbox_head=dict(
        type='RTMDetSepBNHead',
        num_classes=3,
        in_channels=96,
        stacked_convs=2,
        feat_channels=96,
        anchor_generator=dict(type='MlvlPointGenerator', offset=0, strides=[8, 16, 32]),
        bbox_coder=dict(type='DistancePointBBoxCoder'),
        loss_cls=dict(type='FusedQualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        with_objectness=False,
        exp_on_reg=False,
        share_conv=True,
        pred_kernel_size=1,
        norm_cfg=norm_cfg,
        act_cfg=act_cfg),
    train_cfg=dict(
        assigner=dict(type='DynamicSoftLabelAssigner', topk=13),
        allowed_border=-1,
        pos_weight=-1,
        debug=False),
    test_cfg=dict(
        nms_pre=30000,
        min_bbox_size=0,
        score_thr=0.001,
        nms=dict(type='nms', iou_threshold=0.65),
        max_per_img=300))

# share_conv=True shares the head's convolutions between levels: each shared
# parameter must join one parameter group only (as in mmdet's RTMDet configs).
optim_wrapper = dict(paramwise_cfg=dict(bypass_duplicate=True))

# 1000 iterations of batch 8 (the demo's schedule, halved: RTMDet-tiny's step
# costs about twice the small RetinaNet's on CPU).
max_iters = 1000
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters, eta_min_ratio=0.05)
]
default_hooks = dict(checkpoint=dict(interval=max_iters))
