"""Equivalent rewrites: modules whose forward cannot be pruned as written get a forward that computes the same
function in a prunable form (surgery: this mutates, and says so).

torchvision's Swin / Swin-V2 window attention derives the head width from the input width
(`qkv.reshape(B, N, 3, heads, C // heads)`, scale `(C // heads) ** -0.5`, output reshaped to `C`), and computes its
per-head position bias and its patch merging in fx leaf functions, so neither its heads nor the residual stream
can be cut. The rewrite keeps every parameter, buffer and name and swaps the module's class for a subclass whose
forward reads `head_dim` and the trained `scale` from attributes (set at rewrite time), computes the bias inline,
reshapes the output with -1, and merges patches by timm's pad + reshape. The output is the same (checked by the
tests; Swin-V2's key bias, which torchvision zeroes at every call, is zeroed once in the parameter). A rewritten
model saves and reloads like any pruned model: the record lists the rewritten modules and `replay` rewrites them
first.

timm's DaViT window and channel attention derive the head width the same way (`reshape(B, N, 3, heads, C //
heads)`, output reshaped to `C`): their rewrite reads `head_dim` (set at rewrite time) and reshapes the output with
-1; channel attention (each head attends over its own features) stays exact when whole heads go.

timm's Twins locally-grouped (window) and global sub-sampled attention do the same (`reshape(..., heads, C //
heads)` with C the input width, output reshaped to C): their rewrite reads `head_dim`, merges the output with -1 and
flattens the sub-sampling convolution's output (`reshape(B, C, -1)` tied its width to the input's), so heads, the
residual stream and the sub-sampling channels all prune.

Rewrites are declared per class in `REWRITES` (the module's qualified class name -> a function that rewrites one
instance in place); generic code never names a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["REWRITES", "rewrite_model", "apply_rewrites", "window_attention"]


def window_attention(x: torch.Tensor, qkv: nn.Linear, proj: nn.Linear, bias: torch.Tensor, window: list[int],
                     num_heads: int, head_dim: int, scale: float, shift: list[int], attn_drop: float = 0.0,
                     drop: float = 0.0, logit_scale: torch.Tensor | None = None, training: bool = False
                     ) -> torch.Tensor:
    """torchvision's `shifted_window_attention` with the head width and scale as arguments (not from C)."""
    b, h, w, c = x.shape
    pad_r, pad_b = (window[1] - w % window[1]) % window[1], (window[0] - h % window[0]) % window[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, ph, pw, _ = x.shape
    shift = [0 if window[0] >= ph else shift[0], 0 if window[1] >= pw else shift[1]]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    nw = (ph // window[0]) * (pw // window[1])
    x = x.view(b, ph // window[0], window[0], pw // window[1], window[1], c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b * nw, window[0] * window[1], c)
    q, k, v = F.linear(x, qkv.weight, qkv.bias).reshape(x.size(0), x.size(1), 3, num_heads, head_dim).permute(
        2, 0, 3, 1, 4).unbind(0)
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * scale) @ k.transpose(-2, -1)
    attn = attn + bias
    if sum(shift) > 0:
        # torchvision's region ids (three bands per axis: before the last window, in it before the shift, after),
        # from comparisons instead of slice assignment, so the mask traces; only equality within a window matters
        hi, wi = torch.arange(ph, device=x.device), torch.arange(pw, device=x.device)
        mask = (((hi >= ph - window[0]).long() + (hi >= ph - shift[0]).long()).unsqueeze(1) * 3
                + ((wi >= pw - window[1]).long() + (wi >= pw - shift[1]).long()).unsqueeze(0)).to(x.dtype)
        mask = mask.view(ph // window[0], window[0], pw // window[1], window[1]).permute(0, 2, 1, 3)
        mask = mask.reshape(nw, window[0] * window[1])
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        attn = attn.view(x.size(0) // nw, nw, num_heads, x.size(1), x.size(1)) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, x.size(1), x.size(1))
    attn = F.dropout(F.softmax(attn, dim=-1), p=attn_drop, training=training)
    x = F.linear((attn @ v).transpose(1, 2).reshape(x.size(0), x.size(1), -1), proj.weight, proj.bias)
    x = F.dropout(x, p=drop, training=training)
    x = x.view(b, ph // window[0], pw // window[1], window[0], window[1], -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, -1)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :h, :w, :].contiguous()


def _relative_position_bias(self: Any) -> torch.Tensor:
    """torchvision's bias, inline (its helper is an fx leaf, which hides that the bias is per head)."""
    n = self.window_size[0] * self.window_size[1]
    table = self.relative_position_bias_table if not hasattr(self, "cpb_mlp") else \
        self.cpb_mlp(self.relative_coords_table).flatten(0, -2)
    bias = table[self.relative_position_index].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
    return 16 * torch.sigmoid(bias) if hasattr(self, "cpb_mlp") else bias


def _swin_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    return window_attention(x, self.qkv, self.proj, _relative_position_bias(self), self.window_size,
                            self.num_heads, self.head_dim, self.scale, self.shift_size, self.attention_dropout,
                            self.dropout, getattr(self, "logit_scale", None), self.training)


_SUBCLASSES: dict[type, type] = {}


def _rewrite_swin(m: nn.Module) -> None:
    """torchvision ShiftedWindowAttention(V2): explicit head width and trained scale, prunable forward."""
    m.head_dim = m.qkv.out_features // (3 * m.num_heads)
    m.scale = m.head_dim ** -0.5
    if hasattr(m, "logit_scale") and m.qkv.bias is not None:  # V2 zeroes the key bias at every call: once here
        with torch.no_grad():
            m.qkv.bias[m.qkv.out_features // 3: 2 * m.qkv.out_features // 3] = 0
    _swap_class(m, _swin_forward)


def _merge_patches(x: torch.Tensor) -> torch.Tensor:
    """torchvision's `_patch_merging_pad` (an fx leaf) as pad + reshape: the same (h, w) -> 4C order, traceable."""
    x = F.pad(x, (0, 0, 0, x.shape[-2] % 2, 0, x.shape[-3] % 2))
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)


def _merging_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    x = _merge_patches(x)
    if self._norm_first:
        return self.reduction(self.norm(x))
    return self.norm(self.reduction(x))


def _swap_class(m: nn.Module, forward: Callable[..., torch.Tensor]) -> None:
    cls = type(m)
    if cls not in _SUBCLASSES:
        _SUBCLASSES[cls] = type(f"Prunable{cls.__name__}", (cls,), {"forward": forward, "__module__": __name__})
    m.__class__ = _SUBCLASSES[cls]


def _rewrite_merging(m: nn.Module) -> None:
    """torchvision PatchMerging(V2): the 2x2 neighbourhood gathered by a reshape the graph follows."""
    m._norm_first = not type(m).__name__.endswith("V2")  # V1: norm then reduction; V2: reduction then norm
    _swap_class(m, _merging_forward)


def _davit_forward(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm DaViT's WindowAttention / ChannelAttention with the head width from `head_dim`."""
    b, n, _ = x.shape
    q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    if self._channel:  # channel attention: a head's features attend over each other
        x = (((k * self.scale).transpose(-1, -2) @ v).softmax(dim=-1) @ q.transpose(-1, -2)).transpose(-1, -2)
    else:
        x = _attend(q, k, v, self.scale)
    return self.proj(x.transpose(1, 2).reshape(b, n, -1))


def _rewrite_davit(m: nn.Module) -> None:
    """timm DaViT WindowAttention / ChannelAttention: explicit head width, output merged with -1."""
    m.head_dim = m.qkv.out_features // (3 * m.num_heads)
    m._channel = type(m).__name__ == "ChannelAttention"
    _swap_class(m, _davit_forward)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
            drop: nn.Module | None = None) -> torch.Tensor:
    """softmax(q k^T * scale) v, with attention dropout `drop` when the module has one."""
    attn = ((q * scale) @ k.transpose(-2, -1)).softmax(dim=-1)
    return (drop(attn) if drop is not None else attn) @ v


def _twins_local_forward(self: Any, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """timm Twins' LocallyGroupedAttn (window attention over ws x ws windows, zero-padded) with explicit head width."""
    b, n, c = x.shape
    h, w, ws = size[0], size[1], self.ws
    x = F.pad(x.view(b, h, w, c), (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
    gh, gw = x.shape[1] // ws, x.shape[2] // ws
    x = x.reshape(b, gh, ws, gw, ws, c).transpose(2, 3)
    q, k, v = self.qkv(x).reshape(b, gh * gw, ws * ws, 3, self.num_heads, self.head_dim).permute(
        3, 0, 1, 4, 2, 5).unbind(0)
    x = _attend(q, k, v, self.scale, self.attn_drop).transpose(2, 3).reshape(b, gh, gw, ws, ws, -1)
    x = x.transpose(2, 3).reshape(b, gh * ws, gw * ws, -1)[:, :h, :w, :].contiguous()
    return self.proj_drop(self.proj(x.reshape(b, n, -1)))


def _twins_global_forward(self: Any, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """timm Twins' GlobalSubSampleAttn (keys / values from a strided-conv sub-sampling) with explicit head width."""
    b, n, c = x.shape
    q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).permute(0, 2, 1, 3)
    if self.sr is not None:
        x = self.norm(self.sr(x.permute(0, 2, 1).reshape(b, c, *size)).flatten(2).transpose(1, 2))
    k, v = self.kv(x).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return self.proj_drop(self.proj(_attend(q, k, v, self.scale, self.attn_drop).transpose(1, 2).reshape(b, n, -1)))


def _rewrite_twins(m: nn.Module) -> None:
    """timm Twins LocallyGroupedAttn / GlobalSubSampleAttn: explicit head width, output merged with -1."""
    m.head_dim = m.proj.in_features // m.num_heads
    _swap_class(m, _twins_local_forward if hasattr(m, "qkv") else _twins_global_forward)


REWRITES: dict[str, Callable[[nn.Module], None]] = {
    "timm.models.davit.ChannelAttention": _rewrite_davit,
    "timm.models.davit.WindowAttention": _rewrite_davit,
    "timm.models.twins.GlobalSubSampleAttn": _rewrite_twins,
    "timm.models.twins.LocallyGroupedAttn": _rewrite_twins,
    "torchvision.models.swin_transformer.PatchMerging": _rewrite_merging,
    "torchvision.models.swin_transformer.PatchMergingV2": _rewrite_merging,
    "torchvision.models.swin_transformer.ShiftedWindowAttention": _rewrite_swin,
    "torchvision.models.swin_transformer.ShiftedWindowAttentionV2": _rewrite_swin,
}


def _qualname(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def rewrite_model(model: nn.Module) -> list[str]:
    """Rewrite (in place) every module with a declared rewrite; the names rewritten."""
    names = [n for n, m in model.named_modules() if _qualname(m) in REWRITES]
    apply_rewrites(model, names)
    return names


def apply_rewrites(model: nn.Module, names: list[str]) -> nn.Module:
    """Rewrite (in place) the named modules, as a pruning record lists them."""
    for n in names:
        m = model.get_submodule(n)
        fn = REWRITES.get(_qualname(m))
        if fn is not None:
            fn(m)
    return model


def needs_rewrite(model: nn.Module) -> bool:
    return any(_qualname(m) in REWRITES for m in model.modules())
