"""Search spaces (registry SPACES): each owns sample / mutate / neighbours / encode / build."""

from slimkit.nas.spaces.base import SearchSpace
from slimkit.nas.spaces.mobilenet import MobileNetSpace, MobileNetSpaceConfig
from slimkit.nas.spaces.nb201 import NB201Space

__all__ = ["MobileNetSpace", "MobileNetSpaceConfig", "NB201Space", "SearchSpace"]
