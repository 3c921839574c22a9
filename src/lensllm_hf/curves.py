"""Learning-curve tables: test loss per (model, subset size), read from CSV or run records.

The CSV format is the one of the published fine-tuning curves (Lin et al., 2024): the first
column names the model, numeric column headers are subset sizes (``0`` is the zero-shot
loss), and the optional ``size`` and ``family`` columns give the parameter count and family.

Example:
    >>> table = CurveTable.read_csv("flan.csv")
    >>> table.up_to(3200).sizes
    array([   0,  200,  400,  800, 1600, 3200])
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import LensLLMError

__all__ = ["CurveError", "CurveTable", "validate_points"]


class CurveError(LensLLMError, ValueError):
    """Bad curve input. The message is one line naming the place and the fix."""


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
            else None: cost is then parameters x examples (DESIGN.md, section 2).
        ntk_F: the NTK term F per model from the run records, or None.
        source: where the table came from, used in error messages.
        problems: per model, why some of its cells were unusable (row and column named).
    """

    models: list[str]
    sizes: np.ndarray
    losses: np.ndarray
    params: np.ndarray | None = None
    families: list[str] | None = None
    flops: np.ndarray | None = None
    ntk_F: np.ndarray | None = None
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
            raise CurveError(f"{self.source}: no column for size {size}; the sizes are {self.sizes.tolist()}")
        return self.losses[:, hits[0]]

    def points(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The (sizes, losses) of one model; raises CurveError naming the problem.

        NaN cells are runs not made (yet) and are left out; a cell that held a bad value
        (recorded in ``problems``) fails the model instead.
        """
        losses = self.losses[row]
        made = ~np.isnan(losses)
        return validate_points(self.sizes[made], losses[made], where=f"{self.source}: model {self.models[row]!r}",
                               problem=self.problems.get(self.models[row]))

    @classmethod
    def read_csv(cls, path: str | Path) -> CurveTable:
        """Read a curve table; file-level problems raise CurveError with a one-line fix."""
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise CurveError(f"{where}: no such file; pass the path of a curve table (CSV)")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CurveError(f"{where}: not a text CSV file; pass a CSV with one row per model") from None
        rows = [row for row in csv.reader(text.splitlines()) if any(cell.strip() for cell in row)]
        if not rows:
            raise CurveError(f"{where}: the file is empty; pass a CSV whose header is 'model,0,200,400,...'")
        header = [cell.strip() for cell in rows[0]]
        if len(header) < 2:
            raise CurveError(f"{where}: not a CSV table (one column); expected 'model,0,200,400,...' separated by commas")
        if _as_number(header[0]) is not None:
            raise CurveError(f"{where}: the first column must name the model, but its header is the number {header[0]!r}; "
                             "add a model column (e.g. 'config name') first")
        size_cols: list[int] = []
        sizes: list[int] = []
        param_col = family_col = None
        for j, name in enumerate(header[1:], start=1):
            if name.lower() == "size":
                param_col = j
            elif name.lower() == "family":
                family_col = j
            else:
                value = _as_number(name)
                if value is None or value < 0 or value != int(value):
                    raise CurveError(f"{where}: column {j + 1} header {name!r} is not a subset size; "
                                     "size columns must be whole numbers >= 0 (other columns: 'size', 'family')")
                if int(value) in sizes:
                    raise CurveError(f"{where}: size {int(value)} appears twice in the header (column {j + 1}); "
                                     "keep one column per subset size")
                size_cols.append(j)
                sizes.append(int(value))
        if not sizes:
            raise CurveError(f"{where}: no subset-size columns in the header; expected 'model,0,200,400,...'")
        if len(rows) < 2:
            raise CurveError(f"{where}: the table has a header but no model rows; add one row per model")

        order = np.argsort(sizes, kind="stable")
        models: list[str] = []
        losses = np.full((len(rows) - 1, len(sizes)), np.nan)
        params = np.full(len(rows) - 1, np.nan)
        families: list[str] = []
        problems: dict[str, str] = {}
        for i, row in enumerate(rows[1:]):
            line = i + 2
            row = row + [""] * (len(header) - len(row))
            model = row[0].strip()
            if not model:
                raise CurveError(f"{where}: row {line} has no model name in the first column; name the model")
            if model in models:
                raise CurveError(f"{where}: model {model!r} appears twice (row {line}); keep one row per model")
            models.append(model)
            bad: list[str] = []
            for k, j in enumerate(size_cols):
                value = _as_number(row[j])
                if value is None or not math.isfinite(value) or value <= 0:
                    bad.append(f"column {header[j]!r} = {row[j].strip() or 'empty'!r}")
                    continue
                losses[i, k] = value
            if bad:
                problems[model] = (f"row {line}: unusable loss at " + ", ".join(bad)
                                   + " (losses must be finite numbers > 0)")
            if param_col is not None:
                value = _as_number(row[param_col])
                params[i] = value if value is not None and value > 0 else np.nan
            families.append(row[family_col].strip() if family_col is not None else "")
        return cls(
            models=models,
            sizes=np.asarray(sizes, dtype=np.int64)[order],
            losses=losses[:, order],
            params=params if param_col is not None else None,
            families=families if family_col is not None else None,
            source=where,
            problems=problems,
        )


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
    if not np.all(np.isfinite(losses)) or np.any(losses <= 0):
        raise CurveError(f"{where}: a loss is NaN, infinite or <= 0; fix or drop that point")
    if np.any(~np.isfinite(sizes)) or np.any(sizes < 0):
        raise CurveError(f"{where}: subset sizes must be finite and >= 0")
    if np.unique(sizes).size != sizes.size:
        raise CurveError(f"{where}: a subset size repeats; give one loss per size")
    if sizes.size < min_points:
        raise CurveError(f"{where}: only {sizes.size} usable points, at least {min_points} are needed; "
                         "raise the budget or add subset sizes")
    order = np.argsort(sizes)
    return sizes[order], losses[order]


def _as_number(text: str) -> float | None:
    try:
        return float(text.strip())
    except (ValueError, AttributeError):
        return None
