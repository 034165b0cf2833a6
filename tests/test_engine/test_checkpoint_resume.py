"""Save, resume and test mmengine runs under torch >= 2.6 (weights_only=True default)."""
import copy
import pickle

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from mmengine.runner import Runner

import focal_plugin  # noqa: F401
from focal_plugin.engine import FocalRunner, is_trusted, trusted_checkpoint


@MODELS.register_module(force=True)
class _ToyFocalModel(BaseModel):
    """A linear classifier trained with the fused focal loss."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, inputs, labels, mode='tensor'):
        logits = self.linear(torch.stack(inputs))
        if mode == 'loss':
            loss = focal_plugin.ops.sigmoid_focal_loss(logits, torch.stack(labels))
            return dict(loss=loss)
        return logits


class _ToyDataset(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=g)
        self.y = torch.randint(0, 4, (32, ), generator=g)

    def __len__(self):
        return 32

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


def _cfg(work_dir, max_iters, **kwargs):
    return dict(
        model=dict(type='_ToyFocalModel'),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=_ToyDataset(), sampler=dict(type='DefaultSampler',
                                                                  shuffle=True),
                              batch_size=4, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=3, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=7),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        experiment_name=kwargs.pop('experiment_name', 'toy'),
        **kwargs)


def test_plain_mmengine_cannot_load_its_checkpoint_under_this_torch(tmp_path):
    Runner(**_cfg(tmp_path, 3, experiment_name='plain')).train()
    ckpt = tmp_path / 'iter_3.pth'
    with pytest.raises(pickle.UnpicklingError, match='Weights only load failed'):
        torch.load(ckpt)  # what mmengine 0.10.7 does: this is the problem being fixed


def test_resume_matches_uninterrupted_run(tmp_path):
    full = FocalRunner(**_cfg(tmp_path / 'full', 6, experiment_name='full'))
    full.train()
    FocalRunner(**_cfg(tmp_path / 'part', 3, experiment_name='part1')).train()
    resumed = FocalRunner(**_cfg(tmp_path / 'part', 6, experiment_name='part2', resume=True))
    resumed.train()
    assert resumed.iter == full.iter == 6
    for (name, a), (_, b) in zip(full.model.state_dict().items(),
                                 resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=f'{name} differs after resume')


def test_load_from_for_testing_and_nothing_else_is_trusted(tmp_path):
    runner = FocalRunner(**_cfg(tmp_path, 3))
    runner.train()
    ckpt = str(tmp_path / 'iter_3.pth')
    other = FocalRunner(**_cfg(tmp_path / 'other', 3, experiment_name='other'))
    checkpoint = other.load_checkpoint(ckpt)
    assert checkpoint['meta']['iter'] == 3
    assert not is_trusted(ckpt)  # trust ends with the load
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt)  # every other torch.load keeps weights_only=True
    with trusted_checkpoint(ckpt):
        from mmengine.runner.checkpoint import _load_checkpoint
        assert _load_checkpoint(ckpt)['meta']['iter'] == 3
    state = copy.deepcopy(runner.model.state_dict())
    for key, value in other.model.state_dict().items():
        torch.testing.assert_close(value, state[key])
