"""AtS (Lin et al., 2024): a line in log-log space through the power phase only."""

from __future__ import annotations

import numpy as np
from scipy import stats

from .base import ScalingLaw
from .phases import transition_index

__all__ = ["AtSLaw"]


class AtSLaw(ScalingLaw):
    """Above-the-transition fit: log L = a + b log D on the power-phase points.

    Args:
        k, delta: the phase-detection settings of :func:`~lensllm_hf.laws.phases.transition_index`
            (the published AtS uses k = 3, delta = 5).
    """

    name = "ats"

    def __init__(self, k: int = 3, delta: float = 5.0):
        self.k = k
        self.delta = delta

    def fit(self, sizes, losses):
        sizes = np.asarray(sizes, dtype=float)
        losses = np.asarray(losses, dtype=float)
        keep = sizes > 0
        return super().fit(sizes[keep], losses[keep])

    def _fit(self, sizes, losses):
        start = transition_index(sizes, losses, self.k, self.delta) + 1
        x, y = np.log(sizes[start:]), np.log(losses[start:])
        slope, intercept = np.polyfit(x, y, 1)
        self.params_ = {"a": float(intercept), "b": float(slope), "transition_size": float(sizes[start])}
        self._line = (x, y)

    def _predict(self, sizes):
        with np.errstate(divide="ignore"):
            return np.exp(self.params_["a"] + self.params_["b"] * np.log(sizes))

    def _fit_log_sd(self, sizes):
        """The ordinary least-squares prediction spread of the line."""
        start = self.sizes_ >= self.params_["transition_size"]
        x = np.log(self.sizes_[start])
        n = x.size
        resid = self.residuals_[start]
        sigma = np.sqrt(np.sum(resid**2) / max(n - 2, 1)) if n > 2 else float(np.sqrt(np.mean(resid**2)))
        sigma = max(sigma, 1e-4)
        sxx = np.sum((x - x.mean()) ** 2) or 1.0
        x0 = np.log(np.maximum(sizes, 1.0))
        t = stats.t.ppf(0.95, max(n - 2, 1)) / stats.norm.ppf(0.95)  # heavier tails with few points
        return t * sigma * np.sqrt(1 + 1 / n + (x0 - x.mean()) ** 2 / sxx)
