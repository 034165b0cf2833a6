"""Loads the compiled libraries and tells which devices they serve.

``focal_plugin._C`` declares the ops (and holds the CUDA kernels when built
with them). The CPU kernels are compiled once per instruction set, each into
``focal_plugin._C_cpu_<isa>``; the one loaded is the best that the CPU
capability ATen picked (``torch.backends.cpu.get_cpu_capability()``, which
honours ``ATEN_CPU_CAPABILITY``) allows, so the kernels use the same vector
width as libtorch's and never an instruction the CPU lacks.
"""
import importlib
import warnings
from typing import Optional

import torch

from . import registration
from .cpu_libraries import CPU_LIBRARIES

_load_error: Optional[BaseException] = None
try:
    from focal_plugin import _C  # noqa: F401  (registers torch.ops.focal_plugin.*)
except ImportError as err:  # not built: the pure-PyTorch reference takes over
    _load_error = err


def _usable_cpu_libraries() -> tuple:
    """The CPU libraries this CPU can run, best first."""
    capability = torch.backends.cpu.get_cpu_capability().lower()
    for i, isa in enumerate(CPU_LIBRARIES):
        if capability.startswith(isa):
            return CPU_LIBRARIES[i:]
    return ('default', )


def _load_cpu_library() -> tuple:
    """Imports the best CPU kernel library built: (its isa or None, the last error)."""
    error: Optional[BaseException] = None
    if _load_error is not None:
        return None, _load_error
    for isa in _usable_cpu_libraries():
        try:
            importlib.import_module(f'focal_plugin._C_cpu_{isa}')
            return isa, None
        except ImportError as err:  # not built for this isa: try the next one
            error = err
    return None, error


_cpu_isa, _cpu_load_error = _load_cpu_library()


def is_loaded() -> bool:
    """Whether the compiled extension (the ops' declarations) was imported."""
    return _load_error is None


def cpu_isa() -> Optional[str]:
    """The instruction set of the loaded CPU kernels: 'avx512', 'avx2', 'default', or None."""
    return _cpu_isa


_OPS = registration.op_names()
_warned_devices: set = set()


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
    if not is_loaded():
        reason = f'the compiled extension failed to load ({_load_error})'
    elif device.type == 'cpu' and _cpu_load_error is not None:
        reason = f'no CPU kernel library could be loaded ({_cpu_load_error})'
    else:
        reason = f'it has no {device.type} kernel'
    warnings.warn(
        f'focal_plugin: using the pure-PyTorch focal loss on {device.type} because '
        f'{reason}. It is correct but slower and uses more memory; rebuild with '
        '`pip install --no-build-isolation -e .` to get the fused kernel.',
        RuntimeWarning, stacklevel=3)
