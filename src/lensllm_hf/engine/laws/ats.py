"""AtS (Lin et al., 2024): a line in log-log space through the power phase only."""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..fit import EXTRAPOLATION_SD_PER_DOUBLING, Fit
from .base import ScalingLaw
from .phases import transition_index

__all__ = ["AtSLaw"]


class AtSLaw(ScalingLaw):
    """Above-the-transition fit: log L = a + b log D on the power-phase points.

    The zero-shot point (D = 0) and the pre-power points are kept in the fit's points but not
    used. The interval is the ordinary least-squares prediction spread of the line, widened to
    Student's t for few points.

    Args:
        k, delta: the phase-detection settings of :func:`~lensllm_hf.engine.laws.phases.transition_index`
            (the published AtS uses k = 3, delta = 5).
        extrapolation_sd_per_doubling: extra log-loss spread per doubling beyond the data.

    Example:
        >>> law = AtSLaw().fit([200, 400, 800, 1600], [3.0, 2.8, 2.6, 2.45])
        >>> law.to_fit().used
        (False, True, True, True)
    """

    name = "ats"

    def __init__(self, k: int = 3, delta: float = 5.0,
                 extrapolation_sd_per_doubling: float = EXTRAPOLATION_SD_PER_DOUBLING):
        self.k = k
        self.delta = delta
        self.extrapolation_sd_per_doubling = extrapolation_sd_per_doubling

    def _used(self, sizes, losses):
        positive = sizes > 0
        used = np.zeros(sizes.shape, dtype=bool)
        start = transition_index(sizes[positive], losses[positive], self.k, self.delta) + 1
        used[np.flatnonzero(positive)[start:]] = True
        return used

    def _fit(self, sizes, losses):
        x, y = np.log(sizes), np.log(losses)
        slope, intercept = np.polyfit(x, y, 1)
        self.params_ = {"a": float(intercept), "b": float(slope)}

    def _make_fit(self) -> Fit:
        x = np.log(self.sizes_[self.used_])
        y = np.log(self.losses_[self.used_])
        n = x.size
        resid = y - (self.params_["a"] + self.params_["b"] * x)
        sigma = np.sqrt(np.sum(resid**2) / max(n - 2, 1)) if n > 2 else float(np.sqrt(np.mean(resid**2)))
        sigma = max(float(sigma), 1e-4)
        t = stats.t.ppf(0.95, max(n - 2, 1)) / stats.norm.ppf(0.95)  # heavier tails with few points
        var = (t * sigma) ** 2
        sxx = float(np.sum((x - x.mean()) ** 2)) or 1.0
        xm = float(x.mean())
        cov = np.array([[var * (1 / n + xm**2 / sxx), -var * xm / sxx], [-var * xm / sxx, var / sxx]])
        return self._new_fit(self.params_, var, cov)
