"""The CPU output cache of the fused ops (the CPU analogue of ``torch.cuda.empty_cache``).

The CPU kernels take their large outputs (at least 1 MiB: the N x C gradient
of a training step, or the per-element loss) from a small cache that reuses
the memory of earlier outputs once no tensor refers to them, instead of a
fresh mapping whose pages fault in on every step. At most four freed blocks
are kept; these functions report and release them.
"""
import torch

from . import extension

__all__ = ['empty_cpu_cache', 'cpu_cache_bytes']


def empty_cpu_cache() -> int:
    """Frees the cached CPU output blocks that no tensor uses.

    Returns:
        int: The number of bytes released (0 when the CPU kernels are not built).
    """
    if extension.cpu_isa() is None:
        return 0
    return torch.ops.focal_plugin.empty_cpu_cache()


def cpu_cache_bytes() -> int:
    """Bytes held by cached CPU output blocks that no tensor uses.

    Returns:
        int: Cached bytes (0 when the CPU kernels are not built).
    """
    if extension.cpu_isa() is None:
        return 0
    return torch.ops.focal_plugin.cpu_cache_bytes()
