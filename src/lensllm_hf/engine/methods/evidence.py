"""What a table's own backtest supports: how much of the law's extrapolation to trust at a distance.

``default`` ranks by a blend of two predictors of each candidate's log-loss at the target: the
law (its shrunk local log-log line) and the observed order (the candidate's last observed loss,
carried to the target by the table's common slope, so that every candidate falls alike and the
order stays the one observed). With weight w on the law, a candidate's prediction is
``w * line + (1 - w) * observed``; only the law's *relative* falls (how much further one candidate
falls than the others) can change the order.

The backtest (``default.backtest``) predicts every later column of the table from each earlier
cut with both predictors. Within each cut and column, the candidates' true relative change t
(truth minus the observed predictor, less the mean over the candidates) is regressed on the
law's predicted relative change p (line minus observed, less its mean): t = w(d) p, with w(d) =
alpha + beta * log(d) at d doublings ahead, standard errors clustered by candidate (the same
candidate's errors at many cuts are not independent). w = 1 says the law's relative falls come
true; w = 0 says they are noise about the observed order; the law alone has the smaller squared
error exactly where w > 1/2.

Only predictions at least :data:`MIN_AHEAD` doublings ahead count, and only where three
candidates or more take part. The target is usually further ahead than anything the backtest
saw: the fitted trend is carried there, and the weight taken one standard error below it (from
a t with as many degrees of freedom as candidates less one), so the further beyond the
backtest's horizon, and the fewer the candidates, the less the law is trusted. The law gets full
weight where that bound reaches 1/2 (it then surely beats the observed order), none where the
bound is at or below 0, and twice the bound in between. Without such a backtest nothing
supports extrapolating one candidate past another: the observed order.

A ragged table (candidates last observed at different sizes: an adaptive or halving loop's) is
judged on the sizes every candidate shares: the loop promoted the others on this very ranking,
so their later points are a sample chosen by the predictor under judgement.

Example:
    >>> import pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> p, noise = rng.normal(0, 0.1, 40), rng.normal(0, 0.01, 40)  # the law's relative changes
    >>> came_true = pd.DataFrame({"row": np.tile(np.arange(10), 4), "cut": 800.0,
    ...                           "size": np.repeat([1600.0, 3200, 6400, 12800], 10),
    ...                           "ahead": np.repeat([1.0, 2, 3, 4], 10),
    ...                           "line_error": noise, "observed_error": noise + p})
    >>> law_support(came_true, ahead=5.0).weight
    1.0
    >>> law_support(came_true.assign(line_error=noise - p, observed_error=noise), ahead=5.0).weight
    0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["MIN_AHEAD", "Support", "law_support"]

#: Backtest predictions nearer than this many doublings are left out: a column that close shares
#: most of its (nested) training examples with the cut's, so its change from it is mostly noise.
MIN_AHEAD = 1.0


@dataclass(frozen=True)
class Support:
    """The backtest's verdict at one distance ahead.

    Attributes:
        weight: the law's weight in the blend, in [0, 1].
        estimate, lower: the regression weight carried to ``ahead`` and its lower confidence bound
            (NaN without a backtest).
        ahead: doublings from the table's largest size to the target.
        horizon: the farthest the backtest predicted (0 without one).
        predictions: how many backtest predictions (candidate, cut, column) the weight rests on.
        shared_size: on a ragged table (candidates last observed at different sizes, an adaptive
            or halving loop's), the largest size every candidate has, up to which the backtest
            was read; NaN on a table whose candidates all end at the same size.
    """

    weight: float
    estimate: float
    lower: float
    ahead: float
    horizon: float
    predictions: int
    shared_size: float = math.nan

    @property
    def basis(self) -> str:
        """One sentence: which predictor ranks the candidates, and why (carried in each Fit)."""
        where = ("" if math.isnan(self.shared_size) else
                 f" (the candidates were last observed at different sizes, so the backtest reads only the sizes "
                 f"all of them share, up to {self.shared_size:g}: no loop chose those points by this ranking)")
        if self.predictions == 0:
            return ("observed order: no backtest (fewer than three candidates predicted a doubling or more "
                    f"ahead of a cut){where}, so nothing supports extrapolating one candidate past another")
        seen = (f"on {self.predictions} backtest predictions up to {self.horizon:.1f} doublings ahead{where}, the "
                f"law's relative falls came true with weight {self.estimate:.2f} at the target's {self.ahead:.1f} "
                f"(lower bound {self.lower:.2f})")
        if self.weight >= 1.0:
            return f"law: {seen}, so the law surely beats the observed order"
        if self.weight <= 0.0:
            return f"observed order: {seen}, so the law's relative falls are not trusted that far"
        return f"blend, law weight {self.weight:.2f}: {seen}"

    def terms(self) -> dict[str, float]:
        """The numbers a Fit carries (``law_weight`` and what it came from)."""
        out = {"law_weight": self.weight, "law_weight_horizon": self.horizon}
        if math.isfinite(self.estimate):
            out.update(law_weight_estimate=self.estimate, law_weight_lower=self.lower)
        if not math.isnan(self.shared_size):
            out["law_weight_shared_size"] = self.shared_size
        return out


def law_support(errors: pd.DataFrame, ahead: float) -> Support:
    """The law's weight at ``ahead`` doublings beyond the table's largest size (module docstring).

    ``errors`` has one row per backtest prediction with the columns ``row`` (the candidate),
    ``cut``, ``size``, ``ahead`` (doublings ahead), ``line_error`` and ``observed_error`` (log
    truth minus each predictor's log prediction), as ``default.backtest`` gives them.
    """
    ahead = max(float(ahead), 1e-9)
    near = errors["ahead"].to_numpy() < MIN_AHEAD
    row, cut, size, d, t, line_error = (errors[c].to_numpy()[~near] for c in
                                         ("row", "cut", "size", "ahead", "observed_error", "line_error"))
    group = np.unique(np.column_stack([cut, size]), axis=0, return_inverse=True)[1].ravel() if cut.size else cut
    counts = np.bincount(group)[group] if group.size else np.zeros(0, dtype=int)
    keep = counts > 1  # a candidate alone at a cut and column has nothing to be relative to
    row, d, t, line_error = row[keep], d[keep], t[keep], line_error[keep]
    group = np.unique(group[keep], return_inverse=True)[1]
    candidates = np.unique(row).size
    if candidates < 3:
        return Support(0.0, math.nan, math.nan, ahead, 0.0, 0)
    p = t - line_error
    t = t - _group_mean(t, group)
    p = p - _group_mean(p, group)
    log_d = np.log(d)
    horizon = float(d.max())
    trend = np.unique(np.round(log_d, 9)).size > 1
    x = np.column_stack([p, p * log_d]) if trend else p[:, None]
    at = np.array([1.0, math.log(ahead)]) if trend else np.ones(1)
    estimate, se = _clustered_fit(x, t, row, at)
    if not math.isfinite(estimate):
        return Support(0.0, math.nan, math.nan, ahead, horizon, row.size)
    # One standard error below, as sure as the number of candidates (clusters) allows.
    one_se = float(stats.t.ppf(stats.norm.cdf(1.0), candidates - 1)) * math.sqrt(candidates / (candidates - 1))
    lower = estimate - one_se * se
    return Support(float(np.clip(2.0 * lower, 0.0, 1.0)), estimate, lower, ahead, horizon, row.size)


def _group_mean(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    return (np.bincount(group, weights=values) / np.bincount(group))[group]


def _clustered_fit(x: np.ndarray, y: np.ndarray, cluster: np.ndarray, at: np.ndarray) -> tuple[float, float]:
    """Least squares of y on x; the fitted value at ``at`` and its standard error, clustered."""
    xtx = x.T @ x
    if not np.all(np.isfinite(xtx)) or np.linalg.cond(xtx) > 1e12:
        return math.nan, math.nan
    inverse = np.linalg.inv(xtx)
    beta = inverse @ (x.T @ y)
    scores = x * (y - x @ beta)[:, None]
    _, index = np.unique(cluster, return_inverse=True)
    per = np.zeros((index.max() + 1, x.shape[1]))
    np.add.at(per, index, scores)
    covariance = inverse @ (per.T @ per) @ inverse
    return float(at @ beta), math.sqrt(max(float(at @ covariance @ at), 0.0))
