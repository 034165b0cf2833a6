"""Focal-loss ops: fused CPU/CUDA kernels behind torch.library custom ops."""
from . import reference
from .extension import has_kernel, is_loaded
from .focal_loss import sigmoid_focal_loss, softmax_focal_loss
from .memory import cpu_cache_bytes, empty_cpu_cache
# Temporary: the family's pure-PyTorch references stand in for its fused ops.
from .reference import gaussian_focal_loss, quality_focal_loss, varifocal_loss

__all__ = [
    'sigmoid_focal_loss', 'softmax_focal_loss', 'reference', 'has_kernel', 'is_loaded',
    'empty_cpu_cache', 'cpu_cache_bytes', 'quality_focal_loss', 'varifocal_loss',
    'gaussian_focal_loss'
]
