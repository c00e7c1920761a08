"""`slimkit` command line: parses options, builds configs, calls the library. Nothing imports this package.

Each subcommand lives in its own module exposing `register(app)`; errors print one clear line (no traceback unless
`--debug`).
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from slimkit.errors import SlimkitError

# subcommand modules, in help order
_COMMANDS: tuple[str, ...] = ("compress", "train", "distill", "search", "oneshot", "profile", "export", "quantize",
                              "models")

app = typer.Typer(
    name="slimkit",
    help="Search, prune, distill, profile and export small, fast vision networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _state["debug"] = debug


def _register_all() -> None:
    if _state.get("registered"):
        return
    _state["registered"] = True
    for name in _COMMANDS:
        importlib.import_module(f"slimkit.cli.{name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `slimkit` console script; returns the process exit code."""
    _register_all()
    err = Console(stderr=True)
    try:
        app(args=argv, prog_name="slimkit")  # standalone: click prints usage errors and exits 2 itself
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except SlimkitError as e:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
