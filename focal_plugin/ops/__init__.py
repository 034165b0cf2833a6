"""Focal-loss family ops: fused CPU/CUDA kernels behind torch.library custom ops."""
from . import reference
from .extension import cpu_isa, has_kernel, is_loaded
from .focal_loss import sigmoid_focal_loss, softmax_focal_loss
from .gaussian_focal_loss import gaussian_focal_loss
from .memory import cpu_cache_bytes, empty_cpu_cache
from .quality_focal_loss import quality_focal_loss
from .registration import register_family
from .varifocal_loss import varifocal_loss

if is_loaded():
    register_family()

__all__ = [
    'sigmoid_focal_loss', 'softmax_focal_loss', 'quality_focal_loss', 'varifocal_loss',
    'gaussian_focal_loss', 'reference', 'has_kernel', 'is_loaded', 'cpu_isa', 'empty_cpu_cache',
    'cpu_cache_bytes'
]
