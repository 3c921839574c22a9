"""The one fitted-law value: :class:`Fit` predicts, gives intervals and round-trips through JSON.

Every law (``lensllm_hf.engine.laws``) and the ``default`` method produce a :class:`Fit`; the ranking,
``fit --json``, ``selection.json``, the plot and the model cards carry it and rebuild it with
:meth:`Fit.from_dict`, so every re-prediction agrees exactly with the first one.

The predictive distribution of log L at a size D has the law's curve as its median, and on each
side of it the shape of a normal whose variance is the sum of three terms, all stored in
:attr:`Fit.terms`:

- ``noise_var``: the residual variance of one point in log space;
- the parameter spread: ``cov.<i>.<j>``, the covariance of the law's coordinates (see
  :data:`FORMS`), carried to log L(D) by its gradient (the delta method);
- extrapolation: at d doublings of D beyond ``largest_size``, the larger of
  ``extrapolation_sd_per_doubling`` * d and ``extrapolation_sd_far`` * d ** ``extrapolation_exponent``
  (0 and 1 when absent): a curve's residuals cannot say how it bends beyond its last point.
  Beyond ``extrapolation_horizon`` doublings (where present: the farthest the method's backtest
  predicted), that spread is multiplied by (d / horizon) ** ``extrapolation_margin``.
  Below the median these two spreads are ``extrapolation_sd_per_doubling_below`` and
  ``extrapolation_sd_far_below`` when the fit has them: curves of one task tend to bend one way
  (fine-tuning curves steepen), so the truth is likelier to fall on one side of a line. Their
  ``_relative`` twins, where present, are the spread of one candidate's error about the others'
  (what is left of the bend when the part they all share is taken out); P(best) uses them
  (:meth:`Fit.log_sds`).

With no ``_below`` terms the distribution is log-normal; with them it is a split log-normal
(each half a normal's, of its own spread, and P(below the median) = 1/2), and a ``level``
interval leaves (1 - level) / 2 on either side.

Example:
    >>> fit = Fit(law="ats", params={"a": 1.5, "b": -0.1}, sizes=(200.0, 400.0, 800.0),
    ...           losses=(2.7, 2.5, 2.35), used=(True, True, True),
    ...           terms={"noise_var": 1e-4, "largest_size": 800.0, "extrapolation_sd_per_doubling": 0.02})
    >>> round(float(fit.predict([1600])[0]), 4)   # exp(1.5 - 0.1 log 1600)
    2.143
    >>> Fit.from_dict(fit.to_dict()) == fit
    True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import stats

from ..errors import ConfigError, FitError

__all__ = ["EXTRAPOLATION_SD_PER_DOUBLING", "FORMS", "Fit", "FitError", "Form", "Prediction", "check_level", "level_z"]

#: Extra log-loss spread per doubling of extrapolation beyond the largest fitted size, used when a
#: method cannot estimate it from the table itself (see ``default.extrapolation_spread``). Measured
#: on held-out columns of the two shared curve tables (benchmarks/interval_coverage.py).
EXTRAPOLATION_SD_PER_DOUBLING = 0.022

#: Most points, parameters, terms and warnings a fit read from a file may hold (hostile input).
MAX_POINTS = 10_000
MAX_ENTRIES = 200
MAX_TEXT = 2_000


@dataclass(frozen=True)
class Form:
    """How a law's curve follows from its parameters.

    Attributes:
        params: the parameter names a fit of this law must carry.
        coords: the coordinates its parameter covariance is expressed in (``cov.<i>.<j>`` terms).
        to_coords: parameters -> coordinate vector.
        log_curve: (coordinate vector, sizes) -> log L at each size.
        grad: optional exact gradient of ``log_curve`` (sizes -> (n, n_coords)); else numeric.
    """

    params: tuple[str, ...]
    coords: tuple[str, ...]
    to_coords: Callable[[Mapping[str, float]], np.ndarray]
    log_curve: Callable[[np.ndarray, np.ndarray], np.ndarray]
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def _log_d(sizes: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(sizes)


def _loglinear_log(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        out = x[0] + x[1] * _log_d(sizes)
    return np.where(sizes > 0, out, np.inf if x[1] < 0 else -np.inf)


def _loglinear_grad(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(sizes), _log_d(np.maximum(sizes, 1e-300))])


def _power_log(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    beta, E, B = x
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        value = E + B * np.exp(np.clip(-beta * _log_d(sizes), -700, 700))
        return np.log(np.maximum(value, 1e-300))


def _power_grad(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    beta, E, B = x
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        log_d = _log_d(sizes)
        power = np.exp(np.clip(-beta * log_d, -700, 700))
        value = np.maximum(E + B * power, 1e-300)
        g = np.column_stack([-B * power * log_d, np.ones_like(power), power]) / value[:, None]
    return np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


def _rectified_coords(p: Mapping[str, float]) -> np.ndarray:
    beta, F = p["beta"], p["F"]
    if not (F > 0 and beta > 0):
        raise FitError(f"rectified-form fit needs F > 0 and beta > 0, got F={F!r}, beta={beta!r}")
    return np.array([beta, math.log(F) / beta, p["E"], p["B"] / F])


def _rectified_log(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    beta, log_dl, E, A = x
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        ratio = np.where(sizes > 0, np.exp(np.clip(beta * (_log_d(np.maximum(sizes, 1e-300)) - log_dl), -700, 700)), 0.0)
        return np.log(np.maximum(E + A / (1.0 + ratio), 1e-300))


def _rectified_grad(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    beta, log_dl, E, A = x
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        offset = np.where(sizes > 0, _log_d(np.maximum(sizes, 1e-300)) - log_dl, 0.0)
        ratio = np.where(sizes > 0, np.exp(np.clip(beta * offset, -700, 700)), 0.0)
        h = 1.0 / (1.0 + ratio)
        value = np.maximum(E + A * h, 1e-300)
        bend = A * h * h * ratio  # -d(A h) / d(beta * offset)
        g = np.column_stack([-bend * offset, bend * beta, np.ones_like(h), h]) / value[:, None]
    return np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


_LOGLINEAR = Form(("a", "b"), ("a", "b"), lambda p: np.array([p["a"], p["b"]]), _loglinear_log, _loglinear_grad)
_POWER = Form(("B", "beta", "E"), ("beta", "E", "B"), lambda p: np.array([p["beta"], p["E"], p["B"]]), _power_log,
              _power_grad)
_RECTIFIED = Form(("B", "F", "beta", "E"), ("beta", "log_Dl", "E", "A"), _rectified_coords, _rectified_log,
                  _rectified_grad)

#: Every law name a :class:`Fit` may carry, and the form of its curve.
#: ``ats``: AtS's line log L = a + b log D through the power phase (Lin et al., 2024);
#: ``local-loglog``: the ``default`` method's line (AtS's line fitted locally and shrunk, see
#: ``lensllm_hf.engine.methods.default``); ``power``: B D^-beta + E; ``rectified``: B / (F + D^beta) + E;
#: ``lensllm``: the rectified form with F = F(Theta, t) from the NTK probe's spectrum.
FORMS: Mapping[str, Form] = MappingProxyType({
    "ats": _LOGLINEAR,
    "local-loglog": _LOGLINEAR,
    "power": _POWER,
    "rectified": _RECTIFIED,
    "lensllm": _RECTIFIED,
})

#: Terms every fit carries (besides ``cov.<i>.<j>`` for each pair of its form's coordinates).
REQUIRED_TERMS = ("noise_var", "largest_size", "extrapolation_sd_per_doubling")
#: The extrapolation spreads, which cannot be negative (all but the first are optional).
_SPREAD_TERMS = tuple(f"extrapolation_sd_{name}{side}" for side in ("", "_below", "_relative")
                      for name in ("per_doubling", "far"))


def check_level(level: Any, where: str = "level") -> float:
    """``level`` as a float strictly between 0 and 1, else a one-line error."""
    if isinstance(level, bool) or not isinstance(level, int | float) or not 0.0 < float(level) < 1.0:
        raise ConfigError(f"{where} must be a number between 0 and 1 (e.g. 0.9 for a 90 % interval), got {level!r}",
                          key=where, value=level)
    return float(level)


def level_z(level: float) -> float:
    """The standard-normal quantile of a two-sided ``level`` interval."""
    return _two_sided_z(check_level(level))


@functools.lru_cache(maxsize=64)
def _two_sided_z(level: float) -> float:  # cached: every interval asks, and scipy's ppf is slow
    return float(stats.norm.ppf(0.5 + level / 2))


def cov_key(i: str, j: str) -> str:
    return f"cov.{i}.{j}"


@dataclass(frozen=True)
class Prediction:
    """A fit's prediction at one size: the loss and its central ``level`` interval.

    What a ranking row, a model card and ``lensllm predict`` report; made by :meth:`Fit.prediction`.
    """

    at: float
    predicted_loss: float
    interval: tuple[float, float]
    level: float


@dataclass(frozen=True)
class Fit:
    """One fitted scaling law: it predicts, gives intervals, and is plain JSON.

    Attributes:
        law: a name of :data:`FORMS`.
        params: the law's parameters (at least ``FORMS[law].params``).
        sizes, losses: every point the fit saw, ascending sizes.
        used: which of them the fit used (pre-power points and D = 0 may be unused).
        terms: every term of the interval (module docstring), plus informational numbers such as
            a line's ``bandwidth``.
        warnings: what a reader of the prediction must know (free F, stream-mode runs...).
        basis: which predictor made the prediction and why, in one sentence, where a method chose
            among several (``default``: the law, the observed order or a blend, and the backtest
            evidence for it); empty otherwise, and in fits written before it existed.
    """

    law: str
    params: Mapping[str, float]
    sizes: tuple[float, ...]
    losses: tuple[float, ...]
    used: tuple[bool, ...]
    terms: Mapping[str, float]
    warnings: tuple[str, ...] = ()
    basis: str = ""
    _coords: np.ndarray = field(init=False, repr=False, compare=False)
    _cov: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.law not in FORMS:
            raise FitError(f"unknown law {self.law!r}; known laws: {', '.join(sorted(FORMS))}", law=self.law)
        form = FORMS[self.law]
        set_ = object.__setattr__
        set_(self, "params", MappingProxyType({str(k): float(v) for k, v in dict(self.params).items()}))
        set_(self, "terms", MappingProxyType({str(k): float(v) for k, v in dict(self.terms).items()}))
        set_(self, "sizes", tuple(float(s) for s in self.sizes))
        set_(self, "losses", tuple(float(v) for v in self.losses))
        set_(self, "used", tuple(bool(u) for u in self.used))
        set_(self, "warnings", tuple(str(w) for w in self.warnings))
        set_(self, "basis", str(self.basis))
        missing = [p for p in form.params if p not in self.params]
        if missing:
            raise FitError(f"a {self.law} fit needs the parameters {', '.join(form.params)}; missing {', '.join(missing)}",
                           law=self.law, term=missing[0])
        if not (len(self.sizes) == len(self.losses) == len(self.used)):
            raise FitError("a fit's sizes, losses and used must have the same length")
        missing = [t for t in REQUIRED_TERMS if t not in self.terms]
        if missing:
            raise FitError(f"a fit needs the interval terms {', '.join(REQUIRED_TERMS)}; missing {', '.join(missing)}",
                           law=self.law, term=missing[0])
        bad = [k for k, v in {**self.params, **self.terms}.items() if not math.isfinite(v)]
        if bad:
            raise FitError(f"fit value {bad[0]!r} is not a finite number", law=self.law, term=bad[0])
        negative = [t for t in ("noise_var", "extrapolation_horizon", "extrapolation_margin", *_SPREAD_TERMS)
                    if self.terms.get(t, 0.0) < 0]
        if negative:
            raise FitError(f"a fit's {negative[0]} must be >= 0", law=self.law, term=negative[0])
        if not 0.0 < self.terms.get("extrapolation_exponent", 1.0) <= 4.0:
            raise FitError("a fit's extrapolation_exponent must be in (0, 4]", law=self.law, term="extrapolation_exponent")
        n = len(form.coords)
        cov = np.zeros((n, n))
        for a in range(n):
            for b in range(a, n):
                cov[a, b] = cov[b, a] = self.terms.get(cov_key(form.coords[a], form.coords[b]), 0.0)
        if np.any(np.diag(cov) < 0):
            raise FitError("a fit's parameter variances (cov.<i>.<i> terms) must be >= 0")
        set_(self, "_coords", form.to_coords(self.params))
        set_(self, "_cov", cov)

    # -- predictions -------------------------------------------------------------------
    def predict(self, sizes) -> np.ndarray:
        """Predicted loss at each size.

        Example:
            >>> fit = Fit.from_dict({"law": "power", "params": {"B": 4.0, "beta": 0.5, "E": 1.0},
            ...     "sizes": [100, 400], "losses": [1.4, 1.2], "used": [True, True],
            ...     "terms": {"noise_var": 0.0, "largest_size": 400, "extrapolation_sd_per_doubling": 0.0}})
            >>> fit.predict([100, 400]).tolist()
            [1.4, 1.2]
        """
        return np.exp(self.log_predict(sizes))

    def prediction(self, at: float, level: float = 0.9) -> Prediction:
        """The loss at ``at`` examples and its ``level`` interval, as one value.

        Example:
            >>> fit = Fit("ats", {"a": 1.0, "b": -0.1}, (100.0, 200.0, 400.0), (1.7, 1.6, 1.5),
            ...           (True, True, True), {"noise_var": 1e-4, "largest_size": 400.0,
            ...           "extrapolation_sd_per_doubling": 0.02})
            >>> p = fit.prediction(6400, level=0.5)
            >>> p.interval[0] < p.predicted_loss < p.interval[1], p.level
            (True, 0.5)
        """
        level = check_level(level)
        low, high = self.predict_interval([at], level)
        return Prediction(float(at), float(self.predict([at])[0]), (float(low[0]), float(high[0])), level)

    def log_predict(self, sizes) -> np.ndarray:
        """log of :meth:`predict`: the median of log L at each size."""
        return FORMS[self.law].log_curve(self._coords, _sizes(sizes))

    @property
    def has_relative_spread(self) -> bool:
        """Whether the fit carries ``_relative`` spreads (see :meth:`log_sds`)."""
        return "extrapolation_sd_per_doubling_relative" in self.terms

    def log_sds(self, sizes, relative: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(below, above): the spread of log L at each size on either side of the median (the
        module docstring): noise, parameter spread and extrapolation, equal on a symmetric fit.

        ``relative=True``: the spread of this candidate's loss relative to the other candidates'
        of its table, symmetric, with the ``_relative`` extrapolation terms (the part of the bend
        that all candidates share left out); the full spreads where the fit has none.
        :attr:`~lensllm_hf.engine.ranking.CandidateFit.p_best` uses it.

        Example:
            >>> fit = Fit("ats", {"a": 1.0, "b": -0.1}, (100.0, 200.0, 400.0), (1.7, 1.6, 1.5),
            ...           (True, True, True), {"noise_var": 0.0, "largest_size": 400.0,
            ...           "extrapolation_sd_per_doubling": 0.01,
            ...           "extrapolation_sd_per_doubling_below": 0.03})
            >>> [round(float(sd[0]), 6) for sd in fit.log_sds([1600])]   # 2 doublings ahead
            [0.06, 0.02]
        """
        sizes = _sizes(sizes)
        g = self._gradient(sizes)
        spread = np.einsum("ij,jk,ik->i", g, self._cov, g) if self._cov.any() else np.zeros(sizes.shape)
        base = self.terms["noise_var"] + np.clip(spread, 0.0, None)
        doublings = np.maximum(np.log2(np.maximum(sizes, 1.0) / max(self.terms["largest_size"], 1.0)), 0.0)
        bent = doublings ** self.terms.get("extrapolation_exponent", 1.0)
        horizon = self.terms.get("extrapolation_horizon", 0.0)
        beyond = (np.maximum(doublings / horizon, 1.0) ** self.terms.get("extrapolation_margin", 0.0)
                  if horizon > 0 else 1.0)
        linear, far = self.terms["extrapolation_sd_per_doubling"], self.terms.get("extrapolation_sd_far", 0.0)
        if relative and self.has_relative_spread:
            own = beyond * np.maximum(self.terms["extrapolation_sd_per_doubling_relative"] * doublings,
                                      self.terms.get("extrapolation_sd_far_relative", 0.0) * bent)
            return np.sqrt(base + own**2), np.sqrt(base + own**2)
        above = beyond * np.maximum(linear * doublings, far * bent)
        below = beyond * np.maximum(self.terms.get("extrapolation_sd_per_doubling_below", linear) * doublings,
                                    self.terms.get("extrapolation_sd_far_below", far) * bent)
        return np.sqrt(base + below**2), np.sqrt(base + above**2)

    def predict_interval(self, sizes, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """A central ``level`` interval for the loss at each size: (1 - level) / 2 of the
        predictive distribution lies below it, as much above.

        Example:
            >>> fit = Fit("ats", {"a": 1.0, "b": -0.1}, (100.0, 200.0, 400.0), (1.7, 1.6, 1.5),
            ...           (True, True, True), {"noise_var": 1e-4, "largest_size": 400.0,
            ...           "extrapolation_sd_per_doubling": 0.02})
            >>> lo, hi = fit.predict_interval([400, 6400])
            >>> bool(hi[1] / lo[1] > hi[0] / lo[0])   # wider further out
            True
        """
        z = level_z(level)
        centre = self.log_predict(sizes)
        below, above = self.log_sds(sizes)
        with np.errstate(over="ignore"):  # a bound past the float range is infinite, and says so
            return np.exp(centre - z * below), np.exp(centre + z * above)

    @property
    def transition_size(self) -> float | None:
        """The smallest positive size the fit used (first point of the power phase for lines)."""
        used = [s for s, u in zip(self.sizes, self.used) if u and s > 0]
        return min(used) if used else None

    @property
    def largest_size(self) -> float:
        return self.terms["largest_size"]

    def _gradient(self, sizes: np.ndarray) -> np.ndarray:
        form = FORMS[self.law]
        if form.grad is not None:
            return form.grad(self._coords, sizes)
        x = self._coords
        f0 = form.log_curve(x, sizes)
        g = np.empty((sizes.size, x.size))
        for k in range(x.size):
            step = 1e-6 * max(abs(x[k]), 1e-3)
            xk = x.copy()
            xk[k] += step
            g[:, k] = (form.log_curve(xk, sizes) - f0) / step
        return np.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data; :meth:`from_dict` rebuilds an equal fit (``basis`` only when set)."""
        out = {
            "law": self.law,
            "params": dict(self.params),
            "sizes": list(self.sizes),
            "losses": list(self.losses),
            "used": list(self.used),
            "terms": dict(self.terms),
            "warnings": list(self.warnings),
        }
        if self.basis:
            out["basis"] = self.basis
        return out

    @classmethod
    def from_dict(cls, data: Any, where: str = "fit") -> Fit:
        """Rebuild a fit from :meth:`to_dict` output, checking every field (files are untrusted).

        Raises :class:`FitError`, one line naming the field, for anything malformed.

        Example:
            >>> Fit.from_dict({"law": "cubic"})
            Traceback (most recent call last):
            ...
            lensllm_hf.errors.FitError: fit.law: unknown law 'cubic'; known laws: ats, lensllm, local-loglog, power, rectified
        """
        if not isinstance(data, Mapping):
            raise FitError(f"{where}: expected an object with law, params, sizes, losses, used, terms")
        law = data.get("law")
        if not isinstance(law, str) or law not in FORMS:
            shown = law if isinstance(law, str) and len(law) <= 60 else type(law).__name__
            raise FitError(f"{where}.law: unknown law {shown!r}; known laws: {', '.join(sorted(FORMS))}",
                           term=f"{where}.law")
        params = _number_map(data.get("params"), f"{where}.params")
        terms = _number_map(data.get("terms"), f"{where}.terms")
        sizes = _number_list(data.get("sizes"), f"{where}.sizes")
        losses = _number_list(data.get("losses"), f"{where}.losses")
        used = data.get("used")
        if not isinstance(used, list) or not all(isinstance(u, bool) for u in used):
            raise FitError(f"{where}.used: expected a list of true/false, one per size", law=law, term=f"{where}.used")
        if not len(sizes) == len(losses) == len(used):
            raise FitError(f"{where}: sizes, losses and used must have the same length "
                           f"({len(sizes)}, {len(losses)}, {len(used)})")
        if any(s < 0 for s in sizes) or any(v <= 0 for v in losses):
            raise FitError(f"{where}: sizes must be >= 0 and losses > 0")
        warnings = data.get("warnings", [])
        if (not isinstance(warnings, list) or len(warnings) > MAX_ENTRIES
                or not all(isinstance(w, str) and len(w) <= MAX_TEXT for w in warnings)):
            raise FitError(f"{where}.warnings: expected a list of at most {MAX_ENTRIES} short strings", law=law,
                           term=f"{where}.warnings")
        basis = data.get("basis", "")
        if not isinstance(basis, str) or len(basis) > MAX_TEXT:
            raise FitError(f"{where}.basis: expected a short string", law=law, term=f"{where}.basis")
        unknown = set(data) - {"law", "params", "sizes", "losses", "used", "terms", "warnings", "basis"}
        if unknown:
            raise FitError(f"{where}: unknown field {sorted(unknown)[0]!r}; a fit has law, params, sizes, losses, "
                           "used, terms, warnings, basis")
        try:
            return cls(law, params, tuple(sizes), tuple(losses), tuple(used), terms, tuple(warnings), basis)
        except FitError as error:
            raise FitError(f"{where}: {error}", law=law, term=error.term and f"{where}.{error.term}") from None

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"Fit({self.law}: {inner}; {sum(self.used)} of {len(self.sizes)} points used)"


def _sizes(sizes) -> np.ndarray:
    try:
        out = np.atleast_1d(np.asarray(sizes, dtype=float))
    except (TypeError, ValueError):
        raise ConfigError(f"sizes must be numbers, got {sizes!r}", key="sizes", value=sizes) from None
    if out.ndim != 1 or not (np.isfinite(out).all() and (out >= 0).all()):
        raise ConfigError("sizes to predict at must be finite numbers >= 0", key="sizes", value=sizes)
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_map(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or len(value) > MAX_ENTRIES:
        raise FitError(f"{where}: expected an object of at most {MAX_ENTRIES} name: number entries", term=where)
    for k, v in value.items():
        if not isinstance(k, str) or len(k) > 100 or not _number(v):
            shown = k if isinstance(k, str) and len(k) <= 100 else "?"
            raise FitError(f"{where}.{shown}: expected a finite number", term=f"{where}.{shown}")
    return {k: float(v) for k, v in value.items()}


def _number_list(value: Any, where: str) -> list[float]:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) > MAX_POINTS:
        raise FitError(f"{where}: expected a list of at most {MAX_POINTS} numbers", term=where)
    if not all(_number(v) for v in value):
        raise FitError(f"{where}: every entry must be a finite number", term=where)
    return [float(v) for v in value]
