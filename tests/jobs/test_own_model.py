"""Bring your own model: `--weights` on train / compress / distill / profile / export, and `--model net.py:fn` in
every command, through the CLI in-process (`slimkit.cli.main.main`) and the jobs."""

import json
import shutil
from dataclasses import replace

import onnx
import pytest
import torch

from slimkit.cli.main import main
from slimkit.data import create_dataset, make_loaders
from slimkit.errors import ConfigError, ModelError
from slimkit.jobs._common import load_run_model
from slimkit.jobs.compress import FINETUNE, CompressConfig
from slimkit.jobs.compress import run as compress
from slimkit.jobs.distill import DistillJobConfig
from slimkit.jobs.distill import run as distill
from slimkit.jobs.train import TrainJobConfig
from slimkit.jobs.train import run as train
from slimkit.models import create_model
from slimkit.profile import count_macs
from slimkit.prune import PruneConfig
from slimkit.train import TrainConfig, evaluate

NET = '''
import torch
from torch import nn


def build(num_classes=10, in_chans=3):
    return nn.Sequential(nn.Conv2d(in_chans, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))
'''
DATA = dict(data="digits", limit=200)


def _tc(epochs=1):
    return TrainConfig(epochs=epochs, batch_size=32, lr=0.05, progress=False)


def _test_loader():
    return make_loaders(create_dataset("digits", limit=200), 32).test


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A convnet_small trained here, its weights re-saved as a user's DDP checkpoint (.pth, `module.` keys)."""
    out = tmp_path_factory.mktemp("trained")
    summary = train(TrainJobConfig(model="convnet_small", out=str(out / "run"), train=_tc(2), **DATA))
    model, _ = load_run_model(out / "run")
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 2},
               out / "user.pth")
    return out / "user.pth", summary


@pytest.mark.parametrize("body, match", [
    ("nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 28 * 28, num_classes))",
     r"fails on 1x8x8 inputs \(RuntimeError: mat1 and mat2 .*give the --input-size it takes"),
    ("nn.Conv2d(in_chans, num_classes, 3, padding=1)", r"returns shape \(2, 10, 8, 8\) for 2 images of 1x8x8"),
    ("Both(in_chans, num_classes)", "returns a tuple .* return the logits only"),
    ("nn.Sequential(nn.Flatten(), nn.Linear(in_chans * 64, 1000))", r"returns shape \(2, 1000\) .* N x 10 logits"),
])
def test_a_model_that_is_not_a_classifier_of_the_data_fails_before_any_work(tmp_path, body, match):
    """Not a torch traceback from inside training (nor a 1000-way head trained on 10 classes)."""
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Both(nn.Module):\n"
        "    def __init__(self, in_chans, num_classes):\n        super().__init__()\n"
        "        self.fc = nn.Linear(in_chans * 64, num_classes)\n\n"
        "    def forward(self, x):\n        return self.fc(x.flatten(1)), x\n\n\n"
        f"def build(num_classes=10, in_chans=3):\n    return {body}\n")
    model = f"{tmp_path / 'net.py'}:build"
    with pytest.raises(ModelError, match=match):
        train(TrainJobConfig(model=model, out=str(tmp_path / "t"), train=_tc(), **DATA))
    with pytest.raises(ModelError, match=match):
        compress(CompressConfig(model=model, out=str(tmp_path / "c"), **DATA))
    assert not (tmp_path / "t").exists() and not (tmp_path / "c").exists()


def test_user_model_file_in_train_export_and_profile_via_the_cli(tmp_path, capsys):
    src = tmp_path / "mine" / "net.py"
    src.parent.mkdir()
    src.write_text(NET)
    run = tmp_path / "run"
    assert main(["train", "--model", f"{src}:build", "--data", "digits", "--limit", "200", "--epochs", "1",
                 "--batch-size", "32", "--out", str(run)]) == 0
    spec = json.loads((run / "model.json").read_text())
    assert spec["model"] == "model_src/net.py:build" and spec["model_origin"] == f"{src}:build"
    shutil.rmtree(src.parent)  # the run reloads from its own copy of the file
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][1:] == [1, 8, 8]
    capsys.readouterr()
    assert main(["profile", str(run), "--json", str(tmp_path / "p.json")]) == 0
    model, _ = load_run_model(run)
    assert json.loads((tmp_path / "p.json").read_text())["macs"] == count_macs(model, (1, 8, 8))


def test_export_a_model_name_with_weights_takes_the_files_class_count(tmp_path, capsys):
    torch.manual_seed(0)
    src = create_model("timm:resnet18", num_classes=1000).eval()
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    for flag in ("--weights", "--checkpoint"):  # --checkpoint stays as an alias
        out = tmp_path / f"m{flag}.onnx"
        assert main(["export", "--model", "timm:resnet18", flag, str(tmp_path / "r18.pth"), "--input-size",
                     "3,32,32", "--out", str(out)]) == 0
        dims = onnx.load(str(out)).graph.output[0].type.tensor_type.shape.dim
        assert dims[1].dim_value == 1000
    printed = capsys.readouterr().out
    assert "122 tensors loaded" in printed and "replaced" not in printed
    code = main(["export", "--model", "timm:resnet34", "--weights", str(tmp_path / "r18.pth"), "--input-size",
                 "3,32,32", "--out", str(tmp_path / "x.onnx")])
    assert code == 2 and "does not fit" in capsys.readouterr().err


def test_train_from_weights_with_a_new_head_says_transfer_learning(tmp_path, capsys, trained):
    path, _ = trained
    torch.manual_seed(0)
    five = create_model("convnet_small", num_classes=5, in_chans=1)
    torch.save(five.state_dict(), tmp_path / "five.pt")
    assert main(["train", "--model", "convnet_small", "--weights", str(tmp_path / "five.pt"), "--data", "digits",
                 "--limit", "200", "--epochs", "1", "--batch-size", "32", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "transfer learning" in err and "the file has 5 classes, the model 10" in err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["weights"]["file_classes"] == 5 and len(summary["weights"]["replaced"]) == 2


@pytest.mark.slow
def test_compress_with_fitting_weights_does_not_train_the_baseline(tmp_path, trained):
    path, summary = trained
    s = compress(CompressConfig(model="convnet_small", weights=str(path), baseline_epochs=5,
                                finetune=replace(FINETUNE, epochs=1), latency_batches=(1,), batch_size=32,
                                out=str(tmp_path / "c"), **DATA))
    assert "as they are (no training)" in s["baseline_source"]
    assert s["baseline"]["test_acc"] == summary["test_acc"]  # the user's model, measured as it is
    assert json.loads((tmp_path / "c" / "baseline" / "summary.json").read_text())["epochs"] == 0
    assert not (tmp_path / "c" / "baseline" / "checkpoint").exists()
    pruned, spec = load_run_model(tmp_path / "c")  # the compress run folder reloads (export / profile / baseline)
    assert spec["model"] == "convnet_small" and evaluate(pruned, _test_loader())["acc"] == s["pruned"]["test_acc"]


@pytest.mark.slow
def test_compress_fine_tunes_a_replaced_head_first(tmp_path):
    torch.manual_seed(0)
    torch.save(create_model("convnet_small", num_classes=5, in_chans=1).state_dict(), tmp_path / "five.pt")
    s = compress(CompressConfig(model="convnet_small", weights=str(tmp_path / "five.pt"), baseline_epochs=1,
                                finetune=replace(FINETUNE, epochs=1), latency_batches=(1,), batch_size=32,
                                out=str(tmp_path / "c"), **DATA))
    assert "classifier replaced" in s["baseline_source"] and "fine-tuned for 1 epochs" in s["baseline_source"]
    base = json.loads((tmp_path / "c" / "baseline" / "summary.json").read_text())
    assert base["epochs"] == 1 and base["weights"]["file_classes"] == 5
    with pytest.raises(ConfigError, match="not both"):
        compress(CompressConfig(weights="w.pt", baseline=str(tmp_path / "c"), out=str(tmp_path / "x")))


def test_compress_a_user_model_file_and_reload_after_the_file_is_gone(tmp_path):
    src = tmp_path / "net.py"
    src.write_text(NET)
    torch.manual_seed(0)
    torch.save(create_model(f"{src}:build", num_classes=10, in_chans=1).state_dict(), tmp_path / "w.pt")
    s = compress(CompressConfig(model=f"{src}:build", weights=str(tmp_path / "w.pt"),
                                finetune=replace(FINETUNE, epochs=1), latency_batches=(1,), batch_size=32,
                                prune=PruneConfig(ratio=0.5, allocation="uniform"), out=str(tmp_path / "c"), **DATA))
    src.unlink()
    pruned, _ = load_run_model(tmp_path / "c")
    assert count_macs(pruned, (1, 8, 8)) == s["pruned"]["macs"] < s["baseline"]["macs"]


def test_distill_from_teacher_weights_and_student_weights(tmp_path, trained):
    path, summary = trained
    torch.manual_seed(0)
    torch.save(create_model("convnet_tiny", num_classes=10, in_chans=1).state_dict(), tmp_path / "student.pt")
    s = distill(DistillJobConfig(student="convnet_tiny", weights=str(tmp_path / "student.pt"),
                                 teacher="convnet_small", teacher_weights=str(path), method="kd", train=_tc(),
                                 out=str(tmp_path / "d"), **DATA))
    assert s["teacher_test_acc"] == summary["test_acc"]  # the user's teacher, used as it is (no training)
    assert not (tmp_path / "d" / "teacher").exists()
    assert s["weights"]["loaded"] == len(create_model("convnet_tiny", in_chans=1).state_dict())
    with pytest.raises(ConfigError, match="not both"):
        distill(DistillJobConfig(teacher="convnet_small", teacher_weights=str(path), teacher_ckpt=str(path),
                                 out=str(tmp_path / "x"), **DATA))
