"""Every registered model honours the slimkit model interface (loops over the registry at test time)."""

import pytest
import torch

from slimkit.models import create_model, list_models, model_info

ALL = list_models()
# 224x224 models are exercised at a smaller size that still survives their downsampling
SMALL = (3, 64, 64)


def _shape(name):
    c, h, w = model_info(name)["input_size"]
    return (c, h, w) if h <= 64 else SMALL


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_and_interface(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    x = torch.randn(2, *_shape(name))
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        a, b = model(x), model(x)
        feats = model.forward_features(x)
        emb = model.forward_head(feats, pre_logits=True)
        assert torch.equal(a, b)
        torch.testing.assert_close(model.forward_head(feats), a)
    assert emb.shape == (2, model.num_features)
    assert model.get_classifier().out_features == 7 and model.num_classes == 7


@pytest.mark.parametrize("name", [n for n in ALL if model_info(n).get("small_input")])
def test_small_grey_inputs(name):
    model = create_model(name, num_classes=10, in_chans=1).eval()
    for hw in (28, 8):
        assert model(torch.randn(1, 1, hw, hw)).shape == (1, 10)


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and m.running_mean is not None:
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", ALL)
def test_fused_inference_form_is_equal(name):
    """fuse_model (conv + BN folding, fuse() of fusable blocks) never changes eval outputs."""
    from slimkit.layers import fuse_model

    torch.manual_seed(0)
    model = _randomise_bn(create_model(name, num_classes=7))
    x = torch.randn(2, *_shape(name))
    fused = fuse_model(model)
    with torch.no_grad():
        ref, out = model(x), fused(x)
    torch.testing.assert_close(out, ref, atol=1e-4 * max(1.0, float(ref.abs().max())), rtol=1e-4)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert n_bn == 0 or sum(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules()) < n_bn
