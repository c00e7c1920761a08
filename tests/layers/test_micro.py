import pytest
import torch
import torch.nn.functional as F

from slimkit.errors import ConfigError
from slimkit.layers.micro import (
    ChannelShuffle,
    DynamicShiftMax,
    MicroDepthwiseConv,
    MicroPointwiseConv,
    channel_shuffle,
)


def test_channel_shuffle_is_the_transpose_permutation_and_has_an_inverse():
    x = torch.arange(12.0).view(1, 12, 1, 1)
    y = channel_shuffle(x, 3).flatten().tolist()
    # groups [0..3], [4..7], [8..11] interleaved: one channel from each group in turn
    assert y == [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
    x = torch.randn(2, 12, 3, 3)
    assert torch.equal(channel_shuffle(channel_shuffle(x, 3), 4), x)  # shuffle(g) is undone by shuffle(C / g)
    assert sorted(y) == list(range(12))
    assert torch.equal(ChannelShuffle(1)(x), x)


def test_micro_pointwise_equals_its_dense_1x1_conv():
    torch.manual_seed(0)
    cin, cout, r, (g1, g2) = 16, 12, 2, (4, 2)  # C/R = 8 = G1 * G2: every output sees every input once
    pw = MicroPointwiseConv(cin, cout, r, (g1, g2), norm=False)
    x = torch.randn(2, cin, 5, 4)
    # dense equivalent: block-diagonal W1 (mid x cin), shuffle permutation P, block-diagonal W2 (cout x mid)
    mid = cin // r
    w1 = torch.zeros(mid, cin)
    for o in range(mid):
        g = o // (mid // g1)
        w1[o, g * (cin // g1):(g + 1) * (cin // g1)] = pw.squeeze.weight[o, :, 0, 0]
    perm = torch.arange(mid).view(g1, -1).t().flatten()  # shuffled channel i reads channel perm[i]
    w2 = torch.zeros(cout, mid)
    for o in range(cout):
        g = o // (cout // g2)
        w2[o, g * (mid // g2):(g + 1) * (mid // g2)] = pw.expand.weight[o, :, 0, 0]
    dense = w2 @ w1[perm]
    torch.testing.assert_close(pw(x), F.conv2d(x, dense[:, :, None, None]), atol=1e-5, rtol=1e-5)
    assert (dense != 0).all()  # G1 * G2 = C / R: the factorization is dense (rank C / R), no zero paths
    p_micro = sum(p.numel() for p in pw.parameters())
    assert p_micro == cin * mid // g1 + mid * cout // g2 < cin * cout


def test_micro_pointwise_picks_balanced_groups_and_rejects_bad_ones():
    pw = MicroPointwiseConv(32, 32, reduction=2)  # C/R = 16 -> G1 = G2 = 4
    assert (pw.squeeze.groups, pw.expand.groups) == (4, 4)
    with pytest.raises(ConfigError, match="perfect square"):
        MicroPointwiseConv(24, 24, reduction=2)
    with pytest.raises(ConfigError, match="groups"):
        MicroPointwiseConv(24, 24, reduction=2, groups=(5, 2))


@pytest.mark.parametrize("stride", [1, 2])
def test_micro_depthwise_equals_the_kxk_depthwise_outer_product(stride):
    torch.manual_seed(0)
    c, k, (m1, m2) = 3, 5, (2, 3)
    dw = MicroDepthwiseConv(c, k, stride, (m1, m2), norm=False)
    x = torch.randn(2, c, 9, 8)
    out = dw(x)
    assert out.shape == (2, c * m1 * m2, (9 - 1) // stride + 1, (8 - 1) // stride + 1)
    wv, wh = dw.conv_v.weight[:, 0, :, 0], dw.conv_h.weight[:, 0, 0, :]  # (c*m1) x k, (c*m1*m2) x k
    dense = torch.stack([torch.outer(wv[o // m2], wh[o]) for o in range(c * m1 * m2)])[:, None]
    ref = F.conv2d(x, dense, stride=stride, padding=k // 2, groups=c)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in dw.parameters()) == c * m1 * k + c * m1 * m2 * k  # O(k) instead of O(k^2)


def test_dynamic_shift_max_matches_a_hand_loop():
    torch.manual_seed(0)
    c, g = 8, 4  # shift by one group = 2 channels
    sm = DynamicShiftMax(c, g, reduction=2, fusions=2, shifts=2, init=((1.0, 0.0), (0.5, 0.5))).eval()
    x = torch.randn(2, c, 3, 2)
    out = sm(x)
    # hyper-function by hand
    z = x.mean((2, 3)) @ sm.fc1.weight.t() + sm.fc1.bias
    z = torch.relu(z) @ sm.fc2.weight.t() + sm.fc2.bias
    z = (torch.clamp(z + 3, 0, 6) / 6 - 0.5) * 4
    init = [[1.0, 0.0], [0.5, 0.5]]
    ref = torch.empty_like(x)
    for n in range(2):
        for i in range(c):
            fused = []
            for k in range(2):
                s = 0
                for j in range(2):
                    a = z[n, (k * 2 + j) * c + i] + init[k][j]
                    s = s + a * x[n, (i + j * (c // g)) % c]
                fused.append(s)
            ref[n, i] = torch.maximum(fused[0], fused[1])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert sm.coefficients(x).shape == (2, 2, 2, c)


def test_dynamic_shift_max_with_zero_weights_is_its_initial_fusion():
    sm = DynamicShiftMax(6, 3, fusions=1, shifts=2, init=((1.0, 0.0),))
    torch.nn.init.zeros_(sm.fc2.weight)
    torch.nn.init.zeros_(sm.fc2.bias)  # h-sigmoid(0) = 0.5 -> zero offset: coefficients are exactly `init`
    x = torch.randn(1, 6, 4, 4)
    torch.testing.assert_close(sm(x), x)
    with pytest.raises(ConfigError, match="groups"):
        DynamicShiftMax(6, 4)
