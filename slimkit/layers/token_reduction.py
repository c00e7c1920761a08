"""Token reduction: modules that shorten a transformer's token sequence (N x T x C -> N x T' x C, T' fixed).

Each keeps the `num_prefix` leading tokens (class / distillation tokens) untouched and first, and reduces the
patch tokens after them to a fixed count, so every shape is static: the modules trace, export to ONNX and count
their MACs like any layer. They have no parameter along the channels and register it (`CHANNEL_RULES`, rule "pass"), so
channel pruning passes through them.

- `TokenSelect`: keeps a fixed set of patch positions (an index buffer), chosen once from calibration statistics
  (e.g. the dependence of each position on the labels, `slimkit.prune.tokens`). Cheapest at run time: one gather.
- `TokenDrop`: keeps, per image, the `keep` patch tokens the class token attends to most (EViT, Liang et al.,
  ICLR 2022): scores softmax(q_cls . k_i / sqrt(C)) with q = k = the tokens themselves (no parameters); the dropped
  tokens are fused into one extra token weighted by their scores (`fuse=True`), so their information is not lost.
- `TokenMerge`: merges the `r` most similar pairs of patch tokens (ToMe, Bolya et al., ICLR 2023): tokens are split
  alternately into sets A and B, each A token is matched to its most cosine-similar B token, and the r best-matched
  A tokens are averaged into their B partners (scatter-add of sums and counts, exportable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import ConfigError
from slimkit.registry import CHANNEL_RULES

__all__ = ["TokenDrop", "TokenMerge", "TokenSelect"]


def _split(x: torch.Tensor, num_prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    return x[:, :num_prefix], x[:, num_prefix:]


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[b, idx[b, j], :] for every b, j."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


@CHANNEL_RULES.register("token_select", rule="pass")
class TokenSelect(nn.Module):
    """Keep the patch tokens at fixed positions `index` (sorted), after the prefix tokens."""


    def __init__(self, index: torch.Tensor | list[int], num_prefix: int = 1) -> None:
        super().__init__()
        index = torch.as_tensor(index, dtype=torch.long).flatten().sort().values
        if len(index) < 1 or int(index.min()) < 0 or len(index.unique()) != len(index):
            raise ConfigError(f"TokenSelect: index must list distinct non-negative positions, got {index.tolist()}")
        self.num_prefix = num_prefix
        self.register_buffer("index", index)

    @property
    def keep(self) -> int:
        return len(self.index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, tokens = _split(x, self.num_prefix)
        return torch.cat([prefix, tokens.index_select(1, self.index)], dim=1)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, num_prefix={self.num_prefix}"


@CHANNEL_RULES.register("token_drop", rule="pass")
class TokenDrop(nn.Module):
    """Keep the `keep` patch tokens with the highest class-token attention (order preserved); fuse the rest."""


    def __init__(self, keep: int, num_prefix: int = 1, fuse: bool = True) -> None:
        super().__init__()
        if keep < 1:
            raise ConfigError(f"TokenDrop: keep must be >= 1, got {keep}")
        self.keep, self.num_prefix, self.fuse = keep, num_prefix, fuse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, tokens = _split(x, self.num_prefix)
        query = prefix[:, :1] if self.num_prefix else tokens.mean(1, keepdim=True)
        attn = ((query @ tokens.transpose(1, 2)) * x.shape[-1] ** -0.5).softmax(-1).squeeze(1)  # N x T
        idx = attn.topk(self.keep, dim=1).indices.sort(dim=1).values
        kept = _gather(tokens, idx)
        if not self.fuse:
            return torch.cat([prefix, kept], dim=1)
        rest = attn.scatter(1, idx, torch.zeros_like(idx, dtype=attn.dtype))  # the dropped tokens' weights
        fused = (rest.unsqueeze(1) @ tokens) / (rest.sum(1, keepdim=True).unsqueeze(-1) + 1e-6)
        return torch.cat([prefix, kept, fused], dim=1)

    def extra_repr(self) -> str:
        return f"keep={self.keep}, num_prefix={self.num_prefix}, fuse={self.fuse}"


@CHANNEL_RULES.register("token_merge", rule="pass")
class TokenMerge(nn.Module):
    """Merge the `r` most similar (A, B) pairs of patch tokens (bipartite soft matching), T -> T - r."""


    def __init__(self, r: int, num_prefix: int = 1) -> None:
        super().__init__()
        if r < 1:
            raise ConfigError(f"TokenMerge: r must be >= 1, got {r}")
        self.r, self.num_prefix = r, num_prefix

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, tokens = _split(x, self.num_prefix)
        a, b = tokens[:, ::2], tokens[:, 1::2]
        r = min(self.r, a.shape[1])
        sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).transpose(1, 2)  # N x |A| x |B|
        best, match = sim.max(dim=-1)
        order = best.argsort(dim=-1, descending=True)
        merged, unmerged = order[:, :r], order[:, r:]
        src = _gather(a, merged)
        dst_idx = match.gather(1, merged).unsqueeze(-1).expand(-1, -1, x.shape[-1])
        sums = b.scatter_add(1, dst_idx, src)
        counts = torch.ones_like(b[..., :1]).scatter_add(1, dst_idx[..., :1], torch.ones_like(src[..., :1]))
        return torch.cat([prefix, _gather(a, unmerged.sort(dim=1).values), sums / counts], dim=1)

    def extra_repr(self) -> str:
        return f"r={self.r}, num_prefix={self.num_prefix}"
