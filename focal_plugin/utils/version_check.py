"""Checks that the installed OpenMMLab packages are versions focal_plugin supports."""
import importlib.metadata
import importlib.util
from typing import Callable, Dict, Optional, Tuple

# package: (minimum inclusive, maximum exclusive, required). The required ones
# are requirements/runtime.txt (install_requires); the optional ones are the
# extras of requirements/mmdet.txt and requirements/mmseg.txt.
SUPPORTED_VERSIONS: Dict[str, Tuple[str, str, bool]] = {
    'torch': ('2.4.0', '3.0.0', True),  # torch.library.register_fake / register_autograd
    # A dependency of the package (requirements/runtime.txt), but not of
    # focal_plugin.ops, which runs with torch alone: a missing mmengine is not
    # an import error here; the loss module, the runner and the heads need it.
    'mmengine': ('0.10.0', '1.0.0', False),
    'mmcv': ('2.0.0', '2.2.0', False),  # mmdet 3.x and mmseg 1.x assert mmcv < 2.2.0
    'mmdet': ('3.0.0', '3.4.0', False),
    # decode heads call loss(seg_logits, seg_label, weight=..., ignore_index=...) in 1.x
    'mmsegmentation': ('1.0.0', '1.3.0', False),
}


def module_found(name: str) -> bool:
    """Whether module ``name`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # blocked (sys.modules[name] is None, an import hook)
        return False


def installed_version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _digit_version() -> Optional[Callable[[str], tuple]]:
    """mmengine's ``digit_version`` (pre-releases sort before releases), or None.

    Imported here, not at module level: ``focal_plugin.ops`` works with torch
    alone, and without mmengine the check must still name what is missing.
    """
    try:
        from mmengine.utils import digit_version
    except ImportError:
        return None
    return digit_version


def check_versions() -> Dict[str, Optional[str]]:
    """Raises ImportError naming the supported range of any misfit package.

    torch is required; mmengine, mmcv, mmdet and mmsegmentation are optional
    here (the op needs only torch, the loss only mmengine) but must be in
    range when installed.

    Returns:
        dict: The installed version of each package (None if absent).
    """
    digit_version = None
    found = {}
    for package, (low, high, required) in SUPPORTED_VERSIONS.items():
        version = installed_version(package)
        found[package] = version
        wanted = f'{package}>={low},<{high}'
        if version is None:
            if required:
                raise ImportError(f'focal_plugin needs {wanted}, but {package} is not installed')
            continue
        digit_version = digit_version or _digit_version()
        if digit_version is None:
            # focal_plugin.ops on torch alone: no comparison without mmengine's
            # parser (the ops' own needs, torch.library's APIs, fail at import).
            continue
        # torch's local version label (2.13.0+cpu) is not part of the comparison.
        release = version.split('+')[0]
        if not digit_version(low) <= digit_version(release) < digit_version(high):
            raise ImportError(f'focal_plugin supports {wanted}, but {package}=={version} is '
                              'installed. Install a supported version, e.g. with '
                              '`bash tools/setup_env.sh`.')
    return found
