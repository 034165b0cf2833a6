import pytest
from mmengine.registry import DefaultScope


@pytest.fixture(autouse=True)
def mmdet_default_scope():
    """Builds through mmdet's registries resolve in mmdet's scope, whatever
    scope an earlier test's Runner left as the default (e.g. 'mmengine')."""
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield
