"""Self-contained HTML reports: summary, tables and PNG figures embedded as base64 (one file to share)."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from slimkit.fileio import atomic_write
from slimkit.report.tables import format_cell

__all__ = ["render_html", "write_html"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%;margin:1em 0}
"""


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(
    title: str, *, tables: Mapping[str, Sequence[Mapping[str, Any]]] = (), figures: Mapping[str, str | Path] = (),
    notes: Sequence[str] = (),
) -> str:
    """An HTML page: a title, free-text notes, named tables (lists of row dicts), named PNG figures."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    for name, rows in dict(tables).items():
        parts.append(f"<h2>{html.escape(name)}</h2>{_table(rows)}")
    for name, path in dict(figures).items():
        data = base64.b64encode(Path(path).read_bytes()).decode()
        parts.append(f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(path: str | Path, title: str, **kwargs: Any) -> Path:
    return atomic_write(path, render_html(title, **kwargs))
