"""Channel dependency groups: which parameter slices must be pruned together.

Every traced tensor gets a `ChannelInfo`: which dimension holds channels and, along it, an ordered list of
`Segment`s — a channel *space* (a set of coupled channels, merged by union-find) with its size and how many
features each channel occupies (more than one after `flatten` of a C x H x W map). Operations propagate, merge
(residual add/mul, SE gating), concatenate (cat) or split (split/chunk) these lists; modules that own parameters
on a channel dimension become *members* of the space. A space touched by anything the engine does not understand,
or by the model's inputs or outputs, is *blocked* and never pruned. Reading only: nothing here changes the model.

Tiled layouts (see `slimkit.graph.spaces`): a grouped conv with g groups reads its input as g tiles of one space of
C_in / g channels (channel c of that space is column c of the weight, and input channel k * C_in / g + c for every
group k) and writes g tiles of one space of C_out / g channels, so every group keeps as many channels as the others
and `groups` never changes. The producer's space was created before the grouped conv was seen: it is *tied* to the
smaller space afterwards (its channel c becomes channel c mod C_in / g), and its members' layouts are rewritten
lazily (`Member.tile`). A depthwise conv with a channel multiplier k couples input channel c with its k filters.
Attention heads and channel shuffles are reshapes of the channel dimension (`slimkit.graph.layout`). Parameters
the forward uses directly along the channels (layer scale, position embeddings, class tokens) are members of the
space they meet (`slimkit.graph.params`).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from slimkit.errors import GraphError
from slimkit.graph.costs import Dim, mac_dims
from slimkit.graph.layout import SizeOf, _LayoutOps, is_softmax
from slimkit.graph.params import _ParamOps, param_role
from slimkit.graph.rules import _RuleOps, conv_types, declared_rule, rule_of
from slimkit.graph.sizes import _SizeOps, sizes_role
from slimkit.graph.spaces import ChannelInfo, Group, Member, Segment, _Spaces
from slimkit.graph.trace import trace
from slimkit.inputs import as_tensor_tuple

__all__ = ["Segment", "ChannelInfo", "Member", "Group", "DependencyGraph", "build_dependency_graph"]



_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU,
    nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Hardtanh, nn.GELU, nn.Upsample,  # (Upsample resizes the spatial dimensions only)
)
_PASS_FUNCS = {
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, operator.neg, nn.functional.relu, nn.functional.relu6,
    nn.functional.gelu, nn.functional.silu, nn.functional.hardswish, nn.functional.hardsigmoid, nn.functional.sigmoid,
    nn.functional.dropout, nn.functional.leaky_relu, nn.functional.adaptive_avg_pool2d, nn.functional.avg_pool2d,
    nn.functional.max_pool2d, nn.functional.adaptive_max_pool2d, nn.functional.hardtanh, nn.functional.mish,
    torch.exp, torch.log, torch.abs, torch.sqrt, torch.rsqrt, torch.square, torch.erf, operator.abs,
    nn.functional.softplus, nn.functional.elu, nn.functional.selu, nn.functional.celu, nn.functional.hardsigmoid,
    nn.functional.interpolate, nn.functional.upsample,  # resize the dimensions after batch and channels
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "clamp", "contiguous", "clone", "float", "detach", "relu_", "sigmoid_",
                 "clamp_", "to", "type_as", "neg", "exp", "log", "abs", "sqrt", "rsqrt", "square", "erf"}
_POW = {operator.pow, torch.pow, "pow"}  # elementwise when the exponent is a number
_MERGE_FUNCS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                torch.div, operator.iadd, operator.imul, torch.maximum, torch.minimum}
_MERGE_METHODS = {"add", "sub", "mul", "div", "add_", "mul_", "expand_as", "maximum", "minimum"}
_SHAPE_METHODS = {"size", "dim", "numel"}


def _is_stochastic_depth(t: Any) -> bool:
    """torchvision.ops.stochastic_depth: drops whole samples (or nothing, in eval); channels pass through."""
    return getattr(t, "__name__", "") == "stochastic_depth" and getattr(t, "__module__", "").startswith("torchvision")


class _Builder(_SizeOps, _ParamOps, _LayoutOps, _RuleOps):  # their shared interface: graph.ops._BuilderOps
    def __init__(self, gm: fx.GraphModule, model: nn.Module) -> None:
        self.gm = gm
        self.modules = {**dict(gm.named_modules()), **dict(model.named_modules())}  # fx stubs the containers
        self.spaces = _Spaces()
        self.info: dict[fx.Node, Any] = {}
        self.calls: dict[str, tuple[Any, Any]] = {}  # module -> (input info, output info) of its first call
        self.param_uses: dict[tuple[str, str], ChannelInfo] = {}  # (owner, param role) -> channels of first use
        self.attr_uses: dict[tuple[str, str], ChannelInfo] = {}  # (owner, int attribute) -> channels it sizes
        self.convs = conv_types()  # sliced like nn.Conv2d: nn.Conv2d and the classes registered with rule "conv"

    # -- helpers
    def _shape(self, node: Any) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None

    def _fresh(self, node: fx.Node, blocked: bool, reason: str = "", dim: int | None = None) -> ChannelInfo | None:
        shape = self._shape(node)
        if shape is None or len(shape) < 2:
            return None
        if dim is None:
            dim = 1 if len(shape) == 4 else len(shape) - 1
        return ChannelInfo(dim, (Segment(self.spaces.new(shape[dim], blocked, reason), shape[dim]),))

    def _block_info(self, info: Any, reason: str) -> None:
        if isinstance(info, ChannelInfo):
            for s in info.segments:
                self.spaces.block(s.space, reason)
        elif isinstance(info, (list, tuple)):
            for i in info:
                self._block_info(i, reason)

    def _infos(self, args: Any) -> list[ChannelInfo]:
        out: list[ChannelInfo] = []
        for a in (args if isinstance(args, (list, tuple)) else [args]):
            if isinstance(a, fx.Node) and isinstance(self.info.get(a), ChannelInfo):
                out.append(self.info[a])
            elif isinstance(a, (list, tuple)):
                out += self._infos(a)
        return out

    def _unknown(self, node: fx.Node, what: str) -> ChannelInfo | None:
        for i in self._infos(list(node.args) + list(node.kwargs.values())):
            self._block_info(i, f"unsupported {what}")
        return self._fresh(node, True, f"output of unsupported {what}")

    def _untracked_operands(self, node: fx.Node, x: ChannelInfo) -> list[fx.Node]:
        """Operands without channel tracking (a parameter, a constant tensor) that vary along x's channels."""
        out = self._shape(node)
        if out is None:
            return []
        found = []
        for a in node.args:
            shape = self._shape(a)
            if shape is None or isinstance(self.info.get(a), ChannelInfo):
                continue
            pos = x.dim - (len(out) - len(shape))  # right-aligned broadcasting
            if 0 <= pos < len(shape) and shape[pos] != 1:
                found.append(a)
        return found

    def _merge(self, a: ChannelInfo, b: ChannelInfo, node: fx.Node) -> ChannelInfo:
        """Elementwise op of two tracked tensors: their channels are coupled unless one broadcasts along them."""
        sa = self._shape(node.args[0])
        sb = self._shape(node.args[1]) if len(node.args) > 1 else None
        if sa is not None and sb is not None and len(sa) == len(sb) and a.dim == b.dim:
            if sb[b.dim] == 1 and sa[a.dim] != 1:
                return a
            if sa[a.dim] == 1 and sb[b.dim] != 1:
                return b
        self._merge_simple(a, b, node)
        return a

    # -- modules
    def _module(self, node: fx.Node) -> Any:
        """A module with parameters called more than once shares them across calls: couple inputs and outputs.
        (Parameter-free modules such as a ReLU reused in a block are just functions: each call stands alone.)"""
        name = str(node.target)
        x = self.info.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if not any(True for _ in self.modules[node.target].parameters(recurse=False)):
            return self._module_once(node)
        if name not in self.calls:
            out = self._module_once(node)
            self.calls[name] = (x, out)
            return out
        first_in, first_out = self.calls[name]
        if isinstance(first_in, ChannelInfo) and isinstance(x, ChannelInfo):
            self._merge_simple(first_in, x, node)
        elif isinstance(x, ChannelInfo):
            self._block_info(x, f"shared module '{name}'")
        return first_out

    def _module_once(self, node: fx.Node) -> Any:
        m = self.modules[node.target]
        name = str(node.target)
        x = self.info.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        if isinstance(m, _PASS_MODULES):
            return x
        if declared_rule(m) == "pass":
            return self._declared(node, m, x)
        if isinstance(m, (nn.Softmax, nn.LogSoftmax)) and isinstance(x, ChannelInfo) and isinstance(m.dim, int):
            return x if m.dim % len(self._shape(node)) != x.dim else self._unknown(node, "softmax over channels")
        if isinstance(m, (*self.convs, nn.Linear)) and not self._readable_input(m, node, x):
            # the input's channels cannot be followed into this layer: keep them, still prune its own outputs
            self._block_info(x, f"input to {type(m).__name__} '{name}' in a layout the engine does not follow")
            if isinstance(m, self.convs):
                return self._conv_out(node, m)
            out = self._fresh(node, False, dim=len(self._shape(node)) - 1)
            self._add_out(name, m, out.segments[0].space, m.out_features)
            return out
        if not isinstance(x, ChannelInfo):
            return self._unknown(node, f"input to {type(m).__name__} '{name}'")
        if isinstance(m, nn.Flatten):
            return self._flatten(node, x, m.start_dim, m.end_dim)
        offs = x.offsets()
        if isinstance(m, self.convs) and x.dim == 1:
            return self._conv(node, m, x)
        if isinstance(m, nn.Linear) and x.dim == len(self._shape(node.args[0])) - 1:
            for s, o in zip(x.segments, offs, strict=True):
                self.spaces.add(s.space, Member(name, "in", o, s.repeat))
            out = self._fresh(node, False, dim=len(self._shape(node)) - 1)
            self._add_out(name, m, out.segments[0].space, m.out_features)
            return out
        norm_ok = (
            (isinstance(m, nn.modules.batchnorm._BatchNorm) and x.dim == 1)
            or (isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1 and self._ln_over_channels(m, node, x)
                and all(s.repeat == 1 for s in x.segments))
            or (isinstance(m, nn.GroupNorm) and x.dim == 1 and self._whole_groups(m, x))
            or (isinstance(m, nn.PReLU) and x.dim == 1)
        )
        if norm_ok:  # per-position parameters: a segment's repeated features each have their own
            has_params = any(True for _ in m.parameters(recurse=False))
            if has_params and not (isinstance(m, nn.PReLU) and m.num_parameters == 1):
                for s, o in zip(x.segments, offs, strict=True):
                    self.spaces.add(s.space, Member(name, "norm", o, s.repeat))
            return x
        if isinstance(m, nn.GroupNorm) and x.dim == 1:
            self._block_info(x, f"GroupNorm '{name}' ({m.num_groups} groups) in a channel layout that splits a group")
            return x
        return self._unknown(node, f"module {type(m).__name__} '{name}'")

    def _whole_groups(self, m: nn.GroupNorm, x: ChannelInfo) -> bool:
        """GroupNorm: per channel (num_groups == channels) or over all of them (num_groups == 1, pruned like a
        LayerNorm over the channels) needs nothing; otherwise whole groups go, so the statistics of the groups that
        stay are those of the original: the channels of one group are tied into one unit (c -> c // width)."""
        if m.num_groups in (1, m.num_channels):
            return True
        width = m.num_channels // m.num_groups
        if any(o % width or (s.size * s.repeat) % width or width % s.repeat
               for s, o in zip(x.segments, x.offsets(), strict=True)):
            return False
        for s in x.segments:
            self.spaces.tie(s.space, self.spaces.new(s.size * s.repeat // width), width // s.repeat)
        return True

    def _readable_input(self, m: nn.Module, node: fx.Node, x: Any) -> bool:
        if not isinstance(x, ChannelInfo):
            return False
        return x.dim == (1 if isinstance(m, self.convs) else len(self._shape(node.args[0])) - 1)

    def _conv(self, node: fx.Node, m: nn.Conv2d, x: ChannelInfo) -> ChannelInfo | None:
        """Plain conv: in / out spaces. Depthwise (groups == in_channels, any multiplier k = out / in): input channel
        c owns k consecutive filters, so the output keeps the input's spaces with `repeat` k. Grouped conv: the
        input and output are read as g tiles of one space each (see `_grouped_input`)."""
        name, offs = str(node.target), x.offsets()
        pooled = (rule_of(m) or {}).get("pooled_input")  # a submodule reading every input channel (pooled)
        if pooled:
            for s, o in zip(x.segments, offs, strict=True):
                self.spaces.add(s.space, Member(f"{name}.{pooled}", "in", o, s.repeat))
        if m.groups == m.in_channels > 1:
            k = m.out_channels // m.in_channels
            for s, o in zip(x.segments, offs, strict=True):
                self.spaces.add(s.space, Member(name, "dw", o * k, s.repeat * k))
            return ChannelInfo(1, tuple(Segment(s.space, s.size, s.repeat * k) for s in x.segments))
        if m.groups == 1:
            for s, o in zip(x.segments, offs, strict=True):
                self.spaces.add(s.space, Member(name, "in", o, s.repeat))
        elif not self._grouped_input(name, x, m.groups):
            self._block_info(x, f"input of conv '{name}' (groups={m.groups}) in a layout it cannot be cut in")
        return self._conv_out(node, m)

    def _conv_out(self, node: fx.Node, m: nn.Conv2d) -> ChannelInfo:
        out = self._fresh(node, False, dim=1)
        if m.groups > 1:  # output channel c of every group goes together: g tiles of out_channels / g
            self.spaces.tie(out.segments[0].space, self.spaces.new(m.out_channels // m.groups))
        self._add_out(str(node.target), m, out.segments[0].space, m.out_channels)
        return out

    def _add_out(self, name: str, m: nn.Module, space: int, size: int) -> None:
        """`m`'s output rows join `space`, with any other per-output-channel tensor a subclass adds (the `gain` of
        timm's ScaledStdConv2d): sliced along with the rows. Another extra tensor blocks the space."""
        self.spaces.add(space, Member(name, "out"))
        if type(m) in (*self.convs, nn.Linear):
            return
        for attr, t in [*m._parameters.items(), *m._buffers.items()]:
            if attr in ("weight", "bias") or t is None or t.numel() == 1:
                continue
            if t.dim() >= 1 and t.shape[0] == size and all(n == 1 for n in t.shape[1:]):
                self.spaces.add(space, Member(name, param_role(attr, 0)))
            else:
                self.spaces.block(space, f"{type(m).__name__} '{name}' has a tensor '{attr}' of shape "
                                         f"{tuple(t.shape)} the engine does not slice")

    def _grouped_input(self, name: str, x: ChannelInfo, g: int) -> bool:
        """Input columns of a grouped conv: position w of every group is one channel (the weight's column w).
        Each group must see the same sequence of pieces; a segment spanning whole groups is tied to a space of
        one group's width. Anything else (a segment straddling a group boundary) is not representable: False."""
        width = x.length // g
        pieces: list[list[tuple[int, int, int]]] = [[] for _ in range(g)]  # per group: (space, repeat, column)
        for s, o in zip(x.segments, x.offsets(), strict=True):
            n = s.size * s.repeat
            if o // width == (o + n - 1) // width:
                pieces[o // width].append((s.space, s.repeat, o % width))
            elif o % width == 0 and n % width == 0 and width % s.repeat == 0:
                q = self.spaces.new(width // s.repeat)
                self.spaces.tie(s.space, q)
                for grp in range(o // width, (o + n) // width):
                    pieces[grp].append((q, s.repeat, 0))
            else:
                return False
        sp = self.spaces
        layout = [[(sp.size[sp.find(q)], r, c) for q, r, c in grp] for grp in pieces]
        if any(lay != layout[0] for lay in layout):
            return False
        for j, (q, r, c) in enumerate(pieces[0]):
            for grp in pieces[1:]:
                sp.union(q, grp[j][0])
            sp.add(q, Member(name, "in", c, r))
        return True

    def _ln_over_channels(self, m: nn.LayerNorm, node: fx.Node, x: ChannelInfo) -> bool:
        shape = self._shape(node.args[0])
        if shape is None or shape[x.dim] != m.normalized_shape[0]:
            return False
        # nn.LayerNorm normalises the last dimension; subclasses (LayerNorm2d) may normalise the channels of NCHW
        return x.dim == len(shape) - 1 or type(m) is not nn.LayerNorm

    # -- functions and methods
    def _cat(self, node: fx.Node, tensors: list[Any], dim: int) -> ChannelInfo | None:
        infos = [self.info.get(t) for t in tensors]
        tracked = [i for i in infos if isinstance(i, ChannelInfo)]
        nd = len(self._shape(node))
        dim = dim % nd
        if tracked and len(tracked) < len(infos) and all(i.dim != dim for i in tracked):
            # tokens of a parameter joined along another dimension (a class token): a member of the channels
            params = [t for t, i in zip(tensors, infos, strict=True) if not isinstance(i, ChannelInfo)]
            if all(isinstance(t, fx.Node) and self._add_param_member(t, tracked[0], nd, node) for t in params):
                infos = tracked
        if not infos or not all(isinstance(i, ChannelInfo) for i in infos):
            return self._unknown(node, "cat")
        if all(i.dim == dim for i in infos):
            return ChannelInfo(dim, tuple(s for i in infos for s in i.segments))
        first = infos[0]
        for other in infos[1:]:
            self._merge_simple(first, other, node)
        return first

    def _stack(self, node: fx.Node, tensors: list[Any], dim: int) -> ChannelInfo | None:
        """Tensors stacked along a new dimension: same positions, same channels (selective-kernel paths)."""
        infos = [self.info.get(t) for t in tensors]
        if not infos or not all(isinstance(i, ChannelInfo) for i in infos) or len({i.dim for i in infos}) != 1:
            return self._unknown(node, "stack")
        first = infos[0]
        for other in infos[1:]:
            self._merge_simple(first, other, node)
        dim %= len(self._shape(node))
        return ChannelInfo(first.dim + (dim <= first.dim), first.segments)

    def _merge_simple(self, a: ChannelInfo, b: ChannelInfo, node: fx.Node) -> None:
        """Same positions, same channels. Segments must line up; within a pair, the one with the smaller repeat
        is tied to the other (C channels read as H heads of D features)."""
        if a.dim != b.dim or a.offsets() != b.offsets() or [s.size * s.repeat for s in a.segments] != [
                s.size * s.repeat for s in b.segments]:
            if not (self._merge_tiles(a, b) or self._merge_tiles(b, a) or self._in_step(a, b)):
                self._block_info([a, b], f"{node.name}: incompatible channel layouts")
            return
        for x, y in zip(a.segments, b.segments, strict=True):
            if x.repeat == y.repeat:
                self.spaces.union(x.space, y.space)
            elif x.repeat % y.repeat == 0:
                self.spaces.tie(y.space, x.space, x.repeat // y.repeat)
            elif y.repeat % x.repeat == 0:
                self.spaces.tie(x.space, y.space, y.repeat // x.repeat)
            else:
                self._block_info([a, b], f"{node.name}: incompatible channel layouts")

    def _merge_tiles(self, one: ChannelInfo, many: ChannelInfo) -> bool:
        """One segment against the same channels repeated n times (a ghost module's [x, cheap(x)] times a gate of
        its own width): channel c of the single segment is channel c mod |X| of the repeated space X (a tie)."""
        if one.dim != many.dim or len(one.segments) != 1 or len(many.segments) < 2 or one.length != many.length:
            return False
        y, first = one.segments[0], many.segments[0]
        leaf = self.spaces.leaf(first.space)
        if any(self.spaces.leaf(s.space) != leaf or (s.size, s.repeat) != (first.size, first.repeat)
               for s in many.segments) or first.repeat % y.repeat:
            return False
        self.spaces.tie(y.space, first.space, first.repeat // y.repeat)
        return True

    def _in_step(self, a: ChannelInfo, b: ChannelInfo, sizes: tuple[int, ...] = ()) -> int | None:
        """Same channels cut at other boundaries (a residual add of two concatenations, a split into sizes that
        straddle segments): every segment is tied to one space of d channels, d the gcd of all segment sizes (and
        `sizes`), channel c -> c mod d. Each d-channel period then keeps the same channels, so any boundary at a
        multiple of d stays aligned. The space, or None (repeated features, other dimensions or lengths)."""
        segs = [*a.segments, *b.segments]
        if a.dim != b.dim or a.length != b.length or any(s.repeat != 1 for s in segs):
            return None
        unit = self.spaces.new(math.gcd(*sizes, *(s.size for s in segs)))
        for s in segs:
            self.spaces.tie(s.space, unit)
        return unit

    def _split(self, node: fx.Node, x: ChannelInfo, sizes: list[int], dim: int) -> Any:
        nd = len(self._shape(node.args[0]))
        if dim % nd != x.dim:
            return [x for _ in sizes]
        if len(x.segments) == 1 and x.segments[0].repeat == 1 and len(set(sizes)) == 1 and len(sizes) > 1:
            # equal parts of one space (q | k | v, the two slopes of a dynamic ReLU): channel c of every part is
            # tied together (c mod part), so each part can be coupled with what it meets downstream
            part = self.spaces.new(sizes[0])
            self.spaces.tie(x.segments[0].space, part)
            return [ChannelInfo(x.dim, (Segment(part, sizes[0]),)) for _ in sizes]
        out, segs, i = [], list(x.segments), 0
        for want in sizes:
            part, got = [], 0
            while got < want and i < len(segs):
                part.append(segs[i])
                got += segs[i].size * segs[i].repeat
                i += 1
            if got != want:
                self._block_info(x, f"{node.name}: split inside a channel segment")
                return [self._fresh_like(x, want) for want in sizes]
            out.append(ChannelInfo(x.dim, tuple(part)))
        return out

    def _fresh_like(self, x: ChannelInfo, size: int) -> ChannelInfo:
        return ChannelInfo(x.dim, (Segment(self.spaces.new(size, True, "split"), size),))

    def _function(self, node: fx.Node) -> Any:
        t, args = node.target, node.args
        first = self.info.get(args[0]) if args and isinstance(args[0], fx.Node) else None
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        sized = self._size_op(node)
        if sized is not None:
            return sized
        if (node.op == "call_method" and t in _SHAPE_METHODS) or t is getattr:
            return None
        if (node.op == "call_function" and (t in _PASS_FUNCS or _is_stochastic_depth(t))) or (
                node.op == "call_method" and t in _PASS_METHODS):
            return first
        if t in _POW and len(args) == 2 and isinstance(args[1], (int, float)):
            return first
        if (node.op == "call_function" and t in _MERGE_FUNCS) or (node.op == "call_method" and t in _MERGE_METHODS):
            infos = [self.info.get(a) for a in args if isinstance(a, fx.Node)]
            infos = [i for i in infos if isinstance(i, ChannelInfo)]
            untracked = self._untracked_operands(node, infos[0]) if infos else []
            nd = len(self._shape(node) or ())
            if untracked and not all(self._add_param_member(a, infos[0], nd, node) for a in untracked):
                return self._unknown(node, f"'{name}' with a parameter or constant along the channels")
            if len(infos) == 2:
                return self._merge(infos[0], infos[1], node)
            if len(infos) > 2:
                return self._unknown(node, f"'{name}' of more than two tensors")
            return infos[0] if infos else None
        if t is operator.getitem:
            if isinstance(first, list) and isinstance(args[1], int):
                return first[args[1]]
            return self._getitem(node, first) if isinstance(first, ChannelInfo) else None
        if t in (operator.matmul, torch.matmul, torch.bmm) or (node.op == "call_method" and t in ("matmul", "bmm")):
            return self._matmul(node)
        if t is nn.functional.scaled_dot_product_attention:
            return self._sdpa(node)
        if t is torch.stack:
            return self._stack(node, list(args[0]), args[1] if len(args) > 1 else node.kwargs.get("dim", 0))
        if t is nn.functional.linear:
            return self._functional_linear(node)
        if t is torch.cat or t is torch.concat:
            return self._cat(node, list(args[0]), args[1] if len(args) > 1 else node.kwargs.get("dim", 0))
        if isinstance(first, ChannelInfo) and self._is_keep_channels(node, first):
            return first
        if not isinstance(first, ChannelInfo):
            return self._untracked(node, first, name)
        return self._shape_op(node, first, name)

    def _untracked(self, node: fx.Node, first: Any, name: str) -> Any:
        if first is None and not self._infos(list(node.args) + list(node.kwargs.values())):
            return None
        return self._unknown(node, f"operation '{name}'")

    def _shape_op(self, node: fx.Node, first: ChannelInfo, name: str) -> Any:
        t, args, method = node.target, node.args, node.op == "call_method"
        if t is torch.flatten or (method and t == "flatten"):
            return self._flatten(node, first, args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0))
        if method and t in ("view", "reshape") or t is torch.reshape:
            return self._view(node, first)
        if method and t in ("view_as", "reshape_as"):
            return self._reshape_as(node, first)
        if (method and t == "unflatten") or t is torch.unflatten:
            return self._unflatten(node, first)
        if (method and t == "unsqueeze") or t is torch.unsqueeze:
            return self._unsqueeze(node, first)
        if (method and t == "unbind") or t is torch.unbind:
            return self._unbind(node, first)
        if is_softmax(node):
            dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
            nd = len(self._shape(args[0]))
            return first if isinstance(dim, int) and dim % nd != first.dim else self._unknown(node, "softmax")
        if node.op == "call_method" and t in ("mean", "sum", "amax") or t in (torch.mean, torch.sum, torch.amax):
            return self._reduce(node, first)
        if (node.op == "call_method" and t in ("chunk", "split")) or t in (torch.chunk, torch.split):
            return self._split_call(node, first)
        if (node.op == "call_method" and t in ("permute", "transpose")) or t in (torch.permute, torch.transpose):
            return self._permute(node, first)
        if t is nn.functional.pad:
            return self._pad(node, first)
        return self._unknown(node, f"operation '{name}'")

    def _pad(self, node: fx.Node, x: ChannelInfo) -> Any:
        """F.pad of other dimensions (a window's zero padding) keeps the channels; padding them is not modelled."""
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
        nd = len(self._shape(node.args[0]))
        k = nd - 1 - x.dim  # pad lists (before, after) pairs from the last dimension backwards
        if not isinstance(pad, (list, tuple)) or (2 * k + 1 < len(pad) and (pad[2 * k], pad[2 * k + 1]) != (0, 0)):
            return self._unknown(node, "padding of the channel dimension")
        return x

    def _reduce(self, node: fx.Node, x: Any) -> Any:
        if not isinstance(x, ChannelInfo):
            return None
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        nd = len(self._shape(node.args[0]))
        if dims is None:
            return self._unknown(node, "full reduction")
        dims = [d % nd for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
        if x.dim in dims:
            return self._unknown(node, "reduction over channels")
        return x if keep else ChannelInfo(x.dim - sum(d < x.dim for d in dims), x.segments)

    def _split_call(self, node: fx.Node, x: Any) -> Any:
        if not isinstance(x, ChannelInfo):
            return None
        shape = self._shape(node.args[0])
        dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        kw = node.kwargs
        arg = node.args[1] if len(node.args) > 1 else kw.get("split_size_or_sections", kw.get("chunks"))
        total = shape[dim % len(shape)]
        ref = self.info.get(arg) if isinstance(arg, fx.Node) else None
        if node.target in ("chunk", torch.chunk):
            step = -(-total // arg)
            sizes = [min(step, total - i) for i in range(0, total, step)]
        elif isinstance(ref, SizeOf) and ref.frac.numerator == 1 and ref.frac.denominator > 1 and (
                ref.info.segments == x.segments):
            n = ref.frac.denominator  # split(C // n) of its own C channels: n equal parts, like chunk(n)
            sizes = [total // n] * n
        elif dim % len(shape) == x.dim:
            sizes = self._split_sizes(node, arg, total, dim)
            parts = self._split_attribute(node, x, arg, sizes)
            if parts is not None:
                return parts
            # sizes fixed in the model's code stay fixed when channels go: the channels must keep their count
            self._block_info(x, f"{node.name}: split into fixed sizes")
            return [self._fresh_like(x, n) for n in sizes]
        else:
            sizes = self._split_sizes(node, arg, total, dim)
        return self._split(node, x, sizes, dim)

    def _split_attribute(self, node: fx.Node, x: ChannelInfo, arg: Any, sizes: list[int]) -> list[ChannelInfo] | None:
        """A split into sizes listed in an attribute of the module that calls it (MixNet's `self.splits`): the
        attribute becomes a member (surgery sets each size to what its part keeps) and the segments and parts are
        cut in step (`_in_step`), so the boundaries stay where the new sizes put them. None when no attribute
        holds them."""
        stack = node.meta.get("nn_module_stack") or {}
        owner = next(reversed(stack.values()))[0] if stack else ""  # (no stack: the model's own forward)
        mod = self.modules.get(owner) if isinstance(owner, str) else None
        if mod is None or not isinstance(arg, (list, tuple)) or any(s.repeat != 1 for s in x.segments):
            return None
        attr = next((a for a, v in vars(mod).items() if not a.startswith("_") and isinstance(v, (list, tuple))
                     and [int(n) for n in v if isinstance(n, int)] == sizes and len(v) == len(sizes)), None)
        if attr is None:
            return None
        for s, o in zip(x.segments, x.offsets(), strict=True):
            self.spaces.add(s.space, Member(owner, sizes_role(attr), o))
        parts = ChannelInfo(x.dim, tuple(Segment(self.spaces.new(n), n) for n in sizes))
        self._in_step(x, parts, tuple(sizes))
        return [ChannelInfo(x.dim, (p,)) for p in parts.segments]

    def _split_sizes(self, node: fx.Node, arg: Any, total: int, dim: int) -> list[int]:
        if isinstance(arg, int):
            return [min(arg, total - i) for i in range(0, total, arg)]
        metas = node.meta.get("tensor_meta")
        if isinstance(metas, (list, tuple)) and all(hasattr(m, "shape") for m in metas):
            return [int(m.shape[dim]) for m in metas]  # the sizes the traced call produced
        return [int(a) for a in arg]

    def _permute(self, node: fx.Node, x: Any) -> Any:
        if not isinstance(x, ChannelInfo):
            return None
        nd = len(self._shape(node.args[0]))
        rest = list(node.args[1:])
        if node.target in ("transpose", torch.transpose):
            a, b = (d % nd for d in rest[:2])
            perm = list(range(nd))
            perm[a], perm[b] = perm[b], perm[a]
        else:
            perm = [d % nd for d in (rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest)]
        return ChannelInfo(perm.index(x.dim), x.segments)

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.info[node] = self._fresh(node, True, "model input")
            elif node.op == "get_attr":
                self.info[node] = None
            elif node.op == "call_module":
                self.info[node] = self._module(node)
            elif node.op in ("call_function", "call_method"):
                self.info[node] = self._function(node)
            elif node.op == "output":
                for i in self._infos(node.args):
                    self._block_info(i, "model output")


@dataclass
class DependencyGraph:
    """The groups of a traced model. `groups` are prunable; `blocked` maps blocked groups to why. `gm` is the traced
    model (sharing the model's modules); `mac_dims` says how each of its nodes' MACs scale with the groups
    (`slimkit.graph.costs`)."""

    groups: list[Group]
    blocked: list[tuple[Group, str]]
    module_names: tuple[str, ...]
    gm: fx.GraphModule | None = None
    mac_dims: dict[str, tuple[Dim, ...]] = field(default_factory=dict)

    def group_of(self, module: str) -> list[Group]:
        return [g for g in self.groups if any(m.module == module for m in g.members)]

    def __str__(self) -> str:
        return "\n".join(str(g) for g in self.groups)


def build_dependency_graph(model: nn.Module, example_inputs: Any) -> DependencyGraph:
    """Trace `model` on `example_inputs` (a tensor or tuple) and group its coupled channels."""
    inputs = as_tensor_tuple(example_inputs, GraphError)
    b = _Builder(trace(model, inputs), model)
    b.run()
    sp = b.spaces
    groups, blocked = [], []
    gid: dict[int, int] = {}
    roots = sorted({sp.find(i) for i in range(len(sp.parent))} - set(sp.tied))
    for r in roots:
        members = sp.members[r]
        if not members:
            continue
        g = Group(len(groups) + len(blocked), sp.size[r], list(members))
        if sp.blocked[r] or not g.producers:
            blocked.append((g, sp.reasons.get(r, "no producing layer")))
        else:
            groups.append(g)
            gid[r] = g.id
    return DependencyGraph(groups, blocked, tuple(n for n, _ in model.named_modules()), b.gm,
                           mac_dims(b.gm, b.info, b.modules, sp, gid, b.convs))
