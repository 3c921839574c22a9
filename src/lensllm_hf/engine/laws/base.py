"""What every scaling law shares: the scikit-learn shape, and the :class:`~lensllm_hf.engine.fit.Fit` it produces."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np
from scipy import optimize

from ..curves import validate_points
from ..fit import EXTRAPOLATION_SD_PER_DOUBLING, FORMS, Fit, FitError, cov_key

__all__ = ["FitError", "ScalingLaw", "SeparableLaw"]


class ScalingLaw:
    """A law L(D) fitted to (subset size, test loss) points.

    Parameters live in ``__init__``; :meth:`fit` returns ``self``; fitted values end in ``_``:
    ``params_`` (a dict), ``sizes_``, ``losses_`` (every point given), ``used_`` (which of them the
    law used), ``residuals_`` (log-loss residuals of the used points) and ``transition_size_``
    (first size of the power phase, see :func:`detect_transition`). :meth:`to_fit` returns the
    one serialisable :class:`~lensllm_hf.engine.fit.Fit`; :meth:`predict` and :meth:`predict_interval`
    are its own.

    Example:
        >>> from lensllm_hf.engine.laws import RectifiedLaw
        >>> law = RectifiedLaw().fit([0, 200, 400, 800, 1600], [4.0, 3.1, 3.0, 2.8, 2.6])
        >>> lo, hi = law.predict_interval([1_638_400], level=0.9)
        >>> bool(lo[0] < law.predict([1_638_400])[0] < hi[0])
        True
        >>> law.to_fit().law
        'rectified'
    """

    name: ClassVar[str] = "law"
    min_points: ClassVar[int] = 3

    params_: dict[str, float]
    sizes_: np.ndarray
    losses_: np.ndarray
    used_: np.ndarray
    residuals_: np.ndarray
    transition_size_: float | None

    #: Extra log-loss spread per doubling beyond the largest used size (see ``lensllm_hf.engine.fit``).
    extrapolation_sd_per_doubling: float = EXTRAPOLATION_SD_PER_DOUBLING

    def fit(self, sizes, losses) -> Self:
        sizes, losses = validate_points(sizes, losses, where=f"{self.name} fit", min_points=self.min_points)
        used = self._used(sizes, losses)
        if used.sum() < self.min_points:
            raise FitError(f"{self.name} fit: only {int(used.sum())} usable points, at least {self.min_points} "
                           "are needed; raise the budget or add subset sizes", law=self.name)
        self.sizes_, self.losses_, self.used_ = sizes, losses, used
        self._fit(sizes[used], losses[used])
        self._fit_value = self._make_fit()
        self.residuals_ = self._fit_value.log_predict(sizes[used]) - np.log(losses[used])
        from .phases import detect_transition

        positive = sizes > 0
        self.transition_size_ = detect_transition(sizes[positive], losses[positive])
        return self

    def to_fit(self) -> Fit:
        """The fitted law as the one serialisable value the ranking, cards and plots carry."""
        self._check_fitted()
        return self._fit_value

    def predict(self, sizes) -> np.ndarray:
        """Predicted test loss at each subset size."""
        return self.to_fit().predict(sizes)

    def predict_interval(self, sizes, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """A ``level`` interval for the loss at each size (log-normal, see ``lensllm_hf.engine.fit``)."""
        return self.to_fit().predict_interval(sizes, level)

    # -- for subclasses ---------------------------------------------------------------
    def _used(self, sizes: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """Which points the law fits (all by default)."""
        return np.ones(sizes.shape, dtype=bool)

    def _fit(self, sizes: np.ndarray, losses: np.ndarray) -> None:
        raise NotImplementedError

    def _make_fit(self) -> Fit:
        raise NotImplementedError

    def _warnings(self) -> tuple[str, ...]:
        return ()

    def _new_fit(self, params: dict[str, float], noise_var: float, cov: np.ndarray, extra: dict | None = None) -> Fit:
        """A :class:`Fit` of this law with its interval terms (``cov`` in the form's coordinates)."""
        coords = FORMS[self.name].coords
        terms = {"noise_var": float(noise_var), "largest_size": float(self.sizes_[self.used_].max()),
                 "extrapolation_sd_per_doubling": float(self.extrapolation_sd_per_doubling)}
        for a in range(len(coords)):
            for b in range(a, len(coords)):
                terms[cov_key(coords[a], coords[b])] = float(cov[a, b])
        terms.update(extra or {})
        return Fit(self.name, params, tuple(self.sizes_), tuple(self.losses_), tuple(bool(u) for u in self.used_),
                   terms, self._warnings())

    def _check_fitted(self) -> None:
        if not hasattr(self, "_fit_value"):
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
            raise FitError(f"{self.name}: no starting point fits these losses", law=self.name)
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
        except (ValueError, np.linalg.LinAlgError) as error:
            raise FitError(f"{self.name}: optimiser failed ({error})", law=self.name) from None
        x = result.x if result.cost <= 0.5 * cost[best] else x0
        self._x = x
        self.params_ = self._named(x)

    @property
    def _internal_coords(self) -> tuple[str, ...]:
        """Names of the internal vector (theta..., E, A): when they are the form's coordinates
        the covariance needs no change of variables."""
        return (*self.theta_names, "E", "A")

    def _named(self, x: np.ndarray) -> dict[str, float]:
        """Public parameters from the internal vector (theta..., E, A)."""
        n_theta = len(self.theta_names)
        named = dict(zip(self.theta_names, x[:n_theta]))
        named.update(E=x[n_theta], A=x[n_theta + 1])
        return {k: float(v) for k, v in named.items()}

    def _make_fit(self) -> Fit:
        """Laplace (delta-method) spread: the parameter covariance in the form's coordinates."""
        form = FORMS[self.name]
        coords = form.to_coords(self.params_)
        sizes, losses = self.sizes_[self.used_], self.losses_[self.used_]
        resid = form.log_curve(coords, sizes) - np.log(losses)
        n, p = resid.size, coords.size
        sigma2 = max(float(np.sum(resid**2)) / max(n - p, 1), 1e-4**2)
        # The covariance is taken in the law's own (bounded) parameters, then carried to the form's
        # coordinates: a parameter held at its bound (LensLLM's t) adds no spurious spread.
        if self._internal_coords == form.coords:
            to_coords = np.eye(coords.size)
        else:
            to_coords = _numeric_jacobian(lambda x: form.to_coords(self._named(x)), self._x)
        curve_grad = form.grad(coords, sizes) if form.grad is not None else _numeric_jacobian(
            lambda x: form.log_curve(x, sizes), coords)
        jac = curve_grad @ to_coords
        cov_x = sigma2 * np.linalg.pinv(jac.T @ jac, rcond=1e-10)
        cov = to_coords @ cov_x @ to_coords.T
        return self._new_fit(self.params_, sigma2, cov)


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
