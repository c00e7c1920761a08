"""Operations that move data along other dimensions, and modules that declare their own channel rule.

Mixed into the dependency builder.

- `pad` that pads nothing along the channels, `roll` / `flip` along other dimensions (Swin's cyclic shift and
  window padding), `index_select` / `gather` / `take_along_dim` along other dimensions (token selection): the
  channels pass through unchanged.
- `F.linear(x, layer.weight, bias)` with the weight of an `nn.Linear` module is that layer (Swin-V2 passes
  `cat(q_bias, k_bias, v_bias)` as the bias: each part is a parameter of one third of the outputs).
- `F.normalize` along another dimension (Swin-V2's cosine attention) passes the channels.
- A module class may register its own channel rule in `slimkit.registry.CHANNEL_RULES` (`rule_of`): "pass", traced
  as one node whose output's channels are its input's (same dimension, same coupling), owning no parameter along
  them (slimkit's token reducers: the analysis never needs their internals, top-k, gather, scatter); "conv", sliced
  like nn.Conv2d, with `pooled_input` naming a Linear submodule that reads every input channel (DynamicConv2d's
  kernel attention). The analysis never names such a class: a user's own layer registers the same way.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from slimkit.errors import GraphError
from slimkit.graph.ops import _BuilderOps
from slimkit.graph.params import param_role
from slimkit.graph.spaces import ChannelInfo, Member
from slimkit.registry import CHANNEL_RULES

__all__ = ["declared_rule", "RULES", "conv_types", "rule_of"]

RULES = ("pass", "conv")  # the channel rules a module class may register


def rule_of(module: nn.Module) -> dict[str, Any] | None:
    """The registration (`rule` and its options) of the first registered class `module` is an instance of."""
    for name in CHANNEL_RULES:
        if isinstance(module, CHANNEL_RULES.get(name)):
            meta = CHANNEL_RULES.meta(name)
            if meta.get("rule") not in RULES:
                raise GraphError(f"channel rule {name!r} declares rule={meta.get('rule')!r}; registered rules are "
                                 f"{', '.join(RULES)}")
            return meta
    return None


def declared_rule(module: nn.Module) -> str | None:
    meta = rule_of(module)
    return meta["rule"] if meta else None


def conv_types() -> tuple[type, ...]:
    """nn.Conv2d and every class registered with the "conv" rule (sliced like it)."""
    return (nn.Conv2d, *(CHANNEL_RULES.get(n) for n in CHANNEL_RULES if CHANNEL_RULES.meta(n).get("rule") == "conv"))


def _dims(value: Any, nd: int) -> list[int] | None:
    vals = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(v, int) for v in vals):
        return None
    return [v % nd for v in vals]


class _RuleOps(_BuilderOps):
    def _arg(self, node: fx.Node, i: int, name: str, default: Any = None) -> Any:
        return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)

    def _is_keep_channels(self, node: fx.Node, x: ChannelInfo) -> bool:
        """True when `node` (applied to x as its first argument) leaves x's channels where they are."""
        t, method = node.target, node.op == "call_method"
        shape = self._shape(node.args[0])
        out = self._shape(node)
        if shape is None or out is None or len(out) != len(shape) or out[x.dim] != shape[x.dim]:
            return False
        nd = len(shape)
        if t is F.pad:
            pad = self._arg(node, 1, "pad")
            if not isinstance(pad, (list, tuple)):
                return False
            pos = 2 * (nd - 1 - x.dim)  # pad pairs run from the last dimension backwards
            return pos >= len(pad) or (pad[pos] == 0 and pad[pos + 1] == 0)
        if t is torch.roll or (method and t == "roll"):
            dims = _dims(self._arg(node, 2, "dims"), nd)
            return dims is not None and x.dim not in dims
        if t is torch.flip or (method and t == "flip"):
            dims = _dims(self._arg(node, 1, "dims"), nd)
            return dims is not None and x.dim not in dims
        if t is F.normalize:
            dims = _dims(self._arg(node, 2, "dim", 1), nd)
            return dims is not None and x.dim not in dims
        if t in (torch.index_select, torch.gather, torch.take_along_dim) or (
                method and t in ("index_select", "gather", "take_along_dim")):
            dims = _dims(self._arg(node, 1, "dim"), nd)
            return dims is not None and x.dim not in dims
        return False

    def _linear_layer(self, node: fx.Node) -> tuple[str, nn.Module] | None:
        w = self._arg(node, 1, "weight")
        if not isinstance(w, fx.Node) or w.op != "get_attr":
            return None
        owner, _, attr = str(w.target).rpartition(".")
        mod = self.modules.get(owner)
        return (owner, mod) if attr == "weight" and isinstance(mod, nn.Linear) else None

    def _functional_linear(self, node: fx.Node) -> Any:
        """`F.linear(x, layer.weight, bias)`: the layer's members; a bias of concatenated equal parameters ties."""
        x = self.info.get(node.args[0])
        shape = self._shape(node)
        layer = self._linear_layer(node)
        if layer is None or shape is None:
            return self._unknown(node, "linear with a weight that is not an nn.Linear's")
        name, mod = layer
        if isinstance(x, ChannelInfo) and x.dim == len(self._shape(node.args[0])) - 1:
            for seg, o in zip(x.segments, x.offsets(), strict=True):
                self.spaces.add(seg.space, Member(name, "in", o, seg.repeat))
        else:
            self._block_info(x, f"input to '{name}' in a layout the engine does not follow")
        out = self._fresh(node, False, dim=len(shape) - 1)
        space = out.segments[0].space
        self.spaces.add(space, Member(name, "out"))
        bias = self._arg(node, 2, "bias")
        if bias is None or (isinstance(bias, fx.Node) and bias.op == "get_attr" and bias.target == f"{name}.bias"):
            return out
        if self._tied_param_bias(bias, space, mod.out_features) or self._add_param_member(bias, out, len(shape), node):
            return out
        self._block_info(out, f"bias of '{name}' the engine does not follow")
        return out

    def _tied_param_bias(self, bias: fx.Node, space: int, n: int) -> bool:
        """bias = cat(p1, ..., pk) of parameters of n / k features each: output c is part c mod n/k."""
        if not (bias.op == "call_function" and bias.target in (torch.cat, torch.concat)):
            return False
        parts = list(bias.args[0])
        srcs = []
        for p in parts:
            owner, _, attr = str(p.target).rpartition(".") if isinstance(p, fx.Node) and p.op == "get_attr" else (
                "", "", "")
            mod = self.modules.get(owner)
            t = getattr(mod, attr, None) if mod is not None else None
            if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() * len(parts) != n:
                return False
            srcs.append((owner, attr))
        part = self.spaces.new(n // len(parts))
        self.spaces.tie(space, part)
        for owner, attr in srcs:
            self.spaces.add(part, Member(owner, param_role(attr, 0)))
        return True

    def _reshape_as(self, node: fx.Node, x: ChannelInfo) -> Any:
        """`x.reshape_as(other)`: sizes from `other` at run time; its channels are the result's (coupled)."""
        out = self._reshape(node, x, None)
        other = self.info.get(node.args[1]) if len(node.args) > 1 else None
        if isinstance(out, ChannelInfo) and isinstance(other, ChannelInfo):
            self._merge_simple(other, out, node)
        elif isinstance(out, ChannelInfo):
            return self._unknown(node, "reshape_as a tensor without tracked channels")
        return out

    def _declared(self, node: fx.Node, m: nn.Module, x: Any) -> Any:
        """A module's declared channel rule ("pass": its output carries its input's channels)."""
        return x
