"""`slimkit export` via a local Typer app: writes a valid ONNX file and prints the parity diff."""

import onnx
import typer
from typer.testing import CliRunner

from slimkit.cli import export as export_cli


def test_export_writes_onnx(tmp_path):
    app = typer.Typer()
    export_cli.register(app)
    app.command("noop")(lambda: None)
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export", "resnet20", "--out", str(out), "--input-size", "3,32,32"])
    assert res.exit_code == 0, res.output
    assert "max |diff|" in res.output
    onnx.checker.check_model(onnx.load(str(out)))
