"""`slimkit compress --quantize int8` and `slimkit quantize`: fp32 vs INT8 measured side by side, resumable."""

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from slimkit.cli.main import main
from slimkit.errors import ConfigError, MissingDependencyError
from slimkit.export import export_onnx
from slimkit.fileio import file_sha256
from slimkit.jobs._common import load_run_model
from slimkit.jobs.compress import FINETUNE, CompressConfig
from slimkit.jobs.compress import run as compress
from slimkit.jobs.quantize import QuantizeJobConfig, deploy_note, int8_deploy, int8_note, int8_verdict
from slimkit.jobs.quantize import run as quantize
from slimkit.jobs.train import TrainJobConfig
from slimkit.jobs.train import run as train
from slimkit.prune import PruneConfig
from slimkit.quantize import Int8Config, int8_layers
from slimkit.train import TrainConfig


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "base"
    train(TrainJobConfig(model="convnet_small", data="digits", out=str(out),
                         train=TrainConfig(epochs=3, batch_size=64, progress=False)))
    return out


def test_compress_with_int8_reports_fp32_vs_int8_and_resumes(tmp_path, trained):
    cfg = CompressConfig(baseline=str(trained), prune=PruneConfig(macs_target=0.5),
                         finetune=replace(FINETUNE, epochs=1), batch_size=64, latency_batches=(1, 4),
                         out=str(tmp_path / "run"))
    assert "int8" not in compress(cfg)
    cfg = replace(cfg, quantize="int8")
    s = compress(cfg, resume=True)  # INT8 added to a finished run
    out = tmp_path / "run"
    q = s["int8"]
    assert (out / "model.int8.onnx").is_file() and q["int8_onnx"] == str(out / "model.int8.onnx")
    for k in ("test_acc", "size_bytes", "ort_b1_ms", "ort_b4_ms"):
        assert k in q["fp32"] and k in q["int8"], k
    assert q["int8"]["size_bytes"] < q["fp32"]["size_bytes"] and q["size_ratio"] > 1.5
    assert abs(q["fp32"]["test_acc"] - s["pruned"]["test_acc"]) < 0.005  # fp32 ONNX == the pruned torch model
    assert q["int8"]["test_acc"] >= q["fp32"]["test_acc"] - 0.05
    assert q["acc_change_points"] == pytest.approx(100 * (q["int8"]["test_acc"] - q["fp32"]["test_acc"]))
    assert q["int8_layers"] == len(int8_layers(onnx.load(str(out / "model.int8.onnx"))))
    report = json.loads((out / "report.json").read_text())
    assert report["int8"]["int8"]["test_acc"] == q["int8"]["test_acc"]
    html = (out / "report.html").read_text()
    assert "INT8 vs fp32" in html and "layers kept in float" in html
    # the model to deploy is the faster of the two measured, named in the summary and the report
    assert q["deploy"] == int8_deploy({1: q["speedup_b1"], 4: q["speedup_b4"]}, str(out / "model.onnx"),
                                      str(out / "model.int8.onnx"))
    assert f"Deploy {Path(q['deploy']['onnx']).name} ({q['deploy']['precision'].replace('int', 'INT')}" in html
    k = q["kernels"]  # what onnxruntime runs: convnet_small's convolutions, every QDQ pair fused
    assert k["int8_convs"] >= 1 and k["dq_q_pairs"] == 0 and k["conversions"] >= 2
    # the grey stem padded to 4 channels and the mean pool made quantizable, said in the report
    assert q["settings"]["rewritten"] == {"global_pool": 1, "pad_channels": 1}
    assert "features.0" not in [m["layer"] for m in k["slow_convs"]]
    assert "Graph rewritten before quantizing" in html
    mtime = (out / "model.int8.onnx").stat().st_mtime_ns
    again = compress(cfg, resume=True)
    assert (out / "model.int8.onnx").stat().st_mtime_ns == mtime and again["int8"] == q
    other = compress(replace(cfg, int8=Int8Config(calibration_images=64)), resume=True)  # new options: redone
    assert (out / "model.int8.onnx").stat().st_mtime_ns != mtime
    assert other["int8"]["settings"]["calibration_images_used"] == 64
    # fine-tuned longer on resume (allowed): another model.onnx, so its INT8 is made again, not the stale one kept
    onnx_before, mtime = (out / "model.onnx").read_bytes(), (out / "model.int8.onnx").stat().st_mtime_ns
    longer = compress(replace(cfg, int8=Int8Config(calibration_images=64), finetune=replace(FINETUNE, epochs=2)),
                      resume=True)
    assert (out / "model.onnx").read_bytes() != onnx_before
    assert (out / "model.int8.onnx").stat().st_mtime_ns != mtime
    assert longer["int8"]["fp32_sha256"] == file_sha256(out / "model.onnx")
    assert longer["int8"]["fp32"]["test_acc"] == pytest.approx(longer["pruned"]["test_acc"], abs=0.005)


def test_int8_without_onnxruntime_quantization_fails_before_any_work(tmp_path, trained, monkeypatch):
    """Not after the baseline, pruning and fine-tuning have run (or a run folder's model was exported)."""
    import sys

    import onnxruntime

    monkeypatch.setitem(sys.modules, "onnxruntime.quantization", None)
    monkeypatch.delattr(onnxruntime, "quantization", raising=False)
    cfg = CompressConfig(baseline=str(trained), quantize="int8", finetune=replace(FINETUNE, epochs=1),
                         out=str(tmp_path / "run"))
    with pytest.raises(MissingDependencyError, match="onnxruntime"):
        compress(cfg)
    assert not (tmp_path / "run").exists()
    with pytest.raises(MissingDependencyError, match="onnxruntime"):
        quantize(QuantizeJobConfig(source=str(trained), out=str(tmp_path / "q")))
    assert not (tmp_path / "q").exists()


def test_float_layers_that_do_not_exist_are_refused_before_any_work(tmp_path, trained):
    """int8.exclude naming no weighted layer failed only when the INT8 stage began, after training and pruning."""
    from slimkit.jobs.compress import _validate

    for kw in (dict(baseline=str(trained)), dict(model="convnet_small", data="digits", limit=100)):
        cfg = CompressConfig(quantize="int8", int8=Int8Config(exclude=("features.0", "features.99")),
                             out=str(tmp_path / "run"), **kw)
        with pytest.raises(ConfigError, match="no weighted layer .features.99. in .*features.0, features.4"):
            compress(cfg)
        assert not (tmp_path / "run").exists()
        _validate(replace(cfg, int8=Int8Config(exclude=("features.0", "head", "/features/features.8/Conv"))))


def test_quantize_a_run_folder_and_an_onnx_file(tmp_path, trained, capsys):
    s = quantize(QuantizeJobConfig(source=str(trained), out=str(tmp_path / "a"), latency_batches=(1,)))
    assert s["data"] == "digits" and (tmp_path / "a" / "int8.html").is_file()
    assert s["int8"]["test_acc"] >= s["fp32"]["test_acc"] - 0.05
    code = main(["quantize", str(tmp_path / "a" / "model.onnx"), "--data", "digits", "--max-float", "0",
                 "--keep-float", "head"])
    assert code == 0
    got = json.loads((tmp_path / "a" / "model-int8" / "int8.json").read_text())
    assert [f["module"] for f in got["float_layers"]] == ["head"]
    printed = capsys.readouterr().out
    name = "model.int8.onnx" if got["deploy"]["precision"] == "int8" else "model.onnx"
    assert "INT8 vs fp32" in printed and re.search(rf"Deploy\s+{re.escape(name)}", printed)  # rich may wrap
    assert got["fp32"]["test_acc"] == pytest.approx(s["fp32"]["test_acc"])


def test_quantize_refuses_bad_sources(tmp_path, trained):
    net, spec = load_run_model(trained)
    export_onnx(net, tmp_path / "m.onnx", torch.randn(1, *spec["input_size"]))
    with pytest.raises(ConfigError, match="--data"):
        quantize(QuantizeJobConfig(source=str(tmp_path / "m.onnx")))
    with pytest.raises(ConfigError, match="neither"):
        quantize(QuantizeJobConfig(source=str(tmp_path / "nothing")))
    x = np.random.default_rng(0).integers(0, 255, (40, 12, 12), dtype="uint8")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 2)
    with pytest.raises(ConfigError, match="takes inputs of"):
        quantize(QuantizeJobConfig(source=str(tmp_path / "m.onnx"), data=str(tmp_path / "d.npz")))
    with pytest.raises(ConfigError, match="int8"):
        from slimkit.config import from_dict

        from_dict(CompressConfig, {"quantize": "int4"})


def test_quantize_sees_the_images_as_the_run_did(tmp_path):
    """A run trained at another input size is calibrated and tested at that size with its normalisation: the fp32
    ONNX accuracy equals the run's own torch test accuracy (and an .onnx file takes --input-size)."""
    run_dir = tmp_path / "r"
    t = train(TrainJobConfig(model="convnet_small", data="digits", input_size=(12, 12), out=str(run_dir),
                             train=TrainConfig(epochs=1, batch_size=64, progress=False)))
    assert t["input_size"] == [1, 12, 12]
    s = quantize(QuantizeJobConfig(source=str(run_dir), out=str(tmp_path / "q"), latency_batches=(1,)))
    assert s["fp32"]["test_acc"] == pytest.approx(t["test_acc"], abs=1e-6)
    f = quantize(QuantizeJobConfig(source=str(tmp_path / "q" / "model.onnx"), data="digits", input_size=(12, 12),
                                   latency_batches=(1,)))
    assert f["fp32"]["test_acc"] == pytest.approx(t["test_acc"], abs=1e-6)
    with pytest.raises(ConfigError, match="takes inputs of"):
        quantize(QuantizeJobConfig(source=str(tmp_path / "q" / "model.onnx"), data="digits"))


def _summary(speedups, kernels):
    side = {"test_acc": 0.9, "size_bytes": 100}
    return {"fp32": side, "int8": side, "acc_change_points": 0.0, "size_ratio": 3.9, "float_layers": [],
            "held_out": None, **{f"speedup_b{b}": v for b, v in speedups.items()},
            **({"kernels": kernels} if kernels is not None else {})}


def test_int8_verdict_says_plainly_when_int8_is_not_faster_and_why():
    kernels = {"slow_convs": [{"layer": f"stages.0.{i}.conv1", "node": f"n{i}", "reason": "8 output channels "
                               "(fewer than 16)"} for i in range(5)],
               "convs": 20, "int8_convs": 19, "conversions": 6, "dq_q_pairs": 0, "vnni": False}
    assert int8_verdict(_summary({1: 1.6, 32: 2.0}, kernels)) == []  # clearly faster: nothing to explain
    lines = int8_verdict(_summary({1: 1.3, 32: 0.95}, kernels))
    assert lines[0].startswith("INT8 is NOT faster than fp32") and "batch 32 x0.95" in lines[0]
    assert "batch 1" not in lines[0]
    text = " ".join(lines)
    assert "5 of 19 INT8 convolutions" in text and "stages.0.3.conv1" in text and "and 1 more" in text
    assert "at 2 more place(s)" in text and "no VNNI" in text and "round trip" not in text
    calm = {**kernels, "slow_convs": [], "conversions": 2, "vnni": True}
    lines = int8_verdict(_summary({32: 1.1}, calm))
    assert lines[0] == "INT8 is barely faster than fp32 here (batch 32 x1.10). Why:" and len(lines) == 2
    assert "fast kernels and no float island" in lines[1]
    old = _summary({32: 0.9}, None)  # a summary from before the kernels were inspected (a resumed run)
    assert int8_verdict(old) == ["INT8 is NOT faster than fp32 here (batch 32 x0.90)."]
    assert "NOT faster" in int8_note(old)
    assert "re-quantiz" not in int8_note(old) and "optimiser quantizes" not in int8_note(old)
    requant = {**old, "settings": {"requantized_by_onnxruntime": ["features.2.expand"]}}
    assert "optimiser quantizes 1 layer(s) chosen to stay in float (features.2.expand" in int8_note(requant)
    assert "rewritten" not in int8_note(old) and "rewritten" not in int8_note(
        {**old, "settings": {"rewritten": {"global_pool": 0}}})
    rewritten = int8_note({**old, "settings": {"rewritten": {"global_pool": 1, "pad_channels": 0}}})
    assert "Graph rewritten before quantizing (same outputs): 1 global average pool(s) (ReduceMean -> " \
        "GlobalAveragePool, quantized)." in rewritten and "padded" not in rewritten


NET_FLINEAR = '''
import torch.nn.functional as F
from torch import nn


class Attn(nn.Module):  # torchvision Swin's way: the parent calls F.linear with a child Linear's weight
    def __init__(self):
        super().__init__()
        self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(F.linear(x, self.qkv.weight, self.qkv.bias)[..., :8])


class Net(nn.Module):
    def __init__(self, num_classes, in_chans):
        super().__init__()
        self.stem, self.attn = nn.Conv2d(in_chans, 8, 4, 4), Attn()
        self.emb = nn.Embedding(4, 8)  # a 2-D weight that exports as a Gather, never a weighted node
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.attn(x).mean(1) + self.emb.weight[0])


def build(num_classes=10, in_chans=1):
    return Net(num_classes, in_chans)
'''


def test_float_layer_check_accepts_exactly_what_the_quantizer_can_keep_float(tmp_path):
    """The check of int8.exclude and the quantizer read one mapping (the exported graph's weighted nodes, named by
    their module scope). Before, the check accepted every module with a >= 2-D weight: `attn.qkv` (its weight used
    by the parent through F.linear, exported in the parent's scope) and `emb` (a Gather) passed the check and the
    quantizer refused them after training and pruning, while `attn`, which the quantizer keeps float, was refused."""
    from slimkit.jobs.compress import _validate

    (tmp_path / "net.py").write_text(NET_FLINEAR)
    cfg = CompressConfig(model=f"{tmp_path}/net.py:build", data="digits", limit=100, quantize="int8",
                         out=str(tmp_path / "run"))
    for name in ("attn.qkv", "emb"):
        with pytest.raises(ConfigError, match=f"no weighted layer '{name}' .*attn, attn.proj, head"):
            _validate(replace(cfg, int8=Int8Config(exclude=(name,))))
    _validate(replace(cfg, int8=Int8Config(exclude=("attn", "stem", "/attn/proj/MatMul"))))
    with pytest.raises(ConfigError, match="no weighted layer '/attn/qkv/MatMul'"):  # node names are checked too
        _validate(replace(cfg, int8=Int8Config(exclude=("/attn/qkv/MatMul",))))
    # and what the check accepts, the quantizer keeps in float
    s = compress(replace(cfg, int8=Int8Config(exclude=("attn",), eval_images=50, calibration_images=32),
                         baseline_epochs=1, finetune=replace(FINETUNE, epochs=1), latency_batches=(1,)))
    assert {f["module"] for f in s["int8"]["float_layers"]} >= {"attn"}


def test_int8_deploy_is_the_faster_of_the_two_measured():
    """INT8 is deployed unless it measured slower (below x0.9) on the geometric mean of the batch sizes; fp32 then.
    The batch sizes where INT8 is slower are named either way (the tiny-convnet case: x0.93 / x0.57)."""
    assert int8_deploy({1: 1.6, 32: 2.0}) == {"precision": "int8", "onnx": "model.int8.onnx",
                                               "speedup_geomean": pytest.approx((1.6 * 2.0) ** 0.5), "slower_at": []}
    tiny = int8_deploy({1: 0.93, 32: 0.57}, "r/model.onnx", "r/model.int8.onnx")
    assert tiny["precision"] == "fp32" and tiny["onnx"] == "r/model.onnx" and tiny["slower_at"] == [32]
    assert tiny["speedup_geomean"] == pytest.approx((0.93 * 0.57) ** 0.5)
    mixed = int8_deploy({1: 0.51, 32: 1.31})  # geometric mean 0.82: slower on the whole
    assert mixed["precision"] == "fp32" and mixed["slower_at"] == [1]
    assert int8_deploy({1: 0.8, 32: 1.6})["precision"] == "int8"  # geometric mean 1.13
    assert int8_deploy({32: 0.91})["precision"] == "int8" and int8_deploy({32: 0.89})["precision"] == "fp32"


def test_the_note_says_plainly_which_model_to_deploy():
    slow = {**_summary({1: 0.93, 32: 0.57}, None), "fp32_onnx": "r/model.onnx", "int8_onnx": "r/model.int8.onnx"}
    note = int8_note(slow)  # an older summary without "deploy": decided from its speed-ups
    assert note.startswith("Deploy model.onnx (fp32), not the INT8 model: INT8 is SLOWER than fp32 here (batch 32 "
                           "x0.57, 1.8x slower; x0.73 on the geometric mean")
    assert "model.int8.onnx is kept" in note and "batch 1 x0.93, 1.1x slower" not in note
    slow["deploy"] = int8_deploy({1: 0.93, 32: 0.57}, "r/model.onnx", "r/model.int8.onnx")
    assert int8_note(slow) == note
    mixed = _summary({1: 0.8, 32: 1.6}, None)
    assert deploy_note(mixed) == ("Deploy model.int8.onnx (INT8, x1.13 on the geometric mean of the measured batch "
                                  "sizes), but INT8 is SLOWER than fp32 at batch 1 x0.80, 1.2x slower: at that batch "
                                  "size deploy model.onnx (fp32).")
    assert deploy_note(_summary({1: 1.6, 32: 2.0}, None)) == "Deploy model.int8.onnx (INT8)."


def test_the_tolerance_check_uses_images_outside_the_limit_and_says_what_it_could_not_confirm():
    from slimkit.data import create_dataset
    from slimkit.jobs.quantize import held_out_pool

    s = create_dataset("digits", limit=200, val_fraction=0.1)
    pool, where = held_out_pool(s, 1000)
    assert len(s.val) == 20 and len(pool) == 1000 and "20 validation + 980 training images outside --limit" in where
    assert len(held_out_pool(s, 10)[0]) == 20  # enough validation images: the validation split alone
    full = create_dataset("digits", val_fraction=0.1)  # no --limit: nothing is spare
    assert full.spare is None and held_out_pool(full, 1000)[0] is full.val

    held = {"images": 400, "fp32_acc": 0.9, "int8_all_acc": 0.8975, "int8_acc": 0.8975, "tolerance_points": 0.5,
            "confidence": 0.8, "lost": 3, "gained": 2, "loss_upper_points": 0.93, "tolerance_met": False}
    note = int8_note({**_summary({1: 2.0, 32: 2.0}, None), "held_out": held})
    assert "3 image(s) lost, 2 gained" in note and "at most 0.93 points at confidence 0.8" in note
    assert "NOT confirmed: the loss measured is 0.25 points, but 400 images cannot tell it" in note
    worse = int8_note({**_summary({1: 2.0, 32: 2.0}, None), "held_out": {**held, "int8_acc": 0.88}})
    assert "NOT met: keep more layers in float" in worse
    met = int8_note({**_summary({1: 2.0, 32: 2.0}, None), "held_out": {**held, "tolerance_met": True}})
    assert "tolerance 0.5 met" in met
