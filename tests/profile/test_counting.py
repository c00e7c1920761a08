"""MAC and parameter counts against hand counts and fvcore (an independent counter)."""

import warnings

import pytest
import torch
from torch import nn

from slimkit.errors import ProfileError
from slimkit.models import create_model, list_models, model_info
from slimkit.profile import count_macs, count_params, profile


class Tiny(nn.Module):
    """conv, grouped conv, depthwise conv, BN, functional matmul and attention, linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.group = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.bn(self.dw(self.group(self.conv(x))))
        t = x.flatten(2).transpose(1, 2)  # B, 16 tokens, 8
        t = t @ t.transpose(1, 2) @ t  # two functional bmm's
        t = nn.functional.scaled_dot_product_attention(t[:, None], t[:, None], t[:, None])[:, 0]
        return self.fc(t.mean(1))


def test_hand_count_of_every_op_kind():
    r = profile(Tiny(), (3, 4, 4))
    hw = 16
    conv = hw * 8 * 3 * 9 + hw * 8 * 4 * 9 + hw * 8 * 9
    matmul = 16 * 16 * 8 + 16 * 8 * 16  # (16x8)(8x16) then (16x16)(16x8)
    attention = 2 * 16 * 16 * 8  # QK^T and AV
    assert r.by_kind["conv"] == conv
    assert r.by_kind["matmul"] == matmul
    assert r.by_kind["attention"] == attention
    assert r.by_kind["linear"] == 8 * 4
    assert r.macs == conv + matmul + attention + 32
    assert r.params == 3 * 8 * 9 + (8 * 4 * 9 + 8) + (8 * 9 + 8) + 16 + (32 + 4)
    rows = {row.name: row for row in r.layers}
    assert rows["group"].macs == hw * 8 * 4 * 9 and rows["group"].params == 8 * 4 * 9 + 8
    assert rows[""].macs == matmul + attention  # functional ops are attributed to the module that calls them
    assert rows["bn"].other_ops == 8 * hw and rows["bn"].macs == 0
    assert sum(row.macs for row in r.layers) == r.macs


def test_shared_weights_count_once_and_batch_scales_macs():
    lin = nn.Linear(10, 10)
    model = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_params(model) == 110
    assert count_macs(model, torch.randn(3, 10)) == 3 * 2 * 100
    assert count_macs(create_model("resnet20"), (2, 3, 32, 32)) == 2 * count_macs(create_model("resnet20"), (3, 32, 32))


def _fvcore_macs(model, x):
    from fvcore.nn import FlopCountAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fa = FlopCountAnalysis(model.eval(), x)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        ops = fa.by_operator()
    # fvcore also counts batch_norm / pooling / elementwise ops; papers' MACs (and ours) are these four:
    return sum(v for k, v in ops.items() if k in ("conv", "linear", "matmul", "bmm", "einsum", "addmm"))


def _size(name):
    c, h, w = model_info(name)["input_size"]
    return (c, min(h, 64), min(w, 64))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_matches_fvcore(name):
    pytest.importorskip("fvcore")
    model = create_model(name, num_classes=10)
    x = torch.randn(1, *_size(name))
    ours = profile(model, x)
    assert ours.macs > 0
    assert ours.params == sum(p.numel() for p in model.parameters())
    ref = _fvcore_macs(model, x)
    assert ours.by_kind.get("conv", 0) + ours.by_kind.get("linear", 0) + ours.by_kind.get("matmul", 0) + \
        ours.by_kind.get("attention", 0) == pytest.approx(ref, rel=0.01)


def test_wrong_input_shape_names_expected_channels():
    with pytest.raises(ProfileError, match="expects 1 input channels"):
        profile(create_model("resnet20", in_chans=1), (3, 28, 28))
    with pytest.raises(ProfileError, match="shape like"):
        profile(create_model("resnet20"), "3x32x32")


def test_report_table_and_dict():
    r = profile(create_model("resnet20"), (3, 32, 32))
    d = r.to_dict()
    assert d["macs"] == r.macs and len(d["layers"]) == len(r.layers)
    assert r.table(5).row_count == 5


def test_counting_under_no_grad_with_an_expanded_parameter_token():
    """CaiT / PiT pass an expanded class token (a view of a parameter made under no_grad: requires grad, no grad
    function) into a sub-module; FlopCounterMode's module tracker failed on it."""

    class ClassToken(nn.Module):
        def __init__(self):
            super().__init__()
            self.cls = nn.Parameter(torch.randn(1, 1, 8))
            self.fc = nn.Linear(8, 4)
            self.frozen = nn.Parameter(torch.ones(1), requires_grad=False)

        def forward(self, x):
            tok = self.cls.expand(x.shape[0], -1, -1)
            alone = self.fc(tok).mean(1)  # passed to a sub-module as it is, as PiT does
            return self.fc(torch.cat([tok, x], 1)).mean(1) + alone  # and concatenated first, as CaiT does

    model = ClassToken()
    with torch.no_grad():
        assert count_macs(model, torch.randn(2, 3, 8)) == 2 * 4 * 8 * 4 + 2 * 1 * 8 * 4
    assert model.cls.requires_grad and not model.frozen.requires_grad  # flags restored


def _vit_built_for_32():
    timm = pytest.importorskip("timm")
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
                             num_classes=3).eval()


def test_a_vit_at_another_input_size_names_the_size_it_was_built_for():
    """timm's patch embedding asserts its image size: that was a bare AssertionError from deep inside the model."""
    with pytest.raises(ProfileError, match="built for 32x32 inputs .* got 16x16: .*img_size=16") as err:
        profile(_vit_built_for_32(), (3, 16, 16))
    assert "expects 3 input channels" not in str(err.value)  # the channels are right: no hint about them
