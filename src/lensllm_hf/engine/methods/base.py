"""What every selection method shares: the :class:`Method` shape, run information, cost and warnings.

A method turns a curve table (every candidate's points up to the budget) into a
:class:`~lensllm_hf.engine.ranking.Ranking`. The registry of methods is ``lensllm_hf.engine.methods.METHODS``;
this module sits below it (``default`` and ``methods`` both import it, never each other).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np

from ..curves import CurveTable
from ..fit import Fit
from ..ranking import Ranking

__all__ = ["LEVEL", "Method", "RunInfo", "each_row", "extrapolation_warnings", "flops_spent", "run_info",
           "showing_progress"]

#: Interval level used throughout (a 90 % interval).
LEVEL = 0.9


@dataclass(frozen=True)
class RunInfo:
    """What a candidate's run records say beyond its losses.

    Attributes:
        eigenvalues, coefficients: the NTK probe's spectrum (``record.ntk``), or None.
        warnings: the records' warnings about their losses (e.g. stream mode with a decaying
            learning rate), passed into the candidate's fit.
    """

    eigenvalues: tuple[float, ...] | None = None
    coefficients: tuple[float, ...] | None = None
    warnings: tuple[str, ...] = ()


def run_info(rows: Mapping[str, Iterable]) -> dict[str, RunInfo]:
    """Per row of a curve table, the probe spectrum of its complete run with the largest subset,
    and every distinct record warning.

    ``rows`` maps the table's row names to their run records, as ``records.table_rows`` groups
    them (anything with the public ``status``, ``train_size``, ``ntk`` and ``warnings`` of
    ``lensllm_hf.records.RunRecord``).
    """
    best: dict[str, tuple[int, RunInfo]] = {}
    notes: dict[str, list[str]] = {}
    for name, recs in rows.items():
        for r in recs:
            if getattr(r, "status", None) != "complete":
                continue
            for w in getattr(r, "warnings", None) or []:
                if isinstance(w, str) and w not in notes.setdefault(name, []):
                    notes[name].append(w)
            ntk = getattr(r, "ntk", None) or {}
            eig, coef = ntk.get("eigenvalues"), ntk.get("coefficients")
            size = int(r.train_size) if r.train_size is not None else -1
            if (isinstance(eig, list) and isinstance(coef, list) and eig and len(eig) == len(coef)
                    and all(isinstance(v, int | float) and math.isfinite(v) for v in [*eig, *coef])
                    and size >= best.get(name, (-2, None))[0]):
                best[name] = (size, RunInfo(tuple(map(float, eig)), tuple(map(float, coef))))
    out = {}
    for name in set(best) | set(notes):
        probe = best.get(name, (0, RunInfo()))[1]
        out[name] = RunInfo(probe.eigenvalues, probe.coefficients, tuple(notes.get(name, ())))
    return out


class Method:
    """Ranks the candidates of a table; ``predicts_loss`` is False for the baselines."""

    name: str
    predicts_loss = True

    def rank(self, table: CurveTable, target: float, level: float = LEVEL,
             runs: Mapping[str, RunInfo] | None = None) -> Ranking:
        """Rank ``table``'s candidates at ``target``; ``runs`` adds what the records say per row."""
        raise NotImplementedError

    def sizes_used(self, table: CurveTable) -> np.ndarray:
        """The subset sizes whose fine-tuning this method needs (for its compute cost)."""
        return table.sizes[table.sizes > 0]


_PROGRESS: ContextVar[bool] = ContextVar("lensllm_progress", default=False)


@contextmanager
def showing_progress() -> Iterator[None]:
    """Within this block, :func:`each_row` shows a progress bar on stderr (``lensllm fit`` on a
    large table); elsewhere (benchmarks, the selector, worker processes) it shows nothing."""
    token = _PROGRESS.set(True)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def each_row(table: CurveTable, what: str) -> Iterable[int]:
    """The row indices of ``table``, counted by a tqdm bar named ``what`` inside :func:`showing_progress`."""
    from tqdm.auto import tqdm

    # delay: a table fitted within a second shows no bar at all.
    return tqdm(range(len(table.models)), desc=what, unit="row", file=sys.stderr, leave=False, delay=1.0,
                mininterval=0.5, disable=not _PROGRESS.get())


def flops_spent(table: CurveTable, row: int, sizes: np.ndarray) -> float:
    """FLOPs spent on the runs at ``sizes``: recorded FLOPs, else parameters x examples."""
    if table.flops is not None:
        cols = np.isin(table.sizes, sizes)
        spent = table.flops[row, cols]
        if np.all(np.isfinite(spent)):
            return float(np.sum(spent))
    scale = table.params[row] if table.params is not None and np.isfinite(table.params[row]) else 1.0
    return float(np.sum(sizes) * scale)


#: A prediction extrapolates "beyond what the data carry" past this many doublings per doubling
#: the data span, plus a fixed allowance (the benchmark protocol's 200..3200 -> 1.6M stays inside).
EXTRAPOLATION_SPAN_FACTOR = 2.0
EXTRAPOLATION_ALLOWANCE = 2.0


def extrapolation_warnings(fit: Fit, target: float) -> list[str]:
    """A warning when ``target`` lies much further beyond the data than the data span.

    Example:
        >>> fit = Fit("ats", {"a": 1.0, "b": -0.1}, (200.0, 400.0, 800.0), (2.4, 2.2, 2.0),
        ...           (True, True, True), {"noise_var": 1e-4, "largest_size": 800.0,
        ...           "extrapolation_sd_per_doubling": 0.02})
        >>> extrapolation_warnings(fit, 1e6)[0][:52]
        'extrapolates 10.3 doublings beyond the largest size '
    """
    positive = [s for s in fit.sizes if s > 0]
    if not positive:
        return []
    largest, smallest = max(positive), min(positive)
    ahead = math.log2(target / largest) if target > largest else 0.0
    span = math.log2(largest / smallest)
    if ahead <= EXTRAPOLATION_SPAN_FACTOR * span + EXTRAPOLATION_ALLOWANCE:
        return []
    return [f"extrapolates {ahead:.1f} doublings beyond the largest size {largest:,.0f}, while the data span "
            f"{span:.1f} ({smallest:,.0f}..{largest:,.0f}): the prediction assumes the curve keeps its shape that "
            "far; add larger subsets before trusting it"]
