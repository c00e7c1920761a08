"""Latency-aware allocation: what the channels of each group cost in time on this CPU, and how the cut follows it.

MACs are a poor proxy for CPU latency: a depthwise convolution runs at ~0.4x the MAC rate of a dense one, a narrow
layer at high resolution is bound by memory traffic, an unfused activation (SiLU, GELU) costs time and no MACs, and
a vector kernel runs whole blocks of channels. `LatencyModel` estimates the model's time from its layer shapes with
the roofline of `slimkit.profile.cpu_cost` as a function of the channels each group keeps (pure counting, no
measurement: the same model gives the same plan); `latency_weights` turns it into a per-group multiplier of the cut,
so a group that gives back more time per MAC removed is cut more; `latency_weighted_scores` ranks channels across
groups by importance per estimated nanosecond (global allocation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from slimkit.graph import Group
from slimkit.profile.cpu_cost import CpuRates, LayerShape, cpu_rates, elementwise_ns, layer_macs, layer_ns, trace_layers
from slimkit.prune.surgery import role_size

__all__ = ["LatencyModel", "latency_weights", "latency_weighted_scores"]

Dim = tuple[tuple[int, int], ...]  # ((group id, indices per channel), ...) along one dimension of a module


@dataclass(frozen=True)
class _Term:
    kind: str  # conv, linear, norm, or an elementwise kind
    shape: LayerShape | None
    elements: int  # output values per sample (elementwise terms)
    dims: tuple[tuple[Dim, int], ...]  # conv / linear: (input, output) dims with their sizes; else the channels'


def _fraction(dim: Dim, size: int, removed: dict[int, int]) -> float:
    return (size - sum(removed.get(g, 0) * k for g, k in dim)) / size if size else 1.0


class LatencyModel:
    """Estimated time (ns, one core, batch 1) and MACs of a model as functions of the channels each group keeps."""

    def __init__(self, terms: Sequence[_Term], sizes: dict[int, int], rates: CpuRates) -> None:
        self.terms, self.sizes, self.rates = tuple(terms), dict(sizes), rates

    @classmethod
    def build(cls, model: nn.Module, groups: Sequence[Group], inputs: Sequence[torch.Tensor],
              rates: CpuRates | None = None) -> LatencyModel:
        mods = dict(model.named_modules())
        dims: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for g in groups:
            for m in g.members:
                if m.role in ("in", "out", "dw", "norm"):
                    dims.setdefault((m.module, m.role), []).append((g.id, m.tile * m.repeat))

        def dim(name: str, role: str) -> tuple[Dim, int]:
            d = tuple(dims.get((name, role), ()))
            return d, (role_size(mods[name], role) if d else 0)

        terms, outputs = [], {}
        for t in trace_layers(model, inputs):
            if t.shape is not None:
                dw = (t.name, "dw") in dims
                d_in, d_out = (dim(t.name, "dw"),) * 2 if dw else (dim(t.name, "in"), dim(t.name, "out"))
                terms.append(_Term(t.kind, t.shape, t.elements, (d_in, d_out)))
                outputs[t.name] = d_out
            else:
                d = dim(t.name, "norm") if (t.name, "norm") in dims else outputs.get(t.source or "", ((), 0))
                outputs[t.name] = d
                if t.kind != "norm":
                    terms.append(_Term(t.kind, None, t.elements, (d,)))
        return cls(terms, {g.id: g.size for g in groups}, rates or cpu_rates())

    def _removed(self, keep: dict[int, int]) -> dict[int, int]:
        return {g: self.sizes[g] - k for g, k in keep.items() if g in self.sizes}

    def _scaled(self, t: _Term, removed: dict[int, int]) -> LayerShape:
        (d_in, n_in), (d_out, n_out) = t.dims
        s = t.shape
        assert s is not None
        return s.resized(s.c_in * _fraction(d_in, n_in, removed), s.c_out * _fraction(d_out, n_out, removed))

    def time_ns(self, keep: dict[int, int] | None = None) -> float:
        """Estimated ns of one batch-1 forward pass with `keep[g]` channels in group g (missing groups: all)."""
        removed = self._removed(keep or {})
        total = 0.0
        for t in self.terms:
            if t.shape is not None:
                total += layer_ns(self._scaled(t, removed), self.rates)
            else:
                (d, n), = t.dims
                total += elementwise_ns(t.kind, t.elements * _fraction(d, n, removed), self.rates)
        return total

    def macs(self, keep: dict[int, int] | None = None) -> float:
        """MACs of the model's convolutions and linear layers with `keep[g]` channels in group g."""
        removed = self._removed(keep or {})
        return sum(layer_macs(self._scaled(t, removed)) for t in self.terms if t.shape is not None)

    def group_costs(self, blocks: dict[int, int] | None = None) -> dict[int, tuple[float, float]]:
        """Per group, (ns, MACs) saved per channel when it alone loses a quarter of its channels in whole blocks
        (`blocks[g]` channels, 1 if not given; at least one block); a group of at most one block cannot shrink its
        kernels' time: (0, 0)."""
        base_t, base_m = self.time_ns(), self.macs()
        out = {}
        for g, size in self.sizes.items():
            block = (blocks or {}).get(g, 1)
            q = max(block, size // 4 // block * block)
            if size <= block or q >= size:
                out[g] = (0.0, 0.0)
                continue
            keep = {g: size - q}
            out[g] = ((base_t - self.time_ns(keep)) / q, (base_m - self.macs(keep)) / q)
        return out


def latency_weights(costs: dict[int, tuple[float, float]], sizes: dict[int, int], gamma: float = 1.0,
                    bounds: tuple[float, float] = (0.25, 4.0)) -> dict[int, float]:
    """Per group, how much more than average of its channels to cut: (its ns saved per MAC saved over the model's)
    ** gamma, within `bounds`, scaled so the channel-weighted mean is 1. A group that saves time but no MACs gets
    the upper bound, one that saves no time the lower."""
    lo, hi = bounds
    dt = sum(sizes[g] * t for g, (t, _) in costs.items())
    dm = sum(sizes[g] * m for g, (_, m) in costs.items())
    mean = dt / dm if dm > 0 else 0.0
    w = {}
    for g, (t, m) in costs.items():
        if t <= 0 or mean <= 0:
            w[g] = lo
        elif m <= 0:
            w[g] = hi
        else:
            w[g] = min(hi, max(lo, (t / m / mean) ** gamma))
    norm = sum(sizes[g] * w[g] for g in w) / max(1, sum(sizes[g] for g in w))
    return {g: v / norm for g, v in w.items()}


def latency_weighted_scores(scores: dict[int, torch.Tensor], costs: dict[int, float], floor: float = 0.05
                            ) -> dict[int, torch.Tensor]:
    """Scores comparable across groups (each group's mean scaled to 1) divided by the group's relative latency cost
    (its cost over the mean positive cost, floored at `floor` so free-looking groups are not pruned for nothing)."""
    positive = [c for c in costs.values() if c > 0]
    mean_cost = sum(positive) / len(positive) if positive else 1.0
    out = {}
    for gid, s in scores.items():
        rel = max(costs.get(gid, 0.0) / mean_cost, floor)
        out[gid] = s / (s.mean().clamp_min(1e-12)) / rel
    return out
