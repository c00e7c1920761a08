"""One example-inputs helper: every caller accepts the same shapes and raises its own SlimkitError subclass."""

import pytest
import torch

import slimkit
from slimkit.errors import ConfigError, ExportError, ProfileError
from slimkit.inputs import as_tensor_tuple
from slimkit.models import create_model


def test_tensor_and_tuples_become_a_tuple_of_the_same_tensors():
    a, b = torch.randn(1, 3, 8, 8), torch.randn(1, 4)
    assert as_tensor_tuple(a)[0] is a and len(as_tensor_tuple(a)) == 1
    got = as_tensor_tuple([a, b])
    assert isinstance(got, tuple) and got[0] is a and got[1] is b


@pytest.mark.parametrize("bad", [None, [], (torch.randn(1), 3), "3x32x32", 5])
def test_anything_else_is_the_callers_error(bad):
    with pytest.raises(ConfigError, match="example_inputs must be a tensor"):
        as_tensor_tuple(bad)
    with pytest.raises(ExportError, match="example_inputs must be a tensor"):
        as_tensor_tuple(bad, ExportError)


def test_each_public_caller_keeps_its_error_class(tmp_path):
    model = create_model("resnet20")
    with pytest.raises(ConfigError, match="example_inputs must be a tensor"):
        slimkit.prune(model, "x", ratio=0.3)
    with pytest.raises(ExportError, match="example_inputs must be a tensor"):
        slimkit.export_onnx(model, tmp_path / "m.onnx", "x")
    with pytest.raises(ProfileError, match="shape like"):
        slimkit.profile(model, "x")
