import copy

import numpy as np
import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.export import export_onnx
from slimkit.graph.trace import trace
from slimkit.models import create_model, load_weights, multiplex
from slimkit.profile import count_params
from slimkit.train import save_weights

KW = dict(num_classes=10, in_chans=1, small_input=True)


def _t2t7():
    torch.manual_seed(0)
    return create_model("t2t_vit_7", **KW).eval()


def _tied_reference(model, share):
    """The unshared model with every group's layers holding the group's first attention and MLP weights."""
    ref = copy.deepcopy(model)
    for i, blk in enumerate(ref.blocks):
        first = ref.blocks[i - i % share]
        blk.attn.load_state_dict(first.attn.state_dict())
        blk.mlp.load_state_dict(first.mlp.state_dict())
    return ref


def test_params_equal_a_hand_count():
    base = _t2t7()
    d, h, heads = 256, 512, 4  # T2T-ViT-7: width 256, MLP ratio 2, 4 heads, qkv without bias
    block = (d * 3 * d) + (d * d + d) + (d * h + h) + (h * d + d)  # qkv, proj, fc1, fc2 (LayerNorms stay per layer)
    for share, groups in ((2, 4), (3, 3), (7, 1)):  # depth 7: groups of 2,2,2,1 / 3,3,1 / 7
        mini = multiplex(base, share=share)
        assert count_params(mini) == count_params(base) - (7 - groups) * block + 7 * 2 * heads * heads
        assert count_params(multiplex(base, share=share, attn_transform=False)) == \
            count_params(base) - (7 - groups) * block
    # the registered variant is the same thing; measured 3.97M -> 2.40M (1.66x), share 3: 1.87M (2.12x)
    assert count_params(create_model("mini_t2t_vit_7", **KW)) == count_params(multiplex(base, share=2))


def test_shared_weights_are_one_tensor_used_by_every_layer_of_the_group():
    base = _t2t7()
    mini = multiplex(base, share=2)
    group = mini.blocks[0]
    assert group.depth == 2 and len(mini.blocks) == 4 and mini.blocks[-1].depth == 1
    keys = [k for k in mini.state_dict() if k.startswith("blocks.") and k.endswith("qkv.weight")]
    assert keys == [f"blocks.{g}.attn.qkv.weight" for g in range(4)]  # stored once per group
    calls = []
    group.attn.qkv.register_forward_hook(lambda *a: calls.append(1))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        before = mini(x)
        assert len(calls) == 2  # both layers of the group ran the one qkv
        group.mlp.fc2.weight.zero_()  # mutate the shared MLP: both layers lose it
        group.mlp.fc2.bias.zero_()
        ref = _tied_reference(base, 2)
        for blk in ref.blocks[:2]:
            blk.mlp.fc2.weight.zero_()
            blk.mlp.fc2.bias.zero_()
        torch.testing.assert_close(mini(x), ref(x))
        assert not torch.allclose(mini(x), before)
    assert base.blocks[0].mlp.fc2.weight.abs().sum() > 0  # the original is untouched


@pytest.mark.parametrize("mlp_transform", [False, True])
def test_transformations_start_as_the_identity(mlp_transform):
    base = _t2t7()
    mini = multiplex(base, share=3, mlp_transform=mlp_transform).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(mini(x), _tied_reference(base, 3)(x), atol=1e-6, rtol=1e-5)
        assert torch.equal(mini.blocks[0].attn.mix_logits[1].weight.view(4, 4), torch.eye(4))
        mini.blocks[0].attn.mix_weights[1].weight.mul_(0.5)  # a trained transformation changes the layer
        assert not torch.allclose(mini(x), _tied_reference(base, 3)(x))


def test_head_mixing_by_hand():
    mini = multiplex(_t2t7(), share=2)
    attn = mini.blocks[0].attn
    with torch.no_grad():
        attn.mix_logits[1].weight.normal_()
        attn.mix_weights[1].weight.normal_()
    x = torch.randn(2, 5, 256)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 4, 64).permute(2, 0, 3, 1, 4)
    logits = torch.einsum("gh,bhij->bgij", attn.mix_logits[1].weight.view(4, 4), q @ k.transpose(-2, -1) / 8.0)
    weights = torch.einsum("gh,bhij->bgij", attn.mix_weights[1].weight.view(4, 4), logits.softmax(-1))
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 256))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, 1), expected, atol=1e-5, rtol=1e-4)


def test_trace_onnx_with_shared_weights_stored_once_and_reload(tmp_path):
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    mini = create_model("mini_t2t_vit_7", mlp_transform=True, **KW).eval()
    with torch.no_grad():
        for p in mini.parameters():
            if p.dim() == 4:  # non-identity head mixers, non-zero token convs
                p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 1, 28, 28)
    gm = trace(mini, (x,))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), mini(x))
    res = export_onnx(mini, tmp_path / "mini.onnx", torch.randn(1, 1, 28, 28))
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    stored = sum(int(np.prod(t.dims)) for t in onnx.load(str(tmp_path / "mini.onnx")).graph.initializer)
    assert stored < 1.01 * count_params(mini)  # the shared tensors once (measured 2.39M initialisers, 2.40M params)
    save_weights(mini, tmp_path / "mini.safetensors")
    back = create_model("mini_t2t_vit_7", mlp_transform=True, **KW)
    load_weights(back, tmp_path / "mini.safetensors", strict=True)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), mini(x))


def test_timm_vit_blocks_multiplex_and_unsupported_parts_are_refused():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_patch16_224", num_classes=10, img_size=28, patch_size=4, in_chans=1).eval()
    mini = multiplex(deit, share=2)
    assert count_params(deit) / count_params(mini) == pytest.approx(1.99, abs=0.01)  # embedding and head unshared
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(mini(x), _tied_reference(deit, 2)(x), atol=1e-5, rtol=1e-4)
    deit3 = timm.create_model("deit3_small_patch16_224", num_classes=10, img_size=32, patch_size=8)
    with pytest.raises(ConfigError, match="ls1"):
        multiplex(deit3)
    with pytest.raises(ConfigError, match="blocks"):
        multiplex(create_model("resnet20"))
    with pytest.raises(ConfigError, match="share"):
        multiplex(deit, share=0)


def test_create_model_multiplex_argument_rebuilds_by_name(tmp_path):
    from slimkit.jobs._common import load_run_model

    torch.manual_seed(0)
    mini = create_model("t2t_vit_7", multiplex=3, **KW).eval()
    assert count_params(mini) == count_params(multiplex(create_model("t2t_vit_7", **KW), share=3))
    save_weights(mini, tmp_path / "model.safetensors")  # a run folder: the spec names the model and its arguments
    (tmp_path / "model.json").write_text('{"model": "t2t_vit_7", "kwargs": {"small_input": true, "multiplex": 3}, '
                                         '"num_classes": 10, "in_chans": 1, "input_size": [1, 28, 28]}')
    back, _ = load_run_model(tmp_path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(back.eval()(x), mini(x))
