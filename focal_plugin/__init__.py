"""focal_plugin: the focal loss of Lin et al. for MMDetection 3.x, as a plugin.

Importing the package (e.g. through an mmdet config's
``custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)``)
checks the installed OpenMMLab versions and registers everything it provides:

- ``FusedFocalLoss`` in mmengine's root ``MODELS`` registry, so every
  OpenMMLab project finds it (needs only torch and mmengine);
- with mmdet installed: the RetinaNet-style heads and the datasets in mmdet's
  registries;
- ``FocalRunner`` in mmengine's ``RUNNERS`` (resume/test under torch >= 2.6).
"""
from .utils.version_check import check_versions
from .version import __version__, version_info

check_versions()

from . import ops  # noqa: E402
from .engine import FocalRunner  # noqa: E402
from .models import losses  # noqa: E402,F401

try:
    import mmdet  # noqa: F401
except ImportError:  # the loss alone is usable without mmdet
    HAS_MMDET = False
else:
    HAS_MMDET = True
    from . import datasets  # noqa: F401
    from .models import dense_heads  # noqa: F401

__all__ = ['__version__', 'version_info', 'ops', 'FocalRunner', 'HAS_MMDET']
