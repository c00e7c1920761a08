"""Every registered model and a list of timm/torchvision models: prune, check against the masked reference,
export to ONNX, save and reload."""

import warnings

import pytest
import torch
from torch import nn

from slimkit.errors import BudgetError, ConfigError, GraphError, SlimkitError, UnknownNameError
from slimkit.export import export_onnx
from slimkit.models import create_model, list_models, model_info
from slimkit.profile import count_macs, count_params
from slimkit.prune import load, prune, save

from .reference import assert_prune_matches_reference


def _x(name, batch=2):
    c, h, w = model_info(name)["input_size"]
    return torch.randn(batch, c, min(h, 64), min(w, 64))


@pytest.mark.parametrize("name", list_models())
def test_registered_model_prunes_exactly_exports_and_reloads(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    x = _x(name)
    pruned, _ = assert_prune_matches_reference(model, x, 0.5, allocation="uniform")  # half of every group
    # `partial_prune` models have channel groups the graph blocks today (MicroNet's shift-max and grouped convs
    # after shuffles, Mobile-Former 26M's grouped convs after shuffles): only the rest shrinks (issue 3)
    limit = 0.95 if model_info(name).get("partial_prune") else 0.6
    assert count_macs(pruned, x) < limit * count_macs(model, x)
    res = export_onnx(pruned, tmp_path / "p.onnx", x)
    assert res.max_abs_diff <= 1e-4 * max(1.0, float(pruned(x).abs().max()))  # float32 rounding scales with size
    save(pruned, tmp_path / "p.safetensors", model_name=name, model_kwargs={"num_classes": 10})
    back = load(tmp_path / "p.safetensors").eval()
    assert count_params(back) == count_params(pruned)
    torch.testing.assert_close(back(x), pruned(x))


def test_nothing_pruned_is_identical_and_original_untouched():
    model = create_model("resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    same = prune(model, x, ratio=0.0)
    torch.testing.assert_close(same(x), model(x), atol=1e-6, rtol=0)
    half = prune(model, x, ratio=0.5)
    assert count_params(half) < count_params(model)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_zero_channels_are_pruned_first_and_change_nothing():
    torch.manual_seed(0)
    model = create_model("convnet_small").eval()
    conv, bn = model.features[0], model.features[1]
    with torch.no_grad():  # channels 0..7 of the first conv produce exactly zero after BN
        conv.weight[:8] = 0
        bn.weight[:8] = 0
        bn.bias[:8] = 0
    x = torch.randn(2, 3, 16, 16)
    pruned = prune(model, x, ratio=0.5, importance="l1", ignored_layers=["features.4", "features.8"],
                   allocation="uniform")  # half of the 16, on any CPU (latency's default blocks are 16 on AVX-512)
    assert pruned.features[0].out_channels == 8 and pruned.features[4].out_channels == 32
    torch.testing.assert_close(pruned(x), model(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kw", [{"macs_target": 0.5}, {"params_target": 0.4}, {"macs_target": 0.5, "round_to": 8}])
def test_budgets_are_met(kw):
    model = create_model("resnet20", in_chans=1)
    x = torch.randn(1, 1, 28, 28)
    pruned = prune(model, x, **kw)
    if "macs_target" in kw:
        assert count_macs(pruned, x) <= kw["macs_target"] * count_macs(model, x)
        assert count_macs(pruned, x) >= 0.4 * count_macs(model, x)  # bisection lands close to the target
    else:
        assert count_params(pruned) <= kw["params_target"] * count_params(model)
    if kw.get("round_to"):
        convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)][1:]
        assert all(m.out_channels % 8 == 0 for m in convs)


def test_round_to_keeps_multiples_and_leaves_groups_of_one_block_whole():
    model = create_model("resnet20", in_chans=1)
    x = torch.randn(1, 1, 28, 28)
    pruned = prune(model, x, ratio=0.5, round_to=16, allocation="uniform")  # half of every group
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert widths[:7] == [16] * 7  # stage 1 (16 channels): one block of 16, nothing to cut
    assert all(w % 16 == 0 for w in widths) and widths[7:] == [16] * 7 + [32] * 7


def test_round_to_auto_is_this_cpus_block(monkeypatch):
    import slimkit.prune.allocation as allocation_mod

    model = create_model("resnet20", in_chans=1)
    x = torch.randn(1, 1, 28, 28)
    for block in (8, 16):
        monkeypatch.setattr(allocation_mod, "channel_multiple", lambda b=block: b)
        auto = prune(model, x, ratio=0.4, round_to="auto")
        explicit = prune(model, x, ratio=0.4, round_to=block)
        widths = [m.out_channels for m in auto.modules() if isinstance(m, nn.Conv2d)]
        assert widths == [m.out_channels for m in explicit.modules() if isinstance(m, nn.Conv2d)]
        assert all(w % block == 0 for w in widths)
    with pytest.raises(ConfigError, match="auto"):
        prune(model, x, ratio=0.4, round_to="fast")


def test_ignored_layers_and_classifier_are_kept():
    model = create_model("resnet20")
    x = torch.randn(1, 3, 32, 32)
    pruned = prune(model, x, ratio=0.5, ignored_layers=["stages.0.0.conv1", model.stages[1][0].conv1],
                   allocation="uniform")  # half of every group, whatever this CPU's block
    assert pruned.stages[0][0].conv1.out_channels == 16 and pruned.stages[1][0].conv1.out_channels == 32
    assert pruned.stages[0][1].conv1.out_channels == 8 and pruned.head.out_features == 10


def test_clear_errors():
    model = create_model("convnet_tiny")
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="exactly one budget"):
        prune(model, x)
    with pytest.raises(ConfigError, match="ignored_layers"):
        prune(model, x, ratio=0.5, ignored_layers=["nope"])
    with pytest.raises(UnknownNameError, match="l1"):
        prune(model, x, ratio=0.5, importance="l3")
    with pytest.raises(ConfigError, match="neither a fraction"):  # 10 MACs: a fraction typed wrong, not a count
        prune(model, x, macs_target=10)
    with pytest.raises(BudgetError, match="Relax the target"):
        prune(model, x, macs_target=1000)

    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(GraphError, match="control flow"):
        prune(Untraceable(), x, ratio=0.5)


def test_functional_parameter_use_blocks_instead_of_breaking():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.w = nn.Parameter(torch.randn(6, 8, 1, 1))
            self.b = nn.Conv2d(6, 6, 1)
            self.fc = nn.Linear(6, 2)

        def forward(self, x):
            y = torch.nn.functional.conv2d(self.a(x), self.w)
            return self.fc(self.b(y).mean((2, 3)))

    model = Functional()
    x = torch.randn(1, 3, 4, 4)
    pruned = prune(model, x, ratio=0.5)
    assert pruned.a.out_channels == 8  # feeds an op the engine does not know: kept whole
    assert pruned.b.out_channels == 3 and pruned(x).shape == (1, 2)


EXTERNAL = ["timm:resnet18", "timm:mobilenetv2_100", "timm:mobilenetv3_small_100", "timm:efficientnet_b0",
            "timm:convnext_atto", "timm:regnetx_002", "timm:densenet121", "timm:ghostnet_100",
            "timm:deit_tiny_patch16_224", "timm:mobilevit_xxs", "torchvision:resnet18", "torchvision:mobilenet_v2",
            "torchvision:mobilenet_v3_small", "torchvision:efficientnet_b0", "torchvision:shufflenet_v2_x0_5",
            "torchvision:densenet121", "torchvision:regnet_x_400mf", "torchvision:convnext_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("spec", EXTERNAL)
def test_external_models_prune_export_and_reload(spec, tmp_path):
    warnings.simplefilter("ignore")
    size = 224 if any(k in spec for k in ("deit", "vit")) else 64
    torch.manual_seed(0)
    model = create_model(spec, num_classes=10).eval()
    x = torch.randn(1, 3, size, size)
    try:
        pruned = prune(model, x, ratio=0.5).eval()
    except SlimkitError as e:  # never a crash from deep inside torch
        assert spec == "timm:mobilevit_xxs", f"{spec}: {e}"
        return
    assert count_macs(pruned, x) < count_macs(model, x)
    assert pruned(x).shape == (1, 10)
    res = export_onnx(pruned, tmp_path / "p.onnx", x)
    assert res.max_abs_diff <= 1e-4 * max(1.0, float(pruned(x).abs().max()))
    save(pruned, tmp_path / "p.safetensors", model_name=spec, model_kwargs={"num_classes": 10})
    back = load(tmp_path / "p.safetensors").eval()
    assert count_params(back) == count_params(pruned)
    torch.testing.assert_close(back(x), pruned(x))


def test_latency_budget_is_met_as_measured(monkeypatch):
    """The latency budget search against a deterministic stand-in for the clock (time proportional to MACs plus a
    fixed overhead): the returned model meets the target under the same measure. Real timings belong in
    benchmarks/ (a timed assertion here failed CI on a loaded machine)."""
    from types import SimpleNamespace

    import slimkit.prune.pruner as pruner_mod

    model = create_model("convnet_small", in_chans=1)
    x = torch.randn(1, 1, 32, 32)
    calls = []

    def fake_latency(m, shape, **kwargs):
        ms = 0.05 + 1e-6 * count_macs(m, torch.randn(1, *shape))
        calls.append(ms)
        return SimpleNamespace(median_ms=ms)

    monkeypatch.setattr(pruner_mod, "measure_latency", fake_latency)
    base = fake_latency(model, (1, 32, 32)).median_ms
    target = 0.8 * base
    pruned = prune(model, x, latency_target=target)
    got = fake_latency(pruned, (1, 32, 32)).median_ms
    assert len(calls) > 2  # the search measured candidates
    assert count_params(pruned) < count_params(model)
    assert got <= target
    assert got >= 0.5 * base  # not pruned far past the budget
