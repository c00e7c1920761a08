"""How each traced operation's MACs scale with the channels the pruning plan keeps (read-only analysis).

A convolution's MACs are out_channels x in_channels / groups x kernel x output pixels; a linear layer's are rows x
in x out; a matmul's and an attention's are proportional to their (batch / head) channels. Under pruning every
tracked tensor dimension shrinks segment by segment: a segment of L features over a group of n channels that keeps
k of them becomes L * k / n (tiled, repeated and concatenated layouts included), untracked dimensions and blocked
groups keep their size. So each operation's MACs after pruning are its MACs before times a product of such
ratios; `mac_dims` lists, per fx node, the dimensions in that product, each as ((group id or None, length), ...).
The MACs per node are counted once on the unpruned model (`slimkit.profile.count_node_macs`); the pruner then
estimates any plan's MACs without building it.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import fx, nn

from slimkit.graph.spaces import ChannelInfo, _Spaces

__all__ = ["Dim", "mac_dims"]

Dim = tuple[tuple["int | None", int], ...]  # ((group id, or None when it is never pruned, length), ...)


def _dim(info: ChannelInfo, spaces: _Spaces, gid: dict[int, int]) -> Dim:
    return tuple((gid.get(spaces.leaf(s.space)[0]), s.size * s.repeat) for s in info.segments)


def _last(node: fx.Node, x: ChannelInfo) -> bool:
    """The input's channels are its last dimension (a linear layer's in features)."""
    meta = node.args[0].meta.get("tensor_meta")
    return meta is not None and x.dim == len(meta.shape) - 1


def mac_dims(gm: fx.GraphModule, info: dict[fx.Node, Any], modules: dict[str, nn.Module], spaces: _Spaces,
             gid: dict[int, int], convs: tuple[type, ...]) -> dict[str, tuple[Dim, ...]]:
    """{node name: the channel dimensions its MACs are proportional to} for every call in the graph."""
    out: dict[str, tuple[Dim, ...]] = {}
    for node in gm.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        y = info.get(node)
        dims = [y] if isinstance(y, ChannelInfo) else []
        x = info.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if node.op == "call_module" and isinstance(x, ChannelInfo):
            m = modules.get(str(node.target))
            if isinstance(m, convs) and x.dim == 1 and not (m.groups == m.in_channels > 1):
                dims.append(x)  # input channels (per group: a grouped conv keeps its group count)
            elif isinstance(m, nn.Linear) and _last(node, x):
                dims.append(x)
        elif node.op == "call_function" and node.target is F.linear and isinstance(x, ChannelInfo) and _last(node, x):
            dims.append(x)  # `F.linear(x, layer.weight, bias)` (torchvision Swin-V2's qkv / proj): in features too
        out[node.name] = tuple(_dim(d, spaces, gid) for d in dims)
    return out
