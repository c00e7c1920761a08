"""MiniViT (Zhang et al., "MiniViT: Compressing Vision Transformers with Weight Multiplexing", CVPR 2022,
arXiv 2204.07154): weight multiplexing of a ViT-style model's transformer blocks.

`multiplex(model, share=2)` returns a copy of `model` whose `blocks` become groups of `share` consecutive layers
(the last group may be shorter); each group runs one attention and one MLP, the first layer's, with the per-layer
LayerNorms of the original layers and MiniViT's per-layer weight transformations (`slimkit.layers.multiplex`:
head mixing of the attention maps, optionally a depthwise conv before the MLP). A shared weight is one tensor: it is
counted once by `slimkit.profile.count_params` and stored once in the state dict. The transformations start as the
identity, so the copy computes exactly what the original computes once each group's layers hold the first layer's
weights.

Supported blocks: slimkit's pre-norm `Block` (T2T-ViT) and timm's ViT `Block` (DeiT, ViT; without layer scale or
q/k normalisation). Registered variants are data: `mini_t2t_vit_7` ... `mini_t2t_vit_14` (share 2, attention
transformation; `share=`, `mlp_transform=True` and the base model's own arguments such as `small_input` pass
through). The paper trains the multiplexed model by distillation from the unshared one:
`slimkit distill --teacher t2t_vit_7 --teacher-ckpt RUN --student mini_t2t_vit_7 --method kd` (`kd` is
prediction-logit distillation; the paper adds attention and hidden-state relation distillation).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.multiplex import MultiplexedAttention, MultiplexedBlocks, TokenConv
from slimkit.models.t2t_vit import build_t2t_vit
from slimkit.registry import MODELS

__all__ = ["multiplex"]

_SUPPORTED = ("slimkit.layers.tokens.Block", "timm.models.vision_transformer.Block")
_IDENTITY_PARTS = (("", "ls1"), ("", "ls2"), ("", "drop_path1"), ("", "drop_path2"), ("attn", "q_norm"),
                   ("attn", "k_norm"), ("attn", "norm"))


def _check_block(i: int, block: nn.Module) -> None:
    kind = f"{type(block).__module__}.{type(block).__qualname__}"
    if kind not in _SUPPORTED:
        raise ConfigError(f"multiplex: block {i} is a {kind}; weight multiplexing supports pre-norm ViT blocks "
                          f"({', '.join(_SUPPORTED)})")
    for owner, attr in _IDENTITY_PARTS:
        part = getattr(getattr(block, owner) if owner else block, attr, None)
        if part is not None and not isinstance(part, nn.Identity):
            where = f"{owner}.{attr}" if owner else attr
            raise ConfigError(f"multiplex: block {i} has {where} ({type(part).__name__}), which the multiplexed "
                              "layer does not run; build the model without it (no layer scale, q/k norm, drop path)")


def _group(blocks: list[nn.Module], attn_transform: bool, mlp_transform: bool, kernel_size: int,
           prefix: int) -> MultiplexedBlocks:
    first = blocks[0].attn
    attn = MultiplexedAttention(first.qkv, first.proj, first.num_heads, len(blocks), attn_transform, first.scale,
                                first.attn_drop.p, getattr(first.proj_drop, "p", 0.0))
    dim = first.qkv.in_features
    tokens = [TokenConv(dim, kernel_size, prefix) for _ in blocks] if mlp_transform else None
    return MultiplexedBlocks(attn, blocks[0].mlp, [b.norm1 for b in blocks], [b.norm2 for b in blocks], tokens)


def multiplex(model: nn.Module, share: int = 2, attn_transform: bool = True, mlp_transform: bool = False,
              kernel_size: int = 3) -> nn.Module:
    """A copy of `model` whose consecutive `share` blocks share their attention and MLP weights (MiniViT).

    `attn_transform`: per-layer head mixing before and after softmax; `mlp_transform`: per-layer LayerNorm +
    depthwise `kernel_size` conv over the token grid before the MLP (class tokens skipped). The original is unchanged.
    """
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
        raise ConfigError(f"multiplex: {type(model).__name__} has no `blocks` (nn.Sequential of transformer blocks) "
                          "to share; it works on ViT-style models such as t2t_vit_* or timm's deit_* / vit_*")
    if not isinstance(share, int) or share < 1:
        raise ConfigError(f"multiplex: share must be a positive number of layers per shared block, got {share!r}")
    for i, b in enumerate(blocks):
        _check_block(i, b)
    out = copy.deepcopy(model)
    layers = list(out.blocks)
    prefix = int(getattr(model, "num_prefix_tokens", 1 if hasattr(model, "cls_token") else 0))
    out.blocks = nn.Sequential(*[_group(layers[i:i + share], attn_transform, mlp_transform, kernel_size, prefix)
                                 for i in range(0, len(layers), share)])
    return out


_MUX_KEYS = ("share", "attn_transform", "mlp_transform", "kernel_size")


def _build_mini(base: str, **kwargs: Any) -> nn.Module:
    mux = {k: kwargs.pop(k) for k in _MUX_KEYS if k in kwargs}
    return multiplex(build_t2t_vit(base, **kwargs), **{"share": 2, **mux})


for _base in ("t2t_vit_7", "t2t_vit_14"):  # the benchmark model and the largest
    MODELS.register(f"mini_{_base}", input_size=(3, 224, 224), family="minivit", paper="arXiv:2204.07154",
                    small_input=True)(lambda _b=_base, **kw: _build_mini(_b, **kw))
