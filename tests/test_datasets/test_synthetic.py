"""The generated shapes dataset: determinism, imbalance, caching, atomicity."""
import json
import multiprocessing
import os
import os.path as osp

import numpy as np
import pytest

import focal_plugin  # noqa: F401  (registers the datasets)
from focal_plugin.datasets import cache, synthetic, synthetic_shapes
from focal_plugin.datasets.synthetic import (SYNTHETIC_CLASSES, default_data_root,
                                             prepare_synthetic_dataset)

# Small enough to generate in well under a second.
SMALL = dict(
    num_train=40, num_val=8, img_size=(64, 48), max_objects=4, min_size=8, max_size=20, seed=3)


def _files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


def _coco(root, split='train'):
    with open(osp.join(root, 'annotations', f'instances_{split}.json')) as f:
        return json.load(f)


def test_two_generations_are_byte_identical(tmp_path):
    a = prepare_synthetic_dataset(str(tmp_path / 'a'), **SMALL)
    b = prepare_synthetic_dataset(str(tmp_path / 'b'), **SMALL)
    files_a, files_b = _files(a), _files(b)
    assert len(files_a) == SMALL['num_train'] + SMALL['num_val'] + 3  # 2 json + manifest
    assert files_a == files_b
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(a).st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    c = prepare_synthetic_dataset(str(tmp_path / 'c'), **dict(SMALL, seed=4))
    assert _files(
        c)['annotations/instances_train.json'] != files_a['annotations/instances_train.json']


def test_classes_follow_the_ratio_and_images_vary(tmp_path):
    root = prepare_synthetic_dataset(str(tmp_path / 'd'), **dict(SMALL, num_train=120))
    coco = _coco(root)
    assert [c['name'] for c in coco['categories']] == list(SYNTHETIC_CLASSES)
    counts = np.bincount([a['category_id'] - 1 for a in coco['annotations']], minlength=3)
    total = counts.sum()
    # Exact 8:2:1 up to rounding of the last object of each class.
    np.testing.assert_allclose(counts, total * np.array([8, 2, 1]) / 11, atol=1)
    per_image = np.bincount([a['image_id'] for a in coco['annotations']],
                            minlength=len(coco['images']) + 1)[1:]
    assert (per_image == 0).any() and (per_image >= 3).any()
    w, h = SMALL['img_size']
    sizes = []
    for ann in coco['annotations']:
        x, y, bw, bh = ann['bbox']
        assert bw > 0 and bh > 0 and x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
        assert 0 < ann['area'] <= bw * bh
        sizes.append(max(bw, bh))
    assert max(sizes) - min(sizes) >= 8  # varied sizes
    manifest = cache.read_manifest(root)
    assert manifest['splits']['train']['per_class'] == dict(zip(SYNTHETIC_CLASSES, counts.tolist()))


def test_existing_dataset_is_reused(tmp_path, monkeypatch):
    root = prepare_synthetic_dataset(str(tmp_path / 'e'), **SMALL)
    before = {p: os.stat(osp.join(root, p)).st_mtime_ns for p in _files(root)}

    def _fail(*args, **kwargs):
        raise AssertionError('the dataset was generated again')

    monkeypatch.setattr(synthetic, 'write_dataset', _fail)
    assert prepare_synthetic_dataset(str(tmp_path / 'e'), **SMALL) == root
    assert {p: os.stat(osp.join(root, p)).st_mtime_ns for p in _files(root)} == before


def test_a_foreign_or_different_folder_is_never_overwritten(tmp_path):
    root = prepare_synthetic_dataset(str(tmp_path / 'f'), **SMALL)
    with pytest.raises(FileExistsError, match='data_root'):
        prepare_synthetic_dataset(root, **dict(SMALL, seed=5))
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='data_root'):
        prepare_synthetic_dataset(str(foreign), **SMALL)
    assert (foreign / 'keep.txt').read_text() == 'mine'
    # An empty folder is simply filled.
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert prepare_synthetic_dataset(str(empty), **SMALL) == str(empty)


def test_cache_folder_follows_env_and_params(tmp_path, monkeypatch):
    monkeypatch.setenv('FOCAL_PLUGIN_DATA_CACHE', str(tmp_path / 'cache'))
    assert default_data_root() == str(tmp_path / 'cache' / 'synthetic_shapes_v1')
    root = prepare_synthetic_dataset(**SMALL)
    assert osp.dirname(root) == str(tmp_path / 'cache')
    assert osp.basename(root).startswith('synthetic_shapes_v1_')  # non-default: hashed name
    assert prepare_synthetic_dataset(**SMALL) == root


def test_interrupted_generation_leaves_no_folder(tmp_path, monkeypatch):
    real_imwrite = synthetic_shapes.cv2.imwrite
    calls = []

    def _interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_imwrite(*args, **kwargs)

    monkeypatch.setattr(synthetic_shapes.cv2, 'imwrite', _interrupt)
    with pytest.raises(KeyboardInterrupt):
        prepare_synthetic_dataset(str(tmp_path / 'g'), **SMALL)
    assert not (tmp_path / 'g').exists()
    assert not [p for p in os.listdir(tmp_path) if '.tmp-' in p]
    monkeypatch.setattr(synthetic_shapes.cv2, 'imwrite', real_imwrite)
    assert synthetic.is_ready(prepare_synthetic_dataset(str(tmp_path / 'g'), **SMALL))


def test_losing_the_rename_race_keeps_the_winner(tmp_path):
    root = prepare_synthetic_dataset(str(tmp_path / 'h'), **SMALL)
    before = _files(root)
    tmp_dir = cache.make_temp_dir(root)
    (tmp_path / osp.basename(tmp_dir) / 'partial.png').write_bytes(b'x')
    assert cache.publish_dir(tmp_dir, root) is False
    assert not osp.exists(tmp_dir)
    assert _files(root) == before


def _prepare_in_child(root, queue):
    queue.put(prepare_synthetic_dataset(root, **SMALL))


def test_concurrent_processes_get_one_complete_dataset(tmp_path):
    root = str(tmp_path / 'i')
    ctx = multiprocessing.get_context('fork')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(root, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(queue.get(timeout=5) for _ in procs) == [root, root]
    assert synthetic.is_ready(root, synthetic.check_params(**SMALL))
    assert not [p for p in os.listdir(tmp_path) if '.tmp-' in p]
    assert len(_files(root)) == SMALL['num_train'] + SMALL['num_val'] + 3


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_train=0), 'num_train'),
    (dict(num_val='8'), 'num_val'),
    (dict(img_size=(16, 64)), r'img_size\[0\]'),
    (dict(img_size=64), 'img_size'),
    (dict(class_ratio=(8, 0, 1)), 'class_ratio'),
    (dict(class_ratio=(8, 2)), 'class_ratio'),
    (dict(empty_ratio=1.0), 'empty_ratio'),
    (dict(min_size=30, max_size=20), 'max_size'),
    (dict(max_size=40), 'max_size'),
    (dict(seed=-1), 'seed'),
])
def test_bad_parameters_are_named(tmp_path, kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        prepare_synthetic_dataset(str(tmp_path / 'j'), **dict(SMALL, **kwargs))
    assert not (tmp_path / 'j').exists()


def test_registered_dataset_generates_and_yields_images_and_boxes(tmp_path):
    from mmdet.registry import DATASETS
    from mmdet.utils import register_all_modules
    register_all_modules()
    root = str(tmp_path / 'k')
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs')
    ]
    dataset = DATASETS.build(
        dict(
            type='SyntheticShapesDataset',
            data_root=root,
            generator_cfg=SMALL,
            split='train',
            pipeline=pipeline))
    assert dataset.metainfo['classes'] == SYNTHETIC_CLASSES
    assert len(dataset.metainfo['palette']) == len(SYNTHETIC_CLASSES)
    assert len(dataset) == SMALL['num_train']
    coco = _coco(root)
    seen_boxes = 0
    for index in range(len(dataset)):
        item = dataset[index]
        assert tuple(item['inputs'].shape) == (3, SMALL['img_size'][1], SMALL['img_size'][0])
        gt = item['data_samples'].gt_instances
        img_id = item['data_samples'].img_id
        expected = [a for a in coco['annotations'] if a['image_id'] == img_id]
        assert len(gt) == len(expected)
        for box, label, ann in zip(gt.bboxes.tensor.tolist(), gt.labels.tolist(), expected):
            x, y, w, h = ann['bbox']
            assert box == [x, y, x + w, y + h] and label == ann['category_id'] - 1
        seen_boxes += len(gt)
    assert seen_boxes == len(coco['annotations']) > 0
    # Built again on the same folder without generator_cfg: reused as it is.
    val = DATASETS.build(
        dict(
            type='SyntheticShapesDataset',
            data_root=root,
            split='val',
            test_mode=True,
            pipeline=pipeline))
    assert len(val) == SMALL['num_val']
    with pytest.raises(ValueError, match='split'):
        DATASETS.build(dict(type='SyntheticShapesDataset', data_root=root, split='test'))
