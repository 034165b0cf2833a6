from .version_check import SUPPORTED_VERSIONS, check_versions, module_found

__all__ = ['SUPPORTED_VERSIONS', 'check_versions', 'module_found']
