"""Losses, registered in mmengine's root ``MODELS`` (needs only torch and mmengine)."""
from ...ops.arguments import InvalidReductionError
from .fused_focal_loss import FusedFocalLoss
from .fused_gaussian_focal_loss import FusedGaussianFocalLoss
from .fused_quality_focal_loss import FusedQualityFocalLoss
from .fused_varifocal_loss import FusedVarifocalLoss

__all__ = [
    'FusedFocalLoss', 'FusedQualityFocalLoss', 'FusedVarifocalLoss', 'FusedGaussianFocalLoss',
    'InvalidReductionError'
]
