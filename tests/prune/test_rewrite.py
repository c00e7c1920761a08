"""Equivalent rewrites: torchvision's Swin / Swin-V2 window attention gets a prunable forward that computes the same
function (checked against the original module), heads then prune, and the record replays the rewrite."""

import copy

import pytest
import torch

from slimkit.prune import load, prune, save
from slimkit.prune.rewrite import needs_rewrite, rewrite_model

tv_swin = pytest.importorskip("torchvision.models.swin_transformer")


def _small(v2: bool):
    torch.manual_seed(0)
    extra = dict(block=tv_swin.SwinTransformerBlockV2, downsample_layer=tv_swin.PatchMergingV2) if v2 else {}
    model = tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                    window_size=[4, 4], num_classes=5, **extra).eval()
    with torch.no_grad():  # trained-looking biases and scales, so a wrong rewrite cannot hide behind zeros
        for n, p in model.named_parameters():
            if n.endswith("qkv.bias") or n.endswith("logit_scale"):
                p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("v2", [False, True])
def test_rewritten_window_attention_computes_the_same_function(v2):
    model = _small(v2)
    x = torch.randn(2, 3, 40, 40)  # 10x10 tokens: padded to 12x12, shifted windows with their mask; then 5x5
    assert needs_rewrite(model)
    new = copy.deepcopy(model)
    names = rewrite_model(new)
    assert len(names) == 5 and all(type(new.get_submodule(n)).__name__.startswith("Prunable") for n in names)
    assert not needs_rewrite(new) and set(new.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("v2", [False, True])
def test_rewritten_swin_prunes_heads_and_replays_from_its_record(v2, tmp_path):
    model = _small(v2)
    x = torch.randn(1, 3, 40, 40)
    pruned = prune(model, x, ratios={"heads": 0.5}, dims=("heads",)).eval()
    assert type(model.features[1][0].attn).__name__ == ("ShiftedWindowAttentionV2" if v2 else
                                                        "ShiftedWindowAttention")  # the input is untouched
    heads = [m.num_heads for m in pruned.modules() if type(getattr(m, "num_heads", None)) is int]
    assert heads == [1, 1, 2, 2]
    assert pruned.slimkit_pruning["rewrites"]
    save(pruned, tmp_path / "m.safetensors")
    rebuilt = _small(v2)
    again = load(tmp_path / "m.safetensors", rebuilt).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(x), pruned(x))


def _small_davit():
    davit = pytest.importorskip("timm.models.davit")
    torch.manual_seed(0)
    model = davit.DaVit(depths=(1, 1), embed_dims=(16, 32), num_heads=(2, 4), window_size=4, num_classes=5).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("qkv.bias"):
                p.add_(0.3 * torch.randn_like(p))
    return model


def test_rewritten_davit_attention_computes_the_same_function_and_prunes_whole_heads():
    model = _small_davit()
    x = torch.randn(2, 3, 40, 40)  # 10x10 tokens, padded to 12x12 windows of 4
    new = copy.deepcopy(model)
    names = rewrite_model(new)  # window and channel attention of both stages
    assert sorted(type(new.get_submodule(n)).__name__ for n in names) == [
        "PrunableChannelAttention", "PrunableChannelAttention", "PrunableWindowAttention", "PrunableWindowAttention"]
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), atol=1e-5, rtol=1e-5)
    pruned = prune(model, x[:1], ratios={"heads": 0.5}, dims=("heads",)).eval()
    heads = [pruned.get_submodule(n).num_heads for n in names]
    assert heads == [1, 1, 2, 2]
    assert all(pruned.get_submodule(n).qkv.out_features == 3 * h * 8 for n, h in zip(names, heads, strict=True))
    with torch.no_grad():
        assert pruned(x).shape == (2, 5)
