"""The short public surface works whatever was imported before it."""

import subprocess
import sys

import pytest

CODE = """
import torch, slimkit
{pre}
m = slimkit.create_model("convnet_tiny", in_chans=1)
small = slimkit.prune(m, torch.randn(1, 1, 8, 8), ratio=0.5)
assert slimkit.profile(small, (1, 8, 8)).macs < slimkit.profile(m, (1, 8, 8)).macs
assert callable(slimkit.prune.save) and slimkit.prune.prune is not None
print("ok")
"""


@pytest.mark.parametrize("pre", ["", "import slimkit.prune, slimkit.profile", "from slimkit.jobs import compress"])
def test_prune_and_profile_are_callable_in_any_import_order(pre):
    out = subprocess.run([sys.executable, "-c", CODE.format(pre=pre)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_lazy_names_resolve():
    import slimkit

    for name in slimkit.__all__:
        assert getattr(slimkit, name) is not None, name
