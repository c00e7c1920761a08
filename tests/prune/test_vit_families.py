"""Every transformer family of issue 18, pruned along heads, neurons and channels (tokens where the model has a
plain token sequence): the result runs, exports to ONNX with parity <= 1e-4 and reloads from its record.
Small configurations of the real timm / torchvision / slimkit classes; slow (each builds, traces and prunes)."""

import warnings

import pytest
import torch

import slimkit
from slimkit.graph.layout import head_count_attr
from slimkit.prune import load, prune, save

FAMILIES = {  # name: (model kwargs, input size, expects pruned heads)
    "timm:swin_tiny_patch4_window7_224": (dict(img_size=32, window_size=4, embed_dim=16, depths=(1, 1, 2, 1),
                                               num_heads=(2, 2, 4, 4)), 32, True),
    "timm:swinv2_tiny_window8_256": (dict(img_size=32, window_size=4, embed_dim=16, depths=(1, 1, 2, 1),
                                          num_heads=(2, 2, 4, 4)), 32, True),
    "timm:tiny_vit_5m_224": (dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)), 64,
                             True),
    "timm:levit_128s": (dict(img_size=64), 64, True),
    "timm:mobilevit_xxs": ({}, 64, True),
    "timm:efficientvit_b0": ({}, 64, False),
    "timm:efficientvit_m0": (dict(img_size=64), 64, False),
    "timm:deit_tiny_patch16_224": (dict(img_size=32, patch_size=8, depth=4), 32, True),
    "t2t_vit_7": (dict(small_input=True), 32, True),
    "poolformer_s12": (dict(small_input=True), 32, False),
    "torchvision:swin_t": ({}, 32, True),  # full size (its builder fixes the widths); prunes after a rewrite
    "torchvision:swin_v2_t": ({}, 32, True),
    "timm:twins_svt_small": (dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4)), 32,
                             True),  # window + sub-sampled global attention, after a rewrite
    "timm:twins_pcpvt_small": (dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4)), 32,
                               True),
    "timm:hiera_tiny_224": (dict(img_size=64, embed_dim=16, stages=(1, 1, 2, 1)), 64, True),  # heads: `heads`
}


def _heads(model):
    return {n: getattr(m, a) for n, m in model.named_modules() if (a := head_count_attr(m)) is not None}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_prunes_runs_exports_and_reloads(name, tmp_path):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    if name.startswith("torchvision:"):
        pytest.importorskip("torchvision")
    warnings.simplefilter("ignore")
    kwargs, size, has_heads = FAMILIES[name]
    torch.manual_seed(0)
    model = slimkit.create_model(name, num_classes=5, **kwargs).eval()
    x = torch.randn(1, 3, size, size)
    pruned = prune(model, x, ratio=0.5, allocation="uniform").eval()  # structure, not allocation, under test
    assert pruned(x).shape == (1, 5)
    assert slimkit.profile(pruned, (3, size, size)).macs < 0.6 * slimkit.profile(model, (3, size, size)).macs
    if has_heads:
        before, after = _heads(model), _heads(pruned)
        assert any(after[n] < before[n] for n in before), f"no attention head of {name} was pruned"
    result = slimkit.export_onnx(pruned, tmp_path / "m.onnx", x)
    assert result.max_abs_diff <= 1e-4
    save(pruned, tmp_path / "m.safetensors", model_name=name, model_kwargs={**kwargs, "num_classes": 5})
    again = load(tmp_path / "m.safetensors").eval()
    torch.testing.assert_close(again(x), pruned(x))


def test_t2t_vit_embedding_prunes_exactly_exports_and_reloads(tmp_path):
    """T2T-ViT's sinusoidal position code is per-channel buffers: the embedding width prunes like a timm pos_embed.
    The pruned model equals the dense reference (removed channels ignored by every consumer and LayerNorm), so each
    kept channel kept its own position code."""
    from slimkit.prune.dims import group_dimension

    from .reference import pruned_and_reference

    torch.manual_seed(0)
    model = slimkit.create_model("t2t_vit_7", num_classes=5, small_input=True).eval()
    assert not any(k.startswith("pos_") for k in model.state_dict())  # checkpoints from before load unchanged
    x = torch.randn(2, 3, 32, 32)
    pruned, ref, pruner = pruned_and_reference(model, x, 0.25, dims=("embed",), allocation="uniform")
    (embed,) = [g for g in pruner.groups if group_dimension(g) == "embed" and any(m.module == "head" for m in
                                                                                    g.members)]
    keep = pruner.step(0.25)[embed.id]
    assert pruned.pos_freq.shape == (len(keep),) < model.pos_freq.shape
    assert torch.equal(pruned.pos_cos, model.pos_cos[torch.as_tensor(sorted(keep))])
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), ref(x), atol=1e-4, rtol=1e-4)
    assert slimkit.export_onnx(pruned, tmp_path / "m.onnx", x[:1]).max_abs_diff <= 1e-4
    save(pruned, tmp_path / "m.safetensors", model_name="t2t_vit_7", model_kwargs={"num_classes": 5,
                                                                                   "small_input": True})
    again = load(tmp_path / "m.safetensors").eval()
    torch.testing.assert_close(again(x), pruned(x))
