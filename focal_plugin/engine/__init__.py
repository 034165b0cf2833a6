from .checkpoint import is_trusted, trusted_checkpoint
from .runner import FocalRunner

__all__ = ['FocalRunner', 'trusted_checkpoint', 'is_trusted']
