"""`load_weights`: timm / torchvision state dicts in their usual layouts, head swap, input adaptation, refusals."""

import argparse
import json

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from slimkit.errors import CheckpointError
from slimkit.models import create_model, load_weights
from slimkit.models._weights import adapt_input_conv

X = torch.randn(2, 3, 32, 32)
RAN: list[str] = []  # what the refused pickle would have appended had it been unpickled


def _run_code(msg: str) -> None:
    RAN.append(msg)


class CarriesCode:
    """Unpickling this calls _run_code: what weights_only=True must refuse."""

    def __reduce__(self):
        return (_run_code, ("pickle code ran",))


def _save(sd: dict, path, fmt: str):
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def timm_src():
    torch.manual_seed(0)
    return timm.create_model("resnet18", num_classes=1000).eval()


@pytest.fixture(scope="module")
def tv_src():
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(num_classes=1000).eval()


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_timm_state_dict_round_trip(tmp_path, timm_src, fmt):
    path = _save(timm_src.state_dict(), tmp_path / f"w.{'pth' if fmt == 'torch' else 'safetensors'}", fmt)
    model = create_model("timm:resnet18", num_classes=1000).eval()
    report = load_weights(model, path)
    assert report.format == fmt and not report.replaced and not report.adapted and not report.removed_prefix
    assert len(report.loaded) == len(timm_src.state_dict())
    torch.testing.assert_close(model(X), timm_src(X), rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_torchvision_state_dict_goes_into_the_wrapper(tmp_path, tv_src, fmt):
    path = _save(tv_src.state_dict(), tmp_path / "w.bin", fmt)
    model = create_model("torchvision:mobilenet_v3_small", num_classes=1000).eval()
    report = load_weights(model, path)
    assert report.added_prefix == "model." and not report.replaced
    torch.testing.assert_close(model(X), tv_src(X), rtol=0, atol=0)


@pytest.mark.parametrize("spec", ["timm:resnet18", "torchvision:mobilenet_v3_small"])
def test_head_swap_1000_to_10_keeps_everything_but_the_head(tmp_path, timm_src, tv_src, spec):
    src = timm_src if spec.startswith("timm") else tv_src
    torch.save(src.state_dict(), tmp_path / "w.pt")
    torch.manual_seed(1)
    model = create_model(spec, num_classes=10).eval()
    fresh_head = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_weights(model, tmp_path / "w.pt")
    head = {"timm:resnet18": ["fc.weight", "fc.bias"],
            "torchvision:mobilenet_v3_small": ["model.classifier.3.weight", "model.classifier.3.bias"]}[spec]
    assert sorted(report.replaced) == sorted(head) and report.file_classes == 1000 and report.model_classes == 10
    assert "transfer learning" in report.describe() and "1000 classes" in report.describe()
    own = model.state_dict()
    prefix = "model." if spec.startswith("torchvision") else ""
    for k, v in src.state_dict().items():
        if prefix + k in head:
            assert torch.equal(own[prefix + k], fresh_head[prefix + k])  # left as initialised
        else:
            assert torch.equal(own[prefix + k], v), k
    # the features (everything before the classifier) are the source's exactly
    feats = model.forward_features(X) if prefix == "" else model.model.features(X)
    ref = src.forward_features(X) if prefix == "" else src.features(X)
    torch.testing.assert_close(feats, ref, rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "model_state_dict", "module.", "lightning", "ddp+state"])
def test_wrapped_keys(tmp_path, timm_src, wrap):
    sd = timm_src.state_dict()
    obj = {
        "state_dict": {"state_dict": sd, "epoch": 3, "optimizer": {"lr": 0.1}},
        "model": {"model": sd, "args": argparse.Namespace(lr=0.1)},  # timm's train.py keeps its args beside
        "model_state_dict": {"model_state_dict": sd, "epoch": 1},
        "module.": {"module." + k: v for k, v in sd.items()},
        "lightning": {"state_dict": {"model." + k: v for k, v in sd.items()}, "global_step": 10},
        "ddp+state": {"state_dict": {"module." + k: v for k, v in sd.items()}},
    }[wrap]
    torch.save(obj, tmp_path / "w.ckpt")
    model = create_model("timm:resnet18", num_classes=1000).eval()
    report = load_weights(model, tmp_path / "w.ckpt")
    assert report.container == {"module.": None, "lightning": "state_dict", "ddp+state": "state_dict"}.get(wrap, wrap)
    assert report.removed_prefix == {"module.": "module.", "lightning": "model.", "ddp+state": "module."}.get(wrap, "")
    torch.testing.assert_close(model(X), timm_src(X), rtol=0, atol=0)


def test_ema_copy_is_named_and_chosen_on_request(tmp_path, timm_src):
    sd = timm_src.state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"state_dict": sd, "state_dict_ema": ema}, tmp_path / "w.pth")
    model = create_model("timm:resnet18", num_classes=1000)
    report = load_weights(model, tmp_path / "w.pth")
    assert report.container == "state_dict" and "state_dict_ema" in report.describe()
    assert torch.equal(model.conv1.weight, sd["conv1.weight"])
    report = load_weights(model, tmp_path / "w.pth", ema=True)
    assert report.container == "state_dict_ema" and torch.equal(model.conv1.weight, ema["conv1.weight"])
    torch.save({"model_ema": ema}, tmp_path / "only_ema.pth")
    assert load_weights(model, tmp_path / "only_ema.pth").container == "model_ema"


def test_a_pickle_carrying_code_is_refused_and_nothing_runs(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": CarriesCode()}, tmp_path / "evil.pt")
    RAN.clear()
    with pytest.raises(CheckpointError, match="weights_only=True") as err:
        load_weights(nn.Linear(1, 1), tmp_path / "evil.pt")
    assert RAN == [] and "_run_code" in str(err.value) and "state_dict()" in str(err.value)
    torch.save(nn.Linear(2, 2), tmp_path / "whole_model.pt")  # a whole model object is code too
    with pytest.raises(CheckpointError, match="torch.nn.modules.linear.Linear"):
        load_weights(nn.Linear(2, 2), tmp_path / "whole_model.pt")
    # the reference: without weights_only the same file does run its code
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert RAN == ["pickle code ran"]


def test_input_conv_is_adapted_to_grey_and_the_output_matches(tmp_path, timm_src):
    torch.save(timm_src.state_dict(), tmp_path / "w.pt")
    model = create_model("timm:resnet18", num_classes=1000, in_chans=1).eval()
    report = load_weights(model, tmp_path / "w.pt")
    assert report.adapted == ("conv1.weight (3 -> 1 channels)",)
    grey = torch.randn(2, 1, 32, 32)
    # an RGB image whose three channels are the grey one gives the grey model's answer (weights summed)
    torch.testing.assert_close(model(grey), timm_src(grey.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)
    with pytest.raises(CheckpointError, match="conv1.weight"):
        load_weights(create_model("timm:resnet18", num_classes=1000, in_chans=1), tmp_path / "w.pt", strict=True)


def test_adapt_input_conv_against_repeated_inputs():
    conv = nn.Conv2d(3, 4, 3, bias=False)
    x = torch.randn(1, 3, 5, 5)
    for chans, inp in ((1, x.sum(1, keepdim=True) / 3), (6, torch.cat([x, x], 1)), (4, None)):
        w = adapt_input_conv(conv.weight.detach(), chans)
        assert w.shape == (4, chans, 3, 3)
        if chans == 1:  # a grey image fed to the summed filter = the mean image repeated over RGB
            ref = conv(inp.repeat(1, 3, 1, 1))
            torch.testing.assert_close(nn.functional.conv2d(inp, w), ref, rtol=1e-5, atol=1e-5)
        elif inp is not None:  # RGB repeated twice, filters repeated and halved: the same response
            torch.testing.assert_close(nn.functional.conv2d(inp, w), conv(x), rtol=1e-5, atol=1e-5)


def test_torchvision_in_chans_1_adapts_the_wrappers_first_conv(tmp_path, tv_src):
    torch.save(tv_src.state_dict(), tmp_path / "w.pt")
    model = create_model("torchvision:mobilenet_v3_small", num_classes=10, in_chans=1)
    report = load_weights(model, tmp_path / "w.pt")
    assert report.adapted == ("model.features.0.0.weight (3 -> 1 channels)",)
    assert len(report.replaced) == 2
    torch.testing.assert_close(model.model.features[0][0].weight, tv_src.features[0][0].weight.sum(1, keepdim=True))


def test_a_backbone_only_file_leaves_the_head_fresh(tmp_path, timm_src):
    torch.save({k: v for k, v in timm_src.state_dict().items() if not k.startswith("fc.")}, tmp_path / "w.pt")
    report = load_weights(create_model("timm:resnet18", num_classes=10), tmp_path / "w.pt")
    assert sorted(report.replaced) == ["fc.bias", "fc.weight"] and report.file_classes is None


def test_other_architecture_is_a_clear_error(tmp_path, timm_src):
    torch.save(timm_src.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="another architecture.*timm:<name>"):
        load_weights(create_model("timm:mobilenetv3_small_100"), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"missing from the file \d+: layer1.2"):
        load_weights(create_model("timm:resnet34"), tmp_path / "w.pt")
    extra = {**timm_src.state_dict(), "aux.weight": torch.zeros(3)}
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="not in the model 1: aux.weight"):
        load_weights(create_model("timm:resnet18", num_classes=1000), tmp_path / "extra.pt")


def test_other_widths_point_at_pruned_models(tmp_path):
    import slimkit

    m = create_model("resnet20", num_classes=10, in_chans=1)
    small = slimkit.prune(m, torch.randn(1, 1, 16, 16), ratio=0.5)
    torch.save(small.state_dict(), tmp_path / "pruned.pt")
    with pytest.raises(CheckpointError, match="different shapes.*pruned model"):
        load_weights(create_model("resnet20", num_classes=10, in_chans=1), tmp_path / "pruned.pt")
    slimkit.prune.save(small, tmp_path / "p.safetensors", model_name="resnet20", model_kwargs={"in_chans": 1})
    with pytest.raises(CheckpointError, match=r"slimkit.load\(path\)"):
        load_weights(create_model("resnet20", num_classes=10, in_chans=1), tmp_path / "p.safetensors")


def test_strict_refuses_a_head_of_another_class_count(tmp_path, timm_src):
    torch.save(timm_src.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="another number of classes"):
        load_weights(create_model("timm:resnet18", num_classes=10), tmp_path / "w.pt", strict=True)


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_weights(nn.Linear(1, 1), tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(nn.Linear(1, 1), tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_weights(nn.Linear(1, 1), tmp_path)
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, tmp_path / "no_weights.pt")
    with pytest.raises(CheckpointError, match="found no weights"):
        load_weights(nn.Linear(1, 1), tmp_path / "no_weights.pt")


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
def test_broken_values_are_refused_and_the_model_is_left_as_it_was(tmp_path, fmt):
    """NaN / inf (a diverged run) and integer values for float weights would load into a broken model."""
    torch.manual_seed(0)
    model = create_model("convnet_tiny", num_classes=10, in_chans=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    good = model.state_dict()
    weight = next(k for k, v in good.items() if v.dim() == 4)
    cases = {"nan": {**good, weight: good[weight].clone().index_fill_(0, torch.tensor([0]), float("nan"))},
             "inf": {**good, "head.bias": torch.full_like(good["head.bias"], float("-inf"))},
             "int": {**good, weight: good[weight].round().to(torch.int32)}}
    for name, sd in cases.items():
        path = _save(sd, tmp_path / f"{name}.{fmt}", fmt)
        match = "integer values" if name == "int" else "NaN or infinite"
        with pytest.raises(CheckpointError, match=match):
            load_weights(create_model("convnet_tiny", num_classes=10, in_chans=3), path)
        with pytest.raises(CheckpointError, match=match):
            load_weights(model, path, strict=True)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    half = {k: v.half() if v.is_floating_point() else v for k, v in good.items()}  # other float types still load
    load_weights(create_model("convnet_tiny", num_classes=10, in_chans=3), _save(half, tmp_path / f"h.{fmt}", fmt))


def test_report_is_frozen_and_serialisable(tmp_path, timm_src):
    torch.save(timm_src.state_dict(), tmp_path / "w.pt")
    report = load_weights(create_model("timm:resnet18", num_classes=10), tmp_path / "w.pt")
    with pytest.raises(AttributeError):
        report.replaced = ()
    assert json.loads(json.dumps(report.brief()))["replaced"] == ["fc.weight", "fc.bias"]


class _Versioned(nn.Module):
    """Like torchvision's MNASNet: refuses a state dict without its version metadata."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        assert local_metadata.get("version") == 2, "version metadata lost"
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def test_module_version_metadata_reaches_the_modules(tmp_path):
    src = _Versioned()
    save_file(dict(src.state_dict()), str(tmp_path / "w.safetensors"))  # safetensors keeps no metadata
    back = _Versioned()
    load_weights(back, tmp_path / "w.safetensors")
    assert torch.equal(back.fc.weight, src.fc.weight)
