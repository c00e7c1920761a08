"""Channel dependency groups: which parameter slices must be pruned together.

Every traced tensor gets a `ChannelInfo`: which dimension holds channels and, along it, an ordered list of
`Segment`s — a channel *space* (a set of coupled channels, merged by union-find) with its size and how many
features each channel occupies (more than one after `flatten` of a C x H x W map). Operations propagate, merge
(residual add/mul, SE gating), concatenate (cat) or split (split/chunk) these lists; modules that own parameters
on a channel dimension become *members* of the space. A space touched by anything the engine does not understand,
or by the model's inputs or outputs, is *blocked* and never pruned. Reading only: nothing here changes the model.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from slimkit.graph.trace import trace

__all__ = ["Segment", "ChannelInfo", "Member", "Group", "DependencyGraph", "build_dependency_graph"]


@dataclass(frozen=True)
class Segment:
    space: int
    size: int  # channels
    repeat: int = 1  # features per channel along the dimension (H*W after flatten)


@dataclass(frozen=True)
class ChannelInfo:
    dim: int  # channel dimension of the tensor
    segments: tuple[Segment, ...]

    def offsets(self) -> list[int]:
        out, o = [], 0
        for s in self.segments:
            out.append(o)
            o += s.size * s.repeat
        return out


@dataclass(frozen=True)
class Member:
    """Parameters of `module` on one channel dimension: channel c of the space is index offset + c*repeat + j."""

    module: str
    role: str  # "out" (producer rows), "in" (consumer columns), "dw" (depthwise: both), "norm" (per-channel affine)
    offset: int = 0
    repeat: int = 1


@dataclass
class Group:
    """A prunable set of coupled channels: removing channel c removes it from every member."""

    id: int
    size: int
    members: list[Member] = field(default_factory=list)

    @property
    def producers(self) -> list[Member]:
        return [m for m in self.members if m.role in ("out", "dw")]

    def __str__(self) -> str:
        items = ", ".join(f"{m.module}:{m.role}" + (f"@{m.offset}" if m.offset else "") for m in self.members)
        return f"Group {self.id} ({self.size} channels): {items}"


_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU,
    nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d, nn.Hardtanh, nn.GELU,
)
_PASS_FUNCS = {
    torch.relu, torch.sigmoid, torch.tanh, torch.clamp, operator.neg, nn.functional.relu, nn.functional.relu6,
    nn.functional.gelu, nn.functional.silu, nn.functional.hardswish, nn.functional.hardsigmoid, nn.functional.sigmoid,
    nn.functional.dropout, nn.functional.leaky_relu, nn.functional.adaptive_avg_pool2d, nn.functional.avg_pool2d,
    nn.functional.max_pool2d, nn.functional.adaptive_max_pool2d, nn.functional.hardtanh, nn.functional.mish,
}
_PASS_METHODS = {"relu", "sigmoid", "tanh", "clamp", "contiguous", "clone", "float", "detach", "relu_", "sigmoid_",
                 "clamp_", "to", "type_as", "neg"}
_MERGE_FUNCS = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul,
                torch.div, operator.iadd, operator.imul}
_MERGE_METHODS = {"add", "sub", "mul", "div", "add_", "mul_", "expand_as"}
_SHAPE_METHODS = {"size", "dim", "numel"}


class _Spaces:
    """Union-find over channel spaces, with sizes, a blocked flag and members."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.blocked: list[bool] = []
        self.members: list[list[Member]] = []
        self.reasons: dict[int, str] = {}

    def new(self, size: int, blocked: bool = False, reason: str = "") -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.blocked.append(blocked)
        self.members.append([])
        if blocked:
            self.reasons[len(self.parent) - 1] = reason
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            self.block(ra, "coupled spaces of different sizes")
            self.block(rb, "coupled spaces of different sizes")
        self.parent[rb] = ra
        self.blocked[ra] = self.blocked[ra] or self.blocked[rb]
        self.members[ra] += self.members[rb]
        if rb in self.reasons and ra not in self.reasons:
            self.reasons[ra] = self.reasons[rb]

    def block(self, i: int, reason: str) -> None:
        r = self.find(i)
        if not self.blocked[r]:
            self.reasons[r] = reason
        self.blocked[r] = True

    def add(self, seg: Segment, member: Member) -> None:
        self.members[self.find(seg.space)].append(member)


class _Builder:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.spaces = _Spaces()
        self.info: dict[fx.Node, Any] = {}
        self.calls: dict[str, tuple[Any, Any]] = {}  # module -> (input info, output info) of its first call

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

    def _untracked_operand(self, node: fx.Node, x: ChannelInfo) -> bool:
        """Does an operand without channel tracking (a parameter, a constant tensor) vary along x's channels?"""
        out = self._shape(node)
        if out is None:
            return False
        for a in node.args:
            shape = self._shape(a)
            if shape is None or isinstance(self.info.get(a), ChannelInfo):
                continue
            pos = x.dim - (len(out) - len(shape))  # right-aligned broadcasting
            if 0 <= pos < len(shape) and shape[pos] != 1:
                return True
        return False

    def _merge(self, a: ChannelInfo, b: ChannelInfo, node: fx.Node) -> ChannelInfo:
        """Elementwise op of two tracked tensors: their channels are coupled unless one broadcasts along them."""
        sa = self._shape(node.args[0])
        sb = self._shape(node.args[1]) if len(node.args) > 1 else None
        if sa is not None and sb is not None and len(sa) == len(sb):
            if sb[b.dim] == 1 and sa[a.dim] != 1:
                return a
            if sa[a.dim] == 1 and sb[b.dim] != 1:
                return b
        self._merge_simple(a, b, node)
        return a
        for x, y in zip(a.segments, b.segments, strict=True):
            self.spaces.union(x.space, y.space)
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
        if not isinstance(x, ChannelInfo):
            return self._unknown(node, f"input to {type(m).__name__} '{name}'")
        if isinstance(m, nn.Flatten) and m.end_dim == -1:
            return self._flatten(node, x, m.start_dim)
        offs = x.offsets()
        if isinstance(m, nn.Conv2d) and x.dim == 1 and all(s.repeat == 1 for s in x.segments):
            if m.groups == 1:
                for s, o in zip(x.segments, offs, strict=True):
                    self.spaces.add(s, Member(name, "in", o))
                out = self._fresh(node, False)
                self.spaces.add(out.segments[0], Member(name, "out"))
                return out
            if m.groups == m.in_channels == m.out_channels:
                for s, o in zip(x.segments, offs, strict=True):
                    self.spaces.add(s, Member(name, "dw", o))
                return x
        if isinstance(m, nn.Linear) and x.dim == len(self._shape(node.args[0])) - 1:
            for s, o in zip(x.segments, offs, strict=True):
                self.spaces.add(s, Member(name, "in", o, s.repeat))
            out = self._fresh(node, False, dim=len(self._shape(node)) - 1)
            self.spaces.add(out.segments[0], Member(name, "out"))
            return out
        norm_ok = (
            (isinstance(m, nn.modules.batchnorm._BatchNorm) and x.dim == 1)
            or (isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1 and self._ln_over_channels(m, node, x))
            or (isinstance(m, nn.GroupNorm) and x.dim == 1 and m.num_groups in (1, m.num_channels))
            or (isinstance(m, nn.PReLU) and x.dim == 1)
        )
        if norm_ok and all(s.repeat == 1 for s in x.segments):
            has_params = any(True for _ in m.parameters(recurse=False))
            if has_params and not (isinstance(m, nn.PReLU) and m.num_parameters == 1):
                for s, o in zip(x.segments, offs, strict=True):
                    self.spaces.add(s, Member(name, "norm", o))
            if isinstance(m, nn.GroupNorm) and m.num_groups == 1:
                # statistics over all channels change when channels go: block (GroupNorm(1) is not per-channel)
                self._block_info(x, f"GroupNorm '{name}' normalises across channels")
            return x
        return self._unknown(node, f"module {type(m).__name__} '{name}'")

    def _ln_over_channels(self, m: nn.LayerNorm, node: fx.Node, x: ChannelInfo) -> bool:
        shape = self._shape(node.args[0])
        if shape is None or shape[x.dim] != m.normalized_shape[0]:
            return False
        # nn.LayerNorm normalises the last dimension; subclasses (LayerNorm2d) may normalise the channels of NCHW
        return x.dim == len(shape) - 1 or type(m) is not nn.LayerNorm

    # -- functions and methods
    def _flatten(self, node: fx.Node, x: ChannelInfo, start: int) -> ChannelInfo | None:
        shape = self._shape(node.args[0])
        if shape is None or start != x.dim or x.dim != 1:
            return self._unknown(node, "flatten")
        rest = 1
        for s in shape[2:]:
            rest *= s
        return ChannelInfo(1, tuple(Segment(s.space, s.size, s.repeat * rest) for s in x.segments))

    def _view(self, node: fx.Node, x: ChannelInfo) -> ChannelInfo | None:
        src, dst = self._shape(node.args[0]), self._shape(node)
        if src is None or dst is None:
            return self._unknown(node, "reshape")
        d = x.dim
        if dst[: d + 1] == src[: d + 1]:
            return x  # only dimensions after the channels change
        if d == 1 and len(dst) == 2 and dst[0] == src[0]:
            return self._flatten(node, x, 1)
        return self._unknown(node, f"reshape {src} -> {dst}")

    def _cat(self, node: fx.Node, tensors: list[Any], dim: int) -> ChannelInfo | None:
        infos = [self.info.get(t) for t in tensors]
        if not infos or not all(isinstance(i, ChannelInfo) for i in infos):
            return self._unknown(node, "cat")
        nd = len(self._shape(node))
        dim = dim % nd
        if all(i.dim == dim for i in infos):
            return ChannelInfo(dim, tuple(s for i in infos for s in i.segments))
        first = infos[0]
        for other in infos[1:]:
            self._merge_simple(first, other, node)
        return first

    def _merge_simple(self, a: ChannelInfo, b: ChannelInfo, node: fx.Node) -> None:
        if a.dim != b.dim or [(s.size, s.repeat) for s in a.segments] != [(s.size, s.repeat) for s in b.segments]:
            self._block_info([a, b], f"{node.name}: incompatible channel layouts")
            return
        for x, y in zip(a.segments, b.segments, strict=True):
            self.spaces.union(x.space, y.space)

    def _split(self, node: fx.Node, x: ChannelInfo, sizes: list[int], dim: int) -> Any:
        nd = len(self._shape(node.args[0]))
        if dim % nd != x.dim:
            return [x for _ in sizes]
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
        if (node.op == "call_method" and t in _SHAPE_METHODS) or t is getattr:
            return None
        if (node.op == "call_function" and t in _PASS_FUNCS) or (node.op == "call_method" and t in _PASS_METHODS):
            return first
        if (node.op == "call_function" and t in _MERGE_FUNCS) or (node.op == "call_method" and t in _MERGE_METHODS):
            infos = [self.info.get(a) for a in args if isinstance(a, fx.Node)]
            infos = [i for i in infos if isinstance(i, ChannelInfo)]
            if infos and self._untracked_operand(node, infos[0]):
                return self._unknown(node, f"'{name}' with a parameter or constant along the channels")
            if len(infos) == 2:
                return self._merge(infos[0], infos[1], node)
            return infos[0] if infos else None
        if t is operator.getitem:
            if isinstance(first, list) and isinstance(args[1], int):
                return first[args[1]]
            if first is None:
                return None
            return self._unknown(node, "indexing")
        if t is torch.flatten or (node.op == "call_method" and t == "flatten"):
            start = args[1] if len(args) > 1 else node.kwargs.get("start_dim", 0 if node.op == "call_function" else 0)
            return self._flatten(node, first, start) if isinstance(first, ChannelInfo) else None
        if node.op == "call_method" and t in ("view", "reshape") or t is torch.reshape:
            return self._view(node, first) if isinstance(first, ChannelInfo) else None
        if node.op == "call_method" and t in ("mean", "sum", "amax") or t in (torch.mean, torch.sum, torch.amax):
            return self._reduce(node, first)
        if t is torch.cat or t is torch.concat:
            return self._cat(node, list(args[0]), args[1] if len(args) > 1 else node.kwargs.get("dim", 0))
        if (node.op == "call_method" and t in ("chunk", "split")) or t in (torch.chunk, torch.split):
            return self._split_call(node, first)
        if (node.op == "call_method" and t in ("permute", "transpose")) or t in (torch.permute, torch.transpose):
            return self._permute(node, first)
        if first is None and not self._infos(list(args) + list(node.kwargs.values())):
            return None
        return self._unknown(node, f"operation '{name}'")

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
        if node.target in ("chunk", torch.chunk):
            step = -(-total // arg)
            sizes = [min(step, total - i) for i in range(0, total, step)]
        elif isinstance(arg, int):
            sizes = [min(arg, total - i) for i in range(0, total, arg)]
        else:
            sizes = list(arg)
        return self._split(node, x, sizes, dim)

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
    """The groups of a traced model. `groups` are prunable; `blocked` maps blocked groups to why."""

    groups: list[Group]
    blocked: list[tuple[Group, str]]
    module_names: tuple[str, ...]

    def group_of(self, module: str) -> list[Group]:
        return [g for g in self.groups if any(m.module == module for m in g.members)]

    def __str__(self) -> str:
        return "\n".join(str(g) for g in self.groups)


def build_dependency_graph(model: nn.Module, example_inputs: Any) -> DependencyGraph:
    """Trace `model` on `example_inputs` (a tensor or tuple) and group its coupled channels."""
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    b = _Builder(trace(model, inputs))
    b.run()
    sp = b.spaces
    groups, blocked = [], []
    roots = sorted({sp.find(i) for i in range(len(sp.parent))})
    for r in roots:
        members = sp.members[r]
        if not members:
            continue
        g = Group(len(groups) + len(blocked), sp.size[r], list(members))
        if sp.blocked[r] or not g.producers:
            blocked.append((g, sp.reasons.get(r, "no producing layer")))
        else:
            groups.append(g)
    return DependencyGraph(groups, blocked, tuple(n for n, _ in model.named_modules()))
