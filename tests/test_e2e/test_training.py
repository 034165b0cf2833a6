"""End-to-end training on the generated data: learning, resume, distributed.

Each test trains the ready-made synthetic RetinaNet config for a few
iterations through tools/train.py (and torchrun), in subprocesses.
"""
import glob
import json
import math
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'retinanet', 'retinanet_r18-tiny_fpn_2k_synthetic.py')
TRAIN = osp.join(ROOT, 'tools', 'train.py')


def _env() -> dict:
    env = dict(os.environ)
    # the recorder hook module (custom_imports) lives beside this file
    env['PYTHONPATH'] = os.pathsep.join([osp.dirname(__file__), env.get('PYTHONPATH', '')])
    env.setdefault('OMP_NUM_THREADS', '1' if env.get('_FOCAL_DIST') else env.get(
        'OMP_NUM_THREADS', str(torch.get_num_threads())))
    return env


def _schedule(max_iters: int, schedule_iters: int, interval: int, validate: bool = True) -> list:
    """--cfg-options for a short, deterministic run (no worker processes)."""
    val_interval = schedule_iters if validate else 10 * schedule_iters
    return [
        f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={val_interval}',
        'param_scheduler.0.end=5', 'param_scheduler.1.begin=5',
        f'param_scheduler.1.end={schedule_iters}',
        f'default_hooks.checkpoint.interval={interval}',
        'default_hooks.checkpoint.max_keep_ckpts=3', f'default_hooks.logger.interval={interval}',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
        'randomness.seed=0', 'randomness.deterministic=True'
    ]


def _train(work_dir, options, extra=(), timeout=600):
    cmd = [sys.executable, TRAIN, CONFIG, '--work-dir', str(work_dir), *extra,
           '--cfg-options', *options]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _scalars(work_dir) -> list:
    files = sorted(glob.glob(osp.join(str(work_dir), '*', 'vis_data', 'scalars.json')))
    assert files, f'no scalars.json under {work_dir}'
    with open(files[-1]) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_short_training_learns_and_evaluates(tmp_path):
    iters = 120
    _train(tmp_path, _schedule(iters, iters, 20))
    rows = _scalars(tmp_path)
    losses = [r['loss_cls'] for r in rows if 'loss_cls' in r]
    assert len(losses) >= 5
    assert losses[-1] < 0.6 * losses[0], losses
    metrics = [r for r in rows if 'coco/bbox_mAP' in r]
    assert metrics and metrics[-1]['coco/bbox_mAP'] > 0.0, rows[-1]


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    schedule = 24
    _train(tmp_path / 'full', _schedule(schedule, schedule, 12, validate=False))
    # "interrupted" after 12 iterations, then resumed from the work dir's latest checkpoint
    _train(tmp_path / 'part', _schedule(12, schedule, 12, validate=False))
    _train(tmp_path / 'part', _schedule(schedule, schedule, 12, validate=False),
           extra=['--resume'])
    full = torch.load(tmp_path / 'full' / f'iter_{schedule}.pth', weights_only=False)
    resumed = torch.load(tmp_path / 'part' / f'iter_{schedule}.pth', weights_only=False)
    assert full['meta']['iter'] == resumed['meta']['iter'] == schedule
    for key, value in full['state_dict'].items():
        torch.testing.assert_close(resumed['state_dict'][key], value, rtol=1e-4, atol=1e-5,
                                   msg=f'{key} differs after resume')


def test_distributed_first_iteration_matches_single_process(tmp_path):
    # BN in eval mode (running statistics) so that a batch of 4 on one process
    # and 2 + 2 on two processes compute the same per-image features; what
    # remains is the loss normaliser, all-reduced by the focal heads.
    config = tmp_path / 'recorded.py'
    config.write_text(
        f"_base_ = {CONFIG!r}\n"
        "custom_imports = dict(imports=['focal_plugin', 'first_loss_recorder'], "
        "allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='RecordFirstLossHook')]\n"
        "model = dict(backbone=dict(norm_eval=True))\n")
    options = _schedule(1, 100, 1, validate=False) + ['optim_wrapper.optimizer.lr=0.0']
    single = tmp_path / 'single'
    cmd = [sys.executable, TRAIN, str(config), '--work-dir', str(single), '--cfg-options',
           *options, 'train_dataloader.batch_size=4']
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    dist = tmp_path / 'dist'
    env = _env()
    env['OMP_NUM_THREADS'] = '1'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
           '--master_port=29517', TRAIN, str(config), '--launcher', 'pytorch', '--work-dir',
           str(dist), '--cfg-options', *options, 'train_dataloader.batch_size=2']
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0 and 'terminate called without an active exception' in done.stderr:
        # A worker sometimes aborts in C++ teardown after training has finished
        # (seen in about one full-suite run in three, never alone; FocalRunner
        # already closes its gloo group behind a barrier at exit). One retry
        # keeps the suite usable; a second abort, or any other failure, fails.
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with open(single / 'first_losses_rank0.json') as f:
        one = json.load(f)
    ranks = []
    for r in range(2):
        with open(dist / f'first_losses_rank{r}.json') as f:
            ranks.append(json.load(f))
    assert ranks[0]['loss_cls'] != ranks[1]['loss_cls']  # different images per rank
    mean_cls = (ranks[0]['loss_cls'] + ranks[1]['loss_cls']) / 2
    assert mean_cls == pytest.approx(one['loss_cls'], rel=1e-5)
    mean_box = (ranks[0]['loss_bbox'] + ranks[1]['loss_bbox']) / 2
    assert mean_box == pytest.approx(one['loss_bbox'], rel=1e-5)


def test_mmdet_own_train_script_runs_the_config(tmp_path):
    # mmdet's tools/train.py knows nothing of focal_plugin: the config's
    # custom_imports and runner_type are all it needs.
    import mmdet
    mmdet_train = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
    cmd = [sys.executable, mmdet_train, CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
           *_schedule(3, 10, 3, validate=False)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    checkpoint = torch.load(tmp_path / 'iter_3.pth', weights_only=False)
    assert checkpoint['meta']['iter'] == 3
    assert any(k.startswith('bbox_head.retina_cls') for k in checkpoint['state_dict'])


def test_compile_true_trains_and_matches_eager_on_the_first_iteration(tmp_path):
    # mmengine's compile=True with the package's config: FocalRunner compiles
    # the model's forward. The second iteration's images differ in size, so
    # dynamo recompiles with symbolic shapes (where FusedFocalLoss once failed).
    config = tmp_path / 'recorded.py'
    config.write_text(
        f"_base_ = {CONFIG!r}\n"
        "custom_imports = dict(imports=['focal_plugin', 'first_loss_recorder'], "
        "allow_failed_imports=False)\n"
        "custom_hooks = [dict(type='RecordFirstLossHook')]\n")
    options = _schedule(2, 100, 1, validate=False) + ['train_cfg.val_begin=1000']

    def train(work_dir, *extra):
        cmd = [sys.executable, TRAIN, str(config), '--work-dir', str(work_dir),
               '--cfg-options', *options, *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        with open(work_dir / 'first_losses_rank0.json') as f:
            return json.load(f), done.stdout + done.stderr

    eager, _ = train(tmp_path / 'eager', 'train_cfg.max_iters=1')
    compiled, log = train(tmp_path / 'compiled', 'compile=True')
    assert "model's forward (losses included) has been compiled" in log
    for key in ('loss_cls', 'loss_bbox'):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-4), (key, compiled, eager)
    second = [r for r in _scalars(tmp_path / 'compiled') if r.get('iter') == 2]
    assert second and all(math.isfinite(second[0][k]) for k in ('loss_cls', 'loss_bbox'))
