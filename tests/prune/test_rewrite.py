"""Equivalent rewrites: torchvision's Swin / Swin-V2 window attention gets a prunable forward that computes the same
function (checked against the original module), heads then prune, and the record replays the rewrite."""

import copy

import pytest
import torch

from slimkit.profile import count_macs
from slimkit.prune import load, prune, save
from slimkit.prune.rewrite import needs_rewrite, rewrite_model

tv_swin = pytest.importorskip("torchvision.models.swin_transformer")


def _jitter(model, *suffixes):
    """Trained-looking parameters (those whose names end with `suffixes` moved off their init), so a wrong rewrite
    cannot hide behind zero biases or unit scales."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(suffixes):
                p.add_(0.3 * torch.randn_like(p))
    return model


def _small(v2: bool):
    torch.manual_seed(0)
    extra = dict(block=tv_swin.SwinTransformerBlockV2, downsample_layer=tv_swin.PatchMergingV2) if v2 else {}
    model = tv_swin.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4],
                                    window_size=[4, 4], num_classes=5, **extra).eval()
    return _jitter(model, "qkv.bias", "logit_scale")


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
    return _jitter(model, "qkv.bias")


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


def _small_twins():
    twins = pytest.importorskip("timm.models.twins")
    torch.manual_seed(0)  # SVT layout: window (locally-grouped) attention, then global sub-sampled attention
    model = twins.Twins(img_size=40, patch_size=4, embed_dims=(16, 32), num_heads=(2, 4), mlp_ratios=(2, 2),
                        depths=(2, 2), sr_ratios=(2, 1), wss=(4, 4), num_classes=5).eval()
    return _jitter(model, "bias")


def test_rewritten_twins_attention_computes_the_same_function():
    model = _small_twins()
    x = torch.randn(2, 3, 40, 40)  # 10x10 tokens: windows of 4 padded to 12x12; keys sub-sampled 2x
    new = copy.deepcopy(model)
    names = rewrite_model(new)
    assert sorted(type(new.get_submodule(n)).__name__ for n in names) == [
        "PrunableGlobalSubSampleAttn", "PrunableGlobalSubSampleAttn", "PrunableLocallyGroupedAttn",
        "PrunableLocallyGroupedAttn"]
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x), atol=1e-5, rtol=1e-5)


def test_twins_without_its_weakest_heads_is_the_same_function_and_reaches_half_the_macs():
    model = _small_twins()
    x = torch.randn(2, 3, 40, 40)
    attns = [model.get_submodule(f"blocks.{s}.{b}.attn") for s in (0, 1) for b in (0, 1)]
    with torch.no_grad():  # the second half of every attention's heads computes nothing: q, k, v rows, proj columns
        for a in attns:
            d = a.proj.in_features // a.num_heads
            keep = a.num_heads // 2
            for lin, parts in ((getattr(a, "qkv", None), 3), (getattr(a, "q", None), 1), (getattr(a, "kv", None), 2)):
                if lin is not None:
                    for j in range(parts):
                        rows = slice(j * a.proj.in_features + keep * d, (j + 1) * a.proj.in_features)
                        lin.weight[rows] = 0
                        lin.bias[rows] = 0
            a.proj.weight[:, keep * d:] = 0
    pruned = prune(model, x[:1], ratios={"heads": 0.5}).eval()
    assert [pruned.get_submodule(f"blocks.{s}.{b}.attn").num_heads for s in (0, 1) for b in (0, 1)] == [1, 1, 2, 2]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)
    half = prune(model, x[:1], macs_target=0.5).eval()  # residual stream, heads and sub-sampling channels all cut
    assert count_macs(model, x[:1]) / count_macs(half, x[:1]) >= 1.9
    with torch.no_grad():
        assert half(x).shape == (2, 5)
