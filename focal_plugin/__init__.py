from .version import __version__
from . import ops
