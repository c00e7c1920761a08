"""INT8 post-training quantization: the model runs in onnxruntime with integer kernels, is smaller, keeps its
accuracy on digits, and keeps exactly the layers it reports in float."""

import itertools
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from slimkit.data import create_dataset, make_loaders
from slimkit.errors import ConfigError, ExportError, SlimkitError
from slimkit.models import create_model
from slimkit.quantize import Int8Config, int8_layers, quantize_int8, resolve_reduce_range, weighted_layers
from slimkit.train import TrainConfig, Trainer, evaluate


@pytest.fixture(scope="module")
def digits():
    splits = create_dataset("digits", seed=0)
    loaders = make_loaders(splits, 64)
    torch.manual_seed(0)
    model = create_model("convnet_small", num_classes=10, in_chans=1)
    Trainer(model, TrainConfig(epochs=4, batch_size=64, progress=False), loaders.train).fit()
    return model.eval(), loaders


def _onnx_acc(path, loader):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    hits = n = 0
    for x, y in loader:
        out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        hits += int((out.argmax(1) == y.numpy()).sum())
        n += len(y)
    return hits / n


def _optimized_ops(path, tmp_path):
    """Op types onnxruntime actually runs after its graph optimisations (QDQ groups fused to integer kernels)."""
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}


def test_int8_runs_with_integer_kernels_is_smaller_and_keeps_accuracy(digits, tmp_path):
    model, loaders = digits
    res = quantize_int8(model, itertools.islice(loaders.train, 4), tmp_path / "m.int8.onnx")
    graph = onnx.load(str(res.int8_path))
    ops = {n.op_type for n in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert _optimized_ops(res.int8_path, tmp_path) & {"QLinearConv", "ConvInteger", "QLinearMatMul"}
    assert res.int8_bytes < 0.5 * res.fp32_bytes and res.int8_bytes == res.int8_path.stat().st_size
    assert set(res.int8_layers) == {layer.node for layer in weighted_layers(graph)} and not res.float_layers
    acc_torch = evaluate(model, loaders.test)["acc"]
    assert _onnx_acc(res.fp32_path, loaders.test) == pytest.approx(acc_torch, abs=0.003)
    assert acc_torch > 0.8
    assert _onnx_acc(res.int8_path, loaders.test) >= acc_torch - 0.03
    assert res.settings["calibration_images_used"] == 256


def _sabotaged(model):
    """(reference, sabotaged): in both, channel 3 of the first block is zero everywhere (a pre-activation of -5,
    also zero after INT8 rounding); the sabotaged copy has huge weights on that dead channel in one conv
    (features.4), so it computes the same function, but per-channel INT8 scales round that conv's real weights to
    zero: only that conv is hurt by quantization."""
    ref = create_model("convnet_small", num_classes=10, in_chans=1)
    ref.load_state_dict(model.state_dict())
    with torch.no_grad():
        ref.features[1].weight[3] = 0.0  # BN gamma and beta
        ref.features[1].bias[3] = -5.0
    bad = create_model("convnet_small", num_classes=10, in_chans=1)
    bad.load_state_dict(ref.state_dict())
    with torch.no_grad():
        bad.features[4].weight[:, 3] = 50.0
    return ref.eval(), bad.eval()


def test_sensitivity_keeps_float_exactly_the_layers_it_reports(digits, tmp_path):
    model, loaders = digits
    ref, bad = _sabotaged(model)
    x = next(iter(loaders.test))[0]
    with torch.no_grad():
        assert torch.allclose(bad(x), ref(x), atol=1e-4)
    res = quantize_int8(bad, itertools.islice(loaders.train, 4), tmp_path / "s.int8.onnx", eval_data=loaders.val,
                        tolerance=1.0, max_float_layers=2, confidence=0.5)  # the point estimate: on 143 images one
    # image lost after features.4 stays float is 0.7 points, which the 0.8 bound cannot confirm within 1 point
    graph = onnx.load(str(res.int8_path))
    floats = {f.node for f in res.float_layers}
    assert [f.module for f in res.float_layers] == ["features.4"]
    assert all(f.reason == "sensitivity" and f.score is not None for f in res.float_layers)
    assert floats == {layer.node for layer in weighted_layers(graph)} - int8_layers(graph)
    assert set(res.int8_layers) == int8_layers(graph)
    assert res.sensitivity[0].layer.module == "features.4"  # ranked costliest
    held = res.held_out
    assert held["int8_all_acc"] < held["fp32_acc"] - 0.2 and held["tolerance_met"]
    assert held["int8_acc"] >= held["fp32_acc"] - 0.01
    right = {}  # the paired count, by hand: held-out images right in fp32 and wrong in INT8, and the reverse
    for name, path in (("fp32", res.fp32_path), ("int8", res.int8_path)):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        right[name] = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0].argmax(1) == y.numpy()
                                      for x, y in loaders.val])
    assert held["lost"] == int((right["fp32"] & ~right["int8"]).sum())
    assert held["gained"] == int((~right["fp32"] & right["int8"]).sum())
    assert held["loss_upper_points"] == pytest.approx(100 * (held["lost"] - held["gained"]) / held["images"])
    assert _onnx_acc(res.int8_path, loaders.test) >= evaluate(ref, loaders.test)["acc"] - 0.03


@pytest.mark.parametrize("field,bad", [("calibration_images", 0), ("eval_images", -5), ("eval_images", 2.5),
                                       ("max_float_layers", -1), ("max_float_layers", True), ("tolerance", -1.0),
                                       ("tolerance", float("nan")), ("tolerance", "0.5"),
                                       ("confidence", float("nan")), ("percentile", float("inf"))])
def test_each_bad_int8_option_is_named_with_its_value(field, bad):
    with pytest.raises(ConfigError) as info:
        Int8Config(**{field: bad}).check()
    assert info.value.option == field and str(info.value).startswith(f"{field} must") and repr(bad) in str(info.value)


def test_int8_options_take_numpy_numbers():
    Int8Config(eval_images=np.int64(200), max_float_layers=np.int32(0), tolerance=np.float32(0.25)).check()


def test_requested_float_layers_and_unlabelled_eval(digits, tmp_path):
    model, loaders = digits
    images = [x for x, _ in itertools.islice(loaders.val, 2)]  # no labels: agreement with fp32 is the accuracy
    res = quantize_int8(model, itertools.islice(loaders.train, 2), tmp_path / "r.int8.onnx", eval_data=images,
                        exclude=("head",), calibration_method="percentile", max_float_layers=0)
    graph = onnx.load(str(res.int8_path))
    assert [(f.module, f.reason) for f in res.float_layers] == [("head", "requested")]
    assert "/head/Gemm" not in int8_layers(graph) and len(int8_layers(graph)) == 3
    assert res.held_out["labels"] == "fp32 predictions" and res.held_out["fp32_acc"] == 1.0


def test_bad_inputs_raise_clear_errors(digits, tmp_path):
    model, loaders = digits
    with pytest.raises(ConfigError, match="needs images"):
        quantize_int8(model, None, tmp_path / "a.onnx")
    with pytest.raises(ConfigError, match="empty"):
        quantize_int8(model, [], tmp_path / "a.onnx")
    with pytest.raises(ConfigError, match="no ONNX file"):
        quantize_int8(tmp_path / "missing.onnx", itertools.islice(loaders.train, 1))
    for bad in (1.0, 0.3):  # a one-sided confidence in [0.5, 1): 0.5 is the point estimate
        with pytest.raises(ConfigError, match=r"confidence must be in \[0.5, 1\)"):
            quantize_int8(model, itertools.islice(loaders.train, 1), tmp_path / "a.onnx", confidence=bad)
    with pytest.raises(ConfigError, match="calibration_method"):
        quantize_int8(model, itertools.islice(loaders.train, 1), tmp_path / "a.onnx", calibration_method="mse")
    with pytest.raises(ConfigError, match="no weighted layer 'features.99'"):
        quantize_int8(model, itertools.islice(loaders.train, 1), tmp_path / "a.onnx", exclude=("features.99",))

    class NotExportable(torch.nn.Module):
        def forward(self, x):
            return torch.from_numpy(np.fft.fft(x.detach().numpy()).real).float()

    with pytest.raises(ExportError):
        quantize_int8(NotExportable(), [torch.randn(2, 1, 8, 8)], tmp_path / "b.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(SlimkitError):
        quantize_int8(tmp_path / "junk.onnx", [torch.randn(2, 1, 8, 8)])


def test_reduce_range_follows_the_cpu(monkeypatch):
    import slimkit.quantize.ptq as ptq

    monkeypatch.setattr(ptq.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(ptq, "has_vnni", lambda: False)
    assert resolve_reduce_range(Int8Config()) is True
    assert resolve_reduce_range(Int8Config(activations="int8", weights="int8")) is False
    monkeypatch.setattr(ptq, "has_vnni", lambda: True)
    assert resolve_reduce_range(Int8Config()) is False
    assert resolve_reduce_range(Int8Config(reduce_range=True)) is True


@pytest.mark.parametrize("between", ["relu", "none"])
def test_float_layers_reported_are_the_ones_onnxruntime_runs_in_float(tmp_path, between):
    """A layer kept in float runs in float in onnxruntime, behind a float ReLU or fed straight by a DequantizeLinear
    (between="none": onnxruntime's optimiser would give it int8 weights; `keep_float` gives it a per-channel
    dequantize it leaves alone), and the report says so. Checked against an independent walk of the graph
    onnxruntime runs: its float Conv nodes."""
    torch.manual_seed(0)
    act = torch.nn.ReLU() if between == "relu" else torch.nn.Identity()
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), act, torch.nn.Conv2d(16, 16, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    calib = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = quantize_int8(model, calib, tmp_path / "f.int8.onnx", exclude=("2",))
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "run.onnx")
    ort.InferenceSession(str(res.int8_path), opts, providers=["CPUExecutionProvider"])
    float_convs = sum(n.op_type == "Conv" for n in onnx.load(str(tmp_path / "run.onnx")).graph.node)
    assert float_convs == 1 and [f.module for f in res.float_layers] == ["2"]  # the float choice sticks
    assert len(res.int8_layers) == 3
    assert res.settings["requantized_by_onnxruntime"] == []
    assert not any("onnxruntime's graph optimiser quantizes" in str(w.message) for w in caught)


def test_a_linear_head_kept_in_float_runs_with_its_input_width(tmp_path):
    """A Gemm kept in float behind a per-tensor DequantizeLinear gets a per-channel one over its *input* features
    (a torch Linear's B is (out, in)); over its outputs, onnxruntime refused to run the model (24 in, 10 out)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 24, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(24, 10)).eval()
    calib = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    res = quantize_int8(model, calib, tmp_path / "h.int8.onnx", exclude=("4",))
    assert [f.module for f in res.float_layers] == ["4"] and res.settings["requantized_by_onnxruntime"] == []
    sess = ort.InferenceSession(str(res.int8_path), providers=["CPUExecutionProvider"])
    x = calib[0]
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).numpy()
    assert got.shape == (8, 10) and np.abs(got - ref).max() < 0.1 * np.abs(ref).max()


def test_a_model_onnxruntime_cannot_run_is_an_export_error_not_a_traceback(tmp_path):
    from onnx import TensorProto, helper

    from slimkit.export import onnx_session
    from slimkit.quantize.data import as_batches, onnx_logits

    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [3])  # 2 x 4 values cannot become 3
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "r.onnx"))
    with pytest.raises(ExportError, match="onnxruntime could not run the model"):
        onnx_logits(onnx_session(tmp_path / "r.onnx"), as_batches([np.zeros((2, 4), np.float32)]))
