import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import ConfigError
from slimkit.graph.trace import trace
from slimkit.layers.tokens import (
    Attention,
    T2TModule,
    TokenAttention,
    TokenLayer,
    TokenPerformer,
    orthogonal_random_features,
    restructurize,
    sinusoid_code,
    sinusoid_position_embedding,
    soft_split,
)


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (7, 4, 2), (3, 1, 1)])
def test_soft_split_equals_an_explicit_patch_loop(k, s, p):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 7)
    tokens = soft_split(x, k, s, p)
    xp = F.pad(x, (p, p, p, p))
    ho, wo = (9 + 2 * p - k) // s + 1, (7 + 2 * p - k) // s + 1
    assert tokens.shape == (2, ho * wo, 3 * k * k)
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * s:i * s + k, j * s:j * s + k]  # N x C x k x k, channel-major flatten
            torch.testing.assert_close(tokens[:, i * wo + j], patch.reshape(2, -1))


@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (7, 4, 2), (3, 1, 1), (2, 2, 0)])
def test_soft_split_equals_unfold_and_exports_without_gathers(k, s, p, tmp_path):
    onnx = pytest.importorskip("onnx")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 8)
    assert torch.equal(soft_split(x, k, s, p), F.unfold(x, k, padding=p, stride=s).transpose(1, 2))

    class Split(torch.nn.Module):
        def forward(self, x):
            return soft_split(x, k, s, p)

    torch.onnx.export(Split(), (x,), tmp_path / "s.onnx", opset_version=17, dynamo=False)
    ops = {n.op_type for n in onnx.load(tmp_path / "s.onnx").graph.node}
    assert "Gather" not in ops and "GatherElements" not in ops  # slices, not the index gathers unfold exports as


def test_restructurize_round_trips():
    torch.manual_seed(0)
    img = torch.randn(2, 5, 4, 6)
    tokens = img.flatten(2).transpose(1, 2)  # row-major: token i*W + j is pixel (i, j)
    assert torch.equal(restructurize(tokens, 4, 6), img)
    assert torch.equal(restructurize(tokens, 4, 6).flatten(2).transpose(1, 2), tokens)
    # soft split with a 1x1 kernel is the inverse of re-structurization
    assert torch.equal(soft_split(restructurize(tokens, 4, 6), 1, 1, 0), tokens)


def test_sinusoid_position_embedding_matches_the_formula():
    pe = sinusoid_position_embedding(5, *sinusoid_code(6, torch.float64))
    assert pe.shape == (1, 5, 6)
    for pos in range(5):
        for j in range(6):
            angle = pos / 10000 ** (2 * (j // 2) / 6)
            assert pe[0, pos, j].item() == pytest.approx(math.sin(angle) if j % 2 == 0 else math.cos(angle))
    # bit for bit the table T2T-ViT computed before its code became buffers (so old checkpoints give the same output)
    for n, dim in ((65, 256), (197, 384)):
        j = torch.arange(dim)
        angle = torch.arange(n, dtype=torch.float32).unsqueeze(1) * torch.pow(
            10000.0, -2.0 * torch.div(j, 2, rounding_mode="floor").float() / dim)
        old = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle)).unsqueeze(0)
        assert torch.equal(sinusoid_position_embedding(n, *sinusoid_code(dim)), old)


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = Attention(16, num_heads=4).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.zero_()  # ours has qkv_bias=False
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="divisible"):
        Attention(10, num_heads=4)


def test_token_attention_narrows_and_keeps_the_value_residual():
    torch.manual_seed(0)
    att = TokenAttention(12, 4)
    x = torch.randn(2, 5, 12)
    q, k, v = (x @ att.qkv.weight.T).split(4, -1)
    ref = v + att.proj(F.scaled_dot_product_attention(q, k, v))  # softmax(q k^T / sqrt(4)) v
    torch.testing.assert_close(att(x), ref, atol=1e-5, rtol=1e-5)


def test_orthogonal_random_features_are_orthogonal_within_blocks():
    w = orthogonal_random_features(10, 4, torch.Generator().manual_seed(0))
    assert w.shape == (10, 4)
    u = w[:4] / w[:4].norm(dim=1, keepdim=True)
    torch.testing.assert_close(u @ u.T, torch.eye(4), atol=1e-5, rtol=0)


def test_performer_approximates_unscaled_softmax_attention():
    # With many random features, phi(Q) (phi(K)^T V) / (phi(Q) sum phi(K)) -> softmax(Q K^T) V (T2T: no 1/sqrt(d)).
    torch.manual_seed(0)
    perf = TokenPerformer(8, 4, kernel_ratio=65536)  # m = 262144 features (Monte Carlo error ~ 1/sqrt(m))
    q, k = (0.3 * torch.randn(2, 2, 6, 4)).unbind(0)
    v = torch.randn(2, 6, 4)
    exact = (q @ k.transpose(1, 2)).softmax(-1) @ v
    torch.testing.assert_close(perf.mix(q, k, v), exact, atol=0.01, rtol=0)
    # and phi(q).phi(k) estimates exp(q.k) itself, without bias (biased features, e.g. un-sign-fixed QR, miss by >10%)
    est = perf.phi(q) @ perf.phi(k).transpose(1, 2)
    torch.testing.assert_close(est, torch.exp(q @ k.transpose(1, 2)), atol=0, rtol=0.02)
    assert perf.features.requires_grad is False and "features" in perf.state_dict()


def test_token_layer_rejects_an_unknown_mixer():
    with pytest.raises(ConfigError, match="performer"):
        TokenLayer(8, 4, mixer="linformer")


@pytest.mark.parametrize("mixer", ["performer", "transformer"])
def test_t2t_module_equals_its_steps_and_traces(mixer):
    torch.manual_seed(0)
    t2t = T2TModule(3, 32, token_dim=8, mixer=mixer).eval()
    x = torch.randn(2, 3, 64, 48)
    out = t2t(x)
    assert out.shape == (2, 4 * 3, 32)  # 64x48 -> 16x12 -> 8x6 -> 4x3 tokens
    # the same computation spelled out step by step with the paper's (kernel, stride, padding) schedule
    y = t2t.layers[0](soft_split(x, 7, 4, 2))
    y = t2t.layers[1](soft_split(restructurize(y, 16, 12), 3, 2, 1))
    ref = t2t.project(soft_split(restructurize(y, 8, 6), 3, 2, 1))
    torch.testing.assert_close(out, ref)
    gm = trace(t2t, (x,))
    torch.testing.assert_close(gm(x), out)
    small = torch.randn(1, 3, 20, 20)
    torch.testing.assert_close(gm(small), t2t(small))  # shapes are computed, not baked in
