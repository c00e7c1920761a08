"""Sensitivity-guided mixed precision: rank the weighted layers by what quantizing them costs, then keep the
costliest in float until the INT8 model is within a tolerance of fp32 on held-out images.

Criteria (pure functions of a `quantize(only=..., exclude=...)` callback and an evaluation callback):
- `isolated`: quantize that layer alone, everything else float; cost = the logits' error against fp32
  (mean squared error over the fp32 logits' variance). One quantization + one evaluation per layer.
- `all_but_one`: quantize everything but that layer; cost = how much the error falls against the all-INT8 model.
  Also one quantization + one evaluation per layer; it sees interactions, but its differences are small and noisy.
The greedy step then keeps the top-1, top-2, ... layers in float (one quantization + one evaluation each) and stops
at the first set within the tolerance, or at `max_float`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from slimkit.errors import ConfigError
from slimkit.quantize.graph import Layer

__all__ = ["LayerScore", "Step", "logit_error", "rank_layers", "choose_float_layers", "CRITERIA"]

CRITERIA = ("isolated", "all_but_one")

# quantize(only, exclude) -> logits of that model on the held-out images
QuantizeEval = Callable[[set[str] | None, set[str]], np.ndarray]


@dataclass(frozen=True)
class LayerScore:
    layer: Layer
    score: float  # higher = quantizing this layer costs more


@dataclass(frozen=True)
class Step:
    float_layers: tuple[str, ...]  # node names kept in float
    acc: float  # held-out accuracy of that mixed model
    error: float  # its logit error against fp32


def logit_error(logits: np.ndarray, reference: np.ndarray) -> float:
    """Mean squared difference to the reference logits, relative to the reference's variance (0 = identical)."""
    ref = reference.astype(np.float64)
    var = float(((ref - ref.mean(0)) ** 2).mean()) or 1.0
    return float(((logits.astype(np.float64) - ref) ** 2).mean() / var)


def rank_layers(layers: Sequence[Layer], run: QuantizeEval, reference: np.ndarray, criterion: str,
                exclude: set[str] = frozenset(), full_error: float | None = None) -> list[LayerScore]:
    """Layers sorted by cost, costliest first. `exclude` are nodes kept in float regardless."""
    if criterion not in CRITERIA:
        raise ConfigError(f"unknown sensitivity criterion {criterion!r}: use one of {list(CRITERIA)}")
    scores = []
    for layer in layers:
        if criterion == "isolated":
            err = logit_error(run({layer.node}, set(exclude)), reference)
        else:
            base = full_error if full_error is not None else logit_error(run(None, set(exclude)), reference)
            err = base - logit_error(run(None, set(exclude) | {layer.node}), reference)
        scores.append(LayerScore(layer, err))
    return sorted(scores, key=lambda s: -s.score)


def choose_float_layers(ranked: Sequence[LayerScore], run: QuantizeEval, reference: np.ndarray, labels: np.ndarray,
                        target_acc: float, max_float: int, start: Step, exclude: set[str] = frozenset()
                        ) -> tuple[tuple[str, ...], list[Step]]:
    """Keep the costliest 1, 2, ... `max_float` layers in float until held-out accuracy reaches `target_acc`.
    `start` is the model with no layer kept float. Returns the chosen float layers (the first set that reaches the
    target, else the most accurate model tried, fewer float layers winning ties) and every step tried."""
    steps: list[Step] = [start]
    for k in range(1, min(max_float, len(ranked)) + 1):
        keep = tuple(s.layer.node for s in ranked[:k])
        logits = run(None, set(exclude) | set(keep))
        steps.append(Step(keep, float((logits.argmax(1) == labels).mean()), logit_error(logits, reference)))
        if steps[-1].acc >= target_acc:
            return keep, steps
    best = max(steps, key=lambda s: (s.acc, -len(s.float_layers)))
    return best.float_layers, steps
