"""The generated segmentation dataset of the synthetic shapes (mmseg layout)."""
import hashlib
import os
import os.path as osp
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest

pytest.importorskip('mmseg')

from focal_plugin.datasets.cache import read_manifest  # noqa: E402
from focal_plugin.datasets.synthetic_seg import (  # noqa: E402
    SYNTHETIC_SEG_CLASSES, SyntheticShapesSegDataset, check_seg_params,
    prepare_synthetic_seg_dataset)

SMALL = dict(num_train=8, num_val=4, img_size=(48, 40), max_objects=3, min_size=8, max_size=20)


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith('.png'):
                with open(osp.join(dirpath, name), 'rb') as f:
                    h.update(f.read())
    return h.hexdigest()


def test_generates_images_and_label_maps_in_mmsegs_layout(tmp_path):
    root = prepare_synthetic_seg_dataset(str(tmp_path / 'seg'), **SMALL)
    manifest = read_manifest(root)
    assert manifest['classes'] == list(SYNTHETIC_SEG_CLASSES)
    assert manifest['params'] == check_seg_params(**SMALL)
    seen = set()
    for split, count in (('train', 8), ('val', 4)):
        names = sorted(os.listdir(osp.join(root, 'img_dir', split)))
        assert names == sorted(os.listdir(osp.join(root, 'ann_dir', split)))
        assert len(names) == count
        for name in names:
            img = cv2.imread(osp.join(root, 'img_dir', split, name))
            label = cv2.imread(osp.join(root, 'ann_dir', split, name), cv2.IMREAD_UNCHANGED)
            assert img.shape == (40, 48, 3) and label.shape == (40, 48)
            assert label.dtype == np.uint8 and label.max() < len(SYNTHETIC_SEG_CLASSES)
            seen |= set(np.unique(label).tolist())
    assert 0 in seen and 1 in seen  # background and the most frequent shape
    pixels = manifest['splits']['train']['pixels']
    assert sum(pixels.values()) == 8 * 48 * 40


def test_generation_is_deterministic_and_reused(tmp_path):
    a = prepare_synthetic_seg_dataset(str(tmp_path / 'a'), **SMALL)
    b = prepare_synthetic_seg_dataset(str(tmp_path / 'b'), **SMALL)
    assert _digest(a) == _digest(b)
    stamp = os.stat(osp.join(a, 'manifest.json')).st_mtime_ns
    assert prepare_synthetic_seg_dataset(a, **SMALL) == a
    assert os.stat(osp.join(a, 'manifest.json')).st_mtime_ns == stamp
    with pytest.raises(FileExistsError, match='does not hold the synthetic_shapes_seg'):
        prepare_synthetic_seg_dataset(a, **dict(SMALL, seed=1))


def test_bad_parameters_name_the_argument():
    with pytest.raises(TypeError, match=r"unknown generation parameter\(s\) \['num_trian'\]"):
        check_seg_params(num_trian=3)
    with pytest.raises(ValueError, match='max_size must be at most half'):
        check_seg_params(img_size=(32, 32), max_size=30)


def test_mmseg_dataset_loads_a_split(tmp_path):
    from mmengine.registry import DefaultScope
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    root = prepare_synthetic_seg_dataset(str(tmp_path / 'seg'), **SMALL)
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
    with DefaultScope.overwrite_default_scope('mmseg'):  # mmseg's LoadAnnotations
        dataset = SyntheticShapesSegDataset(split='val', data_root=root, pipeline=pipeline)
    assert len(dataset) == 4
    assert dataset.metainfo['classes'] == SYNTHETIC_SEG_CLASSES
    item = dataset[0]
    assert item['img'].shape == (40, 48, 3) and item['gt_seg_map'].shape == (40, 48)
    with pytest.raises(ValueError, match="split must be one of"):
        SyntheticShapesSegDataset(split='test', data_root=root)


def test_mmseg_dataset_works_without_mmdet(tmp_path):
    # An mmsegmentation environment need not have mmdet: the config imports
    # focal_plugin and focal_plugin.datasets.synthetic_seg by name.
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    script = textwrap.dedent(f"""
        import sys

        class BlockMmdet:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] == 'mmdet':
                    raise ImportError(name + ' is blocked by the test')
                return None

        sys.meta_path.insert(0, BlockMmdet())
        import focal_plugin
        from focal_plugin.datasets.synthetic_seg import (SyntheticShapesSegDataset,
                                                         prepare_synthetic_seg_dataset)
        from mmseg.registry import DATASETS

        assert not focal_plugin.HAS_MMDET
        assert DATASETS.get('SyntheticShapesSegDataset') is SyntheticShapesSegDataset
        data_root = prepare_synthetic_seg_dataset({str(tmp_path / 'seg')!r}, **{SMALL!r})
        assert len(SyntheticShapesSegDataset(split='val', data_root=data_root)) == 4
        assert not [m for m in sys.modules if m.split('.')[0] == 'mmdet']
        print('OK')
    """)
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith('OK')
