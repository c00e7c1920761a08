"""The NAS-Bench-201 network (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible Neural Architecture
Search", ICLR 2020): a stem, three stages of identical searched cells joined by residual reduction blocks, then
BN-ReLU, global pooling and a linear classifier. The benchmark trains it with 16 channels and 5 cells per stage.

A cell is a 4-node DAG; node j sums op_ij(node i) over i < j; node 3 is the output. Ops: `none` (zero),
`skip_connect`, `nor_conv_1x1` / `nor_conv_3x3` (ReLU-Conv-BN), `avg_pool_3x3` (stride 1, padding not counted).
The cell is given by its official string, e.g. `|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|...`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.errors import ModelError
from slimkit.models._base import ClassifierMixin
from slimkit.registry import MODELS

__all__ = ["NB201Network", "BEST_CIFAR10_CELL"]

# arch 6111: best CIFAR-10 validation (91.61%) and test (94.37%) accuracy after 200 epochs in the benchmark
BEST_CIFAR10_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(), nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout))


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


def _op(name: str, c: int) -> nn.Module:
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
    raise ModelError(f"unknown NAS-Bench-201 op {name!r}; ops are none, skip_connect, nor_conv_1x1, nor_conv_3x3, "
                     "avg_pool_3x3")


def parse_cell(cell: str) -> list[list[str]]:
    """`|a~0|+|b~0|c~1|+|...|` -> [[a], [b, c], [d, e, f]] (ops feeding nodes 1, 2, 3)."""
    nodes = [[p.split("~")[0] for p in node.split("|") if p] for node in cell.strip().split("+")]
    if [len(n) for n in nodes] != [1, 2, 3]:
        raise ModelError(f"not a NAS-Bench-201 cell string: {cell!r}")
    return nodes


class Cell(nn.Module):
    def __init__(self, cell: str, c: int) -> None:
        super().__init__()
        self.nodes = nn.ModuleList(nn.ModuleList(_op(name, c) for name in node) for node in parse_cell(cell))

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
