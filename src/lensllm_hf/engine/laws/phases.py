"""Pre-power / power phase transition of a fine-tuning curve (Lin et al., 2024, AtS)."""

from __future__ import annotations

import numpy as np

__all__ = ["detect_transition", "transition_index"]


def transition_index(sizes, losses, k: int = 3, delta: float = 5.0) -> int:
    """Index of the last pre-power point; -1 when the whole curve is in the power phase.

    Walks backwards from the largest sizes: a line fitted to log L against log D on the last
    ``m`` points (m = k, k+1, ...) predicts the point before them; the first point that lies
    more than ``delta`` residual standard deviations off that line is pre-power. As in the
    reference implementation of AtS, when no point is rejected the smallest size still counts
    as pre-power (index 0), and curves of ``k`` points or fewer are all power phase.
    """
    log_x = np.log(np.asarray(sizes, dtype=float))
    log_y = np.log(np.asarray(losses, dtype=float))
    n = log_x.size
    if n <= k:
        return -1
    # Every candidate line at once: row r fits the last m = k + r points (a mask over the curve).
    m = np.arange(k, n)
    inside = np.arange(n)[None, :] >= (n - m)[:, None]
    x_mean = np.where(inside, log_x, 0.0).sum(axis=1) / m
    y_mean = np.where(inside, log_y, 0.0).sum(axis=1) / m
    dx = np.where(inside, log_x - x_mean[:, None], 0.0)
    dy = np.where(inside, log_y - y_mean[:, None], 0.0)
    slope = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    spread = np.sqrt(((dy - slope[:, None] * dx) ** 2).sum(axis=1) / m)
    before = n - m - 1  # the point each line predicts
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.abs(log_y[before] - (y_mean + slope * (log_x[before] - x_mean))) / spread
    breaks = np.flatnonzero(score > delta)  # NaN (a perfect line and a point on it) is not a break
    return int(before[breaks[0]]) if breaks.size else 0


def detect_transition(sizes, losses, k: int = 3, delta: float = 5.0) -> float | None:
    """First subset size of the power phase, or None for an empty curve.

    Example:
        >>> sizes = [200, 400, 800, 1600, 3200, 6400, 12800]
        >>> losses = [3.0, 2.99, 2.98, 2.6, 2.3, 2.03, 1.8]
        >>> detect_transition(sizes, losses)
        1600.0
    """
    sizes = np.asarray(sizes, dtype=float)
    if sizes.size == 0:
        return None
    return float(sizes[transition_index(sizes, losses, k, delta) + 1])
