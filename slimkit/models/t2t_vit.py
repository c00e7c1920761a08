"""T2T-ViT (Yuan et al., "Tokens-to-Token ViT: Training Vision Transformers from Scratch on ImageNet", ICCV 2021).

A Tokens-to-Token module (two soft-split + token-transformer steps and a final soft split, overall stride 16 at
224x224: 14x14 tokens) feeds a deep-narrow ViT backbone with a class token and a fixed sinusoidal position
embedding. Variants differ in backbone width / depth / heads / MLP ratio and are data. `tokens_type="performer"`
(the paper's T2T-ViT-n) or `"transformer"` (the paper's T2T-ViT_t-n, plain attention in the T2T module).
`small_input=True` uses a stride-4 T2T schedule (3x3 stride 1 first split) so 28x28 / 32x32 images give 7x7 / 8x8
tokens; the position embedding is computed for the actual token count, so any input size works (from
per-channel code buffers, so the embedding width prunes like any other channel).

At 224x224 / 1000 classes (MACs = linear layers + attention matmuls, as the paper counts):
T2T-ViT-7 4.3M params 1.1G MACs, -10 5.9M / 1.5G, -12 6.9M / 1.8G, -14 21.5M / 4.8G.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.tokens import (
    T2T_SPLITS,
    T2T_SPLITS_SMALL,
    Block,
    T2TModule,
    sinusoid_code,
    sinusoid_position_embedding,
)
from slimkit.models._base import ClassifierMixin, init_vit_weights
from slimkit.registry import MODELS

__all__ = ["T2TViT", "build_t2t_vit"]


class T2TViT(ClassifierMixin, nn.Module):
    def __init__(self, embed_dim: int = 384, depth: int = 14, num_heads: int = 6, mlp_ratio: float = 3.0,
                 token_dim: int = 64, tokens_type: str = "performer", num_classes: int = 10, in_chans: int = 3,
                 small_input: bool = False, qkv_bias: bool = False, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ConfigError(f"T2TViT: embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if tokens_type not in ("performer", "transformer"):
            raise ConfigError(f"T2TViT: tokens_type {tokens_type!r} is unknown; use 'performer' or 'transformer'")
        self.num_features = self.embed_dim = embed_dim
        self.num_classes = num_classes
        splits = T2T_SPLITS_SMALL if small_input else T2T_SPLITS
        self.tokens = T2TModule(in_chans, embed_dim, token_dim, splits, tokens_type)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # the position code's per-channel frequencies and phases: sliced when the embedding is pruned; not in the
        # state dict (a fixed function of the width), so checkpoints from before it load unchanged
        for name, code in zip(("pos_freq", "pos_sin", "pos_cos"), sinusoid_code(embed_dim), strict=True):
            self.register_buffer(name, code, persistent=False)
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        init_vit_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> N x (1 + tokens) x embed_dim, class token first, after the final LayerNorm."""
        x = self.tokens(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + sinusoid_position_embedding(x.shape[1], self.pos_freq, self.pos_sin,
                                                                    self.pos_cos))
        return self.norm(self.blocks(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x[:, 0]
        return x if pre_logits else self.head(self.head_drop(x))


_CFGS: dict[str, dict[str, Any]] = {
    "t2t_vit_7": {"embed_dim": 256, "depth": 7, "num_heads": 4, "mlp_ratio": 2.0},
    "t2t_vit_10": {"embed_dim": 256, "depth": 10, "num_heads": 4, "mlp_ratio": 2.0},
    "t2t_vit_12": {"embed_dim": 256, "depth": 12, "num_heads": 4, "mlp_ratio": 2.0},
    "t2t_vit_14": {"embed_dim": 384, "depth": 14, "num_heads": 6, "mlp_ratio": 3.0},
}


def build_t2t_vit(variant: str = "t2t_vit_14", **kwargs: Any) -> T2TViT:
    """Build a registered variant; keyword arguments (tokens_type, small_input, num_classes, ...) override."""
    return T2TViT(**{**_CFGS[variant], **kwargs})


for _name in _CFGS:
    MODELS.register(_name, input_size=(3, 224, 224), family="t2t_vit", paper="arXiv:2101.11986", small_input=True)(
        lambda _n=_name, **kw: build_t2t_vit(_n, **kw)
    )
