"""Baseline models against published sizes and hand counts."""

import pytest
import torch
from torch import nn

from slimkit.errors import ConfigError, ModelError, UnknownNameError
from slimkit.models import create_model
from slimkit.models.mobilenetv2 import make_divisible

from .helpers import flop_counter_macs


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _resnet_hand_count(depth, in_chans=3, classes=10, w=(16, 32, 64)):
    """Parameters of a CIFAR ResNet with 1x1 projection shortcuts, counted from the architecture."""
    n = (depth - 2) // 6
    total = 9 * in_chans * w[0] + 2 * w[0]  # stem conv + BN
    cin = w[0]
    for c in w:
        for j in range(n):
            cin_j = cin if j == 0 else c
            total += 9 * cin_j * c + 2 * c + 9 * c * c + 2 * c
            if cin_j != c:
                total += cin_j * c + 2 * c
        cin = c
    return total + w[-1] * classes + classes


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_resnet_params_match_hand_count(depth):
    assert _params(create_model(f"resnet{depth}")) == _resnet_hand_count(depth)
    assert _params(create_model(f"resnet{depth}", in_chans=1, num_classes=5)) == _resnet_hand_count(depth, 1, 5)


def test_published_sizes():
    # He et al. Table 6: ResNet-20 0.27M, ResNet-56 0.85M; MACs at 32x32 as reported by pruning papers.
    assert _params(create_model("resnet20")) / 1e6 == pytest.approx(0.27, abs=0.01)
    assert _params(create_model("resnet56")) / 1e6 == pytest.approx(0.85, abs=0.01)
    assert flop_counter_macs(create_model("resnet56"), (3, 32, 32)) / 1e6 == pytest.approx(125.5, rel=0.02)
    assert _params(create_model("vgg16")) / 1e6 == pytest.approx(14.7, rel=0.02)
    assert flop_counter_macs(create_model("vgg16"), (3, 32, 32)) / 1e6 == pytest.approx(313, rel=0.02)


@pytest.mark.slow
def test_mobilenetv2_imagenet_size():
    # Sandler et al. Table 4: 3.4M params (3.5M with the classifier as counted by torchvision), 300M MAdds.
    m = create_model("mobilenetv2_100", num_classes=1000)
    assert _params(m) / 1e6 == pytest.approx(3.5, rel=0.01)
    assert flop_counter_macs(m, (3, 224, 224)) / 1e6 == pytest.approx(300, rel=0.01)


def test_mobilenetv2_hooks_and_small_input():
    seen = []

    def attn(c):
        seen.append(c)
        return nn.Identity()

    m = create_model("mobilenetv2_050", act_layer=nn.Hardswish, attn_layer=attn, small_input=True, in_chans=1)
    kinds = {type(x) for x in m.modules()}
    assert nn.Hardswish in kinds and nn.ReLU6 not in kinds
    assert len(seen) == 17  # one per inverted residual block
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert make_divisible(32 * 0.35) == 16 and make_divisible(1280 * 1.4) == 1792


def test_bad_model_arguments_are_clear():
    with pytest.raises(UnknownNameError, match="resnet20"):
        create_model("resnet21")
    with pytest.raises(ModelError, match="resnet20"):
        create_model("resnet20", bogus=1)
    with pytest.raises(ConfigError, match="never downloads"):
        create_model("timm:resnet18", pretrained=True)
    from slimkit.models.resnet_cifar import CifarResNet

    for depth in (2, 21):  # no block per stage, not 6n+2
        with pytest.raises(ModelError, match="6n\\+2"):
            CifarResNet(depth=depth)
