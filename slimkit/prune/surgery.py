"""The only code in slimkit that mutates a model for pruning: slice parameters, update module attributes.

A *plan* maps (module name, role) to the indices to keep along that role's dimension:
"out" (Conv2d/Linear rows), "in" (Conv2d/Linear columns), "dw" (depthwise Conv2d channels: in = out = groups),
"norm" (per-channel parameters and statistics of BatchNorm / LayerNorm / GroupNorm / PReLU).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from slimkit.errors import UnsupportedOpError

__all__ = ["apply_plan", "SURGERY"]

Plan = Mapping[tuple[str, str], Sequence[int]]


def _slice(p: nn.Parameter | torch.Tensor | None, keep: torch.Tensor, dim: int) -> None:
    if p is None:
        return
    new = torch.index_select(p.data, dim, keep).clone()
    if isinstance(p, nn.Parameter):
        p.data = new
        if p.grad is not None:
            p.grad = None
    else:
        p.set_(new)


def _conv(m: nn.Conv2d, role: str, keep: torch.Tensor) -> None:
    if role == "out":
        _slice(m.weight, keep, 0)
        _slice(m.bias, keep, 0)
        m.out_channels = len(keep)
    elif role == "in":
        if m.groups != 1:
            raise UnsupportedOpError(f"cannot prune input channels of grouped conv {m}")
        _slice(m.weight, keep, 1)
        m.in_channels = len(keep)
    elif role == "dw":
        _slice(m.weight, keep, 0)
        _slice(m.bias, keep, 0)
        m.in_channels = m.out_channels = m.groups = len(keep)


def _linear(m: nn.Linear, role: str, keep: torch.Tensor) -> None:
    if role == "out":
        _slice(m.weight, keep, 0)
        _slice(m.bias, keep, 0)
        m.out_features = len(keep)
    else:
        _slice(m.weight, keep, 1)
        m.in_features = len(keep)


def _batchnorm(m: nn.modules.batchnorm._BatchNorm, role: str, keep: torch.Tensor) -> None:
    for t in (m.weight, m.bias, m.running_mean, m.running_var):
        _slice(t, keep, 0)
    m.num_features = len(keep)


def _layernorm(m: nn.LayerNorm, role: str, keep: torch.Tensor) -> None:
    _slice(m.weight, keep, 0)
    _slice(m.bias, keep, 0)
    m.normalized_shape = (len(keep),)


def _groupnorm(m: nn.GroupNorm, role: str, keep: torch.Tensor) -> None:
    if m.num_groups == m.num_channels:
        m.num_groups = len(keep)
    _slice(m.weight, keep, 0)
    _slice(m.bias, keep, 0)
    m.num_channels = len(keep)


def _prelu(m: nn.PReLU, role: str, keep: torch.Tensor) -> None:
    _slice(m.weight, keep, 0)
    m.num_parameters = len(keep)


SURGERY: dict[type, Callable[[nn.Module, str, torch.Tensor], None]] = {
    nn.Conv2d: _conv,
    nn.Linear: _linear,
    nn.BatchNorm1d: _batchnorm,
    nn.BatchNorm2d: _batchnorm,
    nn.LayerNorm: _layernorm,
    nn.GroupNorm: _groupnorm,
    nn.PReLU: _prelu,
}


def apply_plan(model: nn.Module, plan: Plan) -> nn.Module:
    """Slice `model` in place according to `plan` and return it. Says so: this mutates `model`."""
    modules = dict(model.named_modules())
    for (name, role), keep in plan.items():
        if name not in modules:
            raise UnsupportedOpError(f"pruning plan names module {name!r}, which {type(model).__name__} does not have")
        m = modules[name]
        fn = next((SURGERY[t] for t in type(m).__mro__ if t in SURGERY), None)
        if fn is None:
            raise UnsupportedOpError(
                f"no pruning surgery for {type(m).__name__} '{name}'; add it to ignored_layers=['{name}']")
        fn(m, role, torch.as_tensor(sorted(keep), dtype=torch.long))
    return model
