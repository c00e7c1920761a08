"""One generic registry, used for every kind of pluggable thing (models, importances, pruners, strategies, ...).

Registries hold classes or factories, never built instances. Names are lowercase (`family_variant`). Lookups of an
unknown name raise `UnknownNameError` listing close matches. A registry exists only where something reads it (CLI
help, dispatch, contract tests): distillation losses are pure functions reached through their method in `DISTILLERS`,
so there is no loss registry.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from slimkit.errors import ConfigError, UnknownNameError

__all__ = [
    "Registry",
    "MODELS",
    "DATASETS",
    "IMPORTANCES",
    "PRUNERS",
    "STRATEGIES",
    "PREDICTORS",
    "SPACES",
    "DISTILLERS",
    "PROXIES",
    "CHANNEL_RULES",
]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> factory table with optional per-entry metadata.

    >>> R = Registry("widget")
    >>> @R.register("tiny", input_size=(3, 32, 32))
    ... def tiny(**kw): ...
    >>> R.list("ti*")
    ['tiny']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator: register `obj` under `name` (default: its lowercase `__name__`) with metadata `meta`."""

        def deco(obj: T) -> T:
            key = (name or getattr(obj, "__name__", "")).lower()
            if not key:
                raise ConfigError(f"cannot register an unnamed {self.kind}: pass register(name=...)")
            if key in self._entries and self._entries[key] is not obj:
                raise ConfigError(f"{self.kind} {key!r} is already registered; pick another name")
            self._entries[key] = obj
            self._meta[key] = dict(meta)
            return obj

        return deco

    def get(self, name: str) -> T:
        key = name.lower()
        if key not in self._entries:
            close = difflib.get_close_matches(key, self._entries, n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint} Known: {known}")
        return self._entries[key]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return dict(self._meta[name.lower()])

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Look `name` up and call its factory."""
        return self.get(name)(*args, **kwargs)  # type: ignore[operator]

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style pattern (`resnet*`)."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern.lower()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


MODELS: Registry[Callable[..., Any]] = Registry("model")
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")
IMPORTANCES: Registry[Callable[..., Any]] = Registry("importance")
PRUNERS: Registry[Callable[..., Any]] = Registry("pruner")
STRATEGIES: Registry[Callable[..., Any]] = Registry("strategy")
PREDICTORS: Registry[Callable[..., Any]] = Registry("predictor")
SPACES: Registry[Callable[..., Any]] = Registry("search space")
DISTILLERS: Registry[Callable[..., Any]] = Registry("distillation method")
PROXIES: Registry[Callable[..., Any]] = Registry("training-free proxy")
# Module classes with their own channel rule, read by the graph analysis (slimkit.graph.rules): a layer registers
# itself (`@CHANNEL_RULES.register("dynamic_conv2d", rule="conv", pooled_input="fc1")`), so the analysis never names
# it and a user's own layer can do the same. rule="pass": traced as one node whose output carries its input's
# channels (no parameter along them); rule="conv": sliced like nn.Conv2d (weight out x in/groups x ..., attributes
# in_channels / out_channels / groups), `pooled_input` naming a Linear submodule that reads every input channel.
CHANNEL_RULES: Registry[type] = Registry("channel rule")
