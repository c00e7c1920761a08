import torch
from torch import nn

from slimkit.layers import CoordinateAttention, SoftRootSign


def test_srs_value_and_gradients_match_the_formula():
    srs = SoftRootSign(alpha=2.0, beta=3.0)
    x = torch.linspace(-3, 5, 17, dtype=torch.float64, requires_grad=True)
    srs = srs.double()
    y = srs(x)
    a, b = 2.0, 3.0
    ref = x / (x / a + torch.exp(-x / b))
    torch.testing.assert_close(y, ref)
    (gx,) = torch.autograd.grad(y.sum(), x, retain_graph=True)
    d = x / a + torch.exp(-x / b)
    dd = 1 / a - torch.exp(-x / b) / b
    torch.testing.assert_close(gx, (d - x * dd) / d**2)  # quotient rule by hand
    y.sum().backward()
    ga = (x**2 / a**2 / d**2).sum()  # d/d(alpha) of x / (x/alpha + e) = x^2 / (alpha^2 d^2)
    torch.testing.assert_close(srs.alpha.grad, ga.detach())
    assert torch.autograd.gradcheck(lambda t: srs(t), (torch.randn(5, dtype=torch.float64, requires_grad=True),))


def test_coordinate_attention_matches_a_loop_reference():
    torch.manual_seed(0)
    ca = CoordinateAttention(16, reduction=4, act_layer=nn.ReLU).eval()
    x = torch.randn(2, 16, 5, 7)
    out = ca(x)
    # reference with explicit loops over rows and columns
    n, c, h, w = x.shape
    ph = torch.stack([x[:, :, i, :].mean(-1) for i in range(h)], -1)  # N x C x H
    pw = torch.stack([x[:, :, :, j].mean(-1) for j in range(w)], -1)  # N x C x W

    def shared(v):  # v: N x C x L -> N x hidden x L through conv1(1x1) + BN(eval) + ReLU
        z = torch.einsum("oc,ncl->nol", ca.conv1.weight[:, :, 0, 0], v)
        bn = ca.bn1
        z = (z - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + bn.eps)
        return torch.relu(z * bn.weight[None, :, None] + bn.bias[None, :, None])

    gh = torch.sigmoid(torch.einsum("oc,ncl->nol", ca.conv_h.weight[:, :, 0, 0], shared(ph))
                       + ca.conv_h.bias[None, :, None])
    gw = torch.sigmoid(torch.einsum("oc,ncl->nol", ca.conv_w.weight[:, :, 0, 0], shared(pw))
                       + ca.conv_w.bias[None, :, None])
    ref = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            ref[:, :, i, j] = x[:, :, i, j] * gh[:, :, i] * gw[:, :, j]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert ca.conv1.out_channels == 8  # max(min_hidden, 16 // 4)
