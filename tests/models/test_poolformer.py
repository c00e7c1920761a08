import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.export import export_onnx
from slimkit.graph.trace import trace
from slimkit.layers.poolformer import LayerScale2d
from slimkit.models import create_model
from slimkit.models.poolformer import _CFGS, PoolFormer
from slimkit.profile import count_macs, count_params

from .helpers import flop_counter_macs

# Yu et al. 2022, Table 2: (params M, MACs G) at 224x224, 1000 classes.
PAPER = {"poolformer_s12": (11.9, 1.8), "poolformer_s24": (21.4, 3.4), "poolformer_s36": (30.9, 5.0)}
M_CFGS = {"m36": ((6, 6, 18, 6), (56.2, 8.8)), "m48": ((8, 8, 24, 8), (73.5, 11.6))}  # dims (96, 192, 384, 768)


def hand_macs(layers: tuple[int, ...], dims: tuple[int, ...], size: int = 224, classes: int = 1000,
              **_: object) -> int:
    """Convolution + linear MACs by hand: 7x7/4 stem, 3x3/2 downsamplings, 1x1-conv MLPs (ratio 4), head.

    Pooling (a 3x3 average, additions only), GroupNorm and layer scale are not multiply-accumulates of a weight and
    are not counted, by the paper either (slimkit.profile reports them separately as other_ops).
    """
    hw = (size + 4 - 7) // 4 + 1
    macs = hw * hw * dims[0] * 3 * 7 * 7
    for i, (n, c) in enumerate(zip(layers, dims, strict=True)):
        if i > 0:
            hw = (hw + 2 - 3) // 2 + 1
            macs += hw * hw * c * dims[i - 1] * 3 * 3
        macs += n * 2 * hw * hw * c * 4 * c
    return macs + dims[-1] * classes


@pytest.mark.parametrize("name", list(PAPER))
def test_params_match_the_paper(name):
    # measured: 11.92, 21.39, 30.86 M
    assert count_params(create_model(name, num_classes=1000)) / 1e6 == pytest.approx(PAPER[name][0], rel=0.01)


@pytest.mark.slow
def test_s12_macs_match_the_paper_and_a_hand_count():
    macs = count_macs(create_model("poolformer_s12", num_classes=1000), (3, 224, 224))  # 1.812G
    assert macs == hand_macs(**_CFGS["poolformer_s12"])
    assert macs / 1e9 == pytest.approx(1.8, rel=0.02)


@pytest.mark.slow
def test_s24_macs_with_an_independent_counter():
    macs = flop_counter_macs(create_model("poolformer_s24", num_classes=1000), (3, 224, 224))  # 3.392G
    assert macs == hand_macs(**_CFGS["poolformer_s24"])
    assert macs / 1e9 == pytest.approx(3.4, rel=0.02)
    # the rest by hand only (no forward)
    assert hand_macs(**_CFGS["poolformer_s36"]) / 1e9 == pytest.approx(5.0, rel=0.02)
    for layers, (_, gmacs) in M_CFGS.values():
        assert hand_macs(layers, (96, 192, 384, 768)) / 1e9 == pytest.approx(gmacs, rel=0.02)


@pytest.mark.parametrize("variant", list(M_CFGS))
def test_unregistered_m_variants_match_the_paper_params(variant):
    layers, (mparams, _) = M_CFGS[variant]
    m = PoolFormer(layers, (96, 192, 384, 768), layer_scale_init=1e-6, num_classes=1000)
    assert count_params(m) / 1e6 == pytest.approx(mparams, rel=0.01)  # measured 56.17, 73.47 M


def test_small_input_keeps_resolution_in_the_stem():
    m = create_model("poolformer_s12", num_classes=10, in_chans=1, small_input=True).eval()
    with torch.no_grad():
        assert m.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 512, 4, 4)  # 28 -> 28, 14, 7, 4
        assert m.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 512, 4, 4)
    default = create_model("poolformer_s12").eval()
    with torch.no_grad():
        assert default.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)  # stride 32
    assert default.features[1][0].scale1.weight[0].item() == pytest.approx(1e-5)
    s36 = create_model("poolformer_s36", dims=(8, 8, 8, 8))  # narrow, but keeps S36's 1e-6 layer-scale init
    assert s36.features[1][0].scale1.weight[0].item() == pytest.approx(1e-6)


def test_bad_config_raises():
    with pytest.raises(ConfigError, match="same"):
        create_model("poolformer_s12", layers=(2, 2, 6))


def test_fx_trace_and_onnx_parity_at_small_size(tmp_path):
    torch.manual_seed(0)
    m = create_model("poolformer_s12", num_classes=10, small_input=True).eval()
    with torch.no_grad():  # non-trivial layer scales, so the mixer and MLP branches matter in the parity check
        for mod in m.modules():
            if isinstance(mod, LayerScale2d):
                mod.weight.fill_(0.5)
    x = torch.randn(2, 3, 32, 32)
    gm = trace(m, (x,))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), m(x))
    assert sum(n.op == "call_module" and isinstance(gm.get_submodule(n.target), torch.nn.GroupNorm)
               for n in gm.graph.nodes) == 2 * 12 + 1
    res = export_onnx(m, tmp_path / "pf.onnx", torch.randn(1, 3, 28, 28))
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
