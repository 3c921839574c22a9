"""A ranking of candidate models at a target size: each row carries its :class:`~lensllm_hf.engine.fit.Fit`.

The ranking alone holds the target and the interval level: a row's prediction (loss and
interval) is computed from its fit at its ranking's target and level, never stored beside it;
``p_best`` is the probability that the row has the lowest loss at the target under the fits'
predictive distributions, each taken relative to the others (``Fit.log_sds(relative=True)``,
where every row's fit has such spreads: a bend every candidate shares moves none past another,
so it is in the intervals but not in P(best)). ``lensllm fit --json``
and the selector's ``selection.json`` write this shape, and :meth:`Ranking.from_dict` rebuilds
the same fits from it::

    {"target": 1638400, "method": "default", "level": 0.9, "best": "gpt2", "p_best": 0.81,
     "near_ties": ["opt-125m"],
     "ranking": [{"model": "gpt2", "status": "complete", "predicted_loss": 1.9,
                  "interval": [1.8, 2.0], "p_best": 0.81, "score": 1.9, "flops": 1.2e15,
                  "error": null, "source": null, "warnings": [], "fit": {...Fit.to_dict()...}},
                 ...]}

Ranked (complete) candidates come first, best first; failed ones follow with their error.

Example:
    >>> from lensllm_hf.engine.fit import Fit
    >>> def line(a):
    ...     return Fit("ats", {"a": a, "b": -0.1}, (200.0, 400.0, 800.0), (1.0, 0.95, 0.9),
    ...                (True, True, True), {"noise_var": 0.001, "largest_size": 800.0,
    ...                "extrapolation_sd_per_doubling": 0.02})
    >>> ranking = Ranking(1e5, "ats", [CandidateFit("a", fit=line(1.0), score=1.0),
    ...                                CandidateFit("b", fit=line(1.02), score=1.02)])
    >>> ranking.best, round(sum(c.p_best for c in ranking.ranked), 12)
    ('a', 1.0)
    >>> Ranking.from_dict(ranking.to_dict()).ranked[1].predicted_loss == ranking.ranked[1].predicted_loss
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special

from .._utils import atomic_write_text, check_prediction, display, json_safe, load_json, read_bounded
from ..errors import LensLLMError
from .fit import MAX_ENTRIES, MAX_TEXT, Fit, FitError, Prediction, check_level

__all__ = ["NEAR_TIE_P", "CandidateFit", "Ranking", "p_best"]

#: A candidate other than the pick whose P(best) reaches this is a near-tie worth more data.
NEAR_TIE_P = 0.1
#: Most rows a ranking read from a file may hold.
MAX_ROWS = 10_000
#: Grid of the P(best) integral: each candidate contributes points at its median +- this many
#: spreads (its own on each side).
_GRID = np.linspace(-8.0, 8.0, 161)
#: Most grid points the integral keeps (thinned evenly among the candidates' points beyond it):
#: its cost is candidates x this, linear in the candidates.
_MAX_POINTS = 4096
#: The integral runs where log P(every loss > x) lies between these: below the first the
#: others' survival is 1 within 1e-9 (one cell holds it), above the second it is below e^-60.
_LOG_SURVIVAL_BAND = (-1e-9, -60.0)
#: Candidates per block of the integral (bounds its memory at about 8 MB per array).
_BLOCK = 2**20


def p_best(log_means, log_sds, log_sds_above=None) -> np.ndarray:
    """P(candidate i has the lowest loss) for independent losses, summing to 1.

    log L_i has median ``log_means[i]`` and, on either side, a normal's shape of spread
    ``log_sds[i]`` below and ``log_sds_above[i]`` above (``log_sds`` when None: log-normal);
    see :mod:`lensllm_hf.engine.fit`. With S_j(x) = P(L_j > x) and S = prod_j S_j,
    ``P_i = integral of P(L_i in dx) * S(x) / S_i(x)``, so one pass over the candidates gives S
    and another every P_i: time and memory linear in the candidates.

    The grid is made of 161 points across each candidate's own distribution (median +- 8
    spreads), kept where S falls from 1 (within 1e-9) to e^-60, where all the integral's
    variation lies, and thinned evenly to at most 4,096 points; in each cell, the exact
    probability mass of L_i times S / S_i at the cell's middle. Deterministic, within 1e-4 of
    the exact integral whatever the spreads (checked against quadrature), and normalised so that
    the probabilities sum to 1.

    Example:
        >>> p_best([0.0, 0.0], [0.1, 0.1]).tolist()
        [0.5, 0.5]
        >>> p_best([0.0, 0.5], [0.1, 0.1]).round(3).tolist()
        [1.0, 0.0]
        >>> p_best([0.0, 0.0], [0.3, 0.1], [0.1, 0.1]).round(2).tolist()   # the first: longer tail below
        [0.57, 0.43]
    """
    mu = np.asarray(log_means, dtype=float)
    # Spreads past 1e100 (a hostile card's) would turn the grid into inf * 0; they mean "anything".
    below = np.clip(np.asarray(log_sds, dtype=float), 1e-9, 1e100)
    above = below if log_sds_above is None else np.clip(np.asarray(log_sds_above, dtype=float), 1e-9, 1e100)
    if mu.size <= 1:
        return np.ones(mu.size)
    points = np.unique(np.concatenate([mu[:, None] + below[:, None] * _GRID[None, _GRID < 0],
                                       mu[:, None] + above[:, None] * _GRID[None, _GRID >= 0]], axis=1).ravel())
    survival = _LogSurvival(mu, below, above)
    # S falls as x grows: keep the points from the last where it is still 1 to the first where it is gone.
    first = max(survival.first_below(points, _LOG_SURVIVAL_BAND[0]) - 1, 0)
    edges = points[first: survival.first_below(points, _LOG_SURVIVAL_BAND[1]) + 1]
    if edges.size > _MAX_POINTS:
        edges = edges[np.unique(np.linspace(0, edges.size - 1, _MAX_POINTS).round().astype(int))]
    # Cell 0 is everything below the band, where S / S_i is 1 within 1e-9: it is read at its top.
    middle = np.concatenate([edges[:1], 0.5 * (edges[1:] + edges[:-1])])
    blocks = list(survival.blocks(middle.size))
    # One block (a few candidates) keeps its log survivals for the second pass; more recompute theirs.
    kept = survival.log(middle, blocks[0]) if len(blocks) == 1 else None
    log_total = kept.sum(axis=0) if kept is not None else survival.total(middle)
    p = np.empty(mu.size)
    for rows in blocks:
        cdf = special.ndtr(survival.standard(edges, rows))
        mass = np.diff(cdf, axis=1, prepend=0.0)  # P(L_i in cell), the first cell unbounded below
        log_own = kept if kept is not None else survival.log(middle, rows)
        others = np.exp(np.minimum(log_total - log_own, 0.0))  # S / S_i <= 1
        p[rows] = np.sum(mass * others, axis=1)
    total = p.sum()
    return p / total if total > 0 else np.full(mu.size, 1.0 / mu.size)


@dataclass(frozen=True)
class _LogSurvival:
    """log P(L_j > x) of split normals (median ``mu``, spreads ``below``/``above``), in blocks of candidates."""

    mu: np.ndarray
    below: np.ndarray
    above: np.ndarray

    def blocks(self, width: int):
        step = max(1, _BLOCK // max(width, 1))
        return (slice(start, start + step) for start in range(0, self.mu.size, step))

    def standard(self, x: np.ndarray, rows: slice) -> np.ndarray:
        """(x - median) / the spread of x's side, per candidate of ``rows`` (clipped: past 1e10
        spreads every probability is 0 or 1 to the last bit, and the logs stay finite)."""
        dx = x[None, :] - self.mu[rows, None]
        return np.clip(dx / np.where(dx < 0, self.below[rows, None], self.above[rows, None]), -1e10, 1e10)

    def log(self, x: np.ndarray, rows: slice) -> np.ndarray:
        return special.log_ndtr(-self.standard(x, rows))

    def first_below(self, points: np.ndarray, level: float) -> int:
        """The first index of the ascending ``points`` where :meth:`total` < ``level`` (their count
        if none). :meth:`total` falls as x grows: each round evaluates it at up to 512 points
        spread over the range left and keeps the part between the two around the crossing."""
        lo, hi = 0, points.size  # the answer lies in [lo, hi]
        while lo < hi:
            probe = np.unique(np.linspace(lo, hi - 1, min(hi - lo, 512)).round().astype(int))
            k = int(np.searchsorted(-self.total(points[probe]), -level, side="right"))
            if probe.size == hi - lo:
                return lo + k
            lo, hi = (int(probe[k - 1]) + 1 if k > 0 else lo), (int(probe[k]) if k < probe.size else hi)
        return lo

    def total(self, x: np.ndarray) -> np.ndarray:
        """log prod_j P(L_j > x): the log survival of the lowest loss."""
        out = np.zeros(x.size)
        for rows in self.blocks(x.size):
            out += self.log(x, rows).sum(axis=0)
        return out


@dataclass
class CandidateFit:
    """One candidate's row: its fit (or why it failed), its score and P(best).

    ``score`` is what the ranking sorts on, lower is better: the predicted loss for laws, the
    observed loss for ZeroShot/SubTuning, minus log(parameters) for ModelSize. A row has no
    target or level of its own: :attr:`prediction` is its fit's at the target and level of the
    :class:`Ranking` it belongs to (None outside one).
    """

    model: str
    status: str = "complete"  # "complete" or "failed"
    fit: Fit | None = None
    p_best: float | None = None
    score: float | None = None
    error: str | None = None
    flops: float | None = None
    source: str | None = None  # where the fit came from when not trained here (e.g. a Hub card)
    warnings: list[str] = field(default_factory=list)  # about this prediction (e.g. far extrapolation)
    _ranking = None  # the Ranking that owns the row (set by it; no field, so equality and asdict ignore it)

    @classmethod
    def failed(cls, model: str, error: str, **known: Any) -> CandidateFit:
        return cls(model=model, status="failed", error=error, **known)

    @property
    def prediction(self) -> Prediction | None:
        """The fit's prediction at its ranking's target and level; None without a fit or a ranking."""
        if self.fit is None or self._ranking is None:
            return None
        return self.fit.prediction(self._ranking.target, self._ranking.level)

    @property
    def predicted_loss(self) -> float | None:
        """The loss of :attr:`prediction`, or None."""
        prediction = self.prediction
        return None if prediction is None else prediction.predicted_loss

    @property
    def interval(self) -> list[float] | None:
        """The interval of :attr:`prediction` (at the ranking's level), or None."""
        prediction = self.prediction
        return None if prediction is None else list(prediction.interval)

    @property
    def estimate(self) -> float | None:
        """The row's number at the target: the predicted loss, or the score of a row without a fit
        (a baseline's observed loss). What tables, plots and the loop's policies show and compare."""
        predicted = self.predicted_loss
        return self.score if predicted is None else predicted

    @property
    def law(self) -> str | None:
        return self.fit.law if self.fit is not None else None

    @property
    def transition_size(self) -> float | None:
        return self.fit.transition_size if self.fit is not None else None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "model": self.model, "status": self.status, "predicted_loss": self.predicted_loss,
            "interval": self.interval, "p_best": self.p_best, "score": self.score, "flops": self.flops,
            "error": self.error, "source": self.source, "warnings": list(self.warnings),
            "fit": self.fit.to_dict() if self.fit is not None else None,
        })

    @classmethod
    def from_dict(cls, row: Any, where: str = "row") -> CandidateFit:
        """Rebuild a row (its fit included); predicted_loss, interval and p_best are recomputed."""
        if not isinstance(row, Mapping):
            raise LensLLMError(f"{where}: expected an object with model, status, fit, ...")
        model = row.get("model")
        if not isinstance(model, str) or not model or len(model) > MAX_TEXT:
            raise LensLLMError(f"{where}.model: expected a non-empty model name")
        status = row.get("status", "complete")
        if status not in ("complete", "failed"):
            raise LensLLMError(f"{where}.status: expected 'complete' or 'failed', got {display(str(status)[:40])!r}")
        fit = Fit.from_dict(row["fit"], where=f"{where}.fit") if row.get("fit") is not None else None
        numbers = {}
        for key in ("score", "flops"):
            value = row.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise LensLLMError(f"{where}.{key}: expected a number or null")
            numbers[key] = None if value is None else float(value)
        texts = {}
        for key in ("error", "source"):
            value = row.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                raise LensLLMError(f"{where}.{key}: expected a short string or null")
            texts[key] = value
        warnings = row.get("warnings", [])
        if (not isinstance(warnings, list) or len(warnings) > MAX_ENTRIES
                or not all(isinstance(w, str) and len(w) <= MAX_TEXT for w in warnings)):
            raise LensLLMError(f"{where}.warnings: expected a list of short strings")
        return cls(model=model, status=status, fit=fit, warnings=list(warnings), **numbers, **texts)


@dataclass(frozen=True)
class Ranking:
    """Candidates ranked by ``score`` (lower is better) for one target size, method and level.

    The one owner of the target and the level: on construction the rows are sorted, become this
    ranking's (their predictions are at its target and level), and every complete row with a
    fit gets its ``p_best`` (None for methods that rank without a predictive distribution, such
    as ZeroShot). ``dataclasses.replace(ranking, candidates=rows)`` ranks other rows at the same
    target and level.
    """

    target: float
    method: str
    candidates: list[CandidateFit]
    level: float = 0.9

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", check_level(self.level))
        ok = [c for c in self.candidates if c.status == "complete" and c.score is not None and math.isfinite(c.score)]
        chosen = {id(c) for c in ok}
        rest = [c for c in self.candidates if id(c) not in chosen]
        for c in rest:
            if c.status == "complete":
                c.status, c.error = "failed", c.error or "no finite score"
            c.p_best = None
        object.__setattr__(self, "candidates", sorted(ok, key=lambda c: c.score) + rest)
        for c in self.candidates:
            c._ranking = self
        self._set_p_best(self.candidates[: len(ok)])  # in ranked order, so a re-read gives the same bits

    def _set_p_best(self, ok: list[CandidateFit]) -> None:
        if ok and all(c.fit is not None for c in ok):
            mu = np.array([float(c.fit.log_predict([self.target])[0]) for c in ok])
            # Relative spreads only when every row has them (a card's fit from a short table may
            # not): one row's shared bend left out and another's kept would favour the first.
            relative = all(c.fit.has_relative_spread for c in ok)
            below, above = np.array([[float(sd[0]) for sd in c.fit.log_sds([self.target], relative)] for c in ok]).T
            for c, p in zip(ok, p_best(mu, below, above)):
                c.p_best = float(p)
        else:
            for c in ok:
                c.p_best = None

    @property
    def best(self) -> str | None:
        """The model to fine-tune, or None when no candidate could be ranked."""
        first = self.candidates[0] if self.candidates else None
        return first.model if first is not None and first.status == "complete" else None

    @property
    def ranked(self) -> list[CandidateFit]:
        return [c for c in self.candidates if c.status == "complete"]

    @property
    def p_best(self) -> float | None:
        """P(best) of the pick, or None (no pick, or a method without predictive distributions)."""
        ranked = self.ranked
        return ranked[0].p_best if ranked else None

    @property
    def near_ties(self) -> list[str]:
        """The other candidates that could still be the best: P(best) >= :data:`NEAR_TIE_P`."""
        return [c.model for c in self.ranked[1:] if c.p_best is not None and c.p_best >= NEAR_TIE_P]

    def pick_statement(self) -> str:
        """The pick in one line, with its P(best) and the near-ties and what to do about them.

        Example:
            >>> Ranking(1e5, "default", []).pick_statement()
            'no candidate could be ranked'
        """
        ranked = self.ranked
        if not ranked:
            return "no candidate could be ranked"
        best = ranked[0]
        name = display(best.model)
        if len(ranked) == 1:
            return f"best: {name} (the only candidate ranked)"
        if best.p_best is None:
            return f"best: {name} (ranked by {display(self.method)}, which gives no probabilities)"
        near = set(self.near_ties)
        ties = [c for c in ranked[1:] if c.model in near]
        if not ties:
            return f"best: {name}, P(best) {best.p_best:.2f}"
        others = [display(c.model) for c in ties]
        joined = others[0] if len(others) == 1 else ", ".join(others[:-1]) + " and " + others[-1]
        count = {1: "two", 2: "three", 3: "four"}.get(len(ties), str(len(ties) + 1))
        probs = " / ".join(f"{c.p_best:.2f}" for c in ties)
        return (f"best: {name}, P(best) {best.p_best:.2f}, but it overlaps with {joined} (P(best) {probs}); "
                f"give these {count} more data (a larger subset) before choosing")

    def format(self) -> str:
        """A plain-text table for terminals: the rows, which predictor ranked them and why (the
        fits' ``basis``, where a method records one), then :meth:`pick_statement`."""
        pct = f"{100 * self.level:g}%"
        lines = [f"{'#':>3}  {'model':<40} {'predicted':>9}  {pct + ' interval':<17} {'P(best)':>7} "
                 f"{'transition':>10}  parameters"]
        for i, c in enumerate(self.candidates, start=1):
            model = display(c.model)
            if c.status != "complete":
                lines.append(f"{'-':>3}  {model:<40} {'failed':>9}  {display(c.error)}")
                continue
            value = c.estimate
            interval = c.interval
            shown = f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "-"
            p = f"{c.p_best:.2f}" if c.p_best is not None else "-"
            transition = f"{c.transition_size:,.0f}" if c.transition_size else "-"
            params = (f"{c.fit.law}: " + " ".join(f"{k}={v:.4g}" for k, v in c.fit.params.items())
                      if c.fit is not None else display(self.method))
            lines.append(f"{i:>3}  {model:<40} {value:>9.4f}  {shown:<17} {p:>7} {transition:>10}  {params}")
        bases = {c.fit.basis for c in self.ranked if c.fit is not None and c.fit.basis}
        lines.extend(f"ranked by {display(basis)}" for basis in sorted(bases))
        lines.append(self.pick_statement())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "target": self.target,
            "method": self.method,
            "level": self.level,
            "best": self.best,
            "p_best": self.p_best,
            "near_ties": self.near_ties,
            "ranking": [c.to_dict() for c in self.candidates],
        })

    def to_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` atomically (readers see the old file or the new one)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    @classmethod
    def from_dict(cls, data: Any, where: str = "ranking") -> Ranking:
        """Rebuild a ranking and its fits from :meth:`to_dict` output (untrusted: every field checked)."""
        hint = "; pass what 'lensllm fit --json' or 'lensllm select' writes"
        if not isinstance(data, Mapping):
            raise LensLLMError(f"{where}: not a lensllm ranking (expected an object){hint}")
        target = data.get("target")
        if isinstance(target, bool) or not isinstance(target, int | float) or not math.isfinite(target) or target <= 0:
            raise LensLLMError(f"{where}.target: expected a finite number > 0{hint}")
        method = data.get("method")
        if not isinstance(method, str) or len(method) > 200:
            raise LensLLMError(f"{where}.method: expected the method's name{hint}")
        level = check_level(data.get("level", 0.9), f"{where}.level")
        rows = data.get("ranking")
        if not isinstance(rows, list) or len(rows) > MAX_ROWS:
            raise LensLLMError(f"{where}.ranking: expected a list of at most {MAX_ROWS} rows{hint}")
        try:
            candidates = [CandidateFit.from_dict(row, f"{where}.ranking[{i}]") for i, row in enumerate(rows)]
        except FitError as error:
            raise LensLLMError(str(error)) from None
        for i, c in enumerate(candidates):  # a hand-edited parameter must not rank as an infinite loss
            if c.fit is not None:
                check_prediction(c.fit, float(target), level, f"{where}.ranking[{i}].fit ({display(c.model[:80])!r})")
        return cls(target=float(target), method=method, candidates=candidates, level=level)

    @classmethod
    def read_json(cls, path: str | Path) -> Ranking:
        try:
            data = load_json(read_bounded(path).decode("utf-8"), str(path))
        except FileNotFoundError:
            raise LensLLMError(f"{display(path)}: no such file; pass what 'lensllm fit --json' writes") from None
        except IsADirectoryError:
            raise LensLLMError(f"{display(path)}: is a folder; pass the JSON file 'lensllm fit --json' writes") from None
        except OSError as error:
            raise LensLLMError(f"{display(path)}: cannot be read ({error.strerror or error}); check the path") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LensLLMError(f"{display(path)}: not valid JSON ({type(error).__name__}); "
                               "pass what 'lensllm fit --json' writes") from None
        return cls.from_dict(data, where=display(path))
