import pytest
import torch
import torch.nn.functional as F

from slimkit.errors import ConfigError
from slimkit.layers.sandglass import SandglassBlock, sandglass_hidden


def _bn(x: torch.Tensor, bn: torch.nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _reference(block: SandglassBlock, x: torch.Tensor, stride: int, first_dw: bool = True) -> torch.Tensor:
    """The paper's Table 2 written out with functional ops from the block's own weights."""
    y = x
    if first_dw:
        conv, bn = block.dw1[0], block.dw1[1]
        y = F.relu6(_bn(F.conv2d(y, conv.weight, padding=1, groups=y.shape[1]), bn))
    y = _bn(F.conv2d(y, block.reduce[0].weight), block.reduce[1])  # linear bottleneck: no activation
    y = F.relu6(_bn(F.conv2d(y, block.expand[0].weight), block.expand[1]))
    y = _bn(F.conv2d(y, block.dw2[0].weight, stride=stride, padding=1, groups=y.shape[1]), block.dw2[1])
    return y


def _randomize_bn(block: torch.nn.Module) -> None:
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def test_block_matches_hand_composed_reference_with_identity_shortcut():
    torch.manual_seed(0)
    block = SandglassBlock(48, 48, stride=1, reduction=12).eval()
    _randomize_bn(block)
    x = torch.randn(2, 48, 8, 8)
    assert block.reduce[0].out_channels == 16  # 48 // 12 = 4 is below ceil(48 / 6) = 8, rounded up to 16
    torch.testing.assert_close(block(x), _reference(block, x, 1) + x)


def test_no_shortcut_when_channels_change_or_stride_two():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    wider = SandglassBlock(16, 32, stride=1, reduction=2, first_dw=False).eval()
    _randomize_bn(wider)
    torch.testing.assert_close(wider(x), _reference(wider, x, 1, first_dw=False))
    strided = SandglassBlock(16, 16, stride=2, reduction=2).eval()
    _randomize_bn(strided)
    out = strided(x)
    assert out.shape == (2, 16, 4, 4) and not strided.use_res
    torch.testing.assert_close(out, _reference(strided, x, 2))


def test_stride_sits_on_the_second_depthwise():
    block = SandglassBlock(16, 16, stride=2)
    assert block.dw1[0].stride == (1, 1) and block.dw2[0].stride == (2, 2)
    assert block.reduce[0].stride == (1, 1) and block.expand[0].stride == (1, 1)
    assert block(torch.randn(1, 16, 7, 7)).shape == (1, 16, 4, 4)


def test_partial_identity_adds_the_shortcut_to_the_first_channels_only():
    torch.manual_seed(0)
    block = SandglassBlock(16, 16, identity_multiplier=0.5).eval()
    x = torch.randn(1, 16, 6, 6)
    ref = _reference(block, x, 1)
    ref[:, :8] += x[:, :8]
    torch.testing.assert_close(block(x), ref)


def test_activation_hook_and_linear_ends():
    block = SandglassBlock(16, 16, act_layer=torch.nn.Hardswish)
    acts = [type(m) for m in block.modules() if isinstance(m, torch.nn.Hardswish)]
    assert len(acts) == 2  # after the first depthwise and after the expansion; reduce and dw2 stay linear
    assert len(block.reduce) == 2 and len(block.dw2) == 2


def test_hidden_width_rule_and_bad_arguments():
    assert sandglass_hidden(960, 960, 6) == 160
    assert sandglass_hidden(32, 96, 2) == 16
    assert sandglass_hidden(96, 144, 6) == 32  # 96 // 6 = 16 < ceil(144 / 6) = 24 -> 32
    with pytest.raises(ConfigError, match="stride"):
        SandglassBlock(8, 8, stride=3)
    with pytest.raises(ConfigError, match="identity_multiplier"):
        SandglassBlock(8, 8, identity_multiplier=0.0)
