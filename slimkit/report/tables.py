"""Tables from lists of row dicts: rich for the terminal, Markdown for READMEs and notes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.table import Table

__all__ = ["format_count", "format_cell", "rich_table", "markdown_table", "summary_table"]


def format_count(n: float, digits: int = 2) -> str:
    """Human count: 40_812_544 -> '40.81M', 1_234 -> '1.23K', 12 -> '12'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.{digits}f}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def format_cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else format_count(v)
    return "" if v is None else str(v)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    return cols


def rich_table(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Table:
    """A rich Table with one column per key (union over rows, first-seen order)."""
    table = Table(title=title, show_lines=False)
    cols = _columns(rows)
    for c in cols:
        table.add_column(c, justify="left" if rows and isinstance(rows[0].get(c), str) else "right")
    for r in rows:
        table.add_row(*(format_cell(r.get(c)) for c in cols))
    return table


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table (union of keys as columns)."""
    cols = _columns(rows)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(format_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def summary_table(summary: Mapping[str, Any], title: str | None = None) -> Table:
    """One result as a two-column (field, value) table: readable however many fields it has."""
    table = Table(title=title)
    table.add_column("field")
    table.add_column("value", justify="right")
    for k, v in summary.items():
        table.add_row(str(k), format_cell(v))
    return table
