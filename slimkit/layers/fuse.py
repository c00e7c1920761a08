"""One protocol for inference-time simplification.

A module that can be replaced by a simpler equal one exposes `fuse() -> nn.Module` and a `can_fuse` flag (true when
its current state allows it, e.g. a dynamic conv whose attention is fixed). `fuse_model` applies every such module's
`fuse()` and folds each BatchNorm that directly follows a conv in an `nn.Sequential` into the conv. Eval-mode
outputs are unchanged (up to float rounding).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fuse_conv_bn", "fuse_model"]


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to bn(conv(x)) with the BatchNorm's running statistics (eval mode)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    with torch.no_grad():
        var, mean = bn.running_var, bn.running_mean
        gamma = bn.weight if bn.weight is not None else torch.ones_like(var)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(mean)
        scale = gamma / torch.sqrt(var + bn.eps)
        fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
        fused.bias.copy_((bias - mean) * scale + beta)
    return fused.to(conv.weight.device)


def _fuse_children(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if getattr(child, "can_fuse", False) and callable(getattr(child, "fuse", None)):
            setattr(module, name, child.fuse())
        else:
            _fuse_children(child)
    if isinstance(module, nn.Sequential):
        keys = list(module._modules)
        for a, b in zip(keys, keys[1:], strict=False):
            conv, bn = module._modules[a], module._modules[b]
            if (type(conv) is nn.Conv2d and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
                    and bn.running_mean is not None):
                module._modules[a] = fuse_conv_bn(conv, bn)
                module._modules[b] = nn.Identity()


def fuse_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The model with every fusable module fused and conv + BN pairs folded, for inference (eval mode).
    Works on a copy unless `inplace=True` (then `model` itself is changed and returned)."""
    out = model if inplace else copy.deepcopy(model)
    _fuse_children(out)
    return out.eval()
