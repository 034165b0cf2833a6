"""Loading of the checkpoints a user names, under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default. mmengine 0.10.7
calls ``torch.load`` without the argument, and its checkpoints hold more than
tensors (the message hub's history buffers, numpy scalars, the config), so
resume, ``load_from`` and testing from a checkpoint fail.

This module replaces mmengine's loader for local files by one that behaves
exactly as before (``weights_only`` left to torch's default) except for the
files registered with :func:`trusted_checkpoint`, which are the checkpoints
the user named in the config or on the command line (``FocalRunner`` does
it). Nothing else that torch.load reads is trusted more than before.
"""
import os.path as osp
import threading
from contextlib import contextmanager
from typing import Iterator

import torch
from mmengine.runner.checkpoint import CheckpointLoader

_local = threading.local()


def _trusted() -> set:
    if not hasattr(_local, 'paths'):
        _local.paths = set()
    return _local.paths


def _key(filename: str) -> str:
    return osp.realpath(osp.expanduser(str(filename)))


def is_trusted(filename: str) -> bool:
    """Whether ``filename`` is being loaded as a user-named checkpoint."""
    return _key(filename) in _trusted()


@contextmanager
def trusted_checkpoint(filename: str) -> Iterator[None]:
    """Within the block, mmengine loads the local file ``filename`` in full
    (``weights_only=False``), as it did before torch 2.6."""
    key = _key(filename)
    already = key in _trusted()
    _trusted().add(key)
    try:
        yield
    finally:
        if not already:
            _trusted().discard(key)


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local(filename: str, map_location=None):
    """mmengine's local loader, plus full loading of trusted checkpoints."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    if is_trusted(filename):
        return torch.load(filename, map_location=map_location, weights_only=False)
    return torch.load(filename, map_location=map_location)


__all__ = ['trusted_checkpoint', 'is_trusted', 'load_from_local']
