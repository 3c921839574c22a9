"""The vanilla power law L(D) = B * D^-beta + E."""

from __future__ import annotations

import numpy as np

from ..fit import EXTRAPOLATION_SD_PER_DOUBLING
from .base import SeparableLaw

__all__ = ["PowerLaw"]


class PowerLaw(SeparableLaw):
    """L(D) = B * D^(-beta) + E. It is infinite at D = 0, so the zero-shot point is not used.

    Example:
        >>> law = PowerLaw().fit([0, 200, 400, 800, 1600], [5.0, 3.0, 2.6, 2.3, 2.1])
        >>> law.to_fit().used
        (False, True, True, True, True)
    """

    name = "power"
    theta_names = ("beta",)
    theta_bounds = ((1e-3,), (3.0,))

    def __init__(self, extrapolation_sd_per_doubling: float = EXTRAPOLATION_SD_PER_DOUBLING):
        self.extrapolation_sd_per_doubling = extrapolation_sd_per_doubling

    def _used(self, sizes, losses):
        return sizes > 0

    def theta_grid(self):
        return np.geomspace(0.005, 2.5, 80)[:, None]

    def basis(self, sizes, theta):
        theta = np.asarray(theta, dtype=float)
        beta = theta[..., 0:1]
        with np.errstate(divide="ignore", over="ignore"):
            out = np.exp(np.clip(-beta * np.log(sizes), -700, 700))
        return out

    def basis_grad(self, sizes, theta):
        log_d = np.log(sizes)
        return (-log_d * np.exp(np.clip(-theta[0] * log_d, -700, 700)))[:, None]

    @property
    def _internal_coords(self):
        return ("beta", "E", "B")

    def _named(self, x):
        beta, E, B = x
        return {"B": float(B), "beta": float(beta), "E": float(E)}
