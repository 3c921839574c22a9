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
    m = k
    for m in range(k, n):
        x, y = log_x[-m:], log_y[-m:]
        slope, intercept = np.polyfit(x, y, 1)
        spread = np.std(y - (slope * x + intercept))
        with np.errstate(divide="ignore", invalid="ignore"):
            score = abs(log_y[-m - 1] - (slope * log_x[-m - 1] + intercept)) / spread
        if score > delta:  # NaN (a perfect line and a point on it) is not a break
            break
    return n - m - 1


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
