"""Loads the compiled ``focal_plugin._C`` library and tells which devices it serves."""
import warnings
from typing import Optional

import torch

from . import registration

_load_error: Optional[BaseException] = None
try:
    from focal_plugin import _C  # noqa: F401  (registers torch.ops.focal_plugin.*)
except ImportError as err:  # not built: the pure-PyTorch reference takes over
    _load_error = err

_OPS = registration.op_names()
_warned_devices: set = set()


def is_loaded() -> bool:
    """Whether the compiled extension was imported."""
    return _load_error is None


def _devices_with_kernels() -> frozenset:
    if not is_loaded():
        return frozenset()
    return frozenset(
        device for device, key in (('cpu', 'CPU'), ('cuda', 'CUDA'))
        if all(torch._C._dispatch_has_kernel_for_dispatch_key(f'focal_plugin::{op}', key)
               for op in _OPS))


# Computed once: a plain set lookup is what torch.compile traces through.
_KERNEL_DEVICES = _devices_with_kernels()


def has_kernel(device: torch.device) -> bool:
    """Whether every focal_plugin op has a compiled kernel for ``device``'s type."""
    return device.type in _KERNEL_DEVICES


def warn_fallback(device: torch.device) -> None:
    """Warns once per device type that the pure-PyTorch reference is used."""
    if device.type in _warned_devices:
        return
    _warned_devices.add(device.type)
    reason = (f'the compiled extension failed to load ({_load_error})'
              if not is_loaded() else f'it has no {device.type} kernel')
    warnings.warn(
        f'focal_plugin: using the pure-PyTorch focal loss on {device.type} because '
        f'{reason}. It is correct but slower and uses more memory; rebuild with '
        '`pip install --no-build-isolation -e .` to get the fused kernel.',
        RuntimeWarning, stacklevel=3)
