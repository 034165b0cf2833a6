"""Datasets: the generated synthetic shapes and the real BCCD blood cells.

Imported by ``import focal_plugin`` when mmdet is installed; registers
``SyntheticShapesDataset`` and ``BCCDDataset`` in mmdet's ``DATASETS``.
"""
from .bccd import BCCD_CLASSES, BCCDDataset, default_bccd_root
from .synthetic import (DEFAULT_PARAMS, SYNTHETIC_CLASSES, SyntheticShapesDataset,
                        default_data_root, prepare_synthetic_dataset)
from .synthetic_shapes import SyntheticShapesParams

__all__ = [
    'BCCDDataset', 'BCCD_CLASSES', 'default_bccd_root', 'SyntheticShapesDataset',
    'SYNTHETIC_CLASSES', 'DEFAULT_PARAMS', 'SyntheticShapesParams', 'default_data_root',
    'prepare_synthetic_dataset'
]
