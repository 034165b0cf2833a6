"""focal_plugin: the focal loss of Lin et al. for MMDetection 3.x, as a plugin.

Importing the package (e.g. through an mmdet config's
``custom_imports = dict(imports=['focal_plugin'], allow_failed_imports=False)``)
checks the installed versions and registers what the installed stack supports:

- :mod:`focal_plugin.ops`, the fused op, needs only torch;
- with mmengine installed: ``FusedFocalLoss`` in mmengine's root ``MODELS``
  registry, so every OpenMMLab project finds it, and ``FocalRunner`` in
  mmengine's ``RUNNERS`` (resume/test under torch >= 2.6);
- with mmdet installed as well: the RetinaNet-style heads and the datasets in
  mmdet's registries.

Without mmengine (e.g. a CUDA machine that only runs the op's tests), the
package imports with the op alone; naming ``focal_plugin.FocalRunner`` then
raises an ImportError that says what to install.
"""
from .utils.version_check import SUPPORTED_VERSIONS, check_versions, module_found
from .version import __version__, version_info

check_versions()

from . import ops  # noqa: E402


# An installed mmengine is imported for real: if it is broken, the error shows
# here rather than as an unknown type name when a config is built.
HAS_MMENGINE = module_found('mmengine')
HAS_MMDET = False
if HAS_MMENGINE:
    from .engine import FocalRunner  # noqa: E402  (registers it in RUNNERS)
    from .models import losses  # noqa: E402,F401  (registers FusedFocalLoss)

    try:
        import mmdet  # noqa: F401
    except ImportError:  # the loss alone is usable without mmdet (and mmcv)
        pass
    else:
        HAS_MMDET = True
        from . import datasets  # noqa: F401
        from .models import dense_heads  # noqa: F401


def __getattr__(name: str):
    # Reached only for names the imports above did not bind.
    if name == 'FocalRunner':
        low, high, _ = SUPPORTED_VERSIONS['mmengine']
        raise ImportError(f'focal_plugin.FocalRunner needs mmengine>={low},<{high}, which is '
                          'not installed; install it (e.g. `bash tools/setup_env.sh`) or use '
                          'focal_plugin.ops, which needs only torch')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['__version__', 'version_info', 'ops', 'FocalRunner', 'HAS_MMENGINE', 'HAS_MMDET']
