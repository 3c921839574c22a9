"""The rectified scaling law (Lin et al., 2024) and LensLLM's NTK form of it (Zeng et al., 2025)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..fit import EXTRAPOLATION_SD_PER_DOUBLING, Fit
from .base import FitError, SeparableLaw

__all__ = ["LensLLMLaw", "RectifiedLaw", "spectrum_F"]


class RectifiedLaw(SeparableLaw):
    """L(D) = B / (F + D^beta) + E with all four parameters fitted.

    Internally L = E + A / (1 + (D / D_l)^beta), with A = B / F and D_l = F^(1/beta): the
    zero-shot loss is E + A, so the point D = 0 takes part in the fit.

    Example:
        >>> law = RectifiedLaw().fit([0, 200, 400, 800, 1600, 3200], [4.2, 3.4, 3.3, 3.2, 3.05, 2.9])
        >>> sorted(law.params_)
        ['B', 'E', 'F', 'beta']
    """

    name = "rectified"
    theta_names = ("beta", "log_Dl")
    theta_bounds = ((0.01, np.log(1e-2)), (3.0, np.log(1e10)))

    def __init__(self, extrapolation_sd_per_doubling: float = EXTRAPOLATION_SD_PER_DOUBLING):
        self.extrapolation_sd_per_doubling = extrapolation_sd_per_doubling

    def theta_grid(self):
        beta, log_dl = np.meshgrid(np.geomspace(0.05, 2.0, 24), np.linspace(0.0, np.log(1e8), 33), indexing="ij")
        return np.column_stack([beta.ravel(), log_dl.ravel()])

    def basis(self, sizes, theta):
        theta = np.asarray(theta, dtype=float)
        beta, log_dl = theta[..., 0:1], theta[..., 1:2]
        with np.errstate(divide="ignore", over="ignore"):
            ratio = np.exp(np.clip(beta * (np.log(sizes) - log_dl), -700, 700))
        return 1.0 / (1.0 + ratio)

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
        return {"B": float(A * F), "F": F, "beta": float(beta), "E": float(E)}


def spectrum_F(eigenvalues, coefficients, eta_t) -> np.ndarray:
    """F(Theta, t) = sum_i exp(-2 eta t lambda_i) c_i^2 for each value of ``eta_t`` (array-valued).

    Example:
        >>> spectrum_F([0.0, 2.0], [1.0, 1.0], [0.0, 1e9]).tolist()
        [2.0, 1.0]
    """
    lam = np.clip(np.asarray(eigenvalues, dtype=float), 0.0, None)
    c2 = np.asarray(coefficients, dtype=float) ** 2
    eta_t = np.asarray(eta_t, dtype=float)
    with np.errstate(over="ignore", under="ignore"):
        return np.exp(-2.0 * eta_t[..., None] * lam) @ c2


class LensLLMLaw(SeparableLaw):
    """LensLLM: L(D) = B / (F(Theta, t) + D^beta) + E, with F(Theta, t) = sum_i exp(-2 eta lambda_i t) c_i^2.

    As the paper fits it: with the NTK probe's spectrum (``eigenvalues`` lambda_i of Theta and
    ``coefficients`` c_i, the initial losses in its eigenbasis; a run record's ``ntk``), the
    effective training time ``eta_t`` = eta * t is fitted together with B, beta and E, so F moves
    along the curve the spectrum defines, between sum over lambda_i = 0 of c_i^2 and ||r||^2. The
    fit starts from a grid over (beta, log eta_t), with B and E in closed form, and is polished by
    bounded least squares. Without a probe, F is fitted freely (the rectified law) and the fit's
    warnings say so. (F read as dynamics, decaying with the steps of each run, was measured on
    the truth suite and dropped: ``docs/methods.md``.)

    Args:
        eigenvalues, coefficients: the probe's spectrum, or None for a free F.
        extrapolation_sd_per_doubling: extra log-loss spread per doubling beyond the data.

    Example:
        >>> sizes = [0, 200, 400, 800, 1600, 3200]
        >>> losses = [4.0, 3.0, 2.7, 2.45, 2.25, 2.1]
        >>> law = LensLLMLaw(eigenvalues=[0.001, 0.01, 0.1], coefficients=[2.0, 2.0, 2.0]).fit(sizes, losses)
        >>> 0.0 < law.params_["F"] <= 12.0 and law.params_["eta_t"] > 0
        True
        >>> LensLLMLaw().fit(sizes, losses).to_fit().warnings[0].startswith("no NTK probe")
        True
    """

    name = "lensllm"

    def __init__(self, eigenvalues=None, coefficients=None,
                 extrapolation_sd_per_doubling: float = EXTRAPOLATION_SD_PER_DOUBLING):
        self.eigenvalues = eigenvalues
        self.coefficients = coefficients
        self.extrapolation_sd_per_doubling = extrapolation_sd_per_doubling

    @property
    def _probe(self) -> bool:
        return self.eigenvalues is not None

    @property
    def theta_names(self):  # type: ignore[override]
        return ("beta", "log_eta_t") if self._probe else RectifiedLaw.theta_names

    @property
    def theta_bounds(self):  # type: ignore[override]
        if not self._probe:
            return RectifiedLaw.theta_bounds
        return (0.01, self._log_eta_t_range[0]), (3.0, self._log_eta_t_range[1])

    def _fit(self, sizes, losses):
        if self._probe:
            lam = np.asarray(self.eigenvalues, dtype=float)
            coef = np.asarray(self.coefficients if self.coefficients is not None else [], dtype=float)
            if lam.ndim != 1 or lam.shape != coef.shape or lam.size == 0 or not (
                    np.all(np.isfinite(lam)) and np.all(np.isfinite(coef))):
                raise FitError("lensllm: the probe's eigenvalues and coefficients must be two lists of finite numbers "
                               "of the same length; re-run the probe or fit without it")
            self._lam, self._coef = np.clip(lam, 0.0, None), coef
            self._F0 = float(np.sum(coef**2))
            if not self._F0 > 0:
                raise FitError("lensllm: the probe's coefficients are all zero (no initial loss); fit without it")
            positive = self._lam[self._lam > 0]
            if positive.size == 0:  # F does not move with t: keep a tiny range so the polish is defined
                self._log_eta_t_range = (-1.0, 1.0)
            else:
                # From barely trained (F ~ ||r||^2) to every mode decayed (F at its floor).
                self._log_eta_t_range = (float(np.log(1e-3 / positive.max())), float(np.log(30.0 / positive.min())))
        super()._fit(sizes, losses)

    def _F(self, log_eta_t) -> np.ndarray:
        F = spectrum_F(self._lam, self._coef, np.exp(np.asarray(log_eta_t, dtype=float)))
        return np.maximum(F, 1e-12 * self._F0)  # keeps log F finite when every mode has decayed

    def theta_grid(self):
        if not self._probe:
            return RectifiedLaw.theta_grid(self)
        lo, hi = self._log_eta_t_range
        beta, let = np.meshgrid(np.geomspace(0.05, 2.0, 24), np.linspace(lo, hi, 41), indexing="ij")
        return np.column_stack([beta.ravel(), let.ravel()])

    def basis(self, sizes, theta):
        if not self._probe:
            return RectifiedLaw.basis(self, sizes, theta)
        theta = np.asarray(theta, dtype=float)
        beta = theta[..., 0:1]
        F = self._F(theta[..., 1])[..., None]
        with np.errstate(divide="ignore", over="ignore"):
            power = np.where(sizes > 0, np.exp(np.clip(beta * np.log(np.maximum(sizes, 1e-300)), -700, 700)), 0.0)
        return 1.0 / (F + power)

    def basis_grad(self, sizes, theta):
        if not self._probe:
            return RectifiedLaw.basis_grad(self, sizes, theta)
        beta, let = theta
        log_d = np.log(np.maximum(sizes, 1e-300))
        power = np.where(sizes > 0, np.exp(np.clip(beta * log_d, -700, 700)), 0.0)
        h = 1.0 / (self._F(let) + power)
        eta_t = np.exp(let)
        with np.errstate(over="ignore", under="ignore"):
            dF = float(np.sum(-2.0 * self._lam * eta_t * np.exp(-2.0 * eta_t * self._lam) * self._coef**2))
        return np.column_stack([-h * h * power * np.where(sizes > 0, log_d, 0.0), -h * h * dF])

    def _named(self, x):
        if not self._probe:
            return RectifiedLaw._named(self, x)
        beta, let, E, B = x
        return {"B": float(B), "F": float(self._F(let)), "beta": float(beta), "E": float(E),
                "eta_t": float(np.exp(let))}

    def _warnings(self):
        return () if self._probe else (NO_PROBE_WARNING,)

    @staticmethod
    def free_F(rectified: Fit) -> Fit:
        """A rectified fit as the free-F LensLLM fit it equals (same curve, named lensllm, with the
        warning), so that callers holding the rectified fit need not fit the same points again."""
        if rectified.law != RectifiedLaw.name:
            raise FitError(f"free_F takes a rectified fit, got a {rectified.law} fit")
        return replace(rectified, law=LensLLMLaw.name, warnings=(NO_PROBE_WARNING, *rectified.warnings))


#: What a LensLLM fit without the NTK probe says about itself.
NO_PROBE_WARNING = ("no NTK probe in the records: F fitted freely, so this is the rectified law; "
                    "record the probe (LensLLMCallback's ntk) to fit F(Theta, t) from its spectrum")
