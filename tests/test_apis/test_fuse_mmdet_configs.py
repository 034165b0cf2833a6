"""``--fuse`` on every mmdet 3.3.0 config whose resolved model uses a focal-family
loss: it succeeds, the written child changes nothing but the loss types, and the
fused model builds.

The configs are found by resolving each one (inherited losses count). A few of
mmdet's configs do not load in any environment without extra packages or do
not load at all; those are skipped, and the skip test pins why.
"""
import functools
import glob
import os.path as osp
import warnings
from typing import Dict, List, Tuple

import pytest
from mmengine.config import Config

from focal_plugin.apis.fuse import FUSED_TWINS, find_focal_losses, fuse, fuse_config
from .helpers import only_loss_types_differ, resolved_child_model

# Why a config may fail to load, unrelated to focal_plugin: optional packages
# that this environment lacks, and mmdet 3.3.0 configs whose _base_ names a
# file that mmdet does not ship (bytetrack, sort).
UNRELATED_LOAD_FAILURES = ('mmpretrain', 'No such file or directory', 'file "')
UNRELATED_BUILD_FAILURES = ('is not installed', 'install fairscale', 'URLError',
                            "No such file or directory: 'configs/")
# Losses that mmdet builds in code rather than from the config, which a config
# change cannot reach: DDQDETRHead's dense auxiliary loss (DDQAuxLoss's
# default QualityFocalLoss).
BUILT_IN_CODE = {'ddq': {'QualityFocalLoss'}}


def _configs_root() -> str:
    import mmdet
    return osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs')


@functools.lru_cache(maxsize=None)
def mmdet_focal_configs() -> Tuple[List[str], Dict[str, str]]:
    """mmdet's configs (relative names) that use a focal-family loss, and the
    ones that failed to load with the reason."""
    root = _configs_root()
    focal, skipped = [], {}
    for path in sorted(glob.glob(osp.join(root, '**', '*.py'), recursive=True)):
        name = osp.relpath(path, root)
        if name.split(osp.sep)[0] == '_base_' or '__pycache__' in name:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                cfg = Config.fromfile(path)
        except Exception as err:  # noqa: BLE001  (the skip test checks every reason)
            skipped[name] = f'{type(err).__name__}: {err}'
            continue
        if cfg.get('model') is not None and find_focal_losses(cfg.model):
            focal.append(name)
    return focal, skipped


def test_mmdet_configs_found_and_skips_are_unrelated():
    focal, skipped = mmdet_focal_configs()
    # mmdet 3.3.0: 300 configs, from 54 families (RetinaNet to the DETR family)
    assert len(focal) >= 250, len(focal)
    families = {name.split(osp.sep)[0] for name in focal}
    for family in ('retinanet', 'fcos', 'atss', 'gfl', 'tood', 'vfnet', 'rtmdet', 'centernet',
                   'yolof', 'dino', 'deformable_detr', 'sparse_rcnn', 'solov2', 'paa', 'fsaf'):
        assert family in families, family
    unexplained = {n: why for n, why in skipped.items()
                   if not any(reason in why for reason in UNRELATED_LOAD_FAILURES)}
    assert not unexplained, unexplained
    assert len(skipped) <= 20, sorted(skipped)


def test_every_mmdet_focal_config_fuses_changing_only_loss_types(tmp_path):
    focal, _ = mmdet_focal_configs()
    root = _configs_root()
    problems = {}
    for index, name in enumerate(focal):
        stock = Config.fromfile(osp.join(root, name))
        out = tmp_path / f'fused_{index}.py'
        out.write_text(fuse(f'mmdet::{name}', str(out)))
        child = resolved_child_model(str(out))
        wrong = only_loss_types_differ(stock.model.to_dict(), child)
        if child != fuse_config(stock).model.to_dict():
            wrong.append('the written config resolves to another model than fuse_config')
        if wrong:
            problems[name] = wrong
    assert not problems, problems


def test_every_fused_model_builds():
    # About 70 s for the 300 models on two CPU cores.
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules()
    root = _configs_root()
    failed, skipped = {}, {}
    for name in mmdet_focal_configs()[0]:
        stock = Config.fromfile(osp.join(root, name))
        fused = fuse_config(stock)
        try:
            model = MODELS.build(fused.model)
        except Exception as err:  # noqa: BLE001
            try:  # a model that does not build stock either (a download, a missing package)
                MODELS.build(stock.model)
            except Exception as stock_err:  # noqa: BLE001
                skipped[name] = f'stock fails too: {type(stock_err).__name__}: {stock_err}'
            else:
                failed[name] = f'{type(err).__name__}: {err}'
            continue
        built = {type(m).__name__ for m in model.modules()}
        expected = {FUSED_TWINS[loss] for _, loss in find_focal_losses(stock.model)}
        stock_left = built & set(FUSED_TWINS)
        if name.startswith('ddq' + osp.sep):
            stock_left -= BUILT_IN_CODE['ddq']
        if expected - built or stock_left:
            failed[name] = f'built {sorted(built & (expected | set(FUSED_TWINS)))}, ' \
                f'expected {sorted(expected)} and no mmdet focal-family loss'
        del model
    assert not failed, failed
    # Stock fails to build too: optional packages (scikit-image for BoxInst,
    # transformers and fairscale for the grounding models), a teacher
    # checkpoint downloaded at build time (LAD), a teacher config named
    # relative to mmdet's source tree (LD).
    unexplained = {n: why for n, why in skipped.items()
                   if not any(reason in why for reason in UNRELATED_BUILD_FAILURES)}
    assert not unexplained, unexplained
    # mmdet 3.3.0 here: 65 of 300 (57 grounding, 2 BoxInst, 2 LAD, 4 LD)
    assert len(skipped) <= 70, sorted(skipped)
