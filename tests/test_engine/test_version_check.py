import pytest

from focal_plugin.utils import version_check


def test_installed_stack_is_supported():
    found = version_check.check_versions()
    assert found['mmengine'] == '0.10.7'
    assert found['mmdet'] == '3.3.0' and found['mmcv'] == '2.1.0'


@pytest.mark.parametrize('package,version,message', [
    ('mmcv', '2.2.0', r'focal_plugin supports mmcv>=2.0.0,<2.2.0, but mmcv==2.2.0'),
    ('mmdet', '2.28.2', r'mmdet>=3.0.0,<3.4.0, but mmdet==2.28.2'),
    ('mmengine', '0.9.1', r'mmengine>=0.10.0,<1.0.0, but mmengine==0.9.1'),
    ('torch', None, r'needs torch>=2.4.0,<3.0.0, but torch is not installed'),
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
                        lambda name: None if name in ('mmengine', 'mmcv', 'mmdet') else real(name))
    found = version_check.check_versions()
    assert found['mmengine'] is None and found['mmcv'] is None and found['mmdet'] is None
    assert found['torch'] is not None
