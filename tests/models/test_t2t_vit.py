import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.export import export_onnx
from slimkit.graph.trace import trace
from slimkit.models import create_model
from slimkit.models.t2t_vit import _CFGS
from slimkit.profile import count_macs, count_params

from .helpers import flop_counter_macs

# Yuan et al. 2021, Table 4 / the official README: (params M, MACs G) at 224x224, 1000 classes.
PAPER = {"t2t_vit_7": (4.3, 1.1), "t2t_vit_10": (5.9, 1.5), "t2t_vit_12": (6.9, 1.8), "t2t_vit_14": (21.5, 4.8)}


def hand_macs(embed_dim: int, depth: int, mlp_ratio: float, performer: bool = True, token_dim: int = 64,
              classes: int = 1000) -> int:
    """MACs of T2T-ViT at 224x224 counted by hand: linear layers plus attention matmuls (the paper's convention).

    Not counted (by the paper either): softmax / exp, LayerNorm, GELU, additions, the unfold copies.
    """
    e = token_dim
    m = e // 2  # performer features (kernel_ratio 0.5)

    def token_layer(n: int, d: int) -> int:
        linear = n * d * 3 * e + n * e * e + 2 * n * e * e  # qkv (d -> 3e), proj, MLP (ratio 1)
        # performer: phi(q), phi(k) (2 n e m); phi(K)^T V (n m e); phi(Q) (.) (n m e); normaliser (n m)
        mixer = 2 * n * e * m + 2 * n * m * e + n * m if performer else 2 * n * n * e  # softmax: QK^T, AV
        return linear + mixer

    n0, n1, n2 = 56 * 56, 28 * 28, 14 * 14  # 224 -> /4 (7x7 split) -> /2 -> /2
    t2t = token_layer(n0, 3 * 7 * 7) + token_layer(n1, e * 3 * 3) + n2 * e * 3 * 3 * embed_dim
    n, c = n2 + 1, embed_dim  # + class token
    block = n * c * 3 * c + n * c * c + 2 * n * c * int(c * mlp_ratio) + 2 * n * n * c
    return t2t + depth * block + c * classes


@pytest.mark.parametrize("name", list(PAPER))
def test_params_match_the_paper(name):
    m = create_model(name, num_classes=1000)
    assert count_params(m) / 1e6 == pytest.approx(PAPER[name][0], rel=0.02)  # measured 4.26, 5.83, 6.89, 21.47


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER))
def test_macs_match_the_paper_and_a_hand_count(name):
    # Measured: 1.147G, 1.516G, 1.763G, 4.783G (T2T-ViT-7 is 4.3% above the paper's rounded 1.1G). The paper's MACs
    # include the attention matmuls (QK^T and AV, 0.42G of T2T-ViT-14's 4.78G); without them -14 would be 4.37G.
    cfg = _CFGS[name]
    macs = count_macs(create_model(name, num_classes=1000), (3, 224, 224))
    assert macs == hand_macs(cfg["embed_dim"], cfg["depth"], cfg["mlp_ratio"])
    assert macs / 1e9 == pytest.approx(PAPER[name][1], rel=0.05)


@pytest.mark.slow
def test_transformer_tokens_variant_matches_t2t_vit_t_14():
    # T2T-ViT_t-14 (plain attention in the T2T module): the paper's 21.5M params, 6.1G MACs. Quadratic attention over
    # 3136 tokens in the first T2T layer costs 1.26G, which the performer replaces by 0.03G. Independent counter.
    m = create_model("t2t_vit_14", num_classes=1000, tokens_type="transformer")
    macs = flop_counter_macs(m, (3, 224, 224))
    assert macs == hand_macs(384, 14, 3.0, performer=False)
    assert macs / 1e9 == pytest.approx(6.1, rel=0.02)
    assert count_params(m) / 1e6 == pytest.approx(21.5, rel=0.01)


def test_token_counts_follow_the_split_schedule():
    torch.manual_seed(0)
    m = create_model("t2t_vit_7", num_classes=5).eval()
    small = create_model("t2t_vit_7", num_classes=5, small_input=True, in_chans=1).eval()
    with torch.no_grad():
        assert m.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, 1 + 4 * 4, 256)  # stride 16
        assert small.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 1 + 7 * 7, 256)  # stride 4
        assert small.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 1 + 8 * 8, 256)
        feats = small.forward_features(torch.randn(2, 1, 28, 28))
        torch.testing.assert_close(small.forward_head(feats, pre_logits=True), feats[:, 0])  # the class token


def test_bad_configs_raise():
    with pytest.raises(ConfigError, match="divisible"):
        create_model("t2t_vit_7", embed_dim=250)
    with pytest.raises(ConfigError, match="tokens_type"):
        create_model("t2t_vit_7", tokens_type="linformer")


def test_fx_trace_and_onnx_parity_at_small_size(tmp_path):
    torch.manual_seed(0)
    m = create_model("t2t_vit_7", num_classes=10, in_chans=1, small_input=True).eval()
    x = torch.randn(2, 1, 28, 28)
    gm = trace(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x))
    assert any(n.op == "call_module" and n.target.endswith("attn.qkv") for n in gm.graph.nodes)
    res = export_onnx(m, tmp_path / "t2t.onnx", torch.randn(1, 1, 32, 32))
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
