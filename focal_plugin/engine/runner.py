"""mmengine's Runner with the fixes that training with focal_plugin relies on."""
import atexit
import datetime
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.distributed as torch_dist
from mmengine.device import get_device
from mmengine.dist import is_distributed
from mmengine.model import is_model_wrapper
from mmengine.registry import MODEL_WRAPPERS, RUNNERS
from mmengine.runner import Runner

from .checkpoint import trusted_checkpoint


@RUNNERS.register_module()
class FocalRunner(Runner):
    """mmengine's Runner, able to resume under torch >= 2.6, to train
    distributed on CPU and to train with ``compile=True``.

    - Checkpoints: ``resume``, ``load_from`` and testing from a checkpoint go
      through :meth:`load_checkpoint`; the file named there is loaded in full,
      as mmengine did before torch 2.6 made ``weights_only=True`` the
      default. Every other ``torch.load`` keeps torch's default.
    - Distributed without CUDA (e.g. ``tools/dist_train.sh`` on CPU, or CI):
      mmengine 0.10 calls ``torch.cuda.set_device`` before creating the
      process group and wraps the model in DDP with ``device_ids``, both of
      which fail on CPU. Here the process group is created with the gloo
      backend and the model wrapped without device ids.
    - ``compile=True`` (or a dict of ``torch.compile`` arguments): mmengine
      compiles the whole ``train_step``, and dynamo fails inside
      ``OptimWrapper.step`` (torch 2.13). Here the model's forward, which
      computes the losses, is compiled; the data preprocessor, the backward
      and the optimizer step run eagerly.

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
            # A rank that exits while its peer still holds the connection
            # makes gloo's background thread throw in the peer, which aborts
            # it ("terminate called without an active exception"): at exit,
            # every rank waits for the others, then closes the group.
            atexit.register(_close_process_group)
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

    def _maybe_compile(self, target: str) -> None:
        if target != 'train_step':
            return super()._maybe_compile(target)
        compile_cfg = self.cfg.get('compile', None)
        if compile_cfg is None or compile_cfg is False:
            return
        if compile_cfg is True:
            compile_cfg = dict()
        if not isinstance(compile_cfg, dict):
            raise TypeError('compile must be a bool or a dict of torch.compile arguments, got '
                            f'{compile_cfg!r}')
        model = self.model.module if is_model_wrapper(self.model) else self.model
        # nn.Module.compile: every call of the model (train_step's forward in
        # 'loss' mode, and val/test) runs compiled; the module and its state
        # dict keys stay as they are, so checkpoints do not change.
        model.compile(**compile_cfg)
        self.logger.info('The model\'s forward (losses included) has been compiled; '
                         'the optimizer step runs eagerly. The first iterations are slow.')

    def load_checkpoint(self,
                        filename: str,
                        map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: List[Tuple[str, str]] = [(r'^module.', '')]):
        with trusted_checkpoint(filename):
            return super().load_checkpoint(filename, map_location=map_location,
                                           strict=strict, revise_keys=revise_keys)


def _close_process_group() -> None:
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    try:
        # Bounded: a rank that died does not hang the others' exit.
        torch_dist.monitored_barrier(timeout=datetime.timedelta(seconds=60))
    except RuntimeError:
        pass
    torch_dist.destroy_process_group()
