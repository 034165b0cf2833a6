"""Losses, registered in mmengine's root ``MODELS`` (needs only torch and mmengine)."""
from .fused_focal_loss import FusedFocalLoss

__all__ = ['FusedFocalLoss']
