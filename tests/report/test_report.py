import re

import pytest

from slimkit.report import format_count, markdown_table, plot_bars, plot_lines, plot_scatter, rich_table, write_html


@pytest.mark.parametrize("n, text", [(40_812_544, "40.81M"), (1_234, "1.23K"), (12, "12"), (2.5e9, "2.50G")])
def test_format_count(n, text):
    assert format_count(n) == text


def test_markdown_table_has_union_of_columns_in_order():
    md = markdown_table([{"model": "a", "acc": 0.9}, {"model": "b", "macs": 10}])
    lines = md.splitlines()
    assert lines[0] == "| model | acc | macs |"
    assert lines[2] == "| a | 0.9 |  |" and lines[3] == "| b |  | 10 |"
    assert rich_table([{"model": "a", "acc": 0.9}]).row_count == 1


def test_html_report_embeds_figures_and_escapes(tmp_path):
    bars = plot_bars(["l1", "l2"], {"before": [16, 32], "after": [8, 16]}, tmp_path / "b.png")
    sc = plot_scatter([{"label": "base", "macs": 1.0, "acc": 0.9}], "macs", "acc", tmp_path / "s.png")
    ln = plot_lines({"a": [1, 2, 3]}, tmp_path / "l.png", bands={"a": ([0, 1, 2], [2, 3, 4])})
    for p in (bars, sc, ln):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = write_html(tmp_path / "r.html", "Run <1>", tables={"T": [{"k": "<b>"}]}, figures={"F": bars}, notes=["n"])
    text = out.read_text()
    assert "Run &lt;1&gt;" in text and "&lt;b&gt;" in text
    assert len(re.findall(r"data:image/png;base64,", text)) == 1
