"""Checks made before any pruning work: argument types, budget values, and that the model runs on the inputs.

Every failure is a `SlimkitError` naming the argument and the fix, raised before the graph is traced, so a typo
never costs a trace, never surfaces as a TypeError from deep inside torch, and never yields a silently wrong model
(a NaN budget once pruned 67x; an infinite one returned the model unpruned).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError, ModelError
from slimkit.inputs import as_tensor_tuple, size_hint

__all__ = ["as_example_inputs", "check_budget", "check_model", "reference_outputs", "output_shapes"]

_BUDGET_HELP = {
    "ratio": "the share of channels to remove, in [0, 1), e.g. ratio=0.3",
    "macs_target": "the MACs to keep: a fraction of the original in (0, 1] (0.5 = half), or an absolute count "
                   "such as 2.5e8",
    "params_target": "the parameters to keep: a fraction of the original in (0, 1], or an absolute count such as "
                     "1e6",
    "latency_target": "the onnxruntime batch-1 latency to reach, in milliseconds, e.g. latency_target=2.0",
}
# an absolute MAC / parameter count below this is no count of a real network: the value was meant as a fraction
MIN_ABSOLUTE = 1000


def check_budget(name: str, value: Any) -> float | None:
    """The budget as a float; ConfigError for a non-number, NaN, infinity or a value outside its range."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad(name, f"must be a number ({_BUDGET_HELP[name]}); got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise _bad(name, f"of {value!r} is not a finite number; give {_BUDGET_HELP[name]}")
    if name == "ratio":
        if not 0.0 <= v < 1.0:
            raise _bad(name, f"is the share of channels to remove, in [0, 1); got {value}")
    elif v <= 0:
        raise _bad(name, f"must be > 0; give {_BUDGET_HELP[name]} (got {value})")
    elif name in ("macs_target", "params_target") and 1.0 < v < MIN_ABSOLUTE:
        raise _bad(name, f"of {value} is neither a fraction of the original (0 < {name} <= 1) nor a plausible "
                   f"absolute count (values above 1 are read as counts): for a fraction give e.g. 0.5, for a count "
                   f"the number itself (e.g. 2.5e8)")
    return v


def _bad(name: str, detail: str) -> ConfigError:
    """A budget's error, naming the option (`option`) so a front end can name its own flag."""
    return ConfigError.for_option(name, detail)


def as_example_inputs(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    """A tensor or a non-empty tuple/list of tensors, as a tuple; ConfigError for anything else."""
    return as_tensor_tuple(example_inputs, ConfigError)


def _first_conv(model: nn.Module) -> nn.Conv2d | None:
    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)


def _hint(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> str:
    conv, x = _first_conv(model), inputs[0]
    if conv is None:
        return ""
    if x.dim() != 4:
        return f"; it looks like an image model: give a 4-d batch (N, {conv.in_channels}, H, W), not shape " \
               f"{tuple(x.shape)}"
    if x.shape[1] != conv.in_channels:
        s = "" if conv.in_channels == 1 else "s"
        return (f"; expected {conv.in_channels} channel{s}, got {x.shape[1]}: give a batch shaped (N, "
                f"{conv.in_channels}, H, W) or build the model with in_chans={x.shape[1]}")
    return ""


def check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"prune() needs a torch.nn.Module as its first argument; got {type(model).__name__}")
    if not any(True for _ in model.parameters()):
        raise ModelError(f"{type(model).__name__} has no parameters: there is nothing to prune")
    return model


def reference_outputs(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> Any:
    """Run `model` once in eval mode (restored after) on the inputs; ModelError naming the mismatch if it fails."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return model(*inputs)
    except Exception as e:  # noqa: BLE001 - whatever the model raises, the inputs do not fit it
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        shapes = [tuple(t.shape) for t in inputs]
        raise ModelError(f"{type(model).__name__} does not run on example inputs of shape {shapes}"
                         f"{_hint(model, inputs)} ({type(e).__name__}: {first}){size_hint(model, inputs)}") from None
    finally:
        for m, training in modes:
            m.training = training


def output_shapes(out: Any) -> Any:
    """The nested structure of an output with every tensor replaced by its shape (what pruning must keep)."""
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (list, tuple)):
        return type(out)(output_shapes(o) for o in out) if not hasattr(out, "_fields") else tuple(
            output_shapes(o) for o in out)
    if isinstance(out, dict):
        return {k: output_shapes(v) for k, v in out.items()}
    return None
