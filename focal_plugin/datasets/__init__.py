"""Datasets: the generated synthetic shapes and the real BCCD blood cells.

With mmdet installed, ``import focal_plugin`` imports this package, which
registers ``SyntheticShapesDataset`` and ``BCCDDataset`` in mmdet's
``DATASETS``. Without mmdet the package still imports, so that the shapes
generator and the mmseg dataset (``focal_plugin.datasets.synthetic_seg``,
which an mmsegmentation config imports by name) work in an mmseg-only
environment.
"""
from ..utils.version_check import module_found
from .synthetic_shapes import SyntheticShapesParams

__all__ = ['SyntheticShapesParams']

if module_found('mmdet'):
    from .bccd import BCCD_CLASSES, BCCDDataset, default_bccd_root
    from .synthetic import (DEFAULT_PARAMS, SYNTHETIC_CLASSES, SyntheticShapesDataset,
                            default_data_root, prepare_synthetic_dataset)

    __all__ += [
        'BCCDDataset', 'BCCD_CLASSES', 'default_bccd_root', 'SyntheticShapesDataset',
        'SYNTHETIC_CLASSES', 'DEFAULT_PARAMS', 'default_data_root', 'prepare_synthetic_dataset'
    ]
