"""Blocks any model may use. Never imports slimkit.models."""

from slimkit.layers.activations import HardSwish, SoftRootSign
from slimkit.layers.attention import CoordinateAttention

__all__ = ["CoordinateAttention", "HardSwish", "SoftRootSign"]
