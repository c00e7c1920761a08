"""A user's architecture from a Python file: `create_model("net.py:build")`, its errors, and its copy in runs."""

import shutil

import pytest
import torch
from torch import nn

import slimkit
from slimkit.errors import ModelError
from slimkit.models import create_model
from slimkit.models._user import copy_model_file, resolve_model_name

NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_chans=3, width=8):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def build(num_classes, in_chans, **kwargs):
    return Net(num_classes, in_chans, **kwargs)


def fixed():
    return Net(5, 3)


def broken(num_classes):
    raise RuntimeError("no such layer")


def not_a_model(**kwargs):
    return {"layers": 3}


VALUE = 3
'''


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "src" / "my_net.py"
    path.parent.mkdir()
    path.write_text(NET)
    return path


def test_function_and_class_get_classes_and_channels(net_file):
    m = create_model(f"{net_file}:build", num_classes=7, in_chans=1, width=4)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 7) and m.conv.out_channels == 4
    cls = create_model(f"{net_file}:Net", num_classes=3, in_chans=2)
    assert cls.conv.in_channels == 2 and cls.fc.out_features == 3
    assert create_model(f"{net_file}:fixed", num_classes=99).fc.out_features == 5  # takes no arguments: none given
    assert type(slimkit.create_model(f"{net_file}:build")).__name__ == "Net"


def test_the_same_file_is_imported_once_and_an_edited_file_again(net_file):
    a, b = create_model(f"{net_file}:Net"), create_model(f"{net_file}:Net")
    assert type(a) is type(b)
    net_file.write_text(NET.replace("width=8", "width=6"))
    assert create_model(f"{net_file}:Net").conv.out_channels == 6


@pytest.mark.parametrize("spec, match", [
    ("{d}/missing.py:build", "not found"),
    ("{f}:nothing", r"has no 'nothing'; it defines .*build"),
    ("{f}:broken", r"calling broken\(num_classes=10\) failed: RuntimeError: no such layer"),
    ("{f}:not_a_model", "returned a dict, not a torch.nn.Module"),
    ("{f}:VALUE", "not a function or class"),
    ("{f}", "name it path/to/net.py:function"),
])
def test_errors_name_the_problem(net_file, spec, match):
    with pytest.raises(ModelError, match=match):
        create_model(spec.format(d=net_file.parent, f=net_file))


def test_a_file_that_fails_to_import_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nraise ImportError('needs mylib')\n")
    with pytest.raises(ModelError, match="importing .*bad.py failed: ImportError: needs mylib"):
        create_model(f"{bad}:build")


def test_sys_exit_in_the_users_file_is_a_model_error_not_an_exit(tmp_path):
    (tmp_path / "script.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(ModelError, match="importing .*script.py failed: SystemExit: 3"):
        create_model(f"{tmp_path / 'script.py'}:build")
    (tmp_path / "quits.py").write_text("import sys\ndef build(num_classes=10):\n    sys.exit('no GPU')\n")
    with pytest.raises(ModelError, match="calling build.* failed: SystemExit: no GPU"):
        create_model(f"{tmp_path / 'quits.py'}:build")


def test_a_sibling_module_can_be_imported(tmp_path):
    (tmp_path / "user_blocks_for_test.py").write_text("from torch import nn\ndef head(n): return nn.Linear(4, n)\n")
    (tmp_path / "net2.py").write_text("from torch import nn\nfrom user_blocks_for_test import head\n"
                                      "def build(num_classes): return nn.Sequential(nn.Flatten(), head(num_classes))\n")
    assert create_model(f"{tmp_path / 'net2.py'}:build", num_classes=3)[1].out_features == 3


def test_the_copy_in_a_run_folder_outlives_the_users_file(net_file, tmp_path):
    run = tmp_path / "run"
    name = copy_model_file(f"{net_file}:build", run)
    assert name == "model_src/my_net.py:build" and (run / "model_src" / "my_net.py").read_text() == NET
    shutil.rmtree(net_file.parent)  # the user's file moved away
    resolved = resolve_model_name(name, run)
    assert create_model(resolved, num_classes=4).fc.out_features == 4
    assert resolve_model_name("resnet20", run) == "resnet20"
    assert copy_model_file("timm:resnet18", run) == "timm:resnet18"


def test_a_pruned_user_model_reloads_from_its_record_after_the_file_is_gone(net_file, tmp_path):
    model = create_model(f"{net_file}:build", num_classes=4, in_chans=1).eval()
    small = slimkit.prune(model, torch.randn(1, 1, 8, 8), ratio=0.5, allocation="uniform")  # 8 -> 4 channels
    slimkit.prune.save(small, tmp_path / "out" / "small.safetensors", model_name=f"{net_file}:build",
                       model_kwargs={"num_classes": 4, "in_chans": 1})
    shutil.rmtree(net_file.parent)
    back = slimkit.load(tmp_path / "out" / "small.safetensors").eval()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(back(x), small.eval()(x))
    assert isinstance(back, nn.Module) and back.conv.out_channels == small.conv.out_channels < 8
