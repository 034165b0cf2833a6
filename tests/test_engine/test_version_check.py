import pytest

from focal_plugin.utils import version_check


def test_installed_stack_is_supported():
    found = version_check.check_versions()
    assert found['mmengine'] == '0.10.7'
    assert found['mmdet'] == '3.3.0' and found['mmcv'] == '2.1.0'
    assert found['mmsegmentation'] == '1.2.2'


@pytest.mark.parametrize('package,version,message', [
    ('mmcv', '2.2.0', r'focal_plugin supports mmcv>=2.0.0,<2.2.0, but mmcv==2.2.0'),
    ('mmdet', '2.28.2', r'mmdet>=3.0.0,<3.4.0, but mmdet==2.28.2'),
    ('mmengine', '0.9.1', r'mmengine>=0.10.0,<1.0.0, but mmengine==0.9.1'),
    ('torch', None, r'needs torch>=2.4.0,<3.0.0, but torch is not installed'),
    ('mmsegmentation', '0.30.0', r'mmsegmentation>=1.0.0,<1.3.0, but mmsegmentation==0.30.0'),
    # mmengine's digit_version: a pre-release sorts before its release
    ('mmcv', '2.0.0rc4', r'mmcv>=2.0.0,<2.2.0, but mmcv==2.0.0rc4'),
    ('torch', '2.3.1+cu121', r'torch>=2.4.0,<3.0.0, but torch==2.3.1\+cu121'),
])
def test_out_of_range_versions_name_the_supported_range(monkeypatch, package, version, message):
    real = version_check.installed_version
    monkeypatch.setattr(version_check, 'installed_version',
                        lambda name: version if name == package else real(name))
    with pytest.raises(ImportError, match=message):
        version_check.check_versions()


def test_optional_packages_may_be_absent(monkeypatch):
    # focal_plugin.ops needs only torch: a CUDA machine that runs the op tests has
    # no OpenMMLab package at all.
    real = version_check.installed_version
    monkeypatch.setattr(version_check, 'installed_version',
                        lambda name: None if name in ('mmengine', 'mmcv', 'mmdet', 'mmsegmentation')
                        else real(name))
    found = version_check.check_versions()
    assert all(found[name] is None for name in ('mmengine', 'mmcv', 'mmdet', 'mmsegmentation'))
    assert found['torch'] is not None


def test_in_range_versions_pass_including_local_labels(monkeypatch):
    versions = {'torch': '2.13.0+cu128', 'mmcv': '2.1.0', 'mmsegmentation': '1.2.2'}
    real = version_check.installed_version
    monkeypatch.setattr(version_check, 'installed_version',
                        lambda name: versions.get(name, real(name)))
    assert version_check.check_versions()['torch'] == '2.13.0+cu128'


def test_without_mmengine_the_check_still_runs(monkeypatch):
    # focal_plugin.ops works with torch alone: without mmengine (and its
    # digit_version) the check neither fails nor imports it.
    monkeypatch.setattr(version_check, '_digit_version', lambda: None)
    real = version_check.installed_version
    monkeypatch.setattr(version_check, 'installed_version',
                        lambda name: None if name == 'mmengine' else real(name))
    assert version_check.check_versions()['mmengine'] is None


def test_runtime_requirements_match_the_supported_versions():
    # requirements/runtime.txt (install_requires) and SUPPORTED_VERSIONS tell one
    # story: torch, required everywhere, and mmengine, which the package needs
    # but focal_plugin.ops alone does not (so the check lets it be absent).
    import os.path as osp
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    with open(osp.join(root, 'requirements', 'runtime.txt')) as f:
        lines = [line.split('#')[0].strip() for line in f]
    required = [f'{package}>={low},<{high}'
                for package, (low, high, req) in version_check.SUPPORTED_VERSIONS.items()
                if req or package == 'mmengine']
    assert sorted(line for line in lines if line) == sorted(required)
