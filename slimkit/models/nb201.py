"""The NAS-Bench-201 network (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search", ICLR 2020): a stem, three stages of identical searched cells joined by residual reduction blocks, then
BN-ReLU, global pooling and a linear classifier. The benchmark trains it with 16 channels and 5 cells per stage.

A cell is a 4-node DAG; node j sums op_ij(node i) over i < j; node 3 is the output. Ops: `none` (zero),
`skip_connect`, `nor_conv_1x1` / `nor_conv_3x3` (ReLU-Conv-BN), `avg_pool_3x3` (stride 1, padding not counted).
The cell is given by its official string, e.g. `|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|...`: this file
owns the format (`OPS`, `EDGES`, `cell_to_str`, `str_to_cell`) and the ops (`make_op`), which the search space and
the one-shot supernet reuse.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError, ModelError
from slimkit.models._base import ClassifierMixin
from slimkit.registry import MODELS

__all__ = ["BEST_CIFAR10_CELL", "EDGES", "OPS", "NB201Network", "ResBlock", "cell_to_str", "make_op", "str_to_cell"]

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from node, to node), in cell-string order

# arch 6111: best CIFAR-10 validation (91.61%) and test (94.37%) accuracy after 200 epochs in the benchmark
BEST_CIFAR10_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


def make_op(name: str, c: int) -> nn.Module:
    """The NAS-Bench-201 op `name` (one of `OPS`) on `c` channels."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, 1, 1, count_include_pad=False)
    raise ModelError(f"unknown NAS-Bench-201 op {name!r}; ops are {', '.join(OPS)}")


def cell_to_str(cell: tuple[int, ...]) -> str:
    """Op indices in `EDGES` order -> the official cell string."""
    nodes, k = [], 0
    for j in (1, 2, 3):
        nodes.append("|" + "|".join(f"{OPS[cell[k + i]]}~{i}" for i in range(j)) + "|")
        k += j
    return "+".join(nodes)


def str_to_cell(s: str) -> tuple[int, ...]:
    """The official cell string -> op indices in `EDGES` order (a malformed string is a ConfigError)."""
    try:
        nodes = s.strip().split("+")
        ops: list[int] = []
        if len(nodes) != 3:
            raise ValueError
        for j, node in enumerate(nodes, start=1):
            parts = [p for p in node.split("|") if p]
            if len(parts) != j:
                raise ValueError
            for i, part in enumerate(parts):
                name, src = part.split("~")
                if int(src) != i:
                    raise ValueError
                ops.append(OPS.index(name))
        return tuple(ops)
    except (ValueError, AttributeError):
        raise ConfigError(f"not a NAS-Bench-201 cell string: {s!r}; expected e.g. "
                          "'|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|avg_pool_3x3~2|'"
                          ) from None


class Cell(nn.Module):
    def __init__(self, cell: str, c: int) -> None:
        super().__init__()
        ops = [OPS[o] for o in str_to_cell(cell)]
        self.nodes = nn.ModuleList(nn.ModuleList(make_op(name, c) for name in ops[k:k + j])
                                   for j, k in ((1, 0), (2, 1), (3, 3)))  # the ops feeding nodes 1, 2, 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for ops in self.nodes:
            out = ops[0](states[0])
            for i in range(1, len(ops)):
                out = out + ops[i](states[i])
            states.append(out)
        return states[-1]


class ResBlock(nn.Module):
    """The benchmark's reduction block: two ReLU-Conv-BN 3x3 (first strided), avg-pool + 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.a, self.b = ReLUConvBN(cin, cout, 3, 2), ReLUConvBN(cout, cout, 3, 1)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.shortcut(x)


class NB201Network(ClassifierMixin, nn.Module):
    def __init__(self, cell: str = BEST_CIFAR10_CELL, num_classes: int = 10, in_chans: int = 3, channels: int = 16,
                 cells_per_stage: int = 5, drop_rate: float = 0.0) -> None:
        super().__init__()
        if channels < 1 or cells_per_stage < 1:
            raise ModelError(f"channels and cells_per_stage must be >= 1, got {channels}, {cells_per_stage}")
        self.cell = cell
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_chans, channels, 3, 1, 1, bias=False),
                                                 nn.BatchNorm2d(channels))]
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResBlock(c, 2 * c))
                c *= 2
            layers += [Cell(cell, c) for _ in range(cells_per_stage)]
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.num_classes, self.num_features = num_classes, c
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(c, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _nb201(**kwargs: Any) -> NB201Network:
    return NB201Network(**kwargs)


MODELS.register("nb201_c10best", input_size=(3, 32, 32), family="nb201", small_input=True,
                paper="arXiv:2001.00326")(_nb201)
