"""BCCD (real blood-cell images): loading, the two zero-size boxes, evaluation."""
import logging
import os.path as osp
from collections import Counter

import numpy as np
import pytest
from mmengine.logging import MMLogger

import focal_plugin  # noqa: F401  (registers the datasets)
from focal_plugin.datasets.bccd import BCCD_CLASSES, BCCDDataset, default_bccd_root

ROOT = default_bccd_root()
pytestmark = pytest.mark.skipif(
    not osp.isdir(osp.join(ROOT, 'Annotations')),
    reason=f'BCCD not found at {ROOT} (set FOCAL_PLUGIN_BCCD_ROOT or place shared/ beside the '
    'repository)')

# Boxes per class over all 364 images (the dataset's README), less the two
# zero-size RBC boxes.
EXPECTED_TOTAL = {'RBC': 4155 - 2, 'WBC': 372, 'Platelets': 361}


class _Records(logging.Handler):

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _load(split, **kwargs):
    logger = MMLogger.get_current_instance()
    handler = _Records()
    logger.addHandler(handler)
    try:
        dataset = BCCDDataset(ann_file=f'ImageSets/Main/{split}.txt', pipeline=[], **kwargs)
    finally:
        logger.removeHandler(handler)
    return dataset, handler.messages


def _class_counts(dataset):
    return Counter(BCCD_CLASSES[inst['bbox_label']] for info in dataset
                   for inst in info['instances'])


def _check_boxes(dataset):
    for info in dataset:
        for inst in info['instances']:
            x1, y1, x2, y2 = inst['bbox']
            assert x2 > x1 and y2 > y1, (info['xml_path'], inst)
            assert 0 <= x1 and 0 <= y1 and x2 <= info['width'] and y2 <= info['height']


def test_train_split_drops_the_zero_size_box_with_a_warning():
    dataset, warnings = _load('train')
    assert len(dataset) == 205
    assert dataset.metainfo['classes'] == BCCD_CLASSES
    assert dataset.num_dropped_boxes == 1
    assert len(warnings) == 1
    assert 'BloodImage_00343.xml' in warnings[0] and 'xmin=181' in warnings[0]
    _check_boxes(dataset)
    counts = _class_counts(dataset)
    # Every class is present, red cells dominate (the imbalance focal loss is for).
    assert counts['RBC'] > 5 * counts['WBC'] > 0 and counts['Platelets'] > 0
    image = osp.join(ROOT, 'JPEGImages', osp.basename(dataset[0]['img_path']))
    assert osp.isfile(image)


def test_all_splits_give_the_readme_counts_without_degenerate_boxes():
    trainval, warnings = _load('trainval')
    test, _ = _load('test')
    assert len(trainval) == 292 and len(test) == 72
    assert sorted(osp.basename(m.split(' of ')[1].split(' ')[0])
                  for m in warnings) == ['BloodImage_00338.xml', 'BloodImage_00343.xml']
    for dataset in (trainval, test):
        _check_boxes(dataset)
    assert dict(_class_counts(trainval) + _class_counts(test)) == EXPECTED_TOTAL


def test_pipeline_and_voc_metric():
    from mmdet.evaluation import VOCMetric
    from mmdet.utils import register_all_modules
    register_all_modules()
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(320, 240), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(
            type='PackDetInputs',
            meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
    ]
    dataset = BCCDDataset(ann_file='ImageSets/Main/val.txt', pipeline=pipeline, test_mode=True)
    metric = VOCMetric(metric='mAP', eval_mode='area')
    metric.dataset_meta = dataset.metainfo
    samples = []
    for index in range(4):
        item = dataset[index]
        assert tuple(item['inputs'].shape) == (3, 240, 320)
        sample = item['data_samples']
        gt = sample.gt_instances
        assert len(gt) > 0
        # Annotations load after Resize, so they stay in original image
        # coordinates, as VOCMetric (and rescaled predictions) expect.
        assert gt.bboxes.tensor[:, 2].max() > 320
        # Perfect predictions must score 1.
        sample.pred_instances = gt.clone()
        sample.pred_instances.bboxes = gt.bboxes.tensor
        sample.pred_instances.scores = gt.labels.new_ones(len(gt)).float()
        samples.append(sample.to_dict())
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    assert np.isclose(result['mAP'], 1.0)


def test_missing_folder_and_split_are_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match='data_root'):
        BCCDDataset(data_root=str(tmp_path / 'nowhere'), pipeline=[])
    with pytest.raises(FileNotFoundError, match='ann_file'):
        BCCDDataset(ann_file='ImageSets/Main/missing.txt', pipeline=[])
    monkeypatch.setenv('FOCAL_PLUGIN_BCCD_ROOT', str(tmp_path))
    assert default_bccd_root() == str(tmp_path)
