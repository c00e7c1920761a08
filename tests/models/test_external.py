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


@pytest.mark.parametrize("spec, kwargs", [("timm:resnet18", {"checkpoint_path": "/tmp/evil.pth"}),
                                          ("timm:resnet18", {"pretrained_cfg_overlay": {"file": "/tmp/evil.pth"}}),
                                          ("torchvision:resnet18", {"weights": "DEFAULT"})])
def test_arguments_that_load_files_are_refused(spec, kwargs, tmp_path):
    from slimkit.errors import ConfigError

    with pytest.raises(ConfigError, match="would load weights"):
        create_model(spec, **kwargs)


def test_a_run_folder_cannot_smuggle_a_checkpoint_path(tmp_path):
    """model.json is data from disk: its kwargs must not reach timm's torch.load."""
    import json

    from slimkit.errors import ConfigError
    from slimkit.jobs._common import load_run_model

    (tmp_path / "model.json").write_text(json.dumps({
        "model": "timm:resnet18", "kwargs": {"checkpoint_path": str(tmp_path / "evil.pth")}, "num_classes": 10,
        "in_chans": 1, "input_size": [1, 32, 32]}))
    from safetensors.torch import save_file

    save_file({}, str(tmp_path / "model.safetensors"))
    (tmp_path / "evil.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="checkpoint_path"):
        load_run_model(tmp_path)


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "vit_tiny_patch16_224"])
def test_timm_data_config_is_the_models_pretrained_cfg(name):
    timm = pytest.importorskip("timm")
    from slimkit.models import model_data_config

    cfg = model_data_config(f"timm:{name}")
    ref = timm.create_model(name, pretrained=False).pretrained_cfg  # random init: the config is still there
    assert cfg["mean"] == tuple(ref["mean"]) and cfg["std"] == tuple(ref["std"])
    assert cfg["crop_pct"] == ref["crop_pct"] and cfg["interpolation"] == ref["interpolation"]
    assert tuple(cfg["input_size"]) == tuple(ref["input_size"])


def test_torchvision_data_config_and_none_for_slimkit_models():
    pytest.importorskip("torchvision")
    from slimkit.models import model_data_config

    cfg = model_data_config("torchvision:resnet18")  # weights' transforms: resize 256, crop 224, ImageNet mean/std
    assert cfg["mean"] == (0.485, 0.456, 0.406) and cfg["std"] == (0.229, 0.224, 0.225)
    assert cfg["crop_pct"] == pytest.approx(224 / 256) and cfg["input_size"] == (3, 224, 224)
    assert model_data_config("resnet20") is None
