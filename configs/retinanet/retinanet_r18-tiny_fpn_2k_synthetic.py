# A RetinaNet small enough to train from scratch on 2 CPU cores in a few
# minutes, on the generated synthetic shapes (circle:square:triangle = 8:2:1,
# 160 x 160 images; generated into the cache on first use, see
# focal_plugin/datasets/synthetic.py). COCO bbox mAP on the val split.
_base_ = 'mmdet::retinanet/retinanet_r18_fpn_1x_coco.py'

custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)
runner_type = 'FocalRunner'  # resume/test from checkpoints under torch >= 2.6
default_scope = 'mmdet'

img_scale = (160, 160)
model = dict(
    backbone=dict(
        # ResNet-18 at a quarter of the width (16-32-64-128 channels), trained
        # from scratch: no frozen stage, BN statistics updated.
        base_channels=16,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),
    # P3-P5 only, 48 channels, two convs per branch: measured as accurate as
    # 64 channels here and 15% faster per iteration.
    neck=dict(in_channels=[32, 64, 128], out_channels=48, start_level=0, num_outs=3),
    bbox_head=dict(
        type='FocalRetinaHead',
        num_classes=3,
        in_channels=48,
        stacked_convs=2,
        feat_channels=48,
        prior_prob=0.01,
        anchor_generator=dict(
            # Objects are 14-52 px: anchors of 16-45 px on strides 8-32.
            octave_base_scale=2,
            scales_per_octave=2,
            ratios=[1.0],
            strides=[8, 16, 32]),
        loss_cls=dict(
            _delete_=True,
            type='FusedFocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.25,
            loss_weight=1.0)))

dataset_type = 'SyntheticShapesDataset'
# The datasets find their own folder (data_root=None below); this replaces the
# COCO path inherited from mmdet's base so that no stale path shows in dumps.
data_root = None
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        # 'instances' lets CocoMetric build its ground truth from the dataset
        # itself, wherever the cache folder is (no ann_file path in here).
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'instances'))
]
train_dataloader = dict(
    _delete_=True,
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        split='train',
        # data_root=None: the cache folder ($FOCAL_PLUGIN_DATA_CACHE or
        # ~/.cache/focal_plugin/datasets), generated there on first use.
        data_root=None,
        # Empty images are kept: they are pure background for the focal loss.
        filter_cfg=dict(filter_empty_gt=False),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    _delete_=True,
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        split='val',
        data_root=None,
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='CocoMetric',
    ann_file=None,
    metric='bbox',
    classwise=True,  # per-class AP: the rare triangles are the interesting part
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator

max_iters = 2000
train_cfg = dict(
    _delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters, eta_min_ratio=0.05)
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.002, weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10, norm_type=2))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False, window_size=50)
# The learning rate above is for this batch size on one process.
auto_scale_lr = dict(enable=False, base_batch_size=8)
