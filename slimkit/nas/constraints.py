"""Cost constraints such as `params_M <= 1.0` or `latency_ms["pixel3"] < 10`.

A constraint names a cost the problem reports (`problem.costs(arch)`), a comparison and a number (`50M` style
suffixes K/M/G allowed). `name[key]` looks up `name[key]`, then `key`, then `name_key`, so `latency_ms[pixel3]`
finds the `pixel3` column of a latency table.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from slimkit.errors import ConfigError

__all__ = ["Constraint", "parse_constraint", "parse_constraints", "satisfies"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
_SUFFIX = {"k": 1e3, "m": 1e6, "g": 1e9}
_PATTERN = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(?:\[\s*['\"]?([\w.\-]+)['\"]?\s*\])?\s*(<=|>=|==|<|>)\s*"
                      r"([-+]?[0-9.]+(?:e[-+]?\d+)?)\s*([kKmMgG]?)\s*$")


@dataclass(frozen=True)
class Constraint:
    name: str
    op: str
    value: float
    key: str | None = None

    def lookup(self, costs: Mapping[str, float]) -> float:
        names = [self.name] if self.key is None else [f"{self.name}[{self.key}]", self.key, f"{self.name}_{self.key}"]
        for n in names:
            if n in costs:
                return float(costs[n])
        raise ConfigError(f"constraint {self} needs cost {names[0]!r}, but the problem reports only "
                          f"{sorted(costs)}; constrain one of those")

    def __call__(self, costs: Mapping[str, float]) -> bool:
        return _OPS[self.op](self.lookup(costs), self.value)

    def __str__(self) -> str:
        name = self.name if self.key is None else f"{self.name}[{self.key}]"
        return f"{name} {self.op} {self.value:g}"


def parse_constraint(text: str | Constraint) -> Constraint:
    if isinstance(text, Constraint):
        return text
    m = _PATTERN.match(text)
    if not m:
        raise ConfigError(f"cannot parse constraint {text!r}; write e.g. 'params_M <= 1.0' or "
                          "'latency_ms[pixel3] < 10' (comparisons: <=, <, >=, >, ==)")
    name, key, op, num, suffix = m.groups()
    return Constraint(name, op, float(num) * _SUFFIX.get(suffix.lower(), 1.0), key)


def parse_constraints(items: Iterable[str | Constraint] | str | None) -> tuple[Constraint, ...]:
    if items is None:
        return ()
    if isinstance(items, str):
        items = [s for s in re.split(r"[;,]\s*(?![^\[]*\])", items) if s.strip()]
    return tuple(parse_constraint(c) for c in items)


def satisfies(costs: Mapping[str, float], constraints: Iterable[Constraint]) -> bool:
    return all(c(costs) for c in constraints)
