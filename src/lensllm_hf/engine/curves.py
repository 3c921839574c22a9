"""Learning-curve tables: test loss per (model, subset size), read from CSV or run records.

The CSV format is the one of the published fine-tuning curves (Lin et al., 2024): the first
column names the model, numeric column headers are subset sizes (``0`` is the zero-shot
loss), and the optional ``size`` and ``family`` columns give the parameter count and family.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "curves.csv"
    >>> _ = path.write_text("model,0,200,400,800,size\\ngpt2,4.1,3.2,3.0,2.9,124e6\\n", encoding="utf-8")
    >>> table = CurveTable.read_csv(path)
    >>> table.models, table.up_to(400).sizes
    (['gpt2'], array([  0, 200, 400]))
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .._utils import MAX_LOSS, atomic_write_text, display, one_line, read_bounded
from ..errors import BoundsError, CurveError

__all__ = ["MAX_SUBSET_SIZE", "CurveError", "CurveTable", "validate_points"]

#: Largest subset size a table may name: beyond any real data set, and exact in float64.
MAX_SUBSET_SIZE = 10**15

#: Most columns a curve table may have (one per subset size, plus 'size' and 'family').
MAX_COLUMNS = 10_000


@dataclass(frozen=True)
class CurveTable:
    """Losses of several models at several training-subset sizes.

    Attributes:
        models: model IDs, one per row.
        sizes: subset sizes, ascending, one per column (``0`` is zero-shot).
        losses: ``(n_models, n_sizes)`` test losses; NaN where a point is missing or bad.
        params: parameter count per model, or None when unknown.
        families: model family per model, or None.
        flops: ``(n_models, n_sizes)`` FLOPs spent on each run when known (run records),
            else None: cost is then parameters x examples, for a table without token counts.
        source: where the table came from, used in error messages.
        problems: per model, why some of its cells were unusable (row and column named).
    """

    models: list[str]
    sizes: np.ndarray
    losses: np.ndarray
    params: np.ndarray | None = None
    families: list[str] | None = None
    flops: np.ndarray | None = None
    source: str = "<table>"
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file stem, used as the dataset name in benchmarks."""
        return Path(self.source).stem

    def up_to(self, budget: float) -> CurveTable:
        """The columns a method with this budget may see: every size <= ``budget``."""
        keep = self.sizes <= budget
        return replace(
            self,
            sizes=self.sizes[keep],
            losses=self.losses[:, keep],
            flops=None if self.flops is None else self.flops[:, keep],
        )

    def column(self, size: int) -> np.ndarray:
        """Losses of every model at one subset size."""
        hits = np.flatnonzero(self.sizes == size)
        if hits.size == 0:
            raise CurveError(f"{display(self.source)}: no column for size {size}; the sizes are {self.sizes.tolist()}",
                             path=self.source)
        return self.losses[:, hits[0]]

    def points(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The (sizes, losses) of one model; raises CurveError naming the problem.

        NaN cells are runs not made (yet) and are left out; a cell that held a bad value
        (recorded in ``problems``) fails the model instead.
        """
        losses = self.losses[row]
        made = ~np.isnan(losses)
        where = f"{display(self.source)}: model {_quote(self.models[row])}"
        return validate_points(self.sizes[made], losses[made], where=where, problem=self.problems.get(self.models[row]))

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table in the format :meth:`read_csv` reads (atomically); empty cells are runs not made.

        Example:
            >>> import tempfile, pathlib
            >>> table = CurveTable(["gpt2"], np.array([0, 200]), np.array([[4.1, 3.2]]), params=np.array([124e6]))
            >>> path = table.to_csv(pathlib.Path(tempfile.mkdtemp()) / "curves.csv")
            >>> CurveTable.read_csv(path).losses.tolist()
            [[4.1, 3.2]]
        """
        frame = pd.DataFrame(self.losses, columns=[str(int(s)) for s in self.sizes])
        frame.insert(0, "model", self.models)
        if self.params is not None:
            frame["size"] = self.params
        if self.families is not None:
            frame["family"] = self.families
        return atomic_write_text(path, frame.to_csv(index=False, float_format="%.10g"))

    @classmethod
    def read_csv(cls, path: str | os.PathLike) -> CurveTable:
        """Read a curve table; file-level problems raise CurveError with a one-line fix.

        The file is UTF-8 (a byte-order mark is allowed) with comma-separated fields; quoted
        fields, CRLF or CR line ends, blank lines and trailing commas are accepted. Rows are
        counted as lines of the file (the header is row 1). Time is linear in the file size.
        """
        path = Path(path)
        where = display(path)
        return _read_table(cls, _read_table_file(path, where), source=str(path), where=where)


def validate_points(sizes, losses, *, where: str = "points", problem: str | None = None,
                    min_points: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Check one curve and return its usable (sizes, losses) as float arrays.

    Raises CurveError when a loss is NaN, infinite or non-positive, when sizes repeat, or when
    fewer than ``min_points`` points remain.
    """
    sizes = np.asarray(sizes, dtype=float)
    losses = np.asarray(losses, dtype=float)
    if sizes.shape != losses.shape or sizes.ndim != 1:
        raise CurveError(f"{where}: sizes and losses must be two lists of the same length")
    if problem:
        raise CurveError(f"{where}: {problem}")
    if not ((losses > 0) & (losses <= MAX_LOSS)).all():  # array methods: this runs per fit
        raise CurveError(f"{where}: a loss is NaN, infinite or <= 0, or above {MAX_LOSS:g}; fix or drop that point")
    if not (np.isfinite(sizes).all() and (sizes >= 0).all()):
        raise CurveError(f"{where}: subset sizes must be finite and >= 0")
    order = np.argsort(sizes)
    sizes, losses = sizes[order], losses[order]
    if (sizes[1:] == sizes[:-1]).any():
        raise CurveError(f"{where}: a subset size repeats; give one loss per size")
    if sizes.size < min_points:
        raise CurveError(f"{where}: only {sizes.size} usable points, at least {min_points} are needed; "
                         "raise the budget or add subset sizes")
    return sizes, losses


_QUOTE_LIMIT = 60

#: Loss cells the fast float reader takes as missing; they are reported with their text.
_NA_TEXT = ["", "nan", "NaN", "NAN", "NA", "N/A", "null", "None"]


def _quote(text: str, limit: int = _QUOTE_LIMIT) -> str:
    """``text`` quoted for a one-line message: escaped by repr, cut at ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _read_table_file(path: Path, where: str) -> bytes:
    """The bytes of a curve table (:func:`~lensllm_hf._utils.read_bounded`: folders, FIFOs and devices are
    refused before opening, no hang), or a :class:`CurveError` naming the problem."""
    try:
        return read_bounded(path, where)
    except BoundsError as error:  # before ValueError, which it is
        raise CurveError(f"{where}: {error.reason}; pass a curve table (a regular CSV file)", path=where) from None
    except IsADirectoryError:
        raise CurveError(f"{where}: is a folder, not a curve table; pass a CSV file", path=where) from None
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL in the path
        raise CurveError(f"{where}: no such file; pass the path of a curve table (CSV)", path=where) from None
    except OSError as error:
        raise CurveError(f"{where}: cannot be read ({one_line(error.strerror or error)}); "
                         "check its permissions or pass another curve table", path=where) from None


def _text_bytes(data: bytes, where: str) -> bytes:
    """``data`` without its UTF-8 byte-order mark, after checking that it is UTF-8 text."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data:
        raise CurveError(f"{where}: not a text CSV file (it holds NUL bytes: binary or UTF-16); "
                         "pass a UTF-8 CSV with one row per model", path=where)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CurveError(f"{where}: not a text CSV file (byte 0x{data[error.start]:02x} at offset {error.start} "
                         "is not UTF-8); save the table as UTF-8 CSV with one row per model", path=where) from None
    return data


class _Lines(NamedTuple):
    """The physical lines of a file (ends: LF, CRLF or CR, as pandas reads them)."""

    start: np.ndarray    # byte offset where each line starts
    stop: np.ndarray     # byte offset of its line break (or of the end of the file)
    content: np.ndarray  # bytes other than spaces, tabs and line breaks (pandas skips lines with none)
    commas: np.ndarray   # commas among them (a line of only commas is a blank row)


#: Byte classes: 0 text, 1 comma, 2 space or tab, 3 line feed, 4 carriage return.
_BYTE_CLASS = np.zeros(256, dtype=np.uint8)
_BYTE_CLASS[[ord(","), ord(" "), ord("\t"), ord("\n"), ord("\r")]] = [1, 2, 2, 3, 4]


def _lines(data: bytes) -> _Lines:
    """Split ``data`` into physical lines with numpy: a few passes over the bytes, no Python loop."""
    arr = np.frombuffer(data, dtype=np.uint8)
    kind = _BYTE_CLASS[arr]
    breaks = np.flatnonzero(kind >= 3)
    crlf = np.zeros(breaks.size, dtype=bool)  # a CR right before an LF: the LF ends that line
    crlf[:-1] = (kind[breaks[:-1]] == 4) & (breaks[1:] == breaks[:-1] + 1) & (kind[breaks[1:]] == 3)
    ends = breaks[~crlf]
    start = np.concatenate(([0], ends + 1))
    start = start[start < arr.size]
    bounds = np.concatenate((start, [arr.size]))
    crlf_end = (ends > 0) & (kind[ends] == 3) & (kind[np.maximum(ends - 1, 0)] == 4)
    stop = np.concatenate((ends - crlf_end, [arr.size]))[: start.size]  # where each line's text ends
    blank = np.diff(np.searchsorted(np.flatnonzero(kind >= 2), bounds))
    commas = np.diff(np.searchsorted(np.flatnonzero(kind == 1), bounds))
    return _Lines(start, stop, np.diff(bounds) - blank, commas)


def _line_cells(data: bytes, lines: _Lines, index: int, *, strict: bool = False) -> list[str]:
    """The cells of one physical line, split by the csv module (by pandas past its field-size limit)."""
    text = data[lines.start[index]: lines.stop[index]].decode("utf-8")
    if len(text) <= csv.field_size_limit():
        return next(csv.reader([text], strict=strict), [])
    frame = pd.read_csv(io.StringIO(text), header=None, dtype=object, keep_default_na=False, na_filter=False,
                        engine="c")
    return [str(cell) for cell in frame.iloc[0].tolist()]


class _Layout(NamedTuple):
    """What each header column holds."""

    header: list[str]
    size_cols: list[int]
    sizes: list[int]
    param_col: int | None
    family_col: int | None


def _layout(header: list[str], where: str) -> _Layout:
    """Check the header; every problem is one CurveError naming the column and the fix."""
    if _as_number(header[0]) is not None:
        raise CurveError(f"{where}: the first column must name the model, but its header is the number "
                         f"{_quote(header[0])}; add a model column (e.g. 'config name') first", path=where)
    size_cols: list[int] = []
    sizes: list[int] = []
    seen: set[int] = set()
    param_col = family_col = None
    for j, name in enumerate(header[1:], start=1):
        if name.lower() in ("size", "family"):
            if (param_col if name.lower() == "size" else family_col) is not None:
                raise CurveError(f"{where}: column {name!r} appears twice in the header (column {j + 1}); keep one",
                                 path=where)
            if name.lower() == "size":
                param_col = j
            else:
                family_col = j
            continue
        value = _as_number(name)
        if value is None or not math.isfinite(value) or value < 0 or value != int(value):
            raise CurveError(f"{where}: column {j + 1} header {_quote(name)} is not a subset size; "
                             "size columns must be whole numbers >= 0 (other columns: 'size', 'family')", path=where)
        if value > MAX_SUBSET_SIZE:
            raise CurveError(f"{where}: column {j + 1} header {_quote(name)} is not a plausible subset size "
                             f"(over {MAX_SUBSET_SIZE:.0e} examples); fix the header", path=where)
        if int(value) in seen:
            raise CurveError(f"{where}: size {int(value)} appears twice in the header (column {j + 1}); "
                             "keep one column per subset size", path=where)
        seen.add(int(value))
        size_cols.append(j)
        sizes.append(int(value))
    if not sizes:
        raise CurveError(f"{where}: no subset-size columns in the header; expected 'model,0,200,400,...'", path=where)
    return _Layout(header, size_cols, sizes, param_col, family_col)


def _read_body(data: bytes, lines: _Lines, first: int, widest: int, layout: _Layout,
               where: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows after the header (line index ``first`` on) and the line index of each.

    Loss columns are read by pandas' float parser; a cell it refuses ('abc') sends the whole
    table through the text reader instead, so the result and every message stay the same.
    """
    kept = first + np.flatnonzero(lines.content[first:] > 0)
    if kept.size == 0:
        return pd.DataFrame({j: pd.Series([], dtype=object) for j in range(widest)}), kept
    try:
        frame = _read_frame(data[lines.start[first]:], widest, set(layout.size_cols))
    except pd.errors.ParserError as error:
        raise _quoting_error(data, where, error) from None
    except ValueError as error:
        raise CurveError(f"{where}: not a well-formed CSV file ({one_line(error)}); check the quoting",
                         path=where) from None
    if len(frame) != kept.size:  # a quoted field ran over line ends
        raise _quoting_error(data, where, None)
    return frame, kept


def _read_frame(body: bytes, widest: int, numeric: set[int]) -> pd.DataFrame:
    """Every row of ``body``: ``numeric`` columns as floats when they all parse, all as text otherwise."""
    common = dict(header=None, names=range(widest), encoding="utf-8", engine="c", skip_blank_lines=True,
                  keep_default_na=False)
    try:
        return pd.read_csv(io.BytesIO(body), dtype={j: (np.float64 if j in numeric else object) for j in range(widest)},
                           na_values={j: _NA_TEXT for j in numeric}, **common)
    except pd.errors.ParserError:
        raise
    except ValueError:  # a loss cell the float parser refuses ('abc', '1_000'): read every cell as text
        return pd.read_csv(io.BytesIO(body), dtype=object, na_filter=False, **common)


def _quoting_error(data: bytes, where: str, error: Exception | None) -> CurveError:
    """The CurveError for a file pandas could not split into one row per line: find the row where a
    quote opens and does not close on that row (Python's csv module reads quotes the same way)."""
    record: list[str] = []

    def source():
        for physical in io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=""):
            record.append(physical)
            yield physical

    reader = csv.reader(source())
    line = 0
    odd = None
    while True:
        record.clear()
        try:
            next(reader)
        except StopIteration:
            break
        except csv.Error:  # a field over csv's size limit: the quote swallowed a lot
            return CurveError(f"{where}: row {line + 1}: a quote '\"' opens a field that never closes, taking in "
                              "the rows after it; remove the stray quote or close it on the same row", path=where)
        start, line = line + 1, line + len(record)
        if line > start:
            return CurveError(f"{where}: row {start}: a quoted field runs on to row {line}, taking in the rows "
                              "between (a stray '\"'?); remove the stray quote or close it on the same row", path=where)
        if sum(physical.count('"') for physical in record) % 2:
            odd = start
    if odd is not None and error is not None:
        return CurveError(f"{where}: row {odd}: a quote '\"' opens a field that never closes; "
                          "remove the stray quote or close it on the same row", path=where)
    detail = one_line(error) if error is not None else "rows do not match lines"
    return CurveError(f"{where}: not a well-formed CSV file ({detail}); check the quoting", path=where)


def _read_table(cls: type[CurveTable], data: bytes, *, source: str, where: str) -> CurveTable:
    """Parse and check a curve table; rows are named by their line in the file."""
    data = _text_bytes(data, where)
    lines = _lines(data)
    filled = lines.content > lines.commas  # lines of only spaces, tabs and commas are blank rows
    if not filled.any():
        raise CurveError(f"{where}: the file is empty; pass a CSV whose header is 'model,0,200,400,...'", path=where)
    widest = int(lines.commas.max()) + 1
    if widest > MAX_COLUMNS:
        row = int(np.argmax(lines.commas)) + 1
        raise CurveError(f"{where}: row {row} has {widest:,} fields, more than the {MAX_COLUMNS:,} a curve table "
                         "may have; expected 'model,0,200,400,...' with one column per subset size", path=where)
    top = int(np.argmax(filled))
    try:
        header = [cell.strip() for cell in _line_cells(data, lines, top, strict=True)]
    except (csv.Error, pd.errors.ParserError):
        raise CurveError(f"{where}: row {top + 1} (the header) has broken quoting; "
                         "write it plainly, e.g. 'model,0,200,400,...'", path=where) from None
    width = max((j + 1 for j, cell in enumerate(header) if cell), default=0)
    if width < 2:
        raise CurveError(f"{where}: not a CSV table (one column); expected 'model,0,200,400,...' separated by commas",
                         path=where)
    layout = _layout(header[:width], where)
    rows, kept = _read_body(data, lines, top + 1, widest, layout, where)
    keep = filled[kept]
    rows, kept = rows[keep].reset_index(drop=True), kept[keep]
    if len(rows) == 0:
        raise CurveError(f"{where}: the table has a header but no model rows; add one row per model", path=where)
    for j in range(width, widest):
        extra = [i for i, cell in enumerate(rows[j].tolist()) if isinstance(cell, str) and cell.strip()]
        if extra:
            raise CurveError(f"{where}: row {kept[extra[0]] + 1} has a value in column {j + 1}, past the header's "
                             f"last column ({width}); quote a model name that holds a comma, or add the missing header",
                             path=where)
    return _table_from_rows(cls, data, lines, layout, rows, kept, source=source, where=where)


def _table_from_rows(cls: type[CurveTable], data: bytes, lines: _Lines, layout: _Layout, rows: pd.DataFrame,
                     kept: np.ndarray, *, source: str, where: str) -> CurveTable:
    """The table from its parsed rows; ``kept[i]`` is the line index of row ``i``."""
    models = [cell.strip() for cell in rows[0].tolist()]
    unnamed = [i for i, model in enumerate(models) if not model]
    if unnamed:
        raise CurveError(f"{where}: row {kept[unnamed[0]] + 1} has no model name in the first column; name the model",
                         path=where)
    seen: set[str] = set()
    for i, model in enumerate(models):
        if model not in seen:
            seen.add(model)
            continue
        raise CurveError(f"{where}: model {_quote(models[i])} appears twice (row {kept[i] + 1}); "
                         "keep one row per model", path=where)

    cells_of: dict[int, list[str]] = {}

    def text(i: int, j: int) -> str:
        cell = rows[j].iat[i]
        if isinstance(cell, str):
            return cell
        if i not in cells_of:  # parsed as a float: re-split the line to quote the cell as written
            cells_of[i] = _line_cells(data, lines, int(kept[i]))
        return cells_of[i][j] if j < len(cells_of[i]) else ""

    losses = np.full((len(models), len(layout.sizes)), np.nan)
    bad: dict[int, list[str]] = {}
    for k, j in enumerate(layout.size_cols):
        column = rows[j]
        values = np.array(pd.to_numeric(column, errors="coerce") if column.dtype == object else column, dtype=float)
        for i in np.flatnonzero(~((values > 0) & (values <= MAX_LOSS))):
            # the vectorized parsers refuse a few spellings float() takes ('1_000'); bad cells are few
            cell = text(int(i), j)
            value = _as_number(cell)
            if value is not None and 0 < value <= MAX_LOSS:
                values[i] = value
                continue
            values[i] = np.nan
            bad.setdefault(int(i), []).append(f"column {layout.header[j]!r} = {_quote(cell.strip() or 'empty')}")
        losses[:, k] = values
    problems = {models[i]: (f"row {kept[i] + 1}: unusable loss at " + ", ".join(cells)
                            + f" (losses must be finite numbers > 0, at most {MAX_LOSS:g})")
                for i, cells in sorted(bad.items())}
    params = None
    if layout.param_col is not None:
        column = rows[layout.param_col]
        params = np.array(pd.to_numeric(column, errors="coerce"), dtype=float)
        for i in np.flatnonzero(np.isnan(params)):
            params[i] = _as_number(text(int(i), layout.param_col)) or np.nan
        params[~(np.isfinite(params) & (params > 0))] = np.nan  # unknown, not an error: cost uses examples
        if np.all(np.isnan(params)):
            params = None  # an empty 'size' column (LCDB's learners have no parameter count) says nothing
    families = ([cell.strip() for cell in rows[layout.family_col].tolist()]
                if layout.family_col is not None else None)

    order = np.argsort(layout.sizes, kind="stable")
    return cls(
        models=models,
        sizes=np.asarray(layout.sizes, dtype=np.int64)[order],
        losses=losses[:, order],
        params=params,
        families=families,
        source=source,
        problems=problems,
    )


def _as_number(text: str) -> float | None:
    try:
        return float(text.strip())
    except (ValueError, AttributeError):
        return None
