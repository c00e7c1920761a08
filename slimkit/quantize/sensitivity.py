"""Sensitivity-guided mixed precision: rank the weighted layers by what quantizing them costs, then keep the
costliest in float until the INT8 model is within a tolerance of fp32 on held-out images.

Criteria (pure functions of a `quantize(only=..., exclude=...)` callback and an evaluation callback):
- `isolated`: quantize that layer alone, everything else float; cost = the logits' error against fp32
  (mean squared error over the fp32 logits' variance). One quantization + one evaluation per layer.
- `all_but_one`: quantize everything but that layer; cost = how much the error falls against the all-INT8 model.
  Also one quantization + one evaluation per layer; it sees interactions, but its differences are small and noisy.
The greedy step then keeps the top-1, top-2, ... layers in float (one quantization + one evaluation each) and stops
at the first set within the tolerance, or at `max_float`.

"Within the tolerance" is decided with the sampling error of a finite held-out set (`paired_loss`): fp32 and INT8
are scored on the same images, so only the images where they differ in correctness carry information (lost: right
in fp32, wrong in INT8; gained: the reverse). The one-sided upper confidence bound of the accuracy loss
(paired difference of proportions, Agresti-Min interval: half an image added to each of the four cells) must be
within the tolerance. On 400 images where INT8 flips 2% of the answers, a point estimate of 0.5 points is
compatible with a true loss of 1.5; the bound says so instead of passing. `confidence=0.5` is the point estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from slimkit.errors import ConfigError
from slimkit.quantize.graph import Layer

__all__ = ["LayerScore", "PairedLoss", "Step", "logit_error", "paired_loss", "make_step", "rank_layers",
           "choose_float_layers", "within", "CRITERIA"]

CRITERIA = ("isolated", "all_but_one")

# quantize(only, exclude) -> logits of that model on the held-out images
QuantizeEval = Callable[[set[str] | None, set[str]], np.ndarray]


@dataclass(frozen=True)
class LayerScore:
    layer: Layer
    score: float  # higher = quantizing this layer costs more


@dataclass(frozen=True)
class PairedLoss:
    """Accuracy lost against a reference on the same images, with a one-sided upper confidence bound."""
    images: int
    lost: int  # right in the reference, wrong here
    gained: int  # wrong in the reference, right here
    upper: float  # upper confidence bound of the loss (fraction; `confidence` one-sided)
    confidence: float

    @property
    def loss(self) -> float:
        """The point estimate (fraction): (lost - gained) / images."""
        return (self.lost - self.gained) / self.images


def paired_loss(reference_correct: np.ndarray, correct: np.ndarray, confidence: float) -> PairedLoss:
    """How much accuracy `correct` loses against `reference_correct` (boolean per image, the same images), with the
    one-sided `confidence` upper bound of the paired difference (Agresti-Min: Wald on the four cells + 0.5 each, so
    a small set with no discordant image still has a bound of about 1 / n). `confidence=0.5`: the point estimate."""
    ref, new = np.asarray(reference_correct, bool), np.asarray(correct, bool)
    if ref.shape != new.shape or ref.ndim != 1 or not len(ref):
        raise ConfigError(f"paired_loss needs two equal-length, non-empty 1-D correctness vectors (got {ref.shape} "
                          f"and {new.shape})")
    if not 0.5 <= confidence < 1.0:
        raise ConfigError(f"confidence must be in [0.5, 1), got {confidence}")
    lost, gained, n = int((ref & ~new).sum()), int((~ref & new).sum()), len(ref)
    if confidence == 0.5:
        upper = (lost - gained) / n
    else:
        b, c, m = lost + 0.5, gained + 0.5, n + 2.0
        d = (b - c) / m
        se = float(np.sqrt(max((b + c) / m - d * d, 0.0) / m))
        upper = d + float(norm.ppf(confidence)) * se
    return PairedLoss(n, lost, gained, float(upper), confidence)


@dataclass(frozen=True)
class Step:
    float_layers: tuple[str, ...]  # node names kept in float
    acc: float  # held-out accuracy of that mixed model
    error: float  # its logit error against fp32
    lost: int = 0  # held-out images right in fp32 and wrong here
    gained: int = 0  # wrong in fp32 and right here
    loss_upper: float = 0.0  # upper confidence bound of its accuracy loss against fp32 (fraction)


def make_step(float_layers: tuple[str, ...], logits: np.ndarray, reference: np.ndarray, labels: np.ndarray,
              confidence: float) -> Step:
    """A mixed model's held-out record: accuracy, logit error and the paired loss bound against fp32."""
    correct = logits.argmax(1) == labels
    bound = paired_loss(reference.argmax(1) == labels, correct, confidence)
    return Step(float_layers, float(correct.mean()), logit_error(logits, reference), bound.lost, bound.gained,
                bound.upper)


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


def within(step: Step, tolerance: float) -> bool:
    """Whether a step's loss bound is within `tolerance` (fraction)."""
    return step.loss_upper <= tolerance + 1e-9


def choose_float_layers(ranked: Sequence[LayerScore], run: QuantizeEval, reference: np.ndarray, labels: np.ndarray,
                        tolerance: float, max_float: int, start: Step, exclude: set[str] = frozenset(),
                        confidence: float = 0.5) -> tuple[tuple[str, ...], list[Step]]:
    """Keep the costliest 1, 2, ... `max_float` layers in float until the held-out accuracy loss against fp32 is
    within `tolerance` (a fraction) at `confidence` (`paired_loss`). `start` is the model with no layer kept float.
    Returns the chosen float layers and every step tried: the first set within the tolerance; else the set with the
    lowest loss bound (fewer float layers winning ties) if that bound is below the all-INT8 model's measured loss,
    i.e. if keeping it in float measurably helps; else none (float layers that only move held-out noise cost speed
    and buy nothing)."""
    steps: list[Step] = [start]
    if within(start, tolerance):
        return (), steps
    for k in range(1, min(max_float, len(ranked)) + 1):
        keep = tuple(s.layer.node for s in ranked[:k])
        steps.append(make_step(keep, run(None, set(exclude) | set(keep)), reference, labels, confidence))
        if within(steps[-1], tolerance):
            return keep, steps
    best = min(steps, key=lambda s: (s.loss_upper, len(s.float_layers)))
    measured = (start.lost - start.gained) / len(labels)  # the all-INT8 model's measured loss
    return (best.float_layers if best.loss_upper < measured else ()), steps
