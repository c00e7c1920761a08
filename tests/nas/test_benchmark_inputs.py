"""Bad NAS-Bench-201 tables are refused with the file, line and column, never read silently or with a traceback."""

import pytest

from slimkit.errors import DataError
from slimkit.nas import NB201Benchmark

CELLS = ["|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|",
         "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|"]


def _table(tmp_path, rows, header="arch,cellstr,acc,params_M"):
    p = tmp_path / "t.csv"
    p.write_text(header + "\n" + "\n".join(rows) + "\n")
    return p


def test_a_good_table_reads(tmp_path):
    b = NB201Benchmark.from_csv(_table(tmp_path, [f"{i},{c},{50 + i},{0.1 * i}" for i, c in enumerate(CELLS)]),
                                metric="acc")
    assert b.optimum()[0] == 52.0


@pytest.mark.parametrize("rows, match", [
    ([f"0,{CELLS[0]},50,0.1", f"0,{CELLS[0]},50,0.1", f"1,{CELLS[1]},51,0.2"], "arch 0 twice .lines 2 and 3"),
    ([f"0,{CELLS[0]},50,0.1", f"0,{CELLS[1]},99.9,0.2"], "arch 0 twice"),  # a fake row must not become the optimum
    ([f"0,{CELLS[0]},50,0.1", f"1,{CELLS[0]},99.9,0.2"], "cell .* twice"),
    ([f"0,{CELLS[0]},inf,0.1", f"1,{CELLS[1]},51,0.2"], "line 2, column 'acc': 'inf' is infinite"),
    ([f"0,{CELLS[0]},50,0.1", f"1,{CELLS[1]},n/a,0.2"], "line 3, column 'acc': 'n/a' is not a number"),
    ([f"zero,{CELLS[0]},50,0.1"], "line 2: arch 'zero' is not an integer"),
    ([f"0.5,{CELLS[0]},50,0.1"], "not an integer"),
])
def test_bad_rows_are_refused_naming_the_line(tmp_path, rows, match):
    with pytest.raises(DataError, match=match):
        NB201Benchmark.from_csv(_table(tmp_path, rows), metric="acc")


def test_a_binary_file_is_refused(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"arch,cellstr,acc\n\x00\xff\xfe\x00garbage\x89PNG")
    with pytest.raises(DataError, match="not a CSV text table"):
        NB201Benchmark.from_csv(p, metric="acc")


def test_a_text_column_is_skipped_and_missing_values_kept(tmp_path):
    rows = [f"{i},{c},{50 + i if i else ''},note{i}" for i, c in enumerate(CELLS)]
    b = NB201Benchmark.from_csv(_table(tmp_path, rows, header="arch,cellstr,acc,comment"), metric="acc")
    assert "comment" not in b.columns and b.optimum()[0] == 52.0
