"""Mobile-Former parts (Chen et al., "Mobile-Former: Bridging MobileNet and Transformer", CVPR 2022).

A Mobile-Former block runs a MobileNet sub-block on the feature map X (N x C x H x W) and a small transformer, the
Former, on M global tokens Z (N x M x d), joined by two light cross attentions split into h heads along channels:

- Mobile->Former: Z <- LN(Z + [softmax(q_i k_i^T / sqrt(C/h)) k_i]_i W_O), q = Z W_Q (d -> C), k_i = v_i = the i-th
  channel group of X itself: no projection on the mobile side, so the cost is O(M H W C).
- Former: post-norm attention + FFN (ratio 2) on the M tokens.
- Former->Mobile: X <- X + [softmax(x_i k_i^T / sqrt(C/h)) v_i]_i, k = Z W_K, v = Z W_V (d -> C); X is the query.
- Mobile: conv sub-block whose activations are a dynamic ReLU, max(a1 * x, a2 * x) with per-channel slopes produced
  from the first global token by a two-layer MLP.

As in the authors' released model (which gives the paper's 11.4M parameters for the 294M variant), the Former's
attention projects only the queries (keys = values = the tokens), and Mobile->Former scales its attention output by
a token-conditioned channel gate 2 * hsigmoid(Z W_g); `kv_proj=True` / `gate=False` give the textbook forms.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import ConfigError
from slimkit.layers.conv import conv_bn
from slimkit.layers.micro import ChannelShuffle

__all__ = [
    "ChannelShuffle", "Former", "FormerToMobile", "MobileSubBlock", "MobileToFormer", "TokenDynamicReLU",
    "pointwise_bn",
]


def _check_heads(channels: int, num_heads: int, where: str) -> None:
    if num_heads < 1 or channels % num_heads:
        raise ConfigError(f"{where}: {channels} channels cannot be split into {num_heads} heads; "
                          "choose num_heads dividing the channel count")


class MobileToFormer(nn.Module):
    """Tokens attend to the local feature map (keys = values = the map's channel groups, no projection on them)."""

    def __init__(self, channels: int, token_dim: int, num_heads: int = 2, gate: bool = True) -> None:
        super().__init__()
        _check_heads(channels, num_heads, "MobileToFormer")
        self.num_heads = num_heads
        self.scale = (channels // num_heads) ** -0.5
        self.q = nn.Linear(token_dim, channels)
        self.gate = nn.Linear(token_dim, channels) if gate else None
        self.proj = nn.Linear(channels, token_dim)
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        m = tokens.shape[1]
        q = self.q(tokens).reshape(n, m, self.num_heads, -1).transpose(1, 2)  # N x h x M x C/h
        kv = x.reshape(n, self.num_heads, -1, h * w)  # N x h x C/h x HW
        attn = torch.softmax((q @ kv) * self.scale, dim=-1)  # N x h x M x HW
        out = (attn @ kv.transpose(-1, -2)).transpose(1, 2).reshape(n, m, -1)  # N x M x C
        if self.gate is not None:
            out = out * (2.0 * F.hardsigmoid(self.gate(tokens)))
        return self.norm(tokens + self.proj(out))


class FormerToMobile(nn.Module):
    """Each pixel (its channel groups are the queries, unprojected) attends to the projected tokens."""

    def __init__(self, channels: int, token_dim: int, num_heads: int = 2) -> None:
        super().__init__()
        _check_heads(channels, num_heads, "FormerToMobile")
        self.num_heads = num_heads
        self.scale = (channels // num_heads) ** -0.5
        self.k = nn.Linear(token_dim, channels)
        self.v = nn.Linear(token_dim, channels)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        m = tokens.shape[1]
        q = x.reshape(n, self.num_heads, -1, h * w).transpose(-1, -2)  # N x h x HW x C/h
        k = self.k(tokens).transpose(1, 2).reshape(n, self.num_heads, -1, m)  # N x h x C/h x M
        v = self.v(tokens).transpose(1, 2).reshape(n, self.num_heads, -1, m)
        attn = torch.softmax((q @ k) * self.scale, dim=-1)  # N x h x HW x M
        out = (attn @ v.transpose(-1, -2)).transpose(-1, -2).reshape(n, -1, h, w)
        return x + out


class Former(nn.Module):
    """Post-norm transformer layer on the M tokens: multi-head attention then an FFN with expansion 2."""

    def __init__(self, token_dim: int, num_heads: int = 4, ffn_ratio: float = 2.0, kv_proj: bool = False) -> None:
        super().__init__()
        _check_heads(token_dim, num_heads, "Former")
        self.num_heads = num_heads
        self.scale = (token_dim // num_heads) ** -0.5
        self.q = nn.Linear(token_dim, token_dim)
        self.kv = nn.Linear(token_dim, 2 * token_dim) if kv_proj else None
        self.proj = nn.Linear(token_dim, token_dim)
        self.norm1 = nn.LayerNorm(token_dim)
        hidden = int(token_dim * ffn_ratio)
        self.ffn = nn.Sequential(nn.Linear(token_dim, hidden), nn.GELU(), nn.Linear(hidden, token_dim))
        self.norm2 = nn.LayerNorm(token_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, m, _ = z.shape
        q = self.q(z).reshape(n, m, self.num_heads, -1).transpose(1, 2)  # N x h x M x d/h
        if self.kv is None:
            k = v = z.reshape(n, m, self.num_heads, -1).transpose(1, 2)
        else:
            k, v = self.kv(z).reshape(n, m, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)  # N x h x M x M
        z = self.norm1(z + self.proj((attn @ v).transpose(1, 2).reshape(n, m, -1)))
        return self.norm2(z + self.ffn(z))


class TokenDynamicReLU(nn.Module):
    """max(a1 * x, a2 * x) per channel; a1 in [0, 2], a2 in [-1, 1] come from the first token through an MLP.

    With the MLP output at zero the slopes are a1 = 1, a2 = 0, i.e. a plain ReLU.
    """

    def __init__(self, channels: int, token_dim: int, reduction: int = 4) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(token_dim, token_dim // reduction), nn.ReLU(),
                                 nn.Linear(token_dim // reduction, 2 * channels))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        coef = (F.hardsigmoid(self.mlp(tokens[:, 0])) - 0.5) * 2.0  # N x 2C in [-1, 1]
        a1, a2 = coef[:, :, None, None].chunk(2, dim=1)
        return torch.maximum(x * (a1 + 1.0), x * a2)


def pointwise_bn(cin: int, cout: int, groups: int = 1) -> nn.Sequential:
    """1x1 conv + BN; grouped ones are followed by a channel shuffle (the paper's 26M variant uses 4 groups)."""
    if cin % groups or cout % groups:
        raise ConfigError(f"pointwise conv {cin} -> {cout} channels cannot use {groups} groups; "
                          "use groups dividing both channel counts")
    layers = conv_bn(cin, cout, 1, 1, groups)
    return layers.append(ChannelShuffle(groups)) if groups > 1 else layers


class MobileSubBlock(nn.Module):
    """The block's MobileNet part, every activation a token-conditioned dynamic ReLU.

    stride 1: pointwise (C_in -> e1 C_in) -> depthwise 3x3 -> pointwise (-> C_out).
    stride 2: depthwise 3x3 / 2 expanding to e1 C_in -> pointwise (-> C_out) -> depthwise 3x3 expanding to e2 C_out
    -> pointwise (-> C_out), with a skip around the last two (the paper's downsampling block).
    Pointwise convs may be grouped (`groups`, each followed by a channel shuffle). The outer residual (stride 1,
    C_in == C_out) is added by the Mobile-Former block.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int, token_dim: int, expand2: int = 4,
                 groups: int = 1) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"MobileSubBlock: stride must be 1 or 2, got {stride}")
        self.stride = stride
        hidden = cin * expand
        if stride == 1:
            self.conv1 = pointwise_bn(cin, hidden, groups)
            self.conv2 = conv_bn(hidden, hidden, 3, 1, hidden)
            self.act2 = TokenDynamicReLU(hidden, token_dim)
            self.conv3 = pointwise_bn(hidden, cout, groups)
        else:
            hidden2 = cout * expand2
            self.conv1 = conv_bn(cin, hidden, 3, 2, cin)
            self.conv2 = pointwise_bn(hidden, cout, groups)
            self.conv3 = conv_bn(cout, hidden2, 3, 1, cout)
            self.act2 = TokenDynamicReLU(hidden2, token_dim)
            self.conv4 = pointwise_bn(hidden2, cout, groups)
        self.act1 = TokenDynamicReLU(hidden, token_dim)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.conv1(x), tokens)
        if self.stride == 1:
            return self.conv3(self.act2(self.conv2(x), tokens))
        x = self.conv2(x)
        return x + self.conv4(self.act2(self.conv3(x), tokens))
