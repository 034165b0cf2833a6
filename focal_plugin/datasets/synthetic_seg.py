"""A class-imbalanced semantic segmentation dataset of the synthetic shapes.

``prepare_synthetic_seg_dataset`` draws the same kind of images as the
detection dataset of :mod:`focal_plugin.datasets.synthetic` (circles,
squares and triangles, 8:2:1 by default, on textured backgrounds, drawn by
:mod:`focal_plugin.datasets.synthetic_shapes`) and writes, for each image,
its label map (one class index per pixel: 0 background, 1 circle, 2 square,
3 triangle), in mmseg's layout::

    <data_root>/
        manifest.json                parameters and version
        img_dir/train/00000.png ...  images
        img_dir/val/00000.png ...
        ann_dir/train/00000.png ...  label maps (uint8)
        ann_dir/val/00000.png ...

As for the detection dataset, generation is deterministic, the folder is
reused when its manifest matches, and ``SyntheticShapesSegDataset``
generates it on construction (once, into the cache), so configs need no
preparation step. Importing this module registers the dataset in mmseg's
``DATASETS``; it needs mmsegmentation.
"""
import os
import os.path as osp
from dataclasses import asdict
from typing import Dict, Optional

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .cache import cache_folder, generated_data_root, holds_dataset, prepare_dataset
from .synthetic_shapes import (SPLITS, SYNTHETIC_CLASSES, SyntheticShapesParams, generate_images,
                               write_png)

#: Dataset name, the first part of its default cache folder name.
SYNTHETIC_SEG_NAME = 'synthetic_shapes_seg'
#: Version of the generator's output; bump it whenever the bytes change.
SYNTHETIC_SEG_VERSION = 1
#: Class names of the label maps: background first, then the shapes.
SYNTHETIC_SEG_CLASSES = ('background', ) + SYNTHETIC_CLASSES
#: Generation parameters of the default dataset: smaller images than the
#: detection dataset's, so that a segmentation model trains in seconds on a CPU.
SEG_PARAMS = SyntheticShapesParams(
    num_train=400, num_val=100, img_size=(64, 64), max_objects=3, min_size=10, max_size=30)
#: :data:`SEG_PARAMS` as keyword arguments of :func:`prepare_synthetic_seg_dataset`.
DEFAULT_SEG_PARAMS: Dict[str, object] = asdict(SEG_PARAMS)


def check_seg_params(**params) -> dict:
    """Validates generation parameters over :data:`SEG_PARAMS`.

    Args:
        **params: Any fields of
            :class:`~focal_plugin.datasets.synthetic_shapes.SyntheticShapesParams`;
            those not given take the values of :data:`SEG_PARAMS`.

    Returns:
        dict: All the parameters in canonical form (tuples as lists, as in
        the manifest).

    Raises:
        TypeError, ValueError: Naming the argument at fault.
    """
    return SEG_PARAMS.replace(**params).to_dict()


def default_seg_data_root(params: Optional[dict] = None) -> str:
    """The cache folder of the segmentation dataset generated with ``params``.

    Args:
        params (dict, optional): Canonical parameters (see
            :func:`check_seg_params`); None means the defaults.
            Defaults to None.

    Returns:
        str: ``<cache>/synthetic_shapes_seg_v<version>`` for the default
        parameters, with a short hash of the parameters appended otherwise.
    """
    return cache_folder(SYNTHETIC_SEG_NAME, SYNTHETIC_SEG_VERSION, params, SEG_PARAMS.to_dict())


def is_seg_ready(data_root: str, params: Optional[dict] = None) -> bool:
    """Whether ``data_root`` holds a finished segmentation dataset (with ``params``)."""
    return holds_dataset(data_root, SYNTHETIC_SEG_NAME, SYNTHETIC_SEG_VERSION, params)


def prepare_synthetic_seg_dataset(data_root: Optional[str] = None, **params) -> str:
    """Generates the segmentation dataset, or reuses it when present.

    Safe to call from several processes at once (one generates, the others
    wait on a lock beside the folder).

    Args:
        data_root (str, optional): Folder for the dataset; None means the
            cache folder of :func:`default_seg_data_root`. Defaults to None.
        **params: Generation parameters, see :func:`check_seg_params`.

    Returns:
        str: The absolute path of the finished dataset folder.

    Raises:
        FileExistsError: If ``data_root`` exists and holds anything other than
            this dataset generated with ``params`` (it is never overwritten).
    """
    checked = SEG_PARAMS.replace(**params)
    manifest_params = checked.to_dict()

    def generate(out_dir: str) -> dict:
        stats = {split: _write_split(out_dir, split, checked) for split in SPLITS}
        return dict(
            name=SYNTHETIC_SEG_NAME,
            version=SYNTHETIC_SEG_VERSION,
            params=manifest_params,
            classes=list(SYNTHETIC_SEG_CLASSES),
            splits=stats)

    return prepare_dataset(data_root, SYNTHETIC_SEG_NAME, SYNTHETIC_SEG_VERSION, manifest_params,
                           SEG_PARAMS.to_dict(), generate)


def _write_split(out_dir: str, split: str, params: SyntheticShapesParams) -> dict:
    """Writes one split's images and label maps; returns its pixel counts per class."""
    img_dir, ann_dir = osp.join(out_dir, 'img_dir', split), osp.join(out_dir, 'ann_dir', split)
    os.makedirs(img_dir)
    os.makedirs(ann_dir)
    w, h = params.img_size
    pixels = np.zeros(len(SYNTHETIC_SEG_CLASSES), np.int64)
    for index, (img, shapes) in enumerate(generate_images(params, split)):
        label_map = np.zeros((h, w), np.uint8)
        for shape in shapes:
            label_map[shape.mask] = shape.label + 1  # a later shape covers an earlier one
        pixels += np.bincount(label_map.ravel(), minlength=len(SYNTHETIC_SEG_CLASSES))
        file_name = f'{index:05d}.png'
        write_png(osp.join(img_dir, file_name), img)
        write_png(osp.join(ann_dir, file_name), label_map)
    return dict(
        images=getattr(params, f'num_{split}'),
        pixels=dict(zip(SYNTHETIC_SEG_CLASSES, pixels.tolist())))


@DATASETS.register_module()
class SyntheticShapesSegDataset(BaseSegDataset):
    """The generated shapes as semantic segmentation (mmseg's ``BaseSegDataset``).

    The dataset is generated on construction unless ``data_root`` already
    holds it, so configs train with mmseg's own tools and no preparation step.

    Args:
        split (str): 'train' or 'val'; picks the image and label folders when
            ``data_prefix`` is not given. Defaults to 'train'.
        generator_cfg (dict, optional): Generation parameters (see
            :func:`check_seg_params`); None means :data:`SEG_PARAMS`, or, when
            ``data_root`` already holds the dataset, whatever it was
            generated with. Defaults to None.
        data_root (str, optional): Dataset folder; None means the cache folder
            (``$FOCAL_PLUGIN_DATA_CACHE`` or ``~/.cache/focal_plugin/datasets``).
            Defaults to None.
        data_prefix (dict, optional): ``dict(img_path=..., seg_map_path=...)``;
            None means ``img_dir/<split>`` and ``ann_dir/<split>``.
            Defaults to None.
        **kwargs: Passed to :class:`mmseg.datasets.BaseSegDataset`.
    """

    METAINFO = dict(
        classes=SYNTHETIC_SEG_CLASSES,
        palette=[[0, 0, 0], [220, 20, 60], [0, 82, 255], [0, 170, 60]])

    def __init__(self,
                 split: str = 'train',
                 generator_cfg: Optional[dict] = None,
                 data_root: Optional[str] = None,
                 data_prefix: Optional[dict] = None,
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        data_root = generated_data_root(data_root, generator_cfg, SYNTHETIC_SEG_NAME,
                                        SYNTHETIC_SEG_VERSION, prepare_synthetic_seg_dataset)
        self.split = split
        if data_prefix is None:
            data_prefix = dict(img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}')
        kwargs.setdefault('img_suffix', '.png')
        kwargs.setdefault('seg_map_suffix', '.png')
        super().__init__(data_root=data_root, data_prefix=data_prefix, **kwargs)
