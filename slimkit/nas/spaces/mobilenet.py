"""A MobileNet-style macro search space (MobileNetV2 / ProxylessNAS style): per-stage kernel, expansion, depth,
width and block type.

The skeleton is a 3x3 stem, `len(widths)` searchable stages and a 1x1 conv to `head_width` before the pooled linear
classifier. Each stage chooses

    kernel     depthwise kernel size              (3, 5, 7)
    expansion  wide / narrow channel ratio        (3, 4, 6)
    depth      blocks in the stage                (1, 2, 3, 4)
    width      multiplier of the stage's width    (0.75, 1.0, 1.25)
    block      mbconv or sandglass                ("mbconv", "sandglass")

so the default space holds (3 * 3 * 4 * 3 * 2) ** 5 = 216 ** 5 = 4.7e11 architectures (`enumerate()` returns None,
`size` counts them). Both block types use the stage's narrow width c = width * stage width * base width and wide
width c * e, rounded by `make_divisible` to multiples of `divisor` (default 4: with 8, 0.75 x 16 and 1.0 x 16 would
both give 16 channels); where rounding would still give two choices the same channel count (tiny base widths), the
larger choice gets `divisor` more channels, so different architectures always build different models:

* mbconv (MobileNetV2's inverted residual): narrow ends, wide middle: 1x1 expand -> k x k depthwise (strided) ->
  linear 1x1 project; the stage outputs c channels.
* sandglass (MobileNeXt's block, `slimkit.layers.SandglassBlock`): wide ends, narrow middle: k x k depthwise ->
  linear 1x1 reduce to c -> 1x1 expand -> k x k linear depthwise (strided); the stage outputs c * e channels (the
  paper's reduction ratio t is the expansion e). Every block keeps its first depthwise conv (MobileNeXt drops it in
  blocks that change the channel count, which here would make MACs fall when the expansion grows).

Both have an identity shortcut when the stride is 1 and the channel count is unchanged. MACs grow with kernel,
expansion, depth and width; a sandglass stage costs more than an mbconv stage with the same choices (its strided
depthwise conv and its output are wide, so the next stage and the head read c * e channels).

An architecture is a tuple of per-stage tuples of choice indices, in the order of `CHOICES`, e.g.
`((0, 2, 1, 1, 0), ...)` is kernel 3, expansion 6, depth 2, width 1.0, mbconv for the first stage. Its key is readable,
one `|`-separated part per stage: `k3e6d2w1.0mb|k5e4d1w0.75sg|...` (`mb`: mbconv, `sg`: sandglass). Every method that
takes an architecture also accepts its key, a JSON list of lists, or the flat tuple of all indices.

Encodings: `onehot` (per stage, one bit per choice value: 5 x (3 + 3 + 4 + 3 + 2) = 75 bits, 25 of them set) and
`index` (the 25 choice indices).

Input sizes: the default strides (1, 2, 2, 2, 1) with a stride-1 stem (`small_input=True`, the default of `build`)
give a total stride of 8 for 28x28 / 32x32 images. With `small_input=False` the stem and the first stage use stride
2 (at least), as in MobileNetV2 at 224x224 (total stride 32).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.channels import make_divisible
from slimkit.layers.conv import InvertedResidual, conv_bn
from slimkit.layers.sandglass import SandglassBlock
from slimkit.models._base import ClassifierMixin, init_mobile_weights
from slimkit.nas.spaces.base import SearchSpace
from slimkit.registry import SPACES

__all__ = ["BLOCKS", "CHOICES", "MobileNetCandidate", "MobileNetSpace", "MobileNetSpaceConfig",
           "SandglassK", "StageChoice"]

CHOICES = ("kernel", "expansion", "depth", "width", "block")
BLOCKS = ("mbconv", "sandglass")
_ABBR = {"mbconv": "mb", "sandglass": "sg"}
_FROM_ABBR = {v: k for k, v in _ABBR.items()}
_NUM = r"\d+(?:\.\d+)?"
_STAGE_RE = re.compile(rf"k(?P<kernel>\d+)e(?P<expansion>{_NUM})d(?P<depth>\d+)w(?P<width>{_NUM})(?P<block>[a-z]+)")


class StageChoice(NamedTuple):
    """One stage's decoded choices (values, not indices)."""

    kernel: int
    expansion: float
    depth: int
    width: float
    block: str


def _fmt(v: float) -> str:
    """Integers without a decimal point, other numbers as Python prints them (0.75, 1.25)."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


@dataclass(frozen=True)
class MobileNetSpaceConfig:
    """The skeleton (`widths`, `strides` per stage, stem and head widths) and the per-stage choice lists."""

    widths: tuple[int, ...] = (16, 24, 32, 64, 96)
    strides: tuple[int, ...] = (1, 2, 2, 2, 1)   # for small inputs (with a stride-1 stem)
    stem_width: int = 16
    head_width: int = 256
    kernels: tuple[int, ...] = (3, 5, 7)
    expansions: tuple[float, ...] = (3, 4, 6)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    width_mults: tuple[float, ...] = (0.75, 1.0, 1.25)
    blocks: tuple[str, ...] = BLOCKS
    divisor: int = 4                             # channel counts are multiples of this

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Sequence) and not isinstance(value, str):
                object.__setattr__(self, f.name, tuple(value))  # lists from YAML / JSON
        if not self.widths or len(self.widths) != len(self.strides):
            raise ConfigError(f"need one stride per stage width, got widths={self.widths} and "
                              f"strides={self.strides}")
        if (any(int(w) < 1 for w in self.widths) or self.stem_width < 1 or self.head_width < 1
                or self.divisor < 1):
            raise ConfigError(f"widths must be positive, got widths={self.widths}, stem_width={self.stem_width}, "
                              f"head_width={self.head_width}, divisor={self.divisor}")
        if any(s not in (1, 2) for s in self.strides):
            raise ConfigError(f"stage strides must be 1 or 2, got {self.strides}")
        checks = {"kernels": lambda k: isinstance(k, int) and k >= 1 and k % 2 == 1,
                  "expansions": lambda e: e >= 1, "depths": lambda d: isinstance(d, int) and d >= 1,
                  "width_mults": lambda w: w > 0, "blocks": lambda b: b in BLOCKS}
        for name, ok in checks.items():
            values = getattr(self, name)
            if not values or len(set(values)) != len(values) or not all(ok(v) for v in values):
                raise ConfigError(f"{name} must be a non-empty list of distinct valid values, got {values!r} "
                                  "(kernels: odd ints, expansions >= 1, depths: ints >= 1, width_mults > 0, "
                                  f"blocks: {list(BLOCKS)})")

    @property
    def options(self) -> tuple[tuple[Any, ...], ...]:
        """The choice lists in `CHOICES` order."""
        return self.kernels, self.expansions, self.depths, self.width_mults, self.blocks

    def channels(self, base: float, mults: Sequence[float]) -> dict[float, int]:
        """`base * m` for each multiplier, rounded to a multiple of `divisor`, strictly increasing in `m`."""
        out: dict[float, int] = {}
        prev = 0
        for m in sorted(mults):
            c = make_divisible(base * m, self.divisor)
            prev = out[m] = c if c > prev else prev + self.divisor
        return out


@SPACES.register("mobilenet", paper="MobileNetV2 / ProxylessNAS-style macro space")
class MobileNetSpace(SearchSpace):
    """See the module docstring. `MobileNetSpace()` is the default space; pass a `MobileNetSpaceConfig` or its
    fields as keyword arguments (`MobileNetSpace(widths=(8, 16), strides=(1, 2), depths=(1, 2))`) to change it."""

    name = "mobilenet"
    encodings = ("onehot", "index")

    def __init__(self, config: MobileNetSpaceConfig | None = None, **kwargs: Any) -> None:
        if config is not None and kwargs:
            raise ConfigError("pass either a MobileNetSpaceConfig or its fields as keywords, not both")
        try:
            self.config = config if config is not None else MobileNetSpaceConfig(**kwargs)
        except TypeError as e:
            raise ConfigError(f"bad option for the mobilenet space: {e}; fields: "
                              f"{[f.name for f in fields(MobileNetSpaceConfig)]}") from None
        self.options = self.config.options
        self.num_stages = len(self.config.widths)
        self.sizes = np.array([len(o) for o in self.options], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        self._index = [{v: i for i, v in enumerate(o)} for o in self.options]

    @property
    def size(self) -> int:
        """The number of architectures in the space."""
        return int(np.prod(self.sizes)) ** self.num_stages

    def __repr__(self) -> str:
        return f"MobileNetSpace({self.config})"

    # -- the protocol -----------------------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> tuple[tuple[int, ...], ...]:
        idx = rng.integers(0, self.sizes, size=(self.num_stages, len(CHOICES)))
        return tuple(tuple(int(v) for v in row) for row in idx)

    def mutate(self, arch: Any, rng: np.random.Generator) -> tuple[tuple[int, ...], ...]:
        """Change one choice of one stage (a space with a single member returns `arch` unchanged)."""
        stages = [list(s) for s in self._check(arch)]
        free = np.flatnonzero(self.sizes > 1)
        if not len(free):
            return self._check(arch)
        s, c = int(rng.integers(self.num_stages)), int(free[int(rng.integers(len(free)))])
        n = int(self.sizes[c])
        stages[s][c] = int((stages[s][c] + rng.integers(1, n)) % n)
        return tuple(tuple(st) for st in stages)

    def neighbours(self, arch: Any) -> list[tuple[tuple[int, ...], ...]]:
        stages = self._check(arch)
        out = []
        for s, stage in enumerate(stages):
            for c, n in enumerate(self.sizes):
                for v in range(int(n)):
                    if v != stage[c]:
                        out.append(stages[:s] + (stage[:c] + (v,) + stage[c + 1:],) + stages[s + 1:])
        return out

    def encode(self, arch: Any, kind: str = "onehot") -> np.ndarray:
        return self.encode_many([arch], kind)[0]

    def encode_many(self, archs: Sequence[Any], kind: str = "onehot") -> np.ndarray:
        if kind not in self.encodings:
            raise ConfigError(f"unknown encoding {kind!r} for space 'mobilenet'; choose one of "
                              f"{list(self.encodings)}")
        if not len(archs):
            return np.zeros((0, self.num_stages * (len(CHOICES) if kind == "index" else int(self.sizes.sum()))),
                            np.float32)
        idx = np.array([self._check(a) for a in archs], np.int64).reshape(len(archs), self.num_stages, -1)
        if kind == "index":
            return idx.reshape(len(archs), -1).astype(np.float32)
        width = int(self.sizes.sum())
        out = np.zeros((len(archs), self.num_stages, width), np.float32)
        n, s = np.meshgrid(np.arange(len(archs)), np.arange(self.num_stages), indexing="ij")
        for c, off in enumerate(self._offsets):  # vectorised: model-based strategies encode large pools
            out[n, s, off + idx[:, :, c]] = 1
        return out.reshape(len(archs), -1)

    def key(self, arch: Any) -> str:
        return "|".join(f"k{k}e{_fmt(e)}d{d}w{float(w)!r}{_ABBR[b]}" for k, e, d, w, b in self.decode(arch))

    def from_key(self, key: str) -> tuple[tuple[int, ...], ...]:
        if not isinstance(key, str):
            raise ConfigError(f"a mobilenet space key is a string like 'k3e6d2w1.0mb|...', got {key!r}")
        parts = key.strip().split("|")
        if len(parts) != self.num_stages:
            raise ConfigError(f"mobilenet key {key!r} has {len(parts)} stage(s) separated by '|'; this space has "
                              f"{self.num_stages} (e.g. {self.key(((0,) * len(CHOICES),) * self.num_stages)!r})")
        return tuple(self._parse_stage(i, p.strip()) for i, p in enumerate(parts))

    def enumerate(self) -> None:
        """None: the space is far too large to list (see `size`)."""
        return None

    def build(self, arch: Any, num_classes: int = 10, in_chans: int = 3, small_input: bool = True,
              base_width: float = 1.0, drop_rate: float = 0.2, act_layer: Callable[..., nn.Module] = nn.ReLU6,
              **kwargs: Any) -> nn.Module:
        """The candidate as a slimkit classifier (`MobileNetCandidate`); `base_width` scales every width."""
        if kwargs:
            raise ConfigError(f"unknown build option(s) {sorted(kwargs)} for space 'mobilenet'; options: "
                              "num_classes, in_chans, small_input, base_width, drop_rate, act_layer")
        return MobileNetCandidate(self.decode(arch), self.config, num_classes=num_classes, in_chans=in_chans,
                                  small_input=small_input, base_width=base_width, drop_rate=drop_rate,
                                  act_layer=act_layer)

    # -- helpers ----------------------------------------------------------------------------------------------------
    def decode(self, arch: Any) -> tuple[StageChoice, ...]:
        """The chosen values per stage."""
        return tuple(StageChoice(*(opts[i] for opts, i in zip(self.options, stage, strict=True)))
                     for stage in self._check(arch))

    def _parse_stage(self, i: int, part: str) -> tuple[int, ...]:
        m = _STAGE_RE.fullmatch(part)
        where = f"stage {i} ({part!r}) of mobilenet key"
        if m is None:
            raise ConfigError(f"{where} is not of the form k<kernel>e<expansion>d<depth>w<width><mb|sg>, "
                              "e.g. 'k3e6d2w1.0mb'")
        out = []
        for c, (name, opts) in enumerate(zip(CHOICES, self.options, strict=True)):
            text = m.group(name)
            if name == "block":
                value: Any = _FROM_ABBR.get(text)
                found = value in self._index[c]
            else:
                found = False
                for o in opts:
                    if math.isclose(float(text), float(o)):
                        value, found = o, True
                        break
            if not found:
                shown = [_ABBR[b] for b in opts] if name == "block" else list(opts)
                raise ConfigError(f"{where}: {name} {text!r} is not a choice of this space ({shown})")
            out.append(self._index[c][value])
        return tuple(out)

    def _check(self, arch: Any) -> tuple[tuple[int, ...], ...]:
        if isinstance(arch, str):
            return self.from_key(arch)
        try:
            flat = [int(v) for v in arch] if all(isinstance(v, (int, np.integer)) for v in arch) else None
            if flat is not None and len(flat) == self.num_stages * len(CHOICES):  # the flat form
                stages = tuple(tuple(flat[i:i + len(CHOICES)]) for i in range(0, len(flat), len(CHOICES)))
            else:
                stages = tuple(tuple(int(v) for v in s) for s in arch)
        except (TypeError, ValueError):
            stages = ()
        if len(stages) != self.num_stages or not all(
                len(s) == len(CHOICES) and all(0 <= v < n for v, n in zip(s, self.sizes, strict=True))
                for s in stages):
            raise ConfigError(f"a mobilenet architecture is {self.num_stages} stage tuples of {len(CHOICES)} choice "
                              f"indices ({', '.join(CHOICES)}; sizes {self.sizes.tolist()}) or a key string like "
                              f"'k3e6d2w1.0mb|...', got {arch!r}")
        return stages


class SandglassK(SandglassBlock):
    """`SandglassBlock` with k x k depthwise convs (its own are 3x3) and an explicit bottleneck width."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, hidden: int,
                 act_layer: Callable[..., nn.Module] = nn.ReLU6) -> None:
        super().__init__(cin, cout, stride, hidden=hidden, first_dw=True, act_layer=act_layer)
        if kernel != 3:
            self.dw1 = conv_bn(cin, cin, kernel, 1, cin, act_layer)
            self.dw2 = conv_bn(cout, cout, kernel, stride, cout, None)


class MobileNetCandidate(ClassifierMixin, nn.Module):
    """A member of the mobilenet space: stem -> stages -> 1x1 conv to the head width -> pooled linear."""

    def __init__(self, stages: Sequence[StageChoice], config: MobileNetSpaceConfig | None = None,
                 num_classes: int = 10, in_chans: int = 3, small_input: bool = True, base_width: float = 1.0,
                 drop_rate: float = 0.2, act_layer: Callable[..., nn.Module] = nn.ReLU6) -> None:
        super().__init__()
        cfg = config or MobileNetSpaceConfig()
        if len(stages) != len(cfg.widths):
            raise ConfigError(f"got {len(stages)} stage choices for a skeleton of {len(cfg.widths)} stages")
        if base_width <= 0:
            raise ConfigError(f"base_width must be > 0, got {base_width}")
        cin = make_divisible(cfg.stem_width * base_width, cfg.divisor)
        layers: list[nn.Module] = [conv_bn(in_chans, cin, 3, 1 if small_input else 2, 1, act_layer)]
        for i, (st, width, stride) in enumerate(zip(stages, cfg.widths, cfg.strides, strict=True)):
            if i == 0 and not small_input:
                stride = 2
            narrow = cfg.channels(width * base_width, cfg.width_mults)[st.width]
            wide = cfg.channels(narrow, cfg.expansions)[st.expansion]
            blocks: list[nn.Module] = []
            for j in range(st.depth):
                s = stride if j == 0 else 1
                if st.block == "mbconv":
                    hidden = cfg.channels(cin, cfg.expansions)[st.expansion]
                    blocks.append(InvertedResidual(cin, narrow, s, hidden / cin, act_layer, kernel=st.kernel,
                                                   hidden=hidden))
                    cin = narrow
                else:
                    blocks.append(SandglassK(cin, wide, st.kernel, s, narrow, act_layer))
                    cin = wide
            layers.append(nn.Sequential(*blocks))
        self.num_features = make_divisible(cfg.head_width * base_width, cfg.divisor)
        layers.append(conv_bn(cin, self.num_features, 1, 1, 1, act_layer))
        self.features = nn.Sequential(*layers)
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes)
        init_mobile_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
