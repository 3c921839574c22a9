"""The rectified scaling law (Lin et al., 2024) and LensLLM's NTK form of it (Zeng et al., 2025)."""

from __future__ import annotations

import numpy as np

from .base import SeparableLaw

__all__ = ["LensLLMLaw", "RectifiedLaw"]


class RectifiedLaw(SeparableLaw):
    """L(D) = B / (F + D^beta) + E with all four parameters fitted.

    Internally L = E + A / (1 + (D / D_l)^beta), with A = B / F and D_l = F^(1/beta): the
    zero-shot loss is E + A, so the point D = 0 takes part in the fit.
    """

    name = "rectified"
    theta_names = ("beta", "log_Dl")
    theta_bounds = ((0.01, np.log(1e-2)), (3.0, np.log(1e10)))

    def theta_grid(self):
        beta, log_dl = np.meshgrid(np.geomspace(0.05, 2.0, 24), np.linspace(0.0, np.log(1e8), 33), indexing="ij")
        return np.column_stack([beta.ravel(), log_dl.ravel()])

    def basis(self, sizes, theta):
        theta = np.asarray(theta, dtype=float)
        beta, log_dl = theta[..., 0:1], theta[..., 1:2]
        with np.errstate(divide="ignore", over="ignore"):
            ratio = np.exp(np.clip(beta * (np.log(sizes) - log_dl), -700, 700))
        out = 1.0 / (1.0 + ratio)
        return out

    def basis_grad(self, sizes, theta):
        beta, log_dl = theta
        with np.errstate(divide="ignore"):
            offset = np.where(sizes > 0, np.log(np.maximum(sizes, 1e-300)) - log_dl, 0.0)
        ratio = np.where(sizes > 0, np.exp(np.clip(beta * offset, -700, 700)), 0.0)
        h = 1.0 / (1.0 + ratio)
        slope = h * h * ratio  # -dh/d(beta * offset)
        return np.column_stack([-slope * offset, slope * beta])

    def _named(self, x):
        beta, log_dl, E, A = x
        F = float(np.exp(min(beta * log_dl, 700.0)))
        return {"B": A * F, "F": F, "beta": float(beta), "E": float(E)}

    def _unnamed(self, params):
        beta, F = params["beta"], params["F"]
        return np.array([beta, np.log(F) / beta, params["E"], params["B"] / F])


class LensLLMLaw(RectifiedLaw):
    """LensLLM: L(D) = B / (F(Theta, t) + D^beta) + E.

    Args:
        F: the NTK term of the run records (``record["ntk"]["F"]``). Given, only B, beta and
            E are fitted and F stays as measured; None fits F freely, which makes the law the
            rectified law (as the public LensLLM code does for prediction).

    Example:
        >>> LensLLMLaw(F=2.5).fit([0, 200, 400, 800], [3.2, 2.9, 2.8, 2.6]).params_["F"]
        2.5
    """

    name = "lensllm"

    def __init__(self, F: float | None = None):
        self.F = F

    @property
    def _fixed_F(self) -> bool:
        return self.F is not None

    @property
    def theta_names(self):  # type: ignore[override]
        return ("beta",) if self._fixed_F else RectifiedLaw.theta_names

    @property
    def theta_bounds(self):  # type: ignore[override]
        return ((0.01,), (3.0,)) if self._fixed_F else RectifiedLaw.theta_bounds

    def theta_grid(self):
        if self._fixed_F:
            return np.geomspace(0.02, 2.5, 64)[:, None]
        return super().theta_grid()

    def basis(self, sizes, theta):
        if not self._fixed_F:
            return super().basis(sizes, theta)
        theta = np.asarray(theta, dtype=float)
        beta = theta[..., 0:1]
        with np.errstate(divide="ignore", over="ignore"):
            power = np.where(sizes > 0, np.exp(np.clip(beta * np.log(np.maximum(sizes, 1e-300)), -700, 700)), 0.0)
        out = 1.0 / (self.F + power)
        return out

    def basis_grad(self, sizes, theta):
        if not self._fixed_F:
            return super().basis_grad(sizes, theta)
        log_d = np.log(np.maximum(sizes, 1e-300))
        power = np.where(sizes > 0, np.exp(np.clip(theta[0] * log_d, -700, 700)), 0.0)
        h = 1.0 / (self.F + power)
        return (-h * h * power * np.where(sizes > 0, log_d, 0.0))[:, None]

    def _fit(self, sizes, losses):
        if self._fixed_F and not (np.isfinite(self.F) and self.F > 0):
            from .base import FitError

            raise FitError(f"lensllm: F must be a finite number > 0, got {self.F!r}")
        super()._fit(sizes, losses)

    def _named(self, x):
        if not self._fixed_F:
            return super()._named(x)
        beta, E, B = x
        return {"B": float(B), "F": float(self.F), "beta": float(beta), "E": float(E)}

    def _unnamed(self, params):
        if not self._fixed_F:
            return super()._unnamed(params)
        return np.array([params["beta"], params["E"], params["B"]])

    def _restore(self):
        # A published fit carries F; keep the free-F parametrisation, which predicts the same.
        self.F = None
        super()._restore()
