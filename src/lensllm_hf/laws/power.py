"""The vanilla power law L(D) = B * D^-beta + E."""

from __future__ import annotations

import numpy as np

from .base import SeparableLaw

__all__ = ["PowerLaw"]


class PowerLaw(SeparableLaw):
    """L(D) = B * D^(-beta) + E. It is infinite at D = 0, so the zero-shot point is left out."""

    name = "power"
    theta_names = ("beta",)
    theta_bounds = ((1e-3,), (3.0,))

    def fit(self, sizes, losses):
        sizes = np.asarray(sizes, dtype=float)
        losses = np.asarray(losses, dtype=float)
        keep = sizes > 0
        return super().fit(sizes[keep], losses[keep])

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

    def _named(self, x):
        beta, E, B = x
        return {"B": float(B), "beta": float(beta), "E": float(E)}

    def _unnamed(self, params):
        return np.array([params["beta"], params["E"], params["B"]])
