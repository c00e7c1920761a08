"""Input-dependent layers from Chen et al.: Dynamic ReLU (ECCV 2020, arXiv:2003.10027) and Dynamic Convolution
(CVPR 2020, arXiv:1912.03458).

* Dynamic ReLU: y_c = max_k (a^k_c(x) * x_c + b^k_c(x)). A hyper-function of the global context (average pool ->
  FC -> ReLU -> FC, normalised to [-1, 1] by 2 * hard_sigmoid - 1) gives residuals around a ReLU:
  a^k = alpha_k + lambda_a * da^k, b^k = beta_k + lambda_b * db^k with alpha = (1, 0, ...), beta = 0,
  lambda = (1.0, 0.5). Three variants: A (coefficients shared by all channels and positions), B (per channel,
  the paper's default), C (per channel, scaled per position by a spatial attention
  pi = min(gamma * softmax(conv1x1(x) / tau), 1) with gamma = HW / 3; pi >= 0 commutes with the max).
* Dynamic Convolution: K parallel kernels aggregated per input, W(x) = sum_k pi_k(x) W_k, b(x) = sum_k pi_k(x) b_k,
  pi = softmax(FC(ReLU(FC(pool(x)))) / T). The temperature is annealed from 30 to 1 over the first epochs
  (`annealed_temperature`, `set_dynamic_temperature`) so that all kernels train early. The aggregated conv costs one
  conv plus K x the weight count in multiply-adds, far less than K convs.

Exported (ONNX) graphs compute the K convolutions and mix their outputs, which is equal by linearity and keeps the
batch size dynamic (an aggregated kernel per sample needs a conv whose group count is the batch size).
`DynamicConv2d.fuse(attention)` is the protocol for inference simplification (see `slimkit.layers.fuse`): with a
fixed attention vector the block is an ordinary `nn.Conv2d`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import ConfigError
from slimkit.registry import CHANNEL_RULES

__all__ = ["DynamicReLU", "DynamicConv2d", "annealed_temperature", "set_dynamic_temperature"]


class DynamicReLU(nn.Module):
    def __init__(self, channels: int, mode: str = "B", k: int = 2, reduction: int = 8, min_hidden: int = 4,
                 lambdas: tuple[float, float] = (1.0, 0.5), init_a: Sequence[float] | None = None,
                 spatial_temperature: float = 10.0) -> None:
        super().__init__()
        mode = mode.upper()
        if mode not in ("A", "B", "C"):
            raise ConfigError(f"DynamicReLU mode {mode!r}: use 'A' (shared), 'B' (channel-wise) or 'C' "
                              "(channel- and spatial-wise)")
        if k < 1:
            raise ConfigError(f"DynamicReLU needs k >= 1 linear pieces, got k={k}")
        self.mode, self.k = mode, k
        self.lambdas = tuple(float(v) for v in lambdas)
        init = list(init_a) if init_a is not None else [1.0] + [0.0] * (k - 1)
        if len(init) != k:
            raise ConfigError(f"DynamicReLU init_a has {len(init)} values for k={k} pieces")
        self.init_a = tuple(float(v) for v in init)
        hidden = max(min_hidden, channels // reduction)
        n_coef = 2 * k * (1 if mode == "A" else channels)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, n_coef)
        self.spatial = nn.Conv2d(channels, 1, 1) if mode == "C" else None
        self.spatial_temperature = spatial_temperature

    def coefficients(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The slopes a^k and intercepts b^k, each N x C x 1 x 1 (N x 1 x 1 x 1 for mode A)."""
        theta = 2.0 * F.hardsigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3)))))) - 1.0
        parts = theta.chunk(2 * self.k, dim=1)  # [da_1 .. da_k, db_1 .. db_k], each N x C (N x 1 for A)
        # indexed one by one (not iterated) so that torch.fx traces it and the pruning engine sees the layout
        a = [parts[i][:, :, None, None] * self.lambdas[0] + self.init_a[i] for i in range(self.k)]
        b = [parts[self.k + i][:, :, None, None] * self.lambdas[1] for i in range(self.k)]
        return a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.coefficients(x)
        y = functools.reduce(torch.maximum, [x * ak + bk for ak, bk in zip(a, b, strict=True)])
        if self.spatial is not None:
            z = self.spatial(x)  # N x 1 x H x W
            hw = z.shape[2] * z.shape[3]
            pi = torch.softmax(z.flatten(2) / self.spatial_temperature, dim=-1) * (hw / 3.0)
            y = y * pi.clamp(max=1.0).view_as(z)
        return y

    def extra_repr(self) -> str:
        return f"{self.fc1.in_features}, mode={self.mode}, k={self.k}"


@CHANNEL_RULES.register("dynamic_conv2d", rule="conv", pooled_input="fc1")  # its kernel attention reads all inputs
class DynamicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, groups: int = 1, bias: bool = False, num_kernels: int = 4,
                 reduction: int = 4, min_hidden: int = 4, temperature: float = 30.0) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"DynamicConv2d: {in_channels} -> {out_channels} channels do not split into "
                              f"{groups} groups; choose groups dividing both")
        if num_kernels < 1:
            raise ConfigError(f"DynamicConv2d needs num_kernels >= 1, got {num_kernels}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride = kernel_size, stride
        self.padding = kernel_size // 2 if padding is None else padding
        self.num_kernels = num_kernels
        # a buffer, so a trained model saves (and reloads with) the temperature it ended training at
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.fixed_attention: torch.Tensor | None = None  # set by fix_attention(): the layer is then a plain conv
        # out x in/groups x K x kh x kw: the channel dimensions first, as in nn.Conv2d, so that pruning slices them
        # the same way
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, num_kernels, kernel_size,
                                               kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels, num_kernels)) if bias else None
        hidden = max(min_hidden, in_channels // reduction)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, num_kernels)
        for k in range(num_kernels):  # each kernel initialised like an ordinary conv of this shape
            nn.init.kaiming_normal_(self.weight.data[:, :, k], mode="fan_out")

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """pi(x): N x K, softmax over the kernels at the current temperature (or the fixed attention)."""
        if self.fixed_attention is not None:
            return self.fixed_attention.to(x.dtype).expand(x.shape[0], -1)
        return torch.softmax(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))) / self.temperature, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pi = self.attention(x)
        if torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting():
            return self._mixed_outputs(x, pi)
        n = x.shape[0]
        w = torch.einsum("nk,oikhw->noihw", pi, self.weight).reshape(-1, *self.weight.shape[1:2],
                                                                       *self.weight.shape[3:])
        b = torch.einsum("nk,ok->no", pi, self.bias).reshape(-1) if self.bias is not None else None
        # one grouped conv over the batch: sample i uses its own aggregated kernel
        y = F.conv2d(x.reshape(1, -1, *x.shape[2:]), w, b, self.stride, self.padding, groups=self.groups * n)
        return y.reshape(n, -1, *y.shape[2:])

    def _mixed_outputs(self, x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """sum_k pi_k conv(x, W_k): equal by linearity, for exported graphs, whose conv `group` attribute cannot
        depend on the batch size (costs K convolutions instead of one)."""
        y = 0.0
        for k in range(self.num_kernels):
            b = self.bias[:, k] if self.bias is not None else None
            out = F.conv2d(x, self.weight[:, :, k], b, self.stride, self.padding, groups=self.groups)
            y = y + out * pi[:, k, None, None, None]
        return y

    def _check_attention(self, attention: torch.Tensor | Sequence[float]) -> torch.Tensor:
        pi = torch.as_tensor(attention, dtype=self.weight.dtype, device=self.weight.device).flatten()
        if pi.numel() != self.num_kernels:
            raise ConfigError(f"DynamicConv2d: attention has {pi.numel()} weights for {self.num_kernels} kernels")
        return pi

    def fix_attention(self, attention: torch.Tensor | Sequence[float] | None) -> None:
        """Use the same K kernel weights for every input (None: back to input-dependent attention)."""
        self.fixed_attention = None if attention is None else self._check_attention(attention)[None]

    @property
    def can_fuse(self) -> bool:
        return self.fixed_attention is not None

    def fuse(self, attention: torch.Tensor | Sequence[float] | None = None) -> nn.Conv2d:
        """The ordinary conv this layer equals when the kernel attention is fixed (`attention`, K weights, or the
        one set by `fix_attention`)."""
        if attention is None and self.fixed_attention is None:
            raise ConfigError("DynamicConv2d.fuse: the kernel attention depends on the input; pass attention=[K "
                              "weights] or call fix_attention() first")
        pi = self._check_attention(self.fixed_attention if attention is None else attention)
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                         groups=self.groups, bias=self.bias is not None)
        with torch.no_grad():
            conv.weight.copy_(torch.einsum("k,oikhw->oihw", pi, self.weight))
            if self.bias is not None:
                conv.bias.copy_(self.bias @ pi)
        return conv.to(self.weight.device)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"groups={self.groups}, num_kernels={self.num_kernels}, temperature={float(self.temperature):g}")


def annealed_temperature(epoch: float, start: float = 30.0, end: float = 1.0, epochs: float = 10.0) -> float:
    """The paper's schedule: linear from `start` to `end` over the first `epochs` epochs, then `end`."""
    if epochs <= 0:
        return end
    return start + (end - start) * min(max(epoch / epochs, 0.0), 1.0)


def set_dynamic_temperature(model: nn.Module, temperature: float) -> int:
    """Set the kernel-attention temperature of every DynamicConv2d in `model`; returns how many were set."""
    mods = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    for m in mods:
        m.temperature.fill_(float(temperature))
    return len(mods)
