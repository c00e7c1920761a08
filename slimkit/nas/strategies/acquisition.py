"""Acquisition functions (pure): how a model-based strategy scores candidates from a predicted mean and spread."""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from slimkit.errors import ConfigError

__all__ = ["acquire", "expected_improvement", "upper_confidence_bound"]


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.0) -> np.ndarray:
    """E[max(f - best - xi, 0)] for f ~ N(mean, std^2); equals max(mean - best - xi, 0) where std == 0."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    gain = mean - best - xi
    safe = np.where(std > 0, std, 1.0)
    z = gain / safe
    ei = gain * norm.cdf(z) + safe * norm.pdf(z)
    return np.where(std > 0, ei, np.maximum(gain, 0.0))


def upper_confidence_bound(mean: np.ndarray, std: np.ndarray, beta: float = 1.0) -> np.ndarray:
    return np.asarray(mean) + beta * np.asarray(std)


def acquire(kind: str, mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    if kind == "mean":
        return np.asarray(mean, np.float64)
    if kind == "ei":
        return expected_improvement(mean, std, best)
    if kind == "ucb":
        return upper_confidence_bound(mean, std)
    raise ConfigError(f"unknown acquisition {kind!r}; choose mean, ei or ucb")
