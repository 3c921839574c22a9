"""What every scaling law shares: the scikit-learn shape, intervals and (de)serialisation."""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from scipy import optimize, stats

from ..curves import validate_points
from ..errors import LensLLMError

__all__ = ["FitError", "ScalingLaw", "SeparableLaw"]

#: Extra log-loss spread per doubling of extrapolation (target / largest fitted size).
#: Fit residuals say nothing about how far a curve may bend beyond its last point, so the
#: interval grows with the extrapolation distance. Calibrated on held-out columns of the two
#: shared curve tables: with it, 90 % intervals of rectified and ats cover 90.5 % of held-out
#: points (1 to 9 doublings ahead; benchmarks/interval_coverage.py prints the table).
EXTRAPOLATION_SD_PER_DOUBLING = 0.018


class FitError(LensLLMError, RuntimeError):
    """A law could not be fitted to a curve (too few points, optimiser failure...)."""


class ScalingLaw:
    """A law L(D) fitted to (subset size, test loss) points.

    Parameters live in ``__init__``; :meth:`fit` returns ``self``; fitted values end in ``_``:
    ``params_`` (a dict), ``sizes_``, ``losses_``, ``residuals_`` (log-loss residuals) and
    ``transition_size_`` (first size of the power phase, see :func:`detect_transition`).

    Example:
        >>> law = RectifiedLaw().fit([0, 200, 400, 800, 1600], [4.0, 3.1, 3.0, 2.8, 2.6])
        >>> law.predict([1_638_400])
        array([...])
        >>> law.predict_interval([1_638_400], level=0.9)
        (array([...]), array([...]))
    """

    name: ClassVar[str] = "law"
    min_points: ClassVar[int] = 3

    params_: dict[str, float]
    sizes_: np.ndarray
    losses_: np.ndarray
    residuals_: np.ndarray
    transition_size_: float | None

    def fit(self, sizes, losses) -> Self:
        sizes, losses = validate_points(sizes, losses, where=f"{self.name} fit", min_points=self.min_points)
        self.sizes_, self.losses_ = sizes, losses
        self._fit(sizes, losses)
        self.residuals_ = np.log(self.predict(sizes)) - np.log(losses)
        from .phases import detect_transition

        positive = sizes > 0
        self.transition_size_ = detect_transition(sizes[positive], losses[positive])
        return self

    def predict(self, sizes) -> np.ndarray:
        """Predicted test loss at each subset size."""
        self._check_fitted()
        return self._predict(np.atleast_1d(np.asarray(sizes, dtype=float)))

    def predict_interval(self, sizes, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """A ``level`` interval for the loss at each size (log-normal, see ``_log_sd``)."""
        sizes = np.atleast_1d(np.asarray(sizes, dtype=float))
        centre = np.log(self.predict(sizes))
        z = stats.norm.ppf(0.5 + level / 2)
        sd = self._log_sd(sizes)
        return np.exp(centre - z * sd), np.exp(centre + z * sd)

    def to_dict(self) -> dict[str, Any]:
        """The fit as plain JSON-able data; :meth:`from_dict` rebuilds a law that predicts."""
        self._check_fitted()
        return {
            "law": self.name,
            "params": {k: float(v) for k, v in self.params_.items()},
            "sizes": self.sizes_.tolist(),
            "losses": self.losses_.tolist(),
            "transition_size": self.transition_size_,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScalingLaw:
        """Rebuild a fitted law from :meth:`to_dict` output (any registered law)."""
        from . import LAWS

        name = data.get("law")
        if name not in LAWS:
            raise FitError(f"unknown law {name!r}; known laws: {', '.join(sorted(LAWS))}")
        law = LAWS[name]()
        law.params_ = {k: float(v) for k, v in dict(data["params"]).items()}
        law.sizes_ = np.asarray(data.get("sizes", []), dtype=float)
        law.losses_ = np.asarray(data.get("losses", []), dtype=float)
        law.transition_size_ = data.get("transition_size")
        law._restore()
        law.residuals_ = (np.log(law.predict(law.sizes_)) - np.log(law.losses_)) if law.sizes_.size else np.array([])
        return law

    # -- for subclasses ---------------------------------------------------------------
    def _fit(self, sizes: np.ndarray, losses: np.ndarray) -> None:
        raise NotImplementedError

    def _predict(self, sizes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _restore(self) -> None:
        """Rebuild internal state from ``params_`` (after :meth:`from_dict`)."""

    def _log_sd(self, sizes: np.ndarray) -> np.ndarray:
        """Standard deviation of the log-loss prediction: fit noise plus extrapolation."""
        return np.hypot(self._fit_log_sd(sizes), self._extrapolation_sd(sizes))

    def _fit_log_sd(self, sizes: np.ndarray) -> np.ndarray:
        resid = getattr(self, "residuals_", np.array([]))
        return np.full(sizes.shape, float(np.sqrt(np.mean(resid**2))) if resid.size else 0.0)

    def _extrapolation_sd(self, sizes: np.ndarray) -> np.ndarray:
        largest = float(np.max(self.sizes_)) if self.sizes_.size else 1.0
        doublings = np.log2(np.maximum(sizes, 1.0) / max(largest, 1.0))
        return EXTRAPOLATION_SD_PER_DOUBLING * np.maximum(doublings, 0.0)

    def _check_fitted(self) -> None:
        if not hasattr(self, "params_"):
            raise FitError(f"this {type(self).__name__} is not fitted yet; call fit(sizes, losses) first")

    def __repr__(self) -> str:
        params = getattr(self, "params_", None)
        inner = ", ".join(f"{k}={v:.4g}" for k, v in params.items()) if params else "unfitted"
        return f"{type(self).__name__}({inner})"


class SeparableLaw(ScalingLaw):
    """L(D) = E + A * h(D; theta) with E, A >= 0, fitted in log-loss space.

    For fixed theta the two linear parameters have a closed form (non-negative weighted least
    squares, weights 1/loss so that it approximates the log-space fit), so a dense grid over
    theta is evaluated at once in numpy; the best grid point then starts one bounded
    ``scipy.optimize.least_squares`` polish of all parameters on the log residuals. No random
    starts: the same points always give the same fit.
    """

    theta_names: ClassVar[tuple[str, ...]] = ()
    #: Bounds of theta for the polish, as (lower, upper) arrays.
    theta_bounds: ClassVar[tuple[tuple[float, ...], tuple[float, ...]]] = ((), ())

    def theta_grid(self) -> np.ndarray:
        """Starting points, shape (n_grid, n_theta)."""
        raise NotImplementedError

    def basis(self, sizes: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """h(D; theta) for theta of shape (..., n_theta) and sizes (n,): shape (..., n)."""
        raise NotImplementedError

    def basis_grad(self, sizes: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """dh/dtheta at one theta: shape (n, n_theta)."""
        raise NotImplementedError

    def _fit(self, sizes, losses):
        y = losses
        w2 = 1.0 / y**2
        grid = self.theta_grid()
        h = self.basis(sizes, grid)  # (G, n)
        E, A = _nonneg_two_column(h, y, w2)
        pred = E[:, None] + A[:, None] * h
        with np.errstate(divide="ignore", invalid="ignore"):
            cost = np.sum((np.log(np.maximum(pred, 1e-300)) - np.log(y)) ** 2, axis=1)
        cost[~np.isfinite(cost)] = np.inf
        best = int(np.argmin(cost))
        if not np.isfinite(cost[best]):
            raise FitError(f"{self.name}: no starting point fits these losses")
        x0 = np.concatenate([grid[best], [E[best], A[best]]])
        lo = np.concatenate([self.theta_bounds[0], [0.0, 0.0]])
        hi = np.concatenate([self.theta_bounds[1], [np.inf, np.inf]])
        x0 = np.clip(x0, lo, hi)
        n_theta = len(self.theta_names)

        def residuals(x):
            pred = x[n_theta] + x[n_theta + 1] * self.basis(sizes, x[:n_theta])
            return np.log(np.maximum(pred, 1e-300)) - np.log(y)

        def jacobian(x):
            h = self.basis(sizes, x[:n_theta])
            pred = np.maximum(x[n_theta] + x[n_theta + 1] * h, 1e-300)
            grad_theta = x[n_theta + 1] * self.basis_grad(sizes, x[:n_theta])
            return np.column_stack([grad_theta, np.ones_like(h), h]) / pred[:, None]

        try:
            result = optimize.least_squares(residuals, x0, jac=jacobian, bounds=(lo, hi), x_scale="jac", method="trf",
                                            ftol=1e-7, xtol=1e-7, max_nfev=100)
            x = result.x if result.cost <= 0.5 * cost[best] else x0
        except (ValueError, np.linalg.LinAlgError) as error:  # keep the grid optimum
            x = x0
            raise FitError(f"{self.name}: optimiser failed ({error})") from None
        self._x = x
        self._jac_fn = residuals
        self.params_ = self._named(x)

    def _named(self, x: np.ndarray) -> dict[str, float]:
        """Public parameters from the internal vector (theta..., E, A)."""
        n_theta = len(self.theta_names)
        named = dict(zip(self.theta_names, x[:n_theta]))
        named.update(E=x[n_theta], A=x[n_theta + 1])
        return {k: float(v) for k, v in named.items()}

    def _unnamed(self, params: dict[str, float]) -> np.ndarray:
        """The internal vector from public parameters (inverse of ``_named``)."""
        return np.array([params[k] for k in (*self.theta_names, "E", "A")], dtype=float)

    def _restore(self):
        self._x = self._unnamed(self.params_)

    def _predict(self, sizes):
        n_theta = len(self.theta_names)
        x = self._x
        return x[n_theta] + x[n_theta + 1] * self.basis(sizes, x[:n_theta])

    def _fit_log_sd(self, sizes):
        """Laplace (delta-method) spread of log L(D) from the local curvature of the fit."""
        resid = self.residuals_
        n, p = resid.size, self._x.size
        if n == 0:
            return np.zeros(sizes.shape)
        sigma2 = float(np.sum(resid**2)) / max(n - p, 1)
        sigma2 = max(sigma2, 1e-4**2)
        jac = _numeric_jacobian(lambda x: np.log(self._with(x, self.sizes_)), self._x)
        grad = _numeric_jacobian(lambda x: np.log(self._with(x, sizes)), self._x)
        cov = sigma2 * np.linalg.pinv(jac.T @ jac, rcond=1e-10)
        var = np.einsum("ij,jk,ik->i", grad, cov, grad)
        return np.sqrt(np.clip(var, 0.0, None) + sigma2)

    def _with(self, x, sizes):
        n_theta = len(self.theta_names)
        return np.maximum(x[n_theta] + x[n_theta + 1] * self.basis(sizes, x[:n_theta]), 1e-300)


def _nonneg_two_column(h: np.ndarray, y: np.ndarray, w2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares of y ~ E + A*h with E, A >= 0, for every row of h at once."""
    a = np.sum(w2)
    b = h @ w2
    c = (h**2) @ w2
    py = np.sum(w2 * y)
    phy = (h * y) @ w2
    with np.errstate(divide="ignore", invalid="ignore"):
        det = a * c - b**2
        E = (c * py - b * phy) / det
        A = (a * phy - b * py) / det
        A_only = np.where(c > 0, phy / c, 0.0)
    ok = np.isfinite(E) & np.isfinite(A) & (E >= 0) & (A >= 0)
    # The constrained optimum lies on an edge when the free one is infeasible; compare both edges.
    E_edge, A_edge = np.zeros_like(A_only), A_only
    sse_a_only = np.sum(w2 * (A_only[:, None] * h - y) ** 2, axis=1)
    sse_e_only = np.sum(w2 * (py / a - y) ** 2)
    use_e = sse_e_only < sse_a_only
    E_edge = np.where(use_e, py / a, E_edge)
    A_edge = np.where(use_e, 0.0, A_edge)
    return np.where(ok, E, E_edge), np.where(ok, A, A_edge)


def _numeric_jacobian(fn, x: np.ndarray, rel_step: float = 1e-6) -> np.ndarray:
    f0 = fn(x)
    jac = np.empty((f0.size, x.size))
    for k in range(x.size):
        step = rel_step * max(abs(x[k]), 1e-3)
        xk = x.copy()
        xk[k] += step
        jac[:, k] = (fn(xk) - f0) / step
    return jac
