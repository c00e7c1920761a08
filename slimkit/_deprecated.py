"""Keyword arguments renamed in the public API keep working for a while, with a DeprecationWarning."""

from __future__ import annotations

import warnings
from typing import Any

from slimkit.errors import ConfigError

__all__ = ["renamed_kwarg"]


def renamed_kwarg(new_name: str, new_value: Any, old_name: str, old_value: Any, default: Any) -> Any:
    """The value to use for `new_name` when the caller may still pass `old_name` (None when not passed): the old
    one with a DeprecationWarning, ConfigError when both are given and differ."""
    if old_value is None:
        return new_value
    warnings.warn(f"{old_name}= is now called {new_name}=", DeprecationWarning, stacklevel=3)
    if new_value != default and new_value != old_value:
        raise ConfigError(f"{old_name}= is the old name of {new_name}=: give one of them (got {new_name}={new_value}, "
                          f"{old_name}={old_value})")
    return old_value
