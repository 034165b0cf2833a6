"""mmengine's Runner with two fixes that training with focal_plugin relies on."""
import datetime
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.distributed as torch_dist
from mmengine.device import get_device
from mmengine.dist import is_distributed
from mmengine.registry import MODEL_WRAPPERS, RUNNERS
from mmengine.runner import Runner

from .checkpoint import trusted_checkpoint


@RUNNERS.register_module()
class FocalRunner(Runner):
    """mmengine's Runner, able to resume under torch >= 2.6 and to train
    distributed on CPU.

    - Checkpoints: ``resume``, ``load_from`` and testing from a checkpoint go
      through :meth:`load_checkpoint`; the file named there is loaded in full,
      as mmengine did before torch 2.6 made ``weights_only=True`` the
      default. Every other ``torch.load`` keeps torch's default.
    - Distributed without CUDA (e.g. ``tools/dist_train.sh`` on CPU, or CI):
      mmengine 0.10 calls ``torch.cuda.set_device`` before creating the
      process group and wraps the model in DDP with ``device_ids``, both of
      which fail on CPU. Here the process group is created with the gloo
      backend and the model wrapped without device ids.

    Select it in a config with ``runner_type = 'FocalRunner'`` (mmdet's
    ``tools/train.py`` and ``tools/test.py`` honour it; ours default to it).
    """

    def setup_env(self, env_cfg: dict) -> None:
        if self._distributed and not torch.cuda.is_available() and not is_distributed():
            dist_cfg = dict(env_cfg.get('dist_cfg', {}))
            timeout = dist_cfg.get('timeout', 1800)
            # mmengine would call torch.cuda.set_device first; the process
            # group is all it needs, and gloo is the CPU backend.
            torch_dist.init_process_group(backend='gloo',
                                          timeout=datetime.timedelta(seconds=timeout))
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg: Optional[dict], model: torch.nn.Module):
        if not (self.distributed and get_device() == 'cpu'):
            return super().wrap_model(model_wrapper_cfg, model)
        wrapper_cfg = dict(model_wrapper_cfg or {})
        wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
        wrapper_cfg.setdefault('broadcast_buffers', False)
        wrapper_cfg.setdefault('find_unused_parameters',
                               self.cfg.get('find_unused_parameters', False))
        # CPU modules take no device_ids (torch's DDP raises if given any).
        return MODEL_WRAPPERS.build(wrapper_cfg, default_args=dict(module=model,
                                                                   device_ids=None))

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: List[Tuple[str, str]] = [(r'^module.', '')]):
        with trusted_checkpoint(filename):
            return super().load_checkpoint(filename, map_location=map_location,
                                           strict=strict, revise_keys=revise_keys)
