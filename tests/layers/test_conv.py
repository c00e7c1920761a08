import torch
from torch import nn
from torch.nn import functional as F

from slimkit.layers.conv import InvertedResidual, conv_bn


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _randomize(m):
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
    return m.eval()


def test_inverted_residual_with_a_5x5_kernel_matches_its_functional_form_and_hand_count():
    """One block serves MobileNetV2 (3x3, hidden = 6 cin) and the mobilenet search space (k x k, any hidden)."""
    block = _randomize(InvertedResidual(8, 8, 1, 0.0, nn.ReLU6, kernel=5, hidden=20))
    assert sum(p.numel() for p in block.parameters()) == 8 * 20 + 2 * 20 + 20 * 25 + 2 * 20 + 20 * 8 + 2 * 8
    x = torch.randn(2, 8, 9, 9)
    e, d, p = block.expand, block.dw, block.project
    h = F.relu6(_bn(F.conv2d(x, e[0].weight), e[1]))
    h = F.relu6(_bn(F.conv2d(h, d[0].weight, stride=1, padding=2, groups=20), d[1]))
    ref = x + _bn(F.conv2d(h, p[0].weight), p[1])
    torch.testing.assert_close(block(x), ref)


def test_inverted_residual_without_expansion_strided_has_no_expand_and_no_shortcut():
    block = _randomize(InvertedResidual(8, 16, 2, 1, nn.ReLU))
    assert isinstance(block.expand, nn.Identity) and not block.use_res and block.dw[0].kernel_size == (3, 3)
    x = torch.randn(1, 8, 8, 8)
    d, p = block.dw, block.project
    ref = _bn(F.conv2d(F.relu(_bn(F.conv2d(x, d[0].weight, stride=2, padding=1, groups=8), d[1])), p[0].weight), p[1])
    torch.testing.assert_close(block(x), ref)


def test_conv_bn_is_conv_then_bn_then_the_activation_and_the_blocks_use_it():
    from slimkit.layers.mobile_former import pointwise_bn
    from slimkit.layers.sandglass import SandglassBlock

    unit = conv_bn(4, 6, 3, 2, 2, nn.ReLU6)
    assert [type(m) for m in unit] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6]
    assert unit[0].padding == (1, 1) and unit[0].groups == 2 and unit[0].bias is None
    assert [type(m) for m in conv_bn(4, 6, 1)] == [nn.Conv2d, nn.BatchNorm2d]
    assert [type(m) for m in pointwise_bn(4, 6)] == [nn.Conv2d, nn.BatchNorm2d]
    sg = SandglassBlock(16, 16)
    assert [type(m) for m in sg.dw1] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6] and len(sg.reduce) == 2
