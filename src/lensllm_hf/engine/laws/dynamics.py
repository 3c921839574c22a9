"""LensLLM read as dynamics: the NTK term decays with the steps each run took (Zeng et al., 2025)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..fit import EXTRAPOLATION_SD_PER_DOUBLING, dynamics_F, dynamics_log_grad
from .base import FitError, SeparableLaw

__all__ = ["LensLLMDynamicsLaw"]


class LensLLMDynamicsLaw(SeparableLaw):
    """L(D) = B / (F(Theta, t_D) + D^beta) + E, F(Theta, t) = sum_i exp(-2 s eta lambda_i t) c_i^2.

    ``lensllm`` fits one free t per candidate, which makes it the rectified law with F capped.
    Here t_D is the number of steps the run at size D took, so F falls along the curve as the
    runs lengthen with D: the probe's spectrum (``eigenvalues`` lambda_i, ``coefficients`` c_i)
    and the learning rate ``eta`` fix F's shape, and one scale ``s`` (how fast the kernel
    regime's decay runs in these runs: learning-rate schedule, drift of the kernel) is fitted
    with B, beta and E, by the same grid and bounded polish as the other laws. The recorded steps
    are read as t_D = steps_per_example * D ** steps_exponent (a line in log-log through them:
    exponent 1 for a fixed number of epochs, 0 for a fixed number of steps), which also gives t
    at the target; t = 0 at D = 0, so the zero-shot loss is B / ||r||^2 + E. With t_D the same at
    every size it is ``lensllm``'s law.

    Args:
        eigenvalues, coefficients: the NTK probe's spectrum (a run record's ``ntk``).
        eta: the learning rate of the runs.
        steps: the optimizer steps of the run at each subset size, ``{size: steps}`` (sizes > 0;
            at least one).

    Example:
        >>> law = LensLLMDynamicsLaw([0.5, 2.0, 8.0], [1.0, 1.0, 1.0], eta=0.01,
        ...                          steps={200: 12.5, 400: 25, 800: 50, 1600: 100})
        >>> law = law.fit([0, 200, 400, 800, 1600], [4.0, 3.0, 2.6, 2.3, 2.1])
        >>> sorted(k for k in law.params_ if not k.startswith("ntk."))
        ['B', 'E', 'beta', 'eta', 'scale', 'steps_exponent', 'steps_per_example']
    """

    name = "lensllm-dynamics"
    theta_names = ("beta", "log_scale")

    def __init__(self, eigenvalues, coefficients, eta: float, steps: Mapping[float, float],
                 extrapolation_sd_per_doubling: float = EXTRAPOLATION_SD_PER_DOUBLING):
        self.eigenvalues = eigenvalues
        self.coefficients = coefficients
        self.eta = eta
        self.steps = steps
        self.extrapolation_sd_per_doubling = extrapolation_sd_per_doubling

    @property
    def theta_bounds(self):  # type: ignore[override]
        return (0.01, self._log_scale_range[0]), (3.0, self._log_scale_range[1])

    def _fit(self, sizes, losses):
        lam = np.asarray(self.eigenvalues if self.eigenvalues is not None else [], dtype=float)
        coef = np.asarray(self.coefficients if self.coefficients is not None else [], dtype=float)
        if lam.ndim != 1 or lam.shape != coef.shape or lam.size == 0 or not (
                np.all(np.isfinite(lam)) and np.all(np.isfinite(coef))) or not np.any(coef):
            raise FitError("lensllm-dynamics: needs the NTK probe's eigenvalues and coefficients (two lists of "
                           "finite numbers of one length, not all zero); record the probe (LensLLMCallback's ntk) "
                           "or use the rectified law", law=self.name)
        if not (isinstance(self.eta, int | float) and np.isfinite(self.eta) and self.eta > 0):
            raise FitError(f"lensllm-dynamics: needs the runs' learning rate eta > 0, got {self.eta!r}", law=self.name)
        self._per_example, self._exponent = _steps_line(self.steps)
        self._lam, self._c = np.clip(lam, 0.0, None), coef
        positive = sizes[sizes > 0]
        eta_t = self.eta * self._per_example * positive.astype(float) ** self._exponent
        modes = self._lam[self._lam > 0]
        if modes.size == 0:  # F does not move with t: keep a tiny range so the polish is defined
            self._log_scale_range = (-1.0, 1.0)
        else:
            # From barely decayed at the largest run (F ~ ||r||^2) to every mode decayed at the smallest.
            self._log_scale_range = (float(np.log(1e-3 / (modes.max() * eta_t.max()))),
                                     float(np.log(30.0 / (modes.min() * eta_t.min()))))
        super()._fit(sizes, losses)

    def _coords(self, theta: np.ndarray) -> np.ndarray:
        """The form's coordinate vector at (beta, log scale), with E = 0, B = 1."""
        return np.concatenate([[theta[0], theta[1], 0.0, 1.0, self.eta * self._per_example, self._exponent],
                               self._lam, self._c**2])

    def theta_grid(self):
        lo, hi = self._log_scale_range
        beta, log_scale = np.meshgrid(np.geomspace(0.05, 2.0, 24), np.linspace(lo, hi, 41), indexing="ij")
        return np.column_stack([beta.ravel(), log_scale.ravel()])

    def basis(self, sizes, theta):
        single = np.ndim(theta) == 1
        theta = np.atleast_2d(np.asarray(theta, dtype=float))
        out = np.empty((theta.shape[0], sizes.size))
        with np.errstate(divide="ignore", over="ignore"):
            power = np.where(sizes > 0, np.exp(np.clip(theta[:, 0:1] * np.log(np.maximum(sizes, 1e-300)), -700, 700)),
                             0.0)
        for g, row in enumerate(theta):
            out[g] = 1.0 / (dynamics_F(self._coords(row), sizes) + power[g])
        return out[0] if single else out

    def basis_grad(self, sizes, theta):
        x = self._coords(np.asarray(theta, dtype=float))
        g = dynamics_log_grad(x, sizes)  # d log h / d (beta, log scale) with E = 0, B = 1: h' / h
        h = self.basis(sizes, x[:2])
        return g[:, :2] * h[:, None]

    @property
    def _internal_coords(self):
        return ("beta", "log_scale", "E", "B")

    def _named(self, x):
        beta, log_scale, E, B = x
        named = {"B": float(B), "beta": float(beta), "E": float(E), "scale": float(np.exp(log_scale)),
                 "eta": float(self.eta), "steps_per_example": self._per_example, "steps_exponent": self._exponent}
        named.update({f"ntk.lambda.{i}": float(v) for i, v in enumerate(self._lam)})
        named.update({f"ntk.c.{i}": float(v) for i, v in enumerate(self._c)})
        return named


def _steps_line(steps: Mapping[float, float]) -> tuple[float, float]:
    """(steps_per_example, steps_exponent) of the line log t = log a + g log D through the recorded
    steps (D > 0); one size: g = 1 (a fixed number of epochs)."""
    pairs = np.array([(float(d), float(t)) for d, t in dict(steps or {}).items()
                      if np.isfinite(float(d)) and np.isfinite(float(t)) and d > 0 and t > 0], dtype=float).reshape(-1, 2)
    if pairs.shape[0] == 0:
        raise FitError("lensllm-dynamics: needs the optimizer steps of the runs (the records' evaluations); "
                       "re-run with an evaluation at the end of training or use the rectified law",
                       law=LensLLMDynamicsLaw.name)
    log_d, log_t = np.log(pairs[:, 0]), np.log(pairs[:, 1])
    exponent = float(np.clip(np.polyfit(log_d, log_t, 1)[0], 0.0, 2.0)) if np.unique(log_d).size > 1 else 1.0
    return float(np.exp(np.mean(log_t - exponent * log_d))), exponent
