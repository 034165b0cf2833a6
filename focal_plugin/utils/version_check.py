"""Checks that the installed OpenMMLab packages are versions focal_plugin supports."""
import importlib.metadata
from typing import Dict, Optional, Tuple

# package: (minimum inclusive, maximum exclusive, required)
SUPPORTED_VERSIONS: Dict[str, Tuple[str, str, bool]] = {
    'torch': ('2.4.0', '3.0.0', True),  # torch.library.register_fake / register_autograd
    # Optional: focal_plugin.ops needs only torch; the loss module, the runner
    # and the heads need mmengine.
    'mmengine': ('0.10.0', '1.0.0', False),
    'mmcv': ('2.0.0', '2.2.0', False),  # mmdet 3.x asserts mmcv < 2.2.0
    'mmdet': ('3.0.0', '3.4.0', False),
}


def _parse(version: str) -> Tuple[int, ...]:
    parts = []
    for piece in version.split('+')[0].split('.')[:3]:
        digits = ''
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))


def installed_version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_versions() -> Dict[str, Optional[str]]:
    """Raises ImportError naming the supported range of any misfit package.

    torch is required; mmengine, mmcv and mmdet are optional (the op needs
    only torch, the loss only mmengine) but must be in range when installed.
    Nothing is imported: the versions come from the installed metadata.

    Returns:
        dict: The installed version of each package (None if absent).
    """
    found = {}
    for package, (low, high, required) in SUPPORTED_VERSIONS.items():
        version = installed_version(package)
        found[package] = version
        wanted = f'{package}>={low},<{high}'
        if version is None:
            if required:
                raise ImportError(f'focal_plugin needs {wanted}, but {package} is not installed')
            continue
        if not _parse(low) <= _parse(version) < _parse(high):
            raise ImportError(f'focal_plugin supports {wanted}, but {package}=={version} is '
                              'installed. Install a supported version, e.g. with '
                              '`bash tools/setup_env.sh`.')
    return found
