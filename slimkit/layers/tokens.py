"""Tokens-to-Token module (Yuan et al., "Tokens-to-Token ViT", ICCV 2021, arXiv 2101.11986) and plain ViT blocks.

A T2T step re-structurizes a token sequence into an image (tokens -> C x H x W) and soft-splits it again: an
unfold with overlapping k x k windows, so each new token concatenates the k*k neighbouring tokens (C*k*k wide) and
the sequence gets shorter by the stride squared. Between splits, a small one-head transformer layer (plain softmax
attention, or the paper's default Performer-style linear attention) mixes the tokens and narrows them to
`token_dim`; its residual comes from the value projection (the input width differs from the output width). The
last split is projected linearly to the backbone width.

Also here: the pre-norm ViT `Attention`, `Mlp` and `Block`, and the fixed sinusoidal position embedding T2T-ViT
adds to its tokens (computed for the actual sequence length from a per-channel code the model stores as a buffer,
so any input size works, fx traces it and pruning the embedding slices the code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import ConfigError

__all__ = [
    "Attention", "Block", "Mlp", "T2T_SPLITS", "T2T_SPLITS_SMALL", "T2TModule", "TokenAttention", "TokenLayer",
    "TokenPerformer",
    "orthogonal_random_features", "restructurize", "sinusoid_code", "sinusoid_position_embedding", "soft_split",
]


def sinusoid_code(dim: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-channel code of the sinusoidal position embedding, three length-`dim` vectors: the frequency
    10000^(-2*(j//2)/dim), one where channel j takes the sine (j even), one where it takes the cosine. A model stores
    them as buffers: pruning the embedding slices them along the channels, so every kept channel keeps its code."""
    j = torch.arange(dim)
    freq = torch.pow(10000.0, -2.0 * torch.div(j, 2, rounding_mode="floor").to(dtype) / dim)
    odd = (j % 2).to(dtype)
    return freq, 1 - odd, odd


def sinusoid_position_embedding(n: int, freq: torch.Tensor, sin_mask: torch.Tensor,
                                cos_mask: torch.Tensor) -> torch.Tensor:
    """1 x n x dim table from a `sinusoid_code`: position p, channel j -> sin (j even) / cos (j odd) of p * freq_j.
    (A sum of products with 0/1 masks rather than a `where`: the same numbers, and the graph follows it; every code
    vector meets a traced tensor first, so fx records the buffers themselves, not constants computed from them.)"""
    angle = torch.arange(n, device=freq.device, dtype=freq.dtype).unsqueeze(1) * freq
    return (torch.sin(angle) * sin_mask + torch.cos(angle) * cos_mask).unsqueeze(0)


def soft_split(x: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """N x C x H x W -> N x L x (C*k*k): overlapping k x k windows as tokens (channel-major, then kernel row/col).

    The same numbers as `F.unfold(x, kernel, padding=padding, stride=stride).transpose(1, 2)`, built from k*k strided
    slices: ONNX has no unfold, and torch exports it as index Gathers that onnxruntime runs 2-20x slower than slices
    (the soft splits were 14% of T2T-ViT-7's batch-32 time at 28x28, none of it removable by pruning)."""
    n, c, h, w = x.shape
    ho, wo = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    cols = [x[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            for i in range(kernel) for j in range(kernel)]
    return torch.stack(cols, 2).reshape(n, c * kernel * kernel, ho * wo).transpose(1, 2)


def restructurize(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """N x (h*w) x C row-major tokens -> N x C x h x w image."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, out_dim: int | None = None, act_layer: type[nn.Module] = nn.GELU,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, out_dim or dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head softmax self-attention with explicit matmuls (so every MAC is visible to counters and fx)."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"Attention: dim {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape  # heads are merged back with -1: a pruned layer keeps fewer heads than the input width
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.attn_drop(((q * self.scale) @ k.transpose(-2, -1)).softmax(-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False, drop: float = 0.0,
                 attn_drop: float = 0.0, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TokenAttention(nn.Module):
    """One-head attention that narrows `dim` -> `inner_dim`; output = v + proj(softmax(q k^T / sqrt(inner)) v)."""

    def __init__(self, dim: int, inner_dim: int, qkv_bias: bool = False) -> None:
        super().__init__()
        self.inner_dim = inner_dim
        self.qkv = nn.Linear(dim, inner_dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(inner_dim, inner_dim)

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return ((q * self.inner_dim ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).split(self.inner_dim, dim=-1)
        return v + self.proj(self.mix(q, k, v))


def orthogonal_random_features(m: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """m x d Gaussian-like projections with orthogonal rows within each block of d (Performer's ORF).

    Each row has the norm of an independent N(0, I_d) draw, so every row is marginally N(0, I_d) and
    E[exp(w.x - |x|^2/2) exp(w.y - |y|^2/2)] = exp(x.y) holds exactly.
    """
    q, r = torch.linalg.qr(torch.randn(math.ceil(m / d), d, d, generator=generator))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)  # sign fix: Haar, so rows are unbiased
    w = q.transpose(-2, -1).reshape(-1, d)[:m]
    return w * torch.randn(m, d, generator=generator).norm(dim=1, keepdim=True)


class TokenPerformer(TokenAttention):
    """The T2T paper's default token mixer: linear-cost softmax-kernel attention with positive random features.

    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m) approximates exp(q.k) = E[phi(q).phi(k)] (no 1/sqrt(d) temperature,
    as in T2T-ViT); attention = phi(Q) (phi(K)^T V) / (phi(Q) sum_t phi(K_t)). m = kernel_ratio * inner_dim fixed
    (not trained) projections, stored as a buffer.
    """

    def __init__(self, dim: int, inner_dim: int, kernel_ratio: float = 0.5, qkv_bias: bool = False,
                 eps: float = 1e-8) -> None:
        super().__init__(dim, inner_dim, qkv_bias)
        self.m = max(1, int(inner_dim * kernel_ratio))
        self.eps = eps
        self.register_buffer("features", orthogonal_random_features(self.m, inner_dim))

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x @ self.features.T - 0.5 * (x * x).sum(-1, keepdim=True)) / math.sqrt(self.m)

    def mix(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        qp, kp = self.phi(q), self.phi(k)  # N x T x m
        num = qp @ (kp.transpose(1, 2) @ v)  # N x T x inner
        den = qp @ kp.sum(1).unsqueeze(-1)  # N x T x 1
        return num / (den + self.eps)


class TokenLayer(nn.Module):
    """A T2T transformer layer: x = mixer(LN(x)) (dim -> inner_dim, value residual); x + mlp(LN(x))."""

    def __init__(self, dim: int, inner_dim: int, mixer: str = "performer", mlp_ratio: float = 1.0,
                 kernel_ratio: float = 0.5) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        if mixer == "performer":
            self.attn: TokenAttention = TokenPerformer(dim, inner_dim, kernel_ratio)
        elif mixer == "transformer":
            self.attn = TokenAttention(dim, inner_dim)
        else:
            raise ConfigError(f"TokenLayer: unknown mixer {mixer!r}; use 'performer' or 'transformer'")
        self.norm2 = nn.LayerNorm(inner_dim)
        self.mlp = Mlp(inner_dim, int(inner_dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


T2T_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding): the paper's 224 schedule, stride 16
T2T_SPLITS_SMALL = ((3, 1, 1), (3, 2, 1), (3, 2, 1))  # stride 4: 28x28 -> 7x7 tokens, 32x32 -> 8x8


class T2TModule(nn.Module):
    """Soft split -> [token layer -> re-structurize -> soft split]* -> linear projection to `embed_dim` tokens."""

    def __init__(self, in_chans: int, embed_dim: int, token_dim: int = 64,
                 splits: Sequence[tuple[int, int, int]] = T2T_SPLITS, mixer: str = "performer") -> None:
        super().__init__()
        if len(splits) < 1:
            raise ConfigError("T2TModule: splits must hold at least one (kernel, stride, padding) triple")
        self.splits = tuple(tuple(s) for s in splits)
        widths = [in_chans * self.splits[0][0] ** 2] + [token_dim * k * k for k, _, _ in self.splits[1:]]
        self.layers = nn.ModuleList(TokenLayer(widths[i], token_dim, mixer) for i in range(len(self.splits) - 1))
        self.project = nn.Linear(widths[-1], embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        for i, (k, s, p) in enumerate(self.splits):
            if i > 0:
                x = restructurize(self.layers[i - 1](x), h, w)
            x = soft_split(x, k, s, p)
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        return self.project(x)
