"""Jobs at an --input-size: the model's normalisation recorded in model.json and reused by compress."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from slimkit.jobs._common import build_data
from slimkit.jobs.compress import FINETUNE, CompressConfig
from slimkit.jobs.compress import run as compress
from slimkit.jobs.train import TrainJobConfig
from slimkit.jobs.train import run as train
from slimkit.prune import PruneConfig
from slimkit.train import TrainConfig

timm = pytest.importorskip("timm")


def _folder(root, n=6):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, cls in enumerate(("a", "b")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):  # class b brighter: learnable
                img = rng.integers(0, 128, (12, 12), dtype=np.uint8) + 100 * c
                Image.fromarray(img.astype(np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_build_data_takes_the_models_normalisation():
    cfg = timm.create_model("test_efficientnet", pretrained=False).pretrained_cfg
    s = build_data("digits", None, seed=0, val_fraction=0.1, limit=50, augment=True, input_size="3,24,24",
                   model="timm:test_efficientnet")
    assert s.info.mean == pytest.approx(cfg["mean"]) and s.info.std == pytest.approx(cfg["std"])
    assert s.info.view.crop_pct == cfg["crop_pct"] and s.info.view.interpolation == cfg["interpolation"]
    assert "pretrained_cfg" in s.info.norm
    plain = build_data("digits", None, seed=0, val_fraction=0.1, limit=50, augment=True, input_size="3,24,24",
                       model="timm:test_efficientnet", norm="dataset")
    assert plain.info.norm == "dataset" and plain.info.view.crop_pct == 0.875
    assert plain.info.mean[0] == pytest.approx(plain.info.mean[2])  # grey statistics repeated to 3 channels
    assert plain.info.mean[0] != pytest.approx(cfg["mean"][0])
    native = build_data("digits", None, seed=0, val_fraction=0.1, limit=50, augment=True, model="resnet20")
    assert native.info.view is None and native.info.norm == "dataset" and native.info.image_size == (8, 8)


@pytest.mark.slow
def test_train_then_compress_a_timm_model_on_a_folder_at_an_input_size(tmp_path):
    data = str(_folder(tmp_path / "data"))
    run_dir = tmp_path / "base"
    s = train(TrainJobConfig(model="timm:test_resnet", data=data, input_size=(3, 32, 32), workers=0,
                             out=str(run_dir), train=TrainConfig(epochs=1, batch_size=4, progress=False)))
    spec = json.loads((run_dir / "model.json").read_text())
    ref = timm.create_model("test_resnet", pretrained=False).pretrained_cfg
    assert spec["input_size"] == [3, 32, 32] and spec["in_chans"] == 3 and spec["source_chans"] == 1
    assert spec["mean"] == pytest.approx(ref["mean"]) and spec["std"] == pytest.approx(ref["std"])
    assert spec["view"] == {"input_size": [3, 32, 32], "crop_pct": ref["crop_pct"], "scale": [0.5, 1.0],
                            "interpolation": ref["interpolation"]}
    assert s["channels"] == "1-channel images converted to 3 channels" and s["workers"] == 0
    out = compress(CompressConfig(baseline=str(run_dir), prune=PruneConfig(ratio=0.5),
                                  finetune=replace(FINETUNE, epochs=1), batch_size=4, latency_batches=(1,), workers=0,
                                  out=str(tmp_path / "c")))
    assert out["input_size"] == [3, 32, 32] and out["view"] == s["view"] and out["norm"] == s["norm"]
    assert out["pruned"]["params"] < out["baseline"]["params"]


@pytest.mark.slow
def test_compress_your_weights_at_an_input_size_then_int8(tmp_path):
    """--weights with --input-size: the baseline is the user's 3-channel network unchanged (grey images repeated to
    RGB, not its stem adapted to grey), and the INT8 stage sees the test images as the pruned model did."""
    import torch

    from slimkit.jobs._common import load_run_model

    data = str(_folder(tmp_path / "data"))
    torch.manual_seed(0)
    net = timm.create_model("test_resnet", num_classes=2, pretrained=False)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pt")
    out = compress(CompressConfig(model="timm:test_resnet", weights=str(tmp_path / "w.pt"), data=data,
                                  input_size=(3, 32, 32), prune=PruneConfig(ratio=0.5), finetune=None, batch_size=4,
                                  latency_batches=(1,), workers=0, quantize="int8", out=str(tmp_path / "c")))
    assert out["input_size"] == [3, 32, 32] and out["channels"] == "1-channel images converted to 3 channels"
    assert "as they are (no training)" in out["baseline_source"]
    base, spec = load_run_model(tmp_path / "c" / "baseline")
    assert spec["input_size"] == [3, 32, 32] and spec["in_chans"] == 3
    assert spec["mean"] == pytest.approx(net.pretrained_cfg["mean"])
    mine = net.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in base.state_dict().items())
    assert out["int8"]["fp32"]["test_acc"] == pytest.approx(out["pruned"]["test_acc"], abs=1e-6)
