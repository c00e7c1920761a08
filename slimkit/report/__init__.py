"""Reports: rich/Markdown tables, matplotlib plots, self-contained HTML pages. Plain data in, files out.

This package sits at the bottom of the import layers: it knows nothing of models or pruning, so any job can use it.
"""

from slimkit.report.html import render_html, write_html
from slimkit.report.plots import plot_bars, plot_lines, plot_scatter
from slimkit.report.tables import format_count, markdown_table, rich_table, summary_table

__all__ = [
    "format_count",
    "markdown_table",
    "plot_bars",
    "plot_lines",
    "plot_scatter",
    "render_html",
    "rich_table",
    "summary_table",
    "write_html",
]
