# The tiny RetinaNet of retinanet_r18-tiny_fpn_2k_synthetic.py, from scratch,
# on BCCD: real blood-cell microscope images, 640 x 480 resized to 320 x 240,
# three imbalanced classes (RBC 4155, WBC 372, Platelets 361 boxes). Train on
# the train split (205 images), evaluate Pascal VOC mAP (area under the PR
# curve, IoU 0.5) on val (87 images); test.txt (72 images) is the test split.
# The data folder is <repo>/../shared/datasets/bccd or $FOCAL_PLUGIN_BCCD_ROOT.
_base_ = './retinanet_r18-tiny_fpn_2k_synthetic.py'

img_scale = (320, 240)
model = dict(
    # P3-P6 (strides 8-64): boxes are 15-120 px at this scale (platelets ~20,
    # red cells ~50, white cells ~95).
    neck=dict(num_outs=4),
    bbox_head=dict(anchor_generator=dict(strides=[8, 16, 32, 64])))

dataset_type = 'BCCDDataset'
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # A smear has no up or left: both flips are valid.
    dict(
        type='RandomFlip',
        prob=[0.25, 0.25, 0.25],
        direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # After Resize: VOCMetric compares predictions (rescaled to the original
    # image) with boxes in original coordinates.
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        # data_root=None: <repo>/../shared/datasets/bccd or $FOCAL_PLUGIN_BCCD_ROOT.
        data_root=None,
        ann_file='ImageSets/Main/train.txt',
        filter_cfg=dict(filter_empty_gt=True),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=None,
        ann_file='ImageSets/Main/val.txt',
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=None,
        ann_file='ImageSets/Main/test.txt',
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
# VOC2012-style mAP: XMLDataset keeps VOC's 1-based, inclusive boxes (minus 1),
# which is the convention VOCMetric's legacy coordinates assume.
val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='area')
test_evaluator = val_evaluator
