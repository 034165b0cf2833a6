"""Config loading and runner building shared by tools/train.py and tools/test.py."""
import os
import os.path as osp
from typing import Optional

from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import focal_plugin  # noqa: F401  (registers FocalRunner, the loss and the heads)
from .focalize import resolve_config_path


def load_config(path: str, cfg_options: Optional[dict], launcher: str,
                work_dir: Optional[str]) -> Config:
    """Loads ``path`` the way mmdet's tools do, with the same overrides.

    Args:
        path (str): Config file, or ``mmdet::<path>`` in the installed mmdet's
            configs.
        cfg_options (dict, optional): ``--cfg-options`` key/values.
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'.
        work_dir (str, optional): ``--work-dir``; else the config's, else
            ``./work_dirs/<config name>``.

    Returns:
        Config: The loaded config.
    """
    if path.startswith('mmdet::'):
        path = resolve_config_path(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'config file {path!r} does not exist')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def build_runner(cfg: Config) -> Runner:
    """Builds the config's runner; ``FocalRunner`` unless it names another.

    FocalRunner is mmengine's Runner plus loading of the checkpoints the user
    names under torch >= 2.6 (see :mod:`focal_plugin.engine.checkpoint`).
    """
    cfg.setdefault('runner_type', 'FocalRunner')
    return RUNNERS.build(cfg)


def set_local_rank(local_rank: int) -> None:
    """torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK."""
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


def strip_pretrained(node) -> None:
    """Drops ``init_cfg=dict(type='Pretrained', ...)`` entries in place, for
    building a config's model where no weights can be downloaded."""
    if isinstance(node, dict):
        if isinstance(node.get('init_cfg'), dict) and node['init_cfg'].get('type') == 'Pretrained':
            node['init_cfg'] = None
        for value in node.values():
            strip_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            strip_pretrained(value)
