"""The wheel: built from a clean copy of the sources with
``pip wheel --no-build-isolation --no-deps .``, it holds the compiled extension,
its metadata requires only what the package needs at runtime, and its loss
runs from the unpacked wheel with torch and mmengine alone.

One module-scoped build (about 30 s on 2 cores: the C++ extension compiles).
"""
import email
import os
import os.path as osp
import platform
import shutil
import subprocess
import sys
import textwrap
import zipfile

import pytest

from focal_plugin.ops import extension

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _requirement_lines(name):
    with open(osp.join(ROOT, 'requirements', name)) as f:
        return [line.split('#')[0].strip() for line in f if line.split('#')[0].strip()]


def _source_files():
    """The files of a clean clone: tracked and new files, not what git ignores (builds)."""
    try:
        out = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('the sources are not a git checkout')
    return [p for p in out.splitlines() if osp.isfile(osp.join(ROOT, p))]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp('clean_clone')
    for rel in _source_files():
        os.makedirs(osp.dirname(osp.join(src, rel)), exist_ok=True)
        shutil.copy2(osp.join(ROOT, rel), osp.join(src, rel))
    out = tmp_path_factory.mktemp('wheelhouse')
    env = dict(os.environ, MAX_JOBS=os.environ.get('MAX_JOBS', str(os.cpu_count() or 1)))
    done = subprocess.run([
        sys.executable, '-m', 'pip', 'wheel', '--no-build-isolation', '--no-deps', '-w',
        str(out), '.'
    ], cwd=src, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path, ) = [osp.join(out, name) for name in os.listdir(out) if name.endswith('.whl')]
    return path


def _metadata(wheel):
    with zipfile.ZipFile(wheel) as zf:
        (name, ) = [n for n in zf.namelist() if n.endswith('.dist-info/METADATA')]
        return email.message_from_bytes(zf.read(name))


def test_wheel_holds_the_compiled_extension_and_the_package(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    libraries = {n.split('/')[1].split('.')[0] for n in names
                 if n.startswith('focal_plugin/_C') and n.endswith('.so')}
    expected = {'_C'} | {f'_C_cpu_{isa}' for isa in extension.CPU_LIBRARIES}
    if platform.machine().lower() not in ('x86_64', 'amd64'):
        expected = {'_C', '_C_cpu_default'}
    assert libraries == expected, names
    for module in ('__init__.py', 'ops/focal_loss.py', 'models/losses/fused_focal_loss.py',
                   'datasets/synthetic_seg.py', 'utils/version_check.py'):
        assert f'focal_plugin/{module}' in names
    assert not any(n.startswith(('tests/', 'configs/', 'tools/')) for n in names)


def test_wheel_requires_torch_and_mmengine_only_with_ranges_not_pins(wheel):
    meta = _metadata(wheel)
    requires = meta.get_all('Requires-Dist')
    runtime = sorted(r for r in requires if 'extra ==' not in r)
    assert [r.split('<')[0].split('>')[0] for r in runtime] == ['mmengine', 'torch']
    assert runtime == sorted(
        _canonical(line) for line in _requirement_lines('runtime.txt')), runtime
    for requirement in requires:
        assert '==' not in requirement.split(';')[0], requirement
        assert not requirement.startswith(('opencv', 'yapf', 'numpy')), requirement
    assert sorted(meta.get_all('Provides-Extra')) == ['mmdet', 'mmseg', 'tests']
    extras = {r.split(';')[0].strip() for r in requires if 'extra == "mmseg"' in r}
    assert {r.split('<')[0].split('>')[0] for r in extras} == {'mmcv', 'mmsegmentation'}
    extras = {r.split(';')[0].strip() for r in requires if 'extra == "mmdet"' in r}
    assert {r.split('<')[0].split('>')[0] for r in extras} == {'mmcv', 'mmdet'}


def _canonical(line):
    """'torch>=2.4.0,<3.0.0' as the metadata writes it: 'torch<3.0.0,>=2.4.0'."""
    name_end = min(i for i, ch in enumerate(line) if ch in '<>=!~')
    name, specs = line[:name_end], line[name_end:].split(',')
    return name + ','.join(sorted(specs))


def test_unpacked_wheel_loss_runs_without_the_sources_mmdet_mmcv_and_mmseg(wheel, tmp_path):
    site = tmp_path / 'site'
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    script = textwrap.dedent("""
        import sys

        class BlockOpenMMLabExtras:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('mmdet', 'mmcv', 'mmseg'):
                    raise ImportError(f'{name} is blocked')

        sys.meta_path.insert(0, BlockOpenMMLabExtras())
        import torch
        import focal_plugin
        from focal_plugin.ops import is_loaded, reference
        from mmengine.registry import MODELS
        assert focal_plugin.__file__.startswith(sys.argv[1]), focal_plugin.__file__
        assert is_loaded() and not focal_plugin.HAS_MMDET
        loss = MODELS.build(dict(type='FusedFocalLoss', alpha=0.5))
        pred, label = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8))
        ours = loss(pred, label, ignore_index=255)
        rows = pred.permute(0, 2, 3, 1).reshape(-1, 4)
        expected = reference.sigmoid_focal_loss(rows, label.reshape(-1), alpha=0.5)
        torch.testing.assert_close(ours, expected)
        print('ok')
    """)
    # -I would drop the venv's site-packages too; PYTHONPATH holds only the wheel.
    env = dict(os.environ, PYTHONPATH=str(site))
    done = subprocess.run([sys.executable, '-c', script, str(site)], cwd=str(tmp_path),
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == 'ok', done.stdout + done.stderr
