"""Let a subpackage also be its main function: `slimkit.prune(model, ...)` and `slimkit.prune.save(...)`.

Python binds `slimkit.prune` to the subpackage as soon as anything imports it, so a same-named function exported
from `slimkit/__init__.py` would be shadowed depending on import order. Making the module object callable removes
that ambiguity.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["make_callable"]


def make_callable(module_name: str, fn: Callable[..., Any]) -> None:
    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

    _CallableModule.__call__.__doc__ = fn.__doc__
    sys.modules[module_name].__class__ = _CallableModule
