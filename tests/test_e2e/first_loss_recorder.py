"""A hook for the distributed test: writes each rank's first-iteration losses."""
import json
import os.path as osp

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RecordFirstLossHook(Hook):
    """Writes ``first_losses_rank<r>.json`` into the work dir after iteration 0."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter != 0:
            return
        losses = {k: float(v) for k, v in outputs.items() if k.startswith('loss')}
        path = osp.join(runner.work_dir, f'first_losses_rank{get_rank()}.json')
        with open(path, 'w') as f:
            json.dump(losses, f)
