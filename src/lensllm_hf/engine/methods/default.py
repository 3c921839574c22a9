"""``default``: the selection method LensLLMSelector uses. How it decides, what its backtest
measures, its numbers per family and the variants that lost: ``docs/methods.md``.

Two predictors of each candidate's log-loss at the target, and the table's own backtest to say
how far to trust each:

- *the law*: AtS's power-phase line in log-log space (Lin et al., 2024), fitted locally (the
  weight of a point halves every ``h`` doublings before the largest size, ``h`` chosen by
  backtest from :data:`BANDWIDTHS`), its slope shrunk toward the candidates' median by
  empirical Bayes and never rising (a rising curve is a transient, not a trend);
- *the observed order*: the candidate's last observed loss, carried to the target by the
  candidates' median slope, so that the order stays the one observed.

The backtest predicts every later column from each earlier cut with both
(:func:`backtest`); :func:`~lensllm_hf.engine.methods.evidence.law_support` reads from it how
much of the law's relative falls come true at each distance, carries that to the target's
distance, and gives the law the weight the evidence surely supports there. The ranking is by
the blend ``w * law + (1 - w) * observed`` (a log-log line per candidate, law ``local-loglog``);
each fit's ``basis`` says which predictor that is and why.

Intervals: the blend's own backtest errors set the spread (:func:`extrapolation_spread`): at d
doublings ahead the larger of k d and k_far d^p, each side of the prediction calibrated on the
errors that fall on it (a split log-normal, :mod:`lensllm_hf.engine.fit`), as sure as the number
of backtest lines; P(best) uses the spread of each candidate's error about the others' at the
same cut and distance (a bend every candidate shares moves none past another).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from ..curves import CurveTable
from ...errors import LensLLMError
from ..fit import EXTRAPOLATION_SD_PER_DOUBLING, Fit, cov_key
from ..laws import transition_index
from .base import LEVEL, Method, RunInfo, each_row, extrapolation_warnings, flops_spent
from .evidence import Support, law_support
from ..ranking import CandidateFit, Ranking

__all__ = ["BANDWIDTHS", "LAW", "DefaultMethod", "backtest", "choose_bandwidth", "extrapolation_spread"]

#: The law name of this method's fits (see the module docstring).
LAW = "local-loglog"

#: Candidate bandwidths, in doublings before the largest size over which a point's weight
#: halves; ``inf`` is the unweighted (AtS) line. Below 0.5 the line is a two-point difference.
BANDWIDTHS: tuple[float, ...] = (math.inf, 3.0, 2.0, 1.0, 0.5)

#: The backtest predicts the largest column from the columns up to this fraction of it.
BACKTEST_FRACTION = 0.25


@dataclass
class _Line:
    """One candidate's weighted log-log line through its power-phase points."""

    sizes: np.ndarray  # every fine-tuned size (D > 0), ascending
    losses: np.ndarray
    start: int  # index of the first power-phase point
    x_mean: float  # weighted means of log D and log L on the power phase
    y_mean: float
    slope: float
    slope_var: float  # sampling variance of the slope
    mean_var: float  # sampling variance of y_mean
    noise_var: float  # residual variance of one point in log space

    def log_predict(self, sizes: np.ndarray, slope: float) -> np.ndarray:
        return self.y_mean + slope * (np.log(sizes) - self.x_mean)


def _fit_line(sizes: np.ndarray, losses: np.ndarray, bandwidth: float, start_size: float = math.nan) -> _Line:
    """AtS's phase detection (k = 3, delta = 5), then a weighted line on the power phase; with
    ``start_size``, the power phase is the points from that size on (no detection)."""
    keep = sizes > 0
    sizes, losses = sizes[keep], losses[keep]
    if sizes.size < 2:
        raise LensLLMError(f"default: {sizes.size} fine-tuned size(s); a slope needs at least 2 (D > 0)")
    start = transition_index(sizes, losses) + 1 if math.isnan(start_size) else int(np.searchsorted(sizes, start_size))
    if sizes.size - start < 2:
        raise LensLLMError(f"default: {sizes.size - start} point(s) in the power phase; a slope needs at least 2")
    x, y = np.log(sizes[start:]), np.log(losses[start:])
    doublings_back = (x[-1] - x) / math.log(2)
    w = np.ones_like(x) if math.isinf(bandwidth) else 2.0 ** (-doublings_back / bandwidth)
    sw = w.sum()
    x_mean, y_mean = float(w @ x / sw), float(w @ y / sw)
    dx = x - x_mean
    sxx = float(w @ dx**2)
    slope = float(w @ (dx * (y - y_mean)) / sxx)
    resid = y - (y_mean + slope * dx)
    n = x.size
    # Residual variance of one point; a floor keeps a perfect line from claiming certainty.
    noise_var = max(float(w @ resid**2) / sw * n / max(n - 2, 1), 1e-4**2)
    return _Line(
        sizes=sizes, losses=losses, start=int(start), x_mean=x_mean, y_mean=y_mean, slope=slope,
        slope_var=noise_var * float(w**2 @ dx**2) / sxx**2,
        mean_var=noise_var * float(w @ w) / sw**2,
        noise_var=noise_var,
    )


def _shrink(lines: list[_Line]) -> tuple[np.ndarray, np.ndarray]:
    """Empirical-Bayes slopes and their posterior variances (slopes ~ N(median, tau^2))."""
    slopes = np.array([ln.slope for ln in lines])
    var = np.array([ln.slope_var for ln in lines])
    if slopes.size < 3:  # nothing to pool
        return slopes, var
    centre = float(np.median(slopes))
    # The spread of the true slopes, read robustly (1.4826 MAD): one wild curve must not convince
    # the table that its slopes differ widely, and so keep its own.
    tau2 = max((1.4826 * float(np.median(np.abs(slopes - centre)))) ** 2 - float(np.median(var)), 1e-6)
    keep = tau2 / (tau2 + var)
    return keep * slopes + (1 - keep) * centre, keep * var


def _fit_all(table: CurveTable, bandwidth: float, starts: tuple[float, ...] | None = None) -> dict[int, _Line | str]:
    """A line per row of ``table``, or the error that stops one; ``starts``: each row's first
    power-phase size, where known (see :func:`_fit_line`).

    Memoised on the table's content: the bandwidth choice, the backtests and a benchmark's
    budgets fit the same columns again and again (the lines are never modified).
    """
    key = (*_table_key(table), bandwidth, starts)
    if key not in _LINES:
        if len(_LINES) > 4096:
            _LINES.clear()
        detected = None if starts is None else _fit_all(table, bandwidth)
        out: dict[int, _Line | str] = {}
        for row in each_row(table, "default: fitting lines"):
            same = detected is not None and isinstance(detected[row], _Line) and (
                math.isnan(starts[row]) or detected[row].sizes[detected[row].start] == starts[row])
            if same:  # the detected power phase is the one asked for: the same line
                out[row] = detected[row]
                continue
            try:
                out[row] = _fit_line(*table.points(row), bandwidth, math.nan if starts is None else starts[row])
            except (LensLLMError, ValueError, np.linalg.LinAlgError) as error:
                out[row] = str(error)
        _LINES[key] = out
    return _LINES[key]


_LINES: dict[tuple, dict[int, _Line | str]] = {}


def _table_key(table: CurveTable) -> tuple:
    """Everything of a table the lines depend on (for the memos)."""
    return (tuple(table.models), table.sizes.tobytes(), table.losses.tobytes(), table.source,
            tuple(sorted(table.problems.items())))


@dataclass
class _Shrunk:
    """The fitted rows of a table, their slopes shrunk together: both predictors at any size."""

    rows: np.ndarray  # the table's row of each line
    lines: list[_Line]
    slope: np.ndarray  # shrunk, never rising
    slope_var: np.ndarray
    common: float  # the candidates' median slope, which carries the observed order

    def __post_init__(self) -> None:
        self.x_mean = np.array([ln.x_mean for ln in self.lines])
        self.y_mean = np.array([ln.y_mean for ln in self.lines])
        self.own_var = np.array([ln.noise_var + ln.mean_var for ln in self.lines])
        self.noise_var = np.array([ln.noise_var for ln in self.lines])
        self.last_size = np.array([ln.sizes[-1] for ln in self.lines], dtype=float)
        self.last_loss = np.log(np.array([ln.losses[-1] for ln in self.lines], dtype=float))

    def at(self, size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(line, its own spread without extrapolation, observed) in log-loss at ``size``."""
        dx = math.log(size) - self.x_mean
        return (self.y_mean + self.slope * dx, np.sqrt(self.own_var + self.slope_var * dx**2),
                self.last_loss + self.common * np.log(size / self.last_size))


def _shrunk(lines: dict[int, _Line | str]) -> _Shrunk:
    fitted = {row: ln for row, ln in lines.items() if isinstance(ln, _Line)}
    slopes, slope_var = _shrink(list(fitted.values()))
    slopes = np.minimum(slopes, 0.0)
    common = float(np.median(slopes)) if slopes.size else 0.0
    return _Shrunk(np.array(list(fitted), dtype=int), list(fitted.values()), slopes, slope_var, common)


def choose_bandwidth(table: CurveTable, bandwidths: tuple[float, ...] = BANDWIDTHS) -> float:
    """The bandwidth whose shrunk lines, fitted on the columns up to a quarter of the largest
    size, best predict the largest column (mean squared log error over candidates).

    Falls back to ``inf`` (AtS's line) when the table is too short to hold a backtest.
    """
    positive = table.sizes[table.sizes > 0]
    if positive.size < 4:
        return math.inf
    largest = float(positive.max())
    cut = max(float(positive[positive <= BACKTEST_FRACTION * largest].max(initial=0.0)), float(positive[2]))
    if cut >= largest:
        return math.inf
    seen, observed = table.up_to(cut), table.column(int(largest))
    best, best_error = math.inf, math.inf
    for bandwidth in bandwidths:
        fitted = _shrunk(_fit_all(seen, bandwidth))
        truth = observed[fitted.rows]
        usable = np.isfinite(truth) & (truth > 0)
        if usable.sum() < 2:
            return math.inf
        error = float(np.mean((fitted.at(largest)[0][usable] - np.log(truth[usable])) ** 2))
        if error < best_error - 1e-12:  # ties keep the earlier (smoother) bandwidth
            best, best_error = bandwidth, error
    return best


#: Backtest lines have at least this many points where the table has columns to spare (five
#: fine-tuned sizes or more); shorter tables backtest two-point lines, the only ones they have.
MIN_LINE_POINTS = 3
#: The backtest sees short distances only; a curve's bending compounds beyond them, so the
#: measured growth exponent of the errors is raised by this much (see ``extrapolation_spread``).
EXPONENT_MARGIN = 1.0
#: Growth exponent of the errors with the distance where the backtest cannot measure it (tables
#: of four fine-tuned sizes or fewer): halfway between a slope error's (0: the error per doubling
#: stays constant) and a bend's (1: it grows linearly), before ``EXPONENT_MARGIN``.
PRIOR_GROWTH = 0.5
#: Scale of the coverage-matched spread once the exponent is raised (benchmarks/interval_coverage.py).
SPREAD_SCALE = 0.7
#: Weight, in backtest lines, of the prior spread :data:`~lensllm_hf.engine.fit.EXTRAPOLATION_SD_PER_DOUBLING`
#: against the table's own, and the prior's degrees of freedom in the Student-t inflation.
PRIOR_LINES = 2
#: Share of ``EXPONENT_MARGIN`` that applies only beyond the backtest's horizon (the farthest it
#: predicted), as a factor (d / horizon) ** (share * margin): within it the errors were seen.
HORIZON_SHARE = 0.5
#: P(best)'s relative spread is the normal's that matches this central share of the relative
#: errors (their median): they are heavy-tailed, and what orders close rivals is their core.
RELATIVE_QUANTILE = 0.5


def extrapolation_spread(table: CurveTable, bandwidth: float, level: float = LEVEL,
                         weight: float = 1.0) -> dict[str, float]:
    """The extrapolation terms of the intervals (:mod:`lensllm_hf.engine.fit`), estimated from the
    table's own backtest and as sure as its evidence: at d doublings ahead the spread is
    max(k * d, k_far * d**p) above the line, and the same with k and k_far of their own below it.

    The errors are :func:`backtest`'s: every column of the table predicted from each earlier cut
    with the blend the method ranks by (``weight`` on the line). Their growth with the distance gives the exponent p:
    the slope of log RMS error against log d (over whole doublings with five errors or more; at
    least two of them, and lines of ``MIN_LINE_POINTS``, else ``PRIOR_GROWTH``), plus
    ``EXPONENT_MARGIN``, within [1, 3]; where the growth is measured, ``HORIZON_SHARE`` of that
    margin applies only beyond the backtest's horizon, as the factor (d / horizon) ** margin
    (terms ``extrapolation_horizon`` and ``extrapolation_margin``): the distances the backtest
    saw need less of it (see docs/methods.md). k is the linear spread that leaves (1 - level) / 2 of the
    backtest predictions beyond that side of their intervals (right at the short distances the
    backtest sees); k_far the same with the shape d**p, times ``SPREAD_SCALE`` (the far distances
    it cannot see); then both are scaled until the larger of the two leaves that share of the
    errors beyond it. Each side is calibrated
    on its own errors, because the curves of one task bend alike: the lines of FLAN's and
    Gigaword's backtests under-predict the fall far more often than they over-predict it. Where
    the growth is not measured (two-point lines), neither is the side, and the spread is
    symmetric: a short curve's next step can bend either way (the truth suite's tiny models
    flatten where FLAN's models steepen).

    How sure that estimate is depends on the evidence: n backtest lines (one per candidate and
    cut), few on a short table. Read as a variance with a scaled-inverse-chi-squared prior worth
    ``PRIOR_LINES`` lines of the measured constant k0 =
    :data:`~lensllm_hf.engine.fit.EXTRAPOLATION_SD_PER_DOUBLING`, each side's k becomes
    k^2 = (PRIOR_LINES * k0^2 + n * k^2) / (PRIOR_LINES + n) (the prior says nothing of k_far),
    and a new error follows a Student t with PRIOR_LINES + n degrees of freedom: every spread
    is multiplied by that t's ``level`` quantile over the normal's (x 1.15 for 5 lines, x 1.03
    for 30, x 1.00 for the hundreds of a long table). A table with no backtest at all gets k0
    so inflated (t with ``PRIOR_LINES`` degrees of freedom: x 1.78), linear and symmetric.

    Where the sides are measured apart, the spread of each candidate's error about the mean
    error of the others at the same cut and distance is measured too (symmetric, the same way;
    errors seen alone at their cut and distance left out): what is left of the bend when the
    part every candidate shares is taken out, which P(best) uses. It matches the median of those
    errors (``RELATIVE_QUANTILE``), not the level's quantile: they are heavy-tailed, and read at
    their tail the normal overstated every rival's chance (the picks' P(best) was too low).

    Returns the terms by their :class:`~lensllm_hf.engine.fit.Fit` names: ``extrapolation_sd_per_doubling``
    and ``extrapolation_sd_far`` (above the line, or both sides), ``extrapolation_exponent``, and,
    where the sides were measured apart, the ``_below`` and ``_relative`` twins of the first two
    and the horizon terms.
    """
    key = (*_table_key(table), bandwidth, level, weight)
    if key not in _SPREADS:
        if len(_SPREADS) > 4096:
            _SPREADS.clear()
        _SPREADS[key] = _backtest_spread(table, bandwidth, level, weight)
    return dict(_SPREADS[key])


_SPREADS: dict[tuple, dict[str, float]] = {}


def backtest(table: CurveTable, bandwidth: float, weight: float = 1.0,
             starts: tuple[float, ...] | None = None) -> pd.DataFrame:
    """Every later column of ``table`` predicted from each earlier cut with both predictors of
    :class:`DefaultMethod`: what its weight (:mod:`~lensllm_hf.engine.methods.evidence`) and its
    intervals (:func:`extrapolation_spread`) rest on.

    The lines have at least ``MIN_LINE_POINTS`` fine-tuned sizes, or two on tables of four sizes
    or fewer (the lines their candidates' own slopes rest on are that short too). One row per
    prediction: ``row`` (of ``table``) and ``model``, ``cut`` (the size the table was cut at),
    ``size`` (the column predicted), ``ahead`` (doublings past the line's last point, which is
    below the cut where the candidate has no loss at it), ``line_error`` and ``observed_error``
    (log observed minus each predictor's log prediction: negative where the loss fell further
    than it said), and ``error`` and ``fit_sd`` of the blend with ``weight`` on the line (its
    error, and its own spread of log L there: the line's noise, level and slope, and the last
    point's noise).

    ``bandwidth`` is the lines' (see :data:`BANDWIDTHS`): a positive number of doublings, or
    ``math.inf`` for unweighted lines. ``starts``, one size per row (NaN: unknown), fits each line
    on that row's points from its size on, as the power phase the whole table shows (lines
    through an earlier cut would otherwise span a pre-power phase the method never extrapolates
    from the budget); a row then needs as many of them as a line needs points.

    Example:
        >>> sizes = np.array([0, 200, 400, 800, 1600, 3200])
        >>> losses = np.array([[4.0, 3.0, 2.8, 2.6, 2.45, 2.3], [4.2, 3.1, 2.85, 2.6, 2.4, 2.2],
        ...                    [3.9, 3.2, 3.0, 2.85, 2.7, 2.6]])
        >>> errors = backtest(CurveTable(["a", "b", "c"], sizes, losses), math.inf)
        >>> errors[["cut", "size", "ahead"]].drop_duplicates().values.tolist()
        [[800.0, 1600.0, 1.0], [800.0, 3200.0, 2.0], [1600.0, 3200.0, 1.0]]
    """
    if not bandwidth > 0:  # NaN too
        raise LensLLMError(f"backtest: bandwidth must be a positive number of doublings or math.inf, got {bandwidth!r}")
    key = (*_table_key(table), bandwidth, starts)
    if key not in _BACKTESTS:
        if len(_BACKTESTS) > 1024:
            _BACKTESTS.clear()
        _BACKTESTS[key] = _both_predictors(table, bandwidth, starts)
    both = _BACKTESTS[key]
    return both[["row", "model", "cut", "size", "ahead", "line_error", "observed_error"]].assign(
        error=weight * both["line_error"] + (1.0 - weight) * both["observed_error"],
        fit_sd=np.sqrt((weight * both["line_sd"]) ** 2 + ((1.0 - weight) * both["point_sd"]) ** 2))


_BACKTESTS: dict[tuple, pd.DataFrame] = {}


def _both_predictors(table: CurveTable, bandwidth: float, starts: tuple[float, ...] | None) -> pd.DataFrame:
    positive = _fine_tuned_sizes(table)
    first = _first_cut(positive)
    parts: dict[str, list] = {c: [] for c in ("row", "cut", "size", "ahead", "line_error", "observed_error",
                                              "line_sd", "point_sd")}
    for cut in positive[first:-1]:
        lines = _fit_all(table.up_to(float(cut)), bandwidth, starts)
        if starts is not None:  # lines as long as the unrestricted ones (see _first_cut)
            lines = {row: ln for row, ln in lines.items() if isinstance(ln, _Line) and ln.sizes.size - ln.start > first}
        fitted = _shrunk(lines)
        for held in positive[positive > cut]:
            truth = table.column(int(held))[fitted.rows]
            ahead = np.log2(float(held) / fitted.last_size)
            keep = np.isfinite(truth) & (truth > 0) & (ahead > 0)
            line, line_sd, observed = fitted.at(float(held))
            log_truth = np.log(np.where(keep, truth, 1.0))
            for name, values in (("row", fitted.rows), ("cut", np.full(keep.size, float(cut))),
                                 ("size", np.full(keep.size, float(held))), ("ahead", ahead),
                                 ("line_error", log_truth - line), ("observed_error", log_truth - observed),
                                 ("line_sd", line_sd), ("point_sd", np.sqrt(fitted.noise_var))):
                parts[name].append(values[keep])
    frame = pd.DataFrame({name: np.concatenate(values) if values else np.zeros(0, dtype=int if name == "row" else float)
                          for name, values in parts.items()})
    frame.insert(1, "model", np.asarray(table.models, dtype=object)[frame["row"].to_numpy()])
    return frame


def _fine_tuned_sizes(table: CurveTable) -> np.ndarray:
    """The fine-tuned sizes somebody has a loss at (an adaptive loop's table has empty columns)."""
    seen = (table.sizes > 0) & np.any(np.isfinite(table.losses) & (table.losses > 0), axis=0)
    return np.sort(table.sizes[seen])


def _first_cut(positive: np.ndarray) -> int:
    """Index, among a table's fine-tuned sizes, of the first cut its backtest lines end at."""
    return MIN_LINE_POINTS - 1 if positive.size > MIN_LINE_POINTS + 1 else 1


def _backtest_spread(table: CurveTable, bandwidth: float, level: float, weight: float) -> dict[str, float]:
    errors = backtest(table, bandwidth, weight)
    e, d = errors["error"].to_numpy(), errors["ahead"].to_numpy()
    v = errors["fit_sd"].to_numpy() ** 2
    n = len(errors[["row", "cut"]].drop_duplicates())  # backtest lines
    z = float(stats.norm.ppf(0.5 + level / 2))
    inflate = float(stats.t.ppf(0.5 + level / 2, PRIOR_LINES + n)) / z
    if n == 0:
        return {"extrapolation_sd_per_doubling": EXTRAPOLATION_SD_PER_DOUBLING * inflate, "extrapolation_exponent": 1.0}
    # Growth of the error beyond the fit's own spread with the distance: log RMS against log d.
    xs, ys = [], []
    for step in np.unique(np.round(d)):
        group = np.round(d) == step
        if step > 0 and group.sum() >= 5:
            xs.append(math.log(step))
            ys.append(0.5 * math.log(max(float(np.mean(e[group] ** 2 - v[group])), 1e-10)))
    # Two-point lines err mostly by their slope's noise: how their errors grow, and to which side
    # they fall, says nothing of how a bend compounds, so a short table takes the prior growth
    # and a symmetric spread.
    measured = _first_cut(_fine_tuned_sizes(table)) > 1 and len(xs) >= 2
    growth = float(np.polyfit(xs, ys, 1)[0]) if measured else PRIOR_GROWTH
    beyond = HORIZON_SHARE * EXPONENT_MARGIN if measured else 0.0
    exponent = float(min(max(growth + EXPONENT_MARGIN - beyond, 1.0), 3.0))
    # Each side's spread is the one its own errors need to fall on the interval's edge (0 for the
    # errors on the other side), leaving (1 - level) / 2 of them beyond it; symmetric: level of
    # all errors within.
    everyone = np.ones(e.shape, dtype=bool)
    if measured:
        half = 0.5 + level / 2
        sides = {"": (np.maximum(e, 0.0), everyone, half), "_below": (np.maximum(-e, 0.0), everyone, half)}
        # What decides P(best) is each candidate's error relative to the others' at the same cut
        # and distance: the part of the bend they all share moves none past another. About a
        # mean of k errors, one's own part is sqrt((k - 1) / k) of it; alone, it is not seen.
        group = errors.groupby(["cut", "size"]).ngroup().to_numpy()
        k = np.bincount(group)[group]
        shared = (np.bincount(group, weights=e) / np.bincount(group))[group]
        if np.any(k > 1):
            relative = np.abs(e - shared) * np.sqrt(k / np.maximum(k - 1, 1))
            sides["_relative"] = (relative, k > 1, RELATIVE_QUANTILE)
    else:
        sides = {"": (np.abs(e), everyone, level)}
    trust = n / (PRIOR_LINES + n)  # of the table's own estimate against the prior's
    terms = {"extrapolation_exponent": exponent}
    if beyond > 0:
        terms.update(extrapolation_horizon=float(d.max()), extrapolation_margin=beyond)
    for side, (side_errors, kept, quantile) in sides.items():
        z_side = float(stats.norm.ppf(0.5 + quantile / 2)) if side == "_relative" else z
        needed = np.sqrt(np.clip((side_errors[kept] / z_side) ** 2 - v[kept], 0.0, None))
        ahead = d[kept]
        linear = float(np.quantile(needed / ahead, quantile))
        far = float(SPREAD_SCALE * np.quantile(needed / ahead**exponent, quantile)) if exponent > 1 else 0.0
        if side != "_relative" and linear > 0 and far > 0:
            # The interval takes the larger of the two spreads, so two spreads calibrated apart
            # leave fewer of the backtest's errors beyond it than each alone: scale both until the
            # interval as used leaves its share. (P(best) keeps its spreads as they are: scaled
            # too, the picks' P(best) overstated how often they are right, see docs/methods.md.)
            used = np.maximum(linear * ahead, far * ahead**exponent)
            joint = float(np.quantile(needed / used, quantile))
            linear, far = linear * joint, far * joint
        linear = math.sqrt((1 - trust) * EXTRAPOLATION_SD_PER_DOUBLING**2 + trust * linear**2)
        terms[f"extrapolation_sd_per_doubling{side}"] = linear * inflate
        terms[f"extrapolation_sd_far{side}"] = far * inflate
    return terms


class DefaultMethod(Method):
    """The law or the observed order, as far as the table's own backtest supports each (see the
    module docstring).

    Example:
        >>> import numpy as np
        >>> sizes = np.array([0, 200, 400, 800, 1600, 3200])
        >>> losses = np.array([[4.0, 3.0, 2.8, 2.6, 2.45, 2.3], [4.2, 3.1, 2.85, 2.6, 2.4, 2.2],
        ...                    [3.9, 3.2, 3.0, 2.85, 2.7, 2.6]])
        >>> ranking = DefaultMethod().rank(CurveTable(["a", "b", "c"], sizes, losses), 409_600)
        >>> ranking.best, ranking.ranked[0].fit.law
        ('b', 'local-loglog')
    """

    name = "default"

    def rank(self, table: CurveTable, target: float, level: float = LEVEL,
             runs: dict[str, RunInfo] | None = None) -> Ranking:
        runs = runs or {}
        bandwidth = choose_bandwidth(table)
        lines = _fit_all(table, bandwidth)
        fitted = _shrunk(lines)
        index = {int(row): i for i, row in enumerate(fitted.rows)}
        ahead = _doublings_ahead(table, target)
        if np.unique(fitted.last_size).size > 1:
            # Candidates last seen at different sizes (an adaptive or halving loop's table): the
            # loop promoted some of them on this very ranking, so their later points were chosen
            # by the predictor the backtest would judge. The sizes every candidate shares were
            # chosen by nobody: the weight is read there, and carried to this table's distance.
            shared = float(fitted.last_size.min())
            support = dataclasses.replace(_law_support(table.up_to(shared), ahead), shared_size=shared)
        else:
            support = _law_support(table, ahead, bandwidth)
        w = support.weight
        spread = extrapolation_spread(table, bandwidth, weight=w)
        rows = []
        for row, model in enumerate(table.models):
            flops = flops_spent(table, row, self.sizes_used(table))
            if row not in index:
                rows.append(CandidateFit.failed(model, f"default: {lines[row]}", flops=flops))
                continue
            i = index[row]
            ln, own_slope, sv = fitted.lines[i], float(fitted.slope[i]), float(fitted.slope_var[i])
            sizes, losses = table.points(row)
            used = np.zeros(sizes.shape, dtype=bool)
            used[np.flatnonzero(sizes > 0)[ln.start:]] = True
            # The blend of the two predictors is a line in log-log (module docstring).
            slope = w * own_slope + (1 - w) * fitted.common
            level_at_zero = (w * (ln.y_mean - own_slope * ln.x_mean)
                             + (1 - w) * (math.log(ln.losses[-1]) - fitted.common * math.log(ln.sizes[-1])))
            terms = {
                "noise_var": ln.noise_var,
                cov_key("a", "a"): w**2 * (ln.mean_var + ln.x_mean**2 * sv) + (1 - w) ** 2 * ln.noise_var,
                cov_key("a", "b"): -(w**2) * ln.x_mean * sv,
                cov_key("b", "b"): w**2 * sv,
                "largest_size": float(ln.sizes[-1]),
                **spread,
                **support.terms(),
                "bandwidth": bandwidth if math.isfinite(bandwidth) else -1.0,
                "raw_slope": ln.slope,
            }
            info = runs.get(model, RunInfo())
            fit = Fit(LAW, {"a": level_at_zero, "b": slope}, tuple(sizes), tuple(losses),
                      tuple(used), terms, info.warnings, support.basis)
            predicted = float(fit.predict([target])[0])
            if not math.isfinite(predicted) or predicted <= 0:
                rows.append(CandidateFit.failed(model, f"default: non-finite prediction ({predicted:.4g})", flops=flops))
                continue
            rows.append(CandidateFit(model=model, fit=fit, score=predicted, flops=flops,
                                     warnings=extrapolation_warnings(fit, target)))
        return Ranking(target, self.name, rows, level)


def _law_support(table: CurveTable, ahead: float, bandwidth: float | None = None) -> Support:
    """What ``table``'s backtest supports at ``ahead`` doublings (:func:`law_support`), the law
    judged as it is extrapolated from the budget: from each line's power phase."""
    bandwidth = choose_bandwidth(table) if bandwidth is None else bandwidth
    starts = tuple(float(ln.sizes[ln.start]) if isinstance(ln, _Line) else math.nan
                   for ln in _fit_all(table, bandwidth).values())
    return law_support(backtest(table, bandwidth, starts=starts), ahead)


def _doublings_ahead(table: CurveTable, target: float) -> float:
    """Doublings from the table's largest fine-tuned size with a loss to the target."""
    positive = _fine_tuned_sizes(table)
    return math.log2(target / float(positive[-1])) if positive.size else 0.0
