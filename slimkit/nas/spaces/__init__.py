"""Search spaces (registry SPACES): each owns sample / mutate / neighbours / encode / build."""

from slimkit.nas.spaces.base import SearchSpace
from slimkit.nas.spaces.nb201 import NB201Space

__all__ = ["NB201Space", "SearchSpace"]
