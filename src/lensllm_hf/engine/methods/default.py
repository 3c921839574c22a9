"""``default``: the selection method LensLLMSelector uses.

What it is
    AtS's model (Lin et al., 2024: in its power phase a fine-tuning curve is a line in log-log
    space, log L = a + b log D) with two changes that pool information across the candidates
    of one dataset:

    1. *Local slope, bandwidth chosen by backtest.* The line is fitted by weighted least
       squares, the weight of a point halving every ``h`` doublings before the largest size,
       so that the slope is the one the curve has *now* (fine-tuning curves bend: on FLAN
       they keep steepening up to 1.6M examples). ``h`` is not a constant: for each table it
       is the one, of (inf, 3, 2, 1, 0.5) doublings, that best predicts the largest observed
       column from the columns up to a quarter of it (mean squared log error over all
       candidates). ``h = inf`` is AtS's own unweighted line.
    2. *Empirical-Bayes shrinkage of the slopes.* A local slope is noisy. Each candidate's
       slope is shrunk toward the median slope of the candidates, by the weight
       tau^2 / (tau^2 + v_i): v_i is the sampling variance of its slope (from its own
       residuals), tau^2 the spread of the true slopes (between-candidate variance of the
       slopes minus the typical v_i). Clean curves keep their slope; noisy ones borrow.

Why (DESIGN.md §2 protocol, ``run_bench(tables, methods=["ats", "default"])``, means over
the budgets 1/8 ... 1/512, PearCorr / RelAcc in %)

    ============================ ============= =============
    method                        FLAN          Gigaword
    ============================ ============= =============
    ats (published)               62.7 / 92.1   93.8 / 95.1
    default (this)                66.7 / 92.2   94.2 / 95.9
    ats + slope shrinkage only    62.6 / 92.1   94.4 / 95.1
    local line h=0.5, no shrink   67.2 / 92.2   91.9 / 88.8
    rectified (4 parameters)      42.7 / 93.7   81.3 / 95.7
    ============================ ============= =============

    Variants that lost (rectified law with E = 0, with a floor E or slope beta shared by all
    candidates, per-candidate quadratics in log-log, ensembles of AtS with the rectified or
    power law) are listed with their numbers in the report of this change; the rectified
    family's extra parameters extrapolate 9 doublings badly from a few points.

The fit
    Each candidate's fit is a :class:`~lensllm_hf.engine.fit.Fit` of the law ``local-loglog``
    (log L = a + b log D, with the shrunk slope b), not ``ats``: the line is AtS's, but its
    weights and slope are this method's. The fit's terms record the ``bandwidth`` (-1 for inf,
    JSON has no infinity) and the unshrunk ``raw_slope``.

Intervals
    The line's own prediction variance (residual noise, intercept, and the shrunk slope's
    posterior variance times the squared extrapolation distance) plus an extrapolation term
    estimated from the table's own backtest (:func:`extrapolation_spread`): at d doublings
    ahead, the larger of k d (right over the short distances a backtest sees) and k_far d^p
    (p one power above the measured growth of the backtest errors: bending compounds beyond
    them). Each side of the line has its own k and k_far, calibrated on the backtest errors
    that fall on that side: the curves of one task bend alike, and on both shared tables the
    lines under-predict the fall far more often than they over-predict it, so the intervals
    reach further below the prediction than above it (the predictive distribution is a split
    log-normal, :mod:`lensllm_hf.engine.fit`). The two terms are calibrated together: the interval
    takes the larger of them, so two spreads each leaving (1 - level) / 2 of the backtest errors
    beyond them left fewer beyond their larger one (0.7-3.3 % below FLAN's lines, 2.8-4.0 %
    below Gigaword's, over the budgets), and both are scaled until the interval as used leaves
    its share (3.3-5.1 % below the lines at every budget of both tables; 1.1-4.6 % above them,
    where the prior and the Student t below widen the few errors' spread). The errors are
    :func:`backtest`'s. The backtest is only as sure as its evidence: short
    tables (four fine-tuned sizes or fewer) backtest the two-point lines they have, take a
    prior growth and a symmetric spread (whichever way a short curve's next step bends says
    nothing of the far ones: the truth suite's tiny models flatten where FLAN's steepen, and
    sides taken from their backtests held 20 of its 25 true losses), and the spread is
    combined with a prior (the constant measured on long tables) and widened by a Student t,
    both weighted by the number of backtest lines. Coverage of the 90 % intervals
    (benchmarks/interval_coverage.py --short; benchmarks/truth_coverage.py), and the interval
    score (width plus 20 x the miss, in log-loss; proper, lower is better):

    ============ ============================ ========================= =========================
    table         all columns (score)          curves cut to 200..800     and to 200..1600
    ============ ============================ ========================= =========================
    FLAN          86.3 % (0.291); was 93.7 %   93.0 %                     91.7 %
                  (0.303) with the terms
                  calibrated apart, 87.8 %
                  (0.415) with one spread
    Gigaword      94.8 % (0.192); was 95.5 %   97.9 %                     98.7 %
                  (0.207) apart, 97.6 %
                  (0.219) with one spread
    ============ ============================ ========================= =========================

    Together, the terms are narrower at every distance; the score is better on both tables,
    yet FLAN's later columns are harder to predict than the earlier ones its backtest sees: its
    intervals hold 79 % of the columns 1-3 doublings ahead and 76 % at the budgets 1/128 and
    1/64 (12.3 % of its truths fall below them, 1.3 % above; Gigaword's 0.8 % and 4.4 %).

    On the truth suite's cached runs (25 candidates of tiny models, curves of 3-5 points
    extrapolated 3-8 doublings) the intervals hold 23 of the 25 true losses.

    P(best) is not computed from these marginal distributions taken as independent: the bend
    that makes the intervals wide is mostly shared (every FLAN curve steepens), and a bend
    every candidate shares moves none past another. So each fit also carries ``_relative``
    spreads, calibrated like the others on each backtest error about the mean error of the
    candidates at the same cut and distance, and P(best) uses those (symmetric; the line's own
    variance is each candidate's alone). Against independent split distributions, the
    P(best) Brier score (``lensllm bench``) is 0.845 / 0.706 on FLAN / Gigaword instead of
    0.874 / 0.725 (0.856 / 0.704 with the former single spread), and ``adaptive``, which
    spends by P(best), reaches a Gigaword RelAcc of 100.0 (Brier 0.571) instead of 91.4
    (94.3 with the former single spread). The ``_relative`` spreads are not scaled with the
    interval's: scaled, they made P(best) surer than it is right (the picks' mean P(best) 0.27
    against 0.21 truly best, not 0.24), ``adaptive``'s Gigaword RelAcc fell to 94.3 (Brier
    0.777) and default's Brier moved to 0.850 / 0.699.

    What follows was measured with one spread for both sides (FLAN 87.8 %, Gigaword 97.6 %).
    Gigaword's intervals were too wide, and ``EXPONENT_MARGIN`` is not why: they held 96-99 % at
    every budget, 1/8 included (1-3 doublings ahead, where the exponent hardly matters;
    ``interval_coverage.py --by-budget``): its later columns are easier to predict than its
    earlier ones, FLAN's harder (76 % at 1/128), and a backtest on the earlier columns sees
    neither. Replacements of the margin that lost (FLAN / Gigaword, all columns): the measured
    exponent's upper confidence bound (maximum likelihood, standard error clustered by candidate;
    or bootstrapped over candidates) 67.1 / 90.8 % and 69.4 / 98.3 %: FLAN's exponent is measured
    tightly (standard error 0.05-0.10), yet its far errors grow about 0.7 power faster, so the
    margin stands for the bend a backtest cannot see, not for sampling noise; a Taylor model of
    the errors (a + b d^2 + c d^4) 71.4 / 96.8 %; the level weighted toward recent cuts by the
    table's bandwidth 94.8 / 96.5 %; a trend of the errors with the cut 89.5 / 79.7 % (55 % on
    FLAN cut to 200..1600); margin 0.5 or 0 without the scale 80.1 / 96.6 % and 63.6 / 93.0 %;
    spreads proportional to each candidate's slope 86.5 / 96.0 % or residual noise 90.7 / 95.2 %
    (right on average, far off per candidate: interval score 1.24 / 0.86 against 0.415 / 0.219,
    ``interval_coverage.py`` prints it). A drift of the centre by the backtest's mean error per
    doubling ahead (FLAN's lines under-predict the fall by 0.004-0.013 log-loss per doubling)
    scored better on both tables, 86.0 / 96.0 %, interval score 0.313 / 0.199, and would not
    change the order at one target; but the backtest's early lines span the pre-power phase,
    whose end looks like steepening, so straight curves with a flat start were predicted 18 %
    too low six doublings ahead (``test_recovers_a_planted_ranking``): a third table with a long
    pre-power phase would pay for FLAN's gain. A quadratic drift (mean error per squared doubling)
    was in range on both tables, 85.4 / 94.2 % (score 0.290 / 0.187), for the same reason and with
    the same failure. Backtest lines kept to each row's power phase (its pre-power points, as the
    whole table shows them, left out) remove that contamination: Gigaword 93.2 % (score 0.186),
    but FLAN 76.7 %, its width having come from its early points; the quadratic drift measured
    on the power phase and the spread on every point: 85.6 / 97.2 % (score 0.374 / 0.192). The
    spread weighted toward recent cuts with ``EXPONENT_MARGIN`` 0.75: 89.0 / 94.4 % (score 0.363 /
    0.177), but FLAN cut to 200..800 / 200..1600 fell to 83.0 / 81.7 % and the truth suite to 21
    of 25: short curves need the margin of 1. Backtest lines of at least 4 points (the fewest on
    which AtS's detection can flag a pre-power point) instead of ``MIN_LINE_POINTS`` 3: 80.2 /
    93.0 % (score 0.385 / 0.172), the same trade. With the two sides, each side's own growth
    exponent: 94.3 / 93.0 %, but a worse score, 0.358 / 0.250 (the rare errors above the line
    measure their growth badly); a smaller far term (``SPREAD_SCALE`` 0.5-0.6) brings Gigaword
    to 94.0-94.4 % with better scores, but the truth suite to 21 of 25: not taken.

Cost: both shared tables at all 7 budgets in about 0.4 s on one core (the line fits of each
column cut are memoised: the bandwidth choice and the spread backtest share them).
"""

from __future__ import annotations

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


def _fit_line(sizes: np.ndarray, losses: np.ndarray, bandwidth: float) -> _Line:
    """AtS's phase detection (k = 3, delta = 5), then a weighted line on the power phase."""
    keep = sizes > 0
    sizes, losses = sizes[keep], losses[keep]
    if sizes.size < 2:
        raise LensLLMError(f"default: {sizes.size} fine-tuned size(s); a slope needs at least 2 (D > 0)")
    start = transition_index(sizes, losses) + 1
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
    tau2 = max(float(np.mean((slopes - centre) ** 2) - np.median(var)), 1e-6)
    keep = tau2 / (tau2 + var)
    return keep * slopes + (1 - keep) * centre, keep * var


def _fit_all(table: CurveTable, bandwidth: float) -> dict[int, _Line | str]:
    """A line per row of ``table``, or the error that stops one.

    Memoised on the table's content: the bandwidth choice, the spread backtest and a benchmark's
    budgets fit the same columns again and again (the lines are never modified).
    """
    key = (*_table_key(table), bandwidth)
    if key not in _LINES:
        if len(_LINES) > 4096:
            _LINES.clear()
        out: dict[int, _Line | str] = {}
        for row in each_row(table, "default: fitting lines"):
            try:
                out[row] = _fit_line(*table.points(row), bandwidth)
            except (LensLLMError, ValueError, np.linalg.LinAlgError) as error:
                out[row] = str(error)
        _LINES[key] = out
    return _LINES[key]


_LINES: dict[tuple, dict[int, _Line | str]] = {}


def _table_key(table: CurveTable) -> tuple:
    """Everything of a table the lines depend on (for the memos)."""
    return (tuple(table.models), table.sizes.tobytes(), table.losses.tobytes(), table.source,
            tuple(sorted(table.problems.items())))


def _predict_log(lines: dict[int, _Line | str], target: float) -> dict[int, tuple[float, float, _Line, float, float]]:
    """(log prediction, log sd without extrapolation, line, shrunk slope, its variance) per fitted row."""
    fitted = {row: ln for row, ln in lines.items() if isinstance(ln, _Line)}
    slopes, slope_var = _shrink(list(fitted.values()))
    out = {}
    for (row, ln), slope, sv in zip(fitted.items(), slopes, slope_var):
        dx = math.log(target) - ln.x_mean
        out[row] = (float(ln.log_predict(np.array([target]), slope)[0]),
                    math.sqrt(ln.noise_var + ln.mean_var + sv * dx**2), ln, float(slope), float(sv))
    return out


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
        preds = _predict_log(_fit_all(seen, bandwidth), largest)
        errors = [(p[0] - math.log(observed[row])) ** 2 for row, p in preds.items()
                  if np.isfinite(observed[row]) and observed[row] > 0]
        if len(errors) < 2:
            return math.inf
        error = float(np.mean(errors))
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


def extrapolation_spread(table: CurveTable, bandwidth: float, level: float = LEVEL) -> dict[str, float]:
    """The extrapolation terms of the intervals (:mod:`lensllm_hf.engine.fit`), estimated from the
    table's own backtest and as sure as its evidence: at d doublings ahead the spread is
    max(k * d, k_far * d**p) above the line, and the same with k and k_far of their own below it.

    The errors are :func:`backtest`'s: every column of the table predicted from each earlier cut
    with the shrunk lines the method uses. Their growth with the distance gives the exponent p:
    the slope of log RMS error against log d (over whole doublings with five errors or more; at
    least two of them, and lines of ``MIN_LINE_POINTS``, else ``PRIOR_GROWTH``), plus
    ``EXPONENT_MARGIN``, within [1, 3]. k is the linear spread that leaves (1 - level) / 2 of the
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
    part every candidate shares is taken out, which P(best) uses.

    Returns the terms by their :class:`~lensllm_hf.engine.fit.Fit` names: ``extrapolation_sd_per_doubling``
    and ``extrapolation_sd_far`` (above the line, or both sides), ``extrapolation_exponent``, and,
    where the sides were measured apart, the ``_below`` and ``_relative`` twins of the first two.
    """
    key = (*_table_key(table), bandwidth, level)
    if key not in _SPREADS:
        if len(_SPREADS) > 4096:
            _SPREADS.clear()
        _SPREADS[key] = _backtest_spread(table, bandwidth, level)
    return dict(_SPREADS[key])


_SPREADS: dict[tuple, dict[str, float]] = {}


def backtest(table: CurveTable, bandwidth: float) -> pd.DataFrame:
    """Every later column of ``table`` predicted from each earlier cut with the shrunk lines of
    :class:`DefaultMethod`: what :func:`extrapolation_spread` calibrates the intervals on.

    The lines have at least ``MIN_LINE_POINTS`` fine-tuned sizes, or two on tables of four sizes
    or fewer (the lines their candidates' own slopes rest on are that short too). One row per
    prediction: ``row`` (of ``table``) and ``model``, ``cut`` (the size the table was cut at),
    ``size`` (the column predicted), ``ahead`` (doublings past the line's last point, which is
    below the cut where the candidate has no loss at it), ``error`` (log observed minus log
    predicted: negative where the loss fell further than the line said) and ``fit_sd`` (the
    line's own spread of log L there: noise, intercept and slope).

    ``bandwidth`` is the lines' (see :data:`BANDWIDTHS`): a positive number of doublings, or
    ``math.inf`` for unweighted lines.

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
    positive = _fine_tuned_sizes(table)
    rows = []
    for cut in positive[_first_cut(positive):-1]:
        lines = _fit_all(table.up_to(float(cut)), bandwidth)
        for held in positive[positive > cut]:
            observed = table.column(int(held))
            for row, (log_pred, sd, ln, _, _) in _predict_log(lines, float(held)).items():
                ahead = math.log2(float(held) / float(ln.sizes[-1]))
                if np.isfinite(observed[row]) and observed[row] > 0 and ahead > 0:
                    rows.append((row, table.models[row], float(cut), float(held), ahead,
                                 math.log(observed[row]) - log_pred, sd))
    return pd.DataFrame(rows, columns=["row", "model", "cut", "size", "ahead", "error", "fit_sd"]).astype(
        {"row": int, "cut": float, "size": float, "ahead": float, "error": float, "fit_sd": float})


def _fine_tuned_sizes(table: CurveTable) -> np.ndarray:
    """The fine-tuned sizes somebody has a loss at (an adaptive loop's table has empty columns)."""
    seen = (table.sizes > 0) & np.any(np.isfinite(table.losses) & (table.losses > 0), axis=0)
    return np.sort(table.sizes[seen])


def _first_cut(positive: np.ndarray) -> int:
    """Index, among a table's fine-tuned sizes, of the first cut its backtest lines end at."""
    return MIN_LINE_POINTS - 1 if positive.size > MIN_LINE_POINTS + 1 else 1


def _backtest_spread(table: CurveTable, bandwidth: float, level: float) -> dict[str, float]:
    errors = backtest(table, bandwidth)
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
    exponent = float(min(max(growth + EXPONENT_MARGIN, 1.0), 3.0))
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
            sides["_relative"] = (relative, k > 1, level)
    else:
        sides = {"": (np.abs(e), everyone, level)}
    weight = n / (PRIOR_LINES + n)  # of the table's own estimate against the prior's
    terms = {"extrapolation_exponent": exponent}
    for side, (side_errors, kept, quantile) in sides.items():
        needed = np.sqrt(np.clip((side_errors[kept] / z) ** 2 - v[kept], 0.0, None))
        ahead = d[kept]
        linear = float(np.quantile(needed / ahead, quantile))
        far = float(SPREAD_SCALE * np.quantile(needed / ahead**exponent, quantile)) if exponent > 1 else 0.0
        if side != "_relative" and linear > 0 and far > 0:
            # The interval takes the larger of the two spreads, so two spreads calibrated apart
            # leave fewer of the backtest's errors beyond it than each alone: scale both until the
            # interval as used leaves its share. (P(best) keeps its spreads as they are: scaled
            # too, the picks' P(best) overstated how often they are right, see the docstring.)
            used = np.maximum(linear * ahead, far * ahead**exponent)
            joint = float(np.quantile(needed / used, quantile))
            linear, far = linear * joint, far * joint
        linear = math.sqrt((1 - weight) * EXTRAPOLATION_SD_PER_DOUBLING**2 + weight * linear**2)
        terms[f"extrapolation_sd_per_doubling{side}"] = linear * inflate
        terms[f"extrapolation_sd_far{side}"] = far * inflate
    return terms


class DefaultMethod(Method):
    """Shrunk local log-log lines with a backtested bandwidth (see the module docstring).

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
        preds = _predict_log(lines, target)
        spread = extrapolation_spread(table, bandwidth)
        rows = []
        for row, model in enumerate(table.models):
            flops = flops_spent(table, row, self.sizes_used(table))
            if row not in preds:
                rows.append(CandidateFit.failed(model, f"default: {lines[row]}", flops=flops))
                continue
            _, _, ln, slope, slope_var = preds[row]
            sizes, losses = table.points(row)
            used = np.zeros(sizes.shape, dtype=bool)
            used[np.flatnonzero(sizes > 0)[ln.start:]] = True
            terms = {
                "noise_var": ln.noise_var,
                cov_key("a", "a"): ln.mean_var + ln.x_mean**2 * slope_var,
                cov_key("a", "b"): -ln.x_mean * slope_var,
                cov_key("b", "b"): slope_var,
                "largest_size": float(ln.sizes[-1]),
                **spread,
                "bandwidth": bandwidth if math.isfinite(bandwidth) else -1.0,
                "raw_slope": ln.slope,
            }
            info = runs.get(model, RunInfo())
            fit = Fit(LAW, {"a": ln.y_mean - slope * ln.x_mean, "b": slope}, tuple(sizes), tuple(losses),
                      tuple(used), terms, info.warnings)
            predicted = float(fit.predict([target])[0])
            if not math.isfinite(predicted) or predicted <= 0:
                rows.append(CandidateFit.failed(model, f"default: non-finite prediction ({predicted:.4g})", flops=flops))
                continue
            rows.append(CandidateFit(model=model, fit=fit, score=predicted, flops=flops,
                                     warnings=extrapolation_warnings(fit, target)))
        return Ranking(target, self.name, rows, level)
