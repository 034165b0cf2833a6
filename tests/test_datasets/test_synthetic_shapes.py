"""The drawing module of the synthetic shapes and its parameter dataclass."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from focal_plugin.datasets import synthetic_shapes
from focal_plugin.datasets.synthetic_shapes import (SYNTHETIC_CLASSES, SyntheticShapesParams,
                                                    generate_images)

SMALL = dict(num_train=6, num_val=3, img_size=(64, 48), max_objects=4, min_size=8, max_size=20)


def test_params_are_canonical_frozen_and_hashable():
    a = SyntheticShapesParams(**SMALL)
    b = SyntheticShapesParams(**dict(
        SMALL, num_train=np.int64(6), img_size=[64, 48], class_ratio=[8.0, 2, np.float64(1)]))
    assert a == b and hash(a) == hash(b)
    assert b.img_size == (64, 48) and type(b.num_train) is int
    assert b.class_ratio == (8.0, 2.0, 1.0) and all(type(r) is float for r in b.class_ratio)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.seed = 1
    assert a.to_dict() == dict(
        num_train=6,
        num_val=3,
        img_size=[64, 48],
        class_ratio=[8.0, 2.0, 1.0],
        max_objects=4,
        empty_ratio=0.1,
        min_size=8,
        max_size=20,
        seed=0)


def test_replace_checks_names_and_values():
    base = SyntheticShapesParams(**SMALL)
    assert base.replace(seed=4) == SyntheticShapesParams(**dict(SMALL, seed=4))
    with pytest.raises(TypeError, match=r"unknown generation parameter\(s\) \['sede'\]"):
        base.replace(sede=4)
    with pytest.raises(ValueError, match=r'max_size must be at most half .* \(24\), got 30'):
        base.replace(max_size=30)
    with pytest.raises(TypeError, match='max_objects must be an int, got bool'):
        base.replace(max_objects=True)


def test_module_defaults_come_from_the_dataclass():
    pytest.importorskip('mmdet')
    from focal_plugin.datasets.synthetic import DEFAULT_PARAMS, check_params
    assert DEFAULT_PARAMS == dataclasses.asdict(SyntheticShapesParams())
    assert check_params() == SyntheticShapesParams().to_dict()
    assert check_params(**SMALL) == SyntheticShapesParams(**SMALL).to_dict()


def test_images_are_deterministic_and_splits_independent():
    params = SyntheticShapesParams(**SMALL)
    first = list(generate_images(params, 'train'))
    again = list(generate_images(params.replace(num_val=5), 'train'))
    assert len(first) == SMALL['num_train']
    for (img, shapes), (img2, shapes2) in zip(first, again):
        assert img.shape == (48, 64, 3) and img.dtype == np.uint8
        np.testing.assert_array_equal(img, img2)
        assert [(s.label, s.box) for s in shapes] == [(s.label, s.box) for s in shapes2]
        for shape in shapes:
            assert 0 <= shape.label < len(SYNTHETIC_CLASSES)
            ys, xs = np.nonzero(shape.mask)
            assert shape.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    with pytest.raises(ValueError, match='split must be one of'):
        next(generate_images(params, 'test'))


def test_module_needs_neither_mmdet_nor_mmengine(tmp_path):
    # Loaded from its file, outside the package (whose __init__ imports
    # mmdet), with mmdet and mmengine made unimportable.
    code = (
        'import importlib.util, sys\n'
        'sys.modules["mmdet"] = sys.modules["mmengine"] = None\n'
        f'spec = importlib.util.spec_from_file_location("shapes", {synthetic_shapes.__file__!r})\n'
        'mod = importlib.util.module_from_spec(spec)\n'
        'spec.loader.exec_module(mod)\n'
        'params = mod.SyntheticShapesParams(num_train=2, num_val=1, img_size=(32, 32),\n'
        '                                   min_size=6, max_size=16)\n'
        'assert len(list(mod.generate_images(params, "train"))) == 2\n')
    done = subprocess.run([sys.executable, '-c', code],
                          capture_output=True,
                          text=True,
                          timeout=120,
                          cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
