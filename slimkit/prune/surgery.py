"""The only code in slimkit that mutates a model for pruning: slice parameters, update module attributes.

A *plan* maps (module name, role) to the indices to keep along that role's dimension:
"out" (Conv2d/Linear rows), "in" (Conv2d/Linear columns; for a grouped conv, the weight's columns, i.e. the same
position in every group), "dw" (depthwise Conv2d filters, with a channel multiplier k: k filters per input channel),
"norm" (per-channel parameters and statistics of BatchNorm / LayerNorm / GroupNorm / PReLU), "heads" (the heads an
attention module keeps: its `num_heads` (and timm's `attn_dim`) follow; q, k, v and proj are sliced by their own
"out" / "in" entries; the head width and the softmax `scale` stay what the model was trained with),
"param:<attribute>:<dim>" (a parameter or buffer the forward uses directly along the channels, such as a layer
scale or a position embedding: that dimension of the module's attribute), "attr:<name>" (an int attribute the
forward reads as a channel count, such as `attn_dim` or `num_heads`: set to the number of kept indices),
"sizes:<name>" (a list of split sizes along the channels: each becomes the number of channels its part keeps).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from slimkit.errors import UnsupportedOpError
from slimkit.graph.params import parse_param_role
from slimkit.graph.rules import declared_rule
from slimkit.graph.sizes import head_count_attr, parse_attr_role, parse_sizes_role

__all__ = ["apply_plan", "role_size", "SURGERY"]

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
        if m.out_channels % m.groups:
            raise UnsupportedOpError(f"pruning plan leaves {m} with output groups of unequal size")
    elif role == "in":
        _slice(m.weight, keep, 1)
        m.in_channels = len(keep) * m.groups
    elif role == "dw":
        k = m.out_channels // m.in_channels  # channel multiplier
        if len(keep) % k:
            raise UnsupportedOpError(f"pruning plan splits the {k} filters of one input channel of {m}")
        _slice(m.weight, keep, 0)
        _slice(m.bias, keep, 0)
        m.out_channels = len(keep)
        m.in_channels = m.groups = len(keep) // k


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
    elif m.num_groups > 1:  # whole groups leave (the graph ties each group's channels together)
        width = m.num_channels // m.num_groups
        if len(keep) % width:
            raise UnsupportedOpError(f"pruning plan splits a group of {width} channels of {m}")
        m.num_groups = len(keep) // width
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
_BY_RULE = {"conv": _conv}  # classes registered in CHANNEL_RULES (DynamicConv2d: "conv", its fc1 a Linear of its own)


def _heads(m: nn.Module, role: str, keep: torch.Tensor) -> None:
    attr = head_count_attr(m)
    if role != "heads" or attr is None:
        raise UnsupportedOpError(f"no pruning surgery for role {role!r} of {type(m).__name__}")
    setattr(m, attr, len(keep))
    if isinstance(getattr(m, "attn_dim", None), int):  # timm: reshape back to attn_dim = heads * head_dim
        m.attn_dim = len(keep) * m.head_dim


def _parameter(m: nn.Module, role: str, keep: torch.Tensor) -> None:
    attr, dim = parse_param_role(role)
    p = getattr(m, attr, None)
    if not isinstance(p, torch.Tensor):
        raise UnsupportedOpError(f"pruning plan names {type(m).__name__}.{attr}, which is not a tensor")
    _slice(p, keep, dim)


def _attribute(m: nn.Module, role: str, keep: torch.Tensor) -> None:
    attr = parse_attr_role(role)
    if type(getattr(m, attr, None)) is not int:
        raise UnsupportedOpError(f"pruning plan names {type(m).__name__}.{attr}, which is not an int attribute")
    setattr(m, attr, len(keep))


def _sizes(m: nn.Module, role: str, keep: torch.Tensor) -> None:
    """A list of split sizes along the channels: each part's size becomes the number of its channels kept."""
    attr = parse_sizes_role(role)
    sizes = getattr(m, attr)
    bounds = torch.tensor([0, *sizes]).cumsum(0)
    new = [int(((keep >= lo) & (keep < hi)).sum()) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    if 0 in new:
        raise UnsupportedOpError(f"pruning plan empties a part of {type(m).__name__}.{attr} = {list(sizes)}")
    setattr(m, attr, type(sizes)(new))


def role_size(m: nn.Module, role: str) -> int:
    """Length of the dimension a plan entry (module, role) indexes."""
    if role == "heads":
        return int(getattr(m, head_count_attr(m) or "num_heads"))
    if parse_attr_role(role) is not None:
        return int(getattr(m, parse_attr_role(role)))
    attr = parse_sizes_role(role)
    if attr is not None:
        return int(sum(getattr(m, attr)))
    param = parse_param_role(role)
    if param is not None:
        return int(getattr(m, param[0]).shape[param[1]])
    ref = m.weight if getattr(m, "weight", None) is not None else m.running_mean
    return int(ref.shape[1] if role == "in" else ref.shape[0])


def apply_plan(model: nn.Module, plan: Plan) -> nn.Module:
    """Slice `model` in place according to `plan` and return it. Says so: this mutates `model`."""
    modules = dict(model.named_modules())
    for (name, role), keep in plan.items():
        if name not in modules:
            raise UnsupportedOpError(f"pruning plan names module {name!r}, which {type(model).__name__} does not have")
        m = modules[name]
        if role.startswith("param:"):
            fn: Callable[[nn.Module, str, torch.Tensor], None] | None = _parameter
        elif role == "heads":
            fn = _heads
        elif role.startswith("attr:"):
            fn = _attribute
        elif parse_sizes_role(role) is not None:
            fn = _sizes
        else:
            fn = next((SURGERY[t] for t in type(m).__mro__ if t in SURGERY), None) or _BY_RULE.get(declared_rule(m))
        if fn is None:
            raise UnsupportedOpError(
                f"no pruning surgery for {type(m).__name__} '{name}'; add it to ignored_layers=['{name}']")
        fn(m, role, torch.as_tensor(sorted(keep), dtype=torch.long))
        _drop_caches(m)
    return model


def _drop_caches(m: nn.Module) -> None:
    """Tensors a module cached from its parameters (timm's attention-bias cache) have the old shapes: dropped."""
    for k, v in vars(m).items():
        if isinstance(v, dict) and v and not k.startswith("_") and all(isinstance(t, torch.Tensor) for t in v.values()):
            v.clear()
