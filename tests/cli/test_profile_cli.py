"""`slimkit profile` via a local Typer app: JSON numbers match the library, YAML config is honoured."""

import json

import typer
from typer.testing import CliRunner

from slimkit.cli import profile as profile_cli
from slimkit.models import create_model
from slimkit.profile import count_macs, count_params


def _app() -> typer.Typer:
    app = typer.Typer()
    profile_cli.register(app)
    app.command("noop")(lambda: None)  # keep subcommand names in argv
    return app


def test_profile_json_matches_library(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("input_size: 3,32,32\n")
    out = tmp_path / "p.json"
    res = CliRunner().invoke(_app(), ["profile", "resnet20", "--config", str(cfg), "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    net = create_model("resnet20", num_classes=10, in_chans=3)
    assert data["macs"] == count_macs(net, (3, 32, 32))
    assert data["params"] == count_params(net)
