import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from slimkit.errors import ExportError
from slimkit.export import export_onnx
from slimkit.models import create_model


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2_050", "vgg11", "convnet_small"])
def test_parity_and_dynamic_batch(tmp_path, name):
    model = create_model(name, in_chans=1)
    model.train()
    res = export_onnx(model, tmp_path / "m.onnx", torch.randn(1, 1, 32, 32))
    assert res.max_abs_diff is not None and res.max_abs_diff <= 1e-4
    assert model.training  # not changed by export
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 32, 32)
    got = sess.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, model.eval()(x).detach().numpy(), atol=1e-4)


def test_dynamo_exporter(tmp_path):
    res = export_onnx(create_model("convnet_tiny"), tmp_path / "d.onnx", torch.randn(2, 3, 8, 8), dynamo=True)
    assert res.exporter == "dynamo" and res.max_abs_diff <= 1e-4


class NotExportable(nn.Module):
    def forward(self, x):
        return torch.from_numpy(np.fft.fft(x.detach().numpy()).real).float()


def test_export_failure_is_an_export_error(tmp_path):
    with pytest.raises(ExportError):
        export_onnx(NotExportable(), tmp_path / "bad.onnx", torch.randn(1, 4))
    with pytest.raises(ExportError, match="example_inputs"):
        export_onnx(create_model("convnet_tiny"), tmp_path / "x.onnx", [1, 2])


def test_nan_weights_are_named_and_nothing_is_written(tmp_path):
    import torch

    from slimkit.errors import ExportError
    from slimkit.export import export_onnx

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.randn(1, 1, 6, 6))
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ExportError, match=r"NaN or inf values in 0\.weight.*not the exporter|weights are broken"):
        export_onnx(model, tmp_path / "m.onnx", torch.randn(1, 1, 6, 6))
    assert list(tmp_path.iterdir()) == []  # no model.onnx (and no temporary) left behind


def test_a_vit_at_another_input_size_is_an_export_error_naming_its_size(tmp_path):
    """It was a bare AssertionError from timm's patch embedding."""
    from tests.profile.test_counting import _vit_built_for_32

    with pytest.raises(ExportError, match="built for 32x32 inputs .* got 16x16"):
        export_onnx(_vit_built_for_32(), tmp_path / "m.onnx", torch.randn(1, 3, 16, 16))
    assert not (tmp_path / "m.onnx").exists()
