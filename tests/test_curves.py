"""CurveTable.read_csv: the same values as Python's float(), rows named by file line, linear time."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest

from lensllm_hf.engine.curves import MAX_SUBSET_SIZE, CurveError, CurveTable

HEADER = "model,0,200,400,800,size,family"


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def reference(path):
    """The table as the csv module and float() read it (the reader this one replaced)."""
    rows = [row for row in csv.reader(path.read_text(encoding="utf-8").splitlines()) if any(cell for cell in row)]
    header = rows[0]
    size_cols = [j for j, name in enumerate(header) if j and name.lower() not in ("size", "family")]
    sizes = [int(float(header[j])) for j in size_cols]
    order = np.argsort(sizes, kind="stable")
    losses = np.array([[float(row[j]) for j in size_cols] for row in rows[1:]])[:, order]
    return [row[0] for row in rows[1:]], np.array(sizes)[order], losses


@pytest.mark.parametrize("name", ["flan.csv", "gigaword.csv"])
def test_real_tables_read_bit_for_bit(curves_dir, name):
    table = CurveTable.read_csv(curves_dir / name)
    models, sizes, losses = reference(curves_dir / name)
    assert table.models == models
    np.testing.assert_array_equal(table.sizes, sizes)
    assert np.array_equal(table.losses, losses)  # exact: the same floats as float(text)
    assert table.problems == {}
    assert table.params is not None and np.all(table.params > 0)
    assert table.families is not None and all(table.families)


def test_text_path_and_float_path_agree(tmp_path):
    """A cell the float parser refuses sends the table through the text reader: same values."""
    rng = np.random.default_rng(0)
    rows = [f"m{i}," + ",".join(f"{v:.12g}" for v in rng.uniform(0.5, 5, 4)) + f",{10**8 + i},F" for i in range(300)]
    fast = CurveTable.read_csv(write(tmp_path, "\n".join([HEADER, *rows]), "fast.csv"))
    slow = CurveTable.read_csv(write(tmp_path, "\n".join([HEADER, *rows, "odd,1,2,abc,1_000,1e8,F"]), "slow.csv"))
    assert slow.models[:-1] == fast.models
    assert np.array_equal(slow.losses[:-1], fast.losses) and np.array_equal(slow.params[:-1], fast.params)
    assert slow.losses[-1, 3] == 1000.0  # float() spellings the vectorized parsers refuse still count
    assert slow.problems == {
        "odd": "row 302: unusable loss at column '400' = 'abc' (losses must be finite numbers > 0, at most 1e+06)"}


def test_rows_are_file_lines(tmp_path):
    text = "\r\n\r\n" + HEADER + "\r\n\r\n   \r\n,,,\r\na,5,4,nan,3,1e8,F\r\n\r\nb,5,,3,2,1e8,F\r\n"
    table = CurveTable.read_csv(write(tmp_path, text))
    assert table.problems == {
        "a": "row 7: unusable loss at column '400' = 'nan' (losses must be finite numbers > 0, at most 1e+06)",
        "b": "row 9: unusable loss at column '200' = 'empty' (losses must be finite numbers > 0, at most 1e+06)",
    }
    cr_only = CurveTable.read_csv(write(tmp_path, HEADER + "\ra,5,4,3,2,1e8,F\r\rb,5,4,3,0,1e8,F", "cr.csv"))
    assert cr_only.problems == {
        "b": "row 4: unusable loss at column '800' = '0' (losses must be finite numbers > 0, at most 1e+06)"}


def test_names_stay_text_and_cells_are_trimmed(tmp_path):
    text = "\ufeff" + HEADER + '\n1e3,5,4,3,2,7B,F\n" 007 ", 5 , 4 ,"3",2,inf, G \nNA,5,4,3,2,-1,\n'
    table = CurveTable.read_csv(write(tmp_path, text))
    assert table.models == ["1e3", "007", "NA"]
    assert table.families == ["F", "G", ""]
    assert table.params is None  # '7B', inf and -1 are unknown sizes, not errors (and none is known)
    assert np.array_equal(table.losses, [[5, 4, 3, 2]] * 3)


def test_size_headers_within_limits(tmp_path):
    table = CurveTable.read_csv(write(tmp_path, f"model,0,200,{MAX_SUBSET_SIZE}\na,5,4,3\n"))
    assert table.sizes.tolist() == [0, 200, MAX_SUBSET_SIZE] and table.sizes.dtype == np.int64
    with pytest.raises(CurveError, match=r"column 4 header '1000000000000001' is not a plausible subset size"):
        CurveTable.read_csv(write(tmp_path, f"model,0,200,{MAX_SUBSET_SIZE + 1}\na,5,4,3\n", "big.csv"))


@pytest.mark.parametrize("cell", ["inf", "-inf", "nan", "1e400", "-1", "0.5", "1e30", "0x10", "2e2"])
def test_bad_size_header_is_one_line(tmp_path, cell):
    with pytest.raises(CurveError) as error:
        CurveTable.read_csv(write(tmp_path, f"model,0,200,{cell}\na,5,4,3\n"))
    message = str(error.value)
    assert ("column 4 header" in message or "size 200 appears twice" in message) and "\n" not in message


def test_values_past_the_header_are_refused(tmp_path):
    with pytest.raises(CurveError, match=r"row 2 has a value in column 4, past the header's last column \(3\)"):
        CurveTable.read_csv(write(tmp_path, "model,0,200,\na,5,4,3\n"))
    table = CurveTable.read_csv(write(tmp_path, "model,0,200,,\na,5,4,,\n", "trailing.csv"))
    assert table.sizes.tolist() == [0, 200] and table.problems == {}


def test_stray_quote_names_the_row_and_the_fix(tmp_path):
    rows = [f"m{i},5,4,3,2,1e8,F" for i in range(10)]
    rows[4] = '"' + rows[4]
    with pytest.raises(CurveError) as error:
        CurveTable.read_csv(write(tmp_path, "\n".join([HEADER, *rows]) + "\n"))
    assert "row 6: a quote" in str(error.value) and "remove the stray quote" in str(error.value)


def test_messages_escape_and_shorten_names(tmp_path):
    long = "x\x1b[2J" + "y" * 10_000
    text = f"{HEADER}\n{long},5,4,3,2,1e8,F\nb,5,{'9' * 10_000},3,2,1e8,F\n"
    table = CurveTable.read_csv(write(tmp_path, text))
    assert table.models[0] == long  # kept exactly
    assert len(table.problems["b"]) < 300 and "…" in table.problems["b"]
    with pytest.raises(CurveError) as error:
        table.points(1)
    assert len(str(error.value)) < 500
    short = CurveTable.read_csv(write(tmp_path, f"model,0,200\n{long},5,4\n", "short.csv"))
    with pytest.raises(CurveError) as error:
        short.points(0)
    assert "\x1b" not in str(error.value) and "\\x1b" in str(error.value)


def test_duplicate_model_among_many_rows_is_found_fast(tmp_path):
    rows = [f"org/model-{i},5,4,3,2,1e8,F" for i in range(40_000)]
    rows.append("org/model-123,5,4,3,2,1e8,F")
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")
    start = time.perf_counter()
    with pytest.raises(CurveError, match=r"model 'org/model-123' appears twice \(row 40002\)"):
        CurveTable.read_csv(path)
    assert time.perf_counter() - start < 5  # the csv-module reader took 22 s on 40,000 rows


def test_forty_thousand_rows_read_in_linear_time(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.uniform(1, 5, (40_000, 4))
    rows = [f"org/model-{i}," + ",".join(f"{v:.9f}" for v in values[i]) + ",1e8,F" for i in range(40_000)]
    path = write(tmp_path, "\n".join([HEADER, *rows]) + "\n")
    start = time.perf_counter()
    table = CurveTable.read_csv(path)
    assert time.perf_counter() - start < 5
    assert len(table.models) == 40_000
    np.testing.assert_allclose(table.losses, values, rtol=1e-8)
