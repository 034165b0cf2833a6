"""Focal-loss ops: fused CPU/CUDA kernels behind torch.library custom ops."""
from . import reference
from .extension import has_kernel, is_loaded
from .focal_loss import sigmoid_focal_loss, softmax_focal_loss
from .memory import cpu_cache_bytes, empty_cpu_cache

__all__ = [
    'sigmoid_focal_loss', 'softmax_focal_loss', 'reference', 'has_kernel', 'is_loaded',
    'empty_cpu_cache', 'cpu_cache_bytes'
]
