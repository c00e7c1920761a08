"""`slimkit models` through a Typer app holding only that command."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from slimkit.cli.models import register
from slimkit.models import create_model, list_models
from slimkit.report import format_count


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root() -> None:  # keep `models` a named subcommand
        pass

    return app


def test_lists_resnets_with_param_counts():
    res = CliRunner().invoke(_app(), ["models", "resnet*"], terminal_width=200)
    assert res.exit_code == 0, res.output
    names = list_models("resnet*")
    assert names and all(n in res.output for n in names)
    assert f"{len(names)} models" in res.output
    p20 = sum(p.numel() for p in create_model("resnet20").parameters())  # independent of slimkit.profile
    assert format_count(p20) in res.output


def test_pattern_without_matches_says_so():
    res = CliRunner().invoke(_app(), ["models", "no_such_model*"], terminal_width=200)
    assert res.exit_code == 0
    assert "0 models" in res.output
