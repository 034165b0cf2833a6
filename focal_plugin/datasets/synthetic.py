"""The synthetic shapes as an mmdet dataset, generated once into a cache folder.

``prepare_synthetic_dataset`` writes the class-imbalanced shapes of
:mod:`focal_plugin.datasets.synthetic_shapes` (circles, squares and triangles,
8:2:1 by default) as PNG files plus COCO-style annotation files::

    <data_root>/
        manifest.json                      parameters and version
        annotations/instances_train.json
        annotations/instances_val.json
        train/00000.png ...
        val/00000.png ...

The folder is reused when its manifest matches, and built in a temporary
folder renamed into place when complete (see :mod:`.cache`).
``SyntheticShapesDataset`` calls it on construction, so configs need no
separate preparation step.
"""
from dataclasses import asdict
from typing import Dict, Optional

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS

from .cache import cache_folder, generated_data_root, holds_dataset, prepare_dataset
from .synthetic_shapes import (SPLITS, SYNTHETIC_CLASSES, SYNTHETIC_NAME, SYNTHETIC_VERSION,
                               SyntheticShapesParams, write_dataset)

#: Generation parameters of the default dataset (the defaults of
#: :class:`SyntheticShapesParams`), as keyword arguments of
#: :func:`prepare_synthetic_dataset`.
DEFAULT_PARAMS: Dict[str, object] = asdict(SyntheticShapesParams())


def check_params(**params) -> dict:
    """Validates generation parameters and returns them in canonical form.

    Args:
        **params: Any fields of :class:`SyntheticShapesParams`; those not
            given take its defaults.

    Returns:
        dict: All the parameters, with tuples as lists (as in the manifest).

    Raises:
        TypeError, ValueError: Naming the argument at fault.
    """
    return SyntheticShapesParams().replace(**params).to_dict()


def default_data_root(params: Optional[dict] = None) -> str:
    """The cache folder of the dataset generated with ``params``.

    Args:
        params (dict, optional): Canonical parameters (see
            :func:`check_params`); None means the defaults. Defaults to None.

    Returns:
        str: ``<cache>/synthetic_shapes_v<version>`` for the default
        parameters, with a short hash of the parameters appended otherwise,
        where ``<cache>`` is ``$FOCAL_PLUGIN_DATA_CACHE`` or
        ``~/.cache/focal_plugin/datasets``.
    """
    return cache_folder(SYNTHETIC_NAME, SYNTHETIC_VERSION, params,
                        SyntheticShapesParams().to_dict())


def _manifest(params: dict, stats: Optional[dict] = None) -> dict:
    manifest = dict(
        name=SYNTHETIC_NAME,
        version=SYNTHETIC_VERSION,
        params=params,
        classes=list(SYNTHETIC_CLASSES))
    if stats is not None:
        manifest['splits'] = stats
    return manifest


def is_ready(data_root: str, params: Optional[dict] = None) -> bool:
    """Whether ``data_root`` holds a finished synthetic dataset.

    Args:
        data_root (str): Dataset folder.
        params (dict, optional): If given, the dataset must also have been
            generated with these canonical parameters. Defaults to None.

    Returns:
        bool: True if its manifest names this dataset and generator version
        (and ``params``).
    """
    return holds_dataset(data_root, SYNTHETIC_NAME, SYNTHETIC_VERSION, params)


def prepare_synthetic_dataset(data_root: Optional[str] = None, **params) -> str:
    """Generates the synthetic shapes dataset, or reuses it when present.

    Safe to call from several processes at once: one generates while the
    others wait on a lock beside the folder, then all return the same folder.

    Args:
        data_root (str, optional): Folder for the dataset; None means the
            cache folder of :func:`default_data_root`. Defaults to None.
        **params: Generation parameters, fields of
            :class:`SyntheticShapesParams`; those not given take its defaults.

    Returns:
        str: The absolute path of the finished dataset folder.

    Raises:
        TypeError, ValueError: If a parameter is unknown or invalid (before
            anything is written).
        FileExistsError: If ``data_root`` exists and holds anything other than
            this dataset generated with ``params`` (it is never overwritten).
    """
    checked = SyntheticShapesParams().replace(**params)
    manifest_params = checked.to_dict()
    return prepare_dataset(
        data_root, SYNTHETIC_NAME, SYNTHETIC_VERSION, manifest_params,
        SyntheticShapesParams().to_dict(),
        lambda out_dir: _manifest(manifest_params, write_dataset(out_dir, checked)))


@DATASETS.register_module()
class SyntheticShapesDataset(CocoDataset):
    """The generated shapes dataset (see :func:`prepare_synthetic_dataset`).

    The dataset is generated on construction unless ``data_root`` already
    holds it, so configs train with mmdet's own tools and no preparation step.
    Construction from several processes at once (distributed ranks) is safe.

    Args:
        split (str): 'train' or 'val'; picks ``ann_file`` and the image
            folder when those are not given. Defaults to 'train'.
        generator_cfg (dict, optional): Generation parameters, fields of
            :class:`SyntheticShapesParams` (those not given take its
            defaults); None means the defaults, or, when
            ``data_root`` already holds a synthetic dataset, whatever it was
            generated with. Defaults to None.
        data_root (str, optional): Dataset folder; None means the cache folder
            (``$FOCAL_PLUGIN_DATA_CACHE`` or ``~/.cache/focal_plugin/datasets``).
            Defaults to None.
        ann_file (str): Annotation file relative to ``data_root``; '' means
            ``annotations/instances_<split>.json``. Defaults to ''.
        data_prefix (dict, optional): ``dict(img=...)``; None means
            ``dict(img='<split>/')``. Defaults to None.
        **kwargs: Passed to :class:`mmdet.datasets.CocoDataset`.
    """

    METAINFO = {
        'classes': SYNTHETIC_CLASSES,
        'palette': [(220, 20, 60), (0, 82, 255), (0, 170, 60)],
    }

    def __init__(self,
                 split: str = 'train',
                 generator_cfg: Optional[dict] = None,
                 data_root: Optional[str] = None,
                 ann_file: str = '',
                 data_prefix: Optional[dict] = None,
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        data_root = generated_data_root(data_root, generator_cfg, SYNTHETIC_NAME,
                                        SYNTHETIC_VERSION, prepare_synthetic_dataset)
        self.split = split
        super().__init__(
            data_root=data_root,
            ann_file=ann_file or f'annotations/instances_{split}.json',
            data_prefix=data_prefix if data_prefix is not None else dict(img=f'{split}/'),
            **kwargs)
