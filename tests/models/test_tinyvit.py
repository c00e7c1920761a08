import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.export import export_onnx
from slimkit.graph.trace import trace
from slimkit.models import create_model
from slimkit.models.tinyvit import _CFGS
from slimkit.profile import count_macs, count_params

from .helpers import flop_counter_macs

# Wu et al. 2022, Table 1 (and the official model zoo): (params M, MACs G) at 224x224, 1000 classes.
PAPER = {"tinyvit_5m": (5.4, 1.3), "tinyvit_11m": (11.0, 2.0), "tinyvit_21m": (21.0, 4.3)}
TIMM = {"tinyvit_5m": "tiny_vit_5m_224", "tinyvit_11m": "tiny_vit_11m_224", "tinyvit_21m": "tiny_vit_21m_224"}


def hand_count(embed_dims, depths, num_heads, size=224, classes=1000, windows=(7, 7, 14, 7)):
    """(params, MACs) of TinyViT by hand: convs (BN folded out of the MACs), linears, attention matmuls."""
    d0 = embed_dims[0]
    hw = size // 2
    params = 3 * 9 * d0 // 2 + d0 + 9 * d0 // 2 * d0 + 2 * d0  # stem convs + BNs (BN: 2 per channel)
    macs = hw * hw * 3 * 9 * d0 // 2
    hw //= 2
    macs += hw * hw * 9 * d0 // 2 * d0
    e = 4 * d0  # MBConv: 1x1 expand, 3x3 depthwise, 1x1 project, each + BN
    params += depths[0] * (d0 * e + 2 * e + 9 * e + 2 * e + e * d0 + 2 * d0)
    macs += depths[0] * hw * hw * (d0 * e + 9 * e + e * d0)
    for i in range(1, len(embed_dims)):
        c_in, c = embed_dims[i - 1], embed_dims[i]
        params += c_in * c + 2 * c + 9 * c + 2 * c + c * c + 2 * c  # patch merging
        macs += hw * hw * c_in * c
        hw = (hw + 1) // 2
        macs += hw * hw * (9 * c + c * c)
        ws = windows[i]
        n_win = (-(-hw // ws)) ** 2  # padded to whole windows
        n = ws * ws
        params_block = 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + num_heads[i] * n  # LN, qkv, proj, biases
        params_block += 9 * c + 2 * c + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c)  # local conv + BN, LN, MLP
        params += depths[i] * params_block
        attn = n_win * (n * c * 3 * c + 2 * n * n * c + n * c * c)  # qkv, QK^T and AV, proj (on padded windows)
        macs += depths[i] * (attn + hw * hw * (9 * c + 8 * c * c))
    c = embed_dims[-1]
    return params + 2 * c + c * classes + classes, macs + c * classes


@pytest.mark.parametrize("name", list(PAPER))
def test_params_match_the_paper_and_a_hand_count(name):
    cfg = _CFGS[name]
    params = count_params(create_model(name, num_classes=1000))  # 5.39M, 11.00M, 21.20M
    assert params == hand_count(cfg["embed_dims"], (2, 2, 6, 2), cfg["num_heads"])[0]
    assert params / 1e6 == pytest.approx(PAPER[name][0], rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER))
def test_macs_match_the_paper_and_a_hand_count(name):
    cfg = _CFGS[name]
    macs = count_macs(create_model(name, num_classes=1000), (3, 224, 224))  # 1.255G, 2.016G, 4.250G
    assert macs == hand_count(cfg["embed_dims"], (2, 2, 6, 2), cfg["num_heads"])[1]
    assert macs / 1e9 == pytest.approx(PAPER[name][1], rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER))
def test_counts_equal_timms_tiny_vit(name):
    timm = pytest.importorskip("timm")
    ref = timm.create_model(TIMM[name], num_classes=1000)
    ours = create_model(name, num_classes=1000)
    assert count_params(ours) == count_params(ref)
    assert flop_counter_macs(ours, (3, 224, 224)) == flop_counter_macs(ref, (3, 224, 224))


def _timm_weights(sd, heads):
    """timm TinyVit state dict -> ours: LN names, head names, and qkv rows from per-head (q|k|v) to q|k|v blocks."""
    out = {}
    for k, v in sd.items():
        if ".attn.qkv." in k:
            v = v.reshape(heads[int(k.split(".")[1])], 3, -1, *v.shape[1:]).transpose(0, 1).reshape(v.shape)
        for a, b in (("attn.norm.", "norm1."), ("mlp.norm.", "norm2."), ("head.norm.", "norm."), ("head.fc.", "head.")):
            k = k.replace(a, b)
        out[k] = v
    return out


def test_forward_equals_timms_tiny_vit_with_the_same_weights():
    """An independent implementation of the paper's network: same function, including zero-padded windows."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("tiny_vit_5m_224", num_classes=10).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.1)
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ours = create_model("tinyvit_5m", num_classes=10).eval()
    ours.load_state_dict(_timm_weights(ref.state_dict(), (2, 4, 5, 10)))
    for hw in (64, 100):  # 64: stages 16, 8, 4, 2 (all padded to windows); 100: 25, 13, 7, 4
        x = torch.randn(2, 3, hw, hw)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-4)


def test_small_input_stages_and_head():
    m = create_model("tinyvit_5m", num_classes=10, in_chans=1, small_input=True).eval()
    with torch.no_grad():
        feats = m.forward_features(torch.randn(2, 1, 28, 28))
        assert feats.shape == (2, 320, 2, 2)  # stride 16: 14, 7, 4, 2 with windows 7, 4, 2 (one window each)
        torch.testing.assert_close(m.forward_head(feats, pre_logits=True), m.norm(feats.mean((2, 3))))
    assert [b.window_size for s in m.stages[1:] for b in s.blocks[:1]] == [7, 4, 2]
    default = create_model("tinyvit_5m").eval()
    with torch.no_grad():
        assert default.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 320, 2, 2)  # stride 32
    assert count_macs(m, (1, 28, 28)) / 1e6 == pytest.approx(83.3, rel=0.01)


def test_bad_configs_raise():
    with pytest.raises(ConfigError, match="one entry per stage"):
        create_model("tinyvit_5m", depths=(2, 2, 6))
    with pytest.raises(ConfigError, match="divisible"):
        create_model("tinyvit_5m", num_heads=(2, 3, 5, 10))


def test_fx_trace_and_onnx_parity_at_small_size(tmp_path):
    torch.manual_seed(0)
    m = create_model("tinyvit_5m", num_classes=10, in_chans=1, small_input=True).eval()
    with torch.no_grad():
        for mod in m.modules():  # non-trivial attention biases and MBConv projections
            if hasattr(mod, "attention_biases"):
                mod.attention_biases.normal_()
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 1, 28, 28)
    gm = trace(m, (x,))
    assert not gm.meta.get("opaque_modules")
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x))
    res = export_onnx(m, tmp_path / "tinyvit.onnx", torch.randn(1, 1, 28, 28))
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    res = export_onnx(m, tmp_path / "tinyvit32.onnx", torch.randn(1, 1, 32, 32))  # padded windows
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
