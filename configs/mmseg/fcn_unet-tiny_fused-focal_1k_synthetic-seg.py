# mmseg: a small U-Net + FCN head trained from scratch with FusedFocalLoss
# (sigmoid, one binary classifier per class) on the generated segmentation
# dataset of the synthetic shapes (background, circle, square, triangle; shapes
# 8:2:1, 64 x 64 images, generated into the cache on first use, see
# focal_plugin/datasets/synthetic_seg.py). mIoU on the val split.
# Train with mmseg's own tools/train.py, or mmengine's Runner.
_base_ = [
    'mmseg::_base_/models/fcn_unet_s5-d16.py', 'mmseg::_base_/default_runtime.py'
]

custom_imports = dict(
    imports=['focal_plugin', 'focal_plugin.datasets.synthetic_seg'], allow_failed_imports=False)
default_scope = 'mmseg'

crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)  # one process: no SyncBN
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        # 4 stages of 16-32-64-128 channels (the base's 5 of 64-1024 are for 512 px)
        base_channels=16,
        num_stages=4,
        strides=(1, 1, 1, 1),
        enc_num_convs=(2, 2, 2, 2),
        dec_num_convs=(2, 2, 2),
        downsamples=(True, True, True),
        enc_dilations=(1, 1, 1, 1),
        dec_dilations=(1, 1, 1),
        norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=16,
        in_index=3,
        channels=16,
        dropout_ratio=0.0,
        num_classes=4,
        norm_cfg=norm_cfg,
        # mmseg's FocalLoss would be type='FocalLoss'; the keys are the same.
        loss_decode=dict(
            _delete_=True,
            type='FusedFocalLoss',
            use_sigmoid=True,
            gamma=2.0,
            alpha=0.5,
            loss_weight=10.0,
            loss_name='loss_focal')),
    auxiliary_head=None,
    test_cfg=dict(_delete_=True, mode='whole'))

dataset_type = 'SyntheticShapesSegDataset'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    # data_root=None: the cache folder ($FOCAL_PLUGIN_DATA_CACHE or
    # ~/.cache/focal_plugin/datasets), generated there on first use.
    dataset=dict(type=dataset_type, split='train', data_root=None, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, split='val', data_root=None, test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 1000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min_ratio=0.05)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.005, weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
