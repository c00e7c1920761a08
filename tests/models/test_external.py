import pytest
import torch

from slimkit.errors import UnknownNameError
from slimkit.models import create_model


@pytest.mark.parametrize("spec", ["timm:resnet18", "torchvision:resnet18", "torchvision:mobilenet_v2"])
def test_external_models_build_offline_with_in_chans(spec):
    m = create_model(spec, num_classes=5, in_chans=1).eval()
    assert m(torch.randn(1, 1, 32, 32)).shape == (1, 5)
    assert m.get_classifier().out_features == 5


def test_unknown_external_suggests():
    with pytest.raises(UnknownNameError, match="resnet18"):
        create_model("timm:resnet1")
