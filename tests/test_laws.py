"""The scaling laws: parameter recovery, intervals, serialisation, determinism, no torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lensllm_hf.engine.fit import Fit
from lensllm_hf.engine.laws import LAWS, AtSLaw, FitError, LensLLMLaw, PowerLaw, RectifiedLaw, detect_transition, spectrum_F

SIZES = np.array([0, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 51200], dtype=float)
TARGET = 1_638_400.0


def rectified(D, B, F, beta, E):
    return B / (F + np.asarray(D, dtype=float) ** beta) + E


def noisy(losses, sigma, seed):
    return losses * np.exp(np.random.default_rng(seed).normal(0, sigma, len(losses)))


@settings(max_examples=25, deadline=None)
@given(
    beta=st.floats(0.3, 0.9),
    log_dl=st.floats(np.log(300), np.log(5000)),
    E=st.floats(0.3, 1.5),
    A=st.floats(1.0, 3.0),
    seed=st.integers(0, 10_000),
)
def test_rectified_recovers_curve_and_slope(beta, log_dl, E, A, seed):
    F = np.exp(beta * log_dl)
    truth = rectified(SIZES, A * F, F, beta, E)
    law = RectifiedLaw().fit(SIZES, noisy(truth, 0.003, seed))
    # Inside the data the curve is recovered closely, and the slope of the power phase too.
    assert np.max(np.abs(np.log(law.predict(SIZES) / truth))) < 0.02
    assert law.params_["beta"] == pytest.approx(beta, rel=0.35)
    # Extrapolation by 32x stays within the law's own 90 % interval.
    far = np.array([1_638_400.0])
    lo, hi = law.predict_interval(far, 0.9)
    assert lo[0] <= rectified(far, A * F, F, beta, E)[0] <= hi[0]


def test_rectified_exact_recovery_without_noise():
    truth = rectified(SIZES, 40.0, 20.0, 0.5, 1.2)
    law = RectifiedLaw().fit(SIZES, truth)
    assert law.predict([TARGET])[0] == pytest.approx(rectified(TARGET, 40.0, 20.0, 0.5, 1.2), rel=1e-3)
    assert law.params_["E"] == pytest.approx(1.2, rel=0.02)
    assert law.params_["beta"] == pytest.approx(0.5, rel=0.02)


@settings(max_examples=20, deadline=None)
@given(B=st.floats(2.0, 20.0), beta=st.floats(0.1, 0.6), E=st.floats(0.2, 1.5), seed=st.integers(0, 10_000))
def test_power_recovers(B, beta, E, seed):
    D = SIZES[1:]
    truth = B * D**-beta + E
    law = PowerLaw().fit(D, noisy(truth, 0.002, seed))
    assert np.max(np.abs(np.log(law.predict(D) / truth))) < 0.01
    assert law.predict([TARGET])[0] == pytest.approx(B * TARGET**-beta + E, rel=0.08)


def test_power_ignores_the_zero_shot_point():
    truth = 5.0 * SIZES[1:] ** -0.3 + 1.0
    law = PowerLaw().fit(SIZES, np.r_[9.0, truth])
    assert law.used_[0] == False and law.used_[1:].all()  # noqa: E712  (seen, not used)
    assert law.params_["beta"] == pytest.approx(0.3, rel=1e-3)


def _spectrum(seed=0, k=16):
    rng = np.random.default_rng(seed)
    return np.sort(rng.lognormal(-2.0, 1.5, k)), rng.uniform(0.3, 1.0, k)


def test_lensllm_fits_t_along_the_probe_spectrum():
    """With a probe, F = F(Theta, t) at the fitted eta*t, and the curve is recovered."""
    lam, coef = _spectrum()
    eta_t = 3.0
    F = float(spectrum_F(lam, coef, eta_t))
    truth = rectified(SIZES, 6.0, F, 0.35, 0.8)
    law = LensLLMLaw(eigenvalues=lam, coefficients=coef).fit(SIZES, noisy(truth, 0.001, 1))
    assert law.params_["F"] == pytest.approx(float(spectrum_F(lam, coef, law.params_["eta_t"])), rel=1e-9)
    assert 0 < law.params_["F"] <= float(np.sum(coef**2)) * (1 + 1e-12)
    assert np.max(np.abs(np.log(law.predict(SIZES) / truth))) < 0.01
    # At D = 0 the curve gives the zero-shot loss B/F + E.
    assert law.predict([0])[0] == pytest.approx(law.params_["B"] / law.params_["F"] + law.params_["E"], rel=1e-9)
    assert law.to_fit().warnings == ()


def test_lensllm_keeps_F_inside_what_the_spectrum_allows():
    """A curve that wants a huge F (late transition) gets F at its ceiling ||r||^2, not beyond."""
    lam, coef = _spectrum(1)
    truth = rectified(SIZES, 4000.0, 1000.0, 0.9, 1.0)
    law = LensLLMLaw(eigenvalues=lam, coefficients=coef).fit(SIZES, truth)
    assert law.params_["F"] <= float(np.sum(coef**2)) * (1 + 1e-9)


def test_lensllm_without_probe_is_the_rectified_law_and_says_so():
    losses = noisy(rectified(SIZES, 40.0, 20.0, 0.5, 1.2), 0.005, 2)
    free = LensLLMLaw().fit(SIZES, losses)
    assert free.predict([TARGET]) == RectifiedLaw().fit(SIZES, losses).predict([TARGET])
    assert "no NTK probe" in free.to_fit().warnings[0]


def test_lensllm_rejects_a_malformed_spectrum():
    with pytest.raises(FitError, match="same length"):
        LensLLMLaw(eigenvalues=[1.0, 2.0], coefficients=[1.0]).fit(SIZES, rectified(SIZES, 6.0, 2.5, 0.35, 0.8))


def test_ats_is_a_line_in_log_log_on_the_power_phase():
    D = SIZES[1:]
    flat = np.array([3.0, 2.99, 2.985])  # pre-power phase: barely moves
    power = noisy(2.98 * (D[3:] / D[3]) ** -0.2, 0.002, 5)
    law = AtSLaw().fit(D, np.r_[flat, power])
    assert law.transition_size_ == D[3] == law.to_fit().transition_size
    assert law.to_fit().used == (False, False, False, *([True] * (D.size - 3)))
    assert law.params_["b"] == pytest.approx(-0.2, abs=0.01)
    assert law.predict([TARGET])[0] == pytest.approx(2.98 * (TARGET / D[3]) ** -0.2, rel=0.05)


def test_transition_detection_finds_the_knee():
    D = np.array([200, 400, 800, 1600, 3200, 6400, 12800, 25600], dtype=float)
    losses = noisy(np.where(D < 1600, 3.0 - 0.001 * np.log2(D / 200), 3.0 * (D / 1600) ** -0.15), 0.0005, 0)
    assert detect_transition(D, losses) == 1600.0
    # A noisy straight line throughout: all but the first point is power phase (as in AtS).
    assert detect_transition(D, noisy(5 * D**-0.1, 0.002, 3)) == 400.0


def test_interval_contains_prediction_and_widens_with_distance():
    law = RectifiedLaw().fit(SIZES, noisy(rectified(SIZES, 40.0, 20.0, 0.5, 1.2), 0.01, 3))
    sizes = np.array([1e5, 1e6, 1e7])
    lo, hi = law.predict_interval(sizes, 0.9)
    centre = law.predict(sizes)
    assert np.all(lo < centre) and np.all(centre < hi)
    assert np.all(np.diff(np.log(hi / lo)) > 0)
    lo80, hi80 = law.predict_interval(sizes, 0.8)
    assert np.all(lo80 > lo) and np.all(hi80 < hi)


def test_interval_coverage_on_synthetic_curves():
    """Intervals at a held-out point 4x beyond the data, over 60 noisy curves: near their level or
    above it, wider at a higher level, and not so wide that a 50 % interval covers (nearly) every point."""
    hits = {0.5: [], 0.9: []}
    for seed in range(60):
        rng = np.random.default_rng(seed)
        beta, F, E = rng.uniform(0.3, 0.8), rng.uniform(5, 200), rng.uniform(0.5, 1.5)
        B = F * rng.uniform(1.0, 3.0)
        observed = noisy(rectified(SIZES, B, F, beta, E), 0.01, seed)
        law = RectifiedLaw().fit(SIZES[:-2], observed[:-2])
        for level, found in hits.items():
            lo, hi = law.predict_interval([SIZES[-1]], level)
            found.append(lo[0] <= observed[-1] <= hi[0])
    covered = {level: float(np.mean(found)) for level, found in hits.items()}
    assert covered[0.9] >= 0.8 and covered[0.5] >= 0.4
    assert covered[0.5] < covered[0.9]
    assert covered[0.5] <= 0.9


@pytest.mark.parametrize("name", sorted(LAWS))
def test_round_trip_through_dict_predicts_exactly_the_same(name):
    losses = noisy(rectified(SIZES, 40.0, 20.0, 0.5, 1.2), 0.005, 7)
    kwargs = dict(zip(("eigenvalues", "coefficients"), _spectrum())) if name == "lensllm" else {}
    fit = LAWS[name](**kwargs).fit(SIZES, losses).to_fit()
    again = Fit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert again == fit
    at = [TARGET, 1e5, 0.0]
    assert again.predict(at).tolist() == fit.predict(at).tolist()
    for a, b in zip(again.predict_interval(at, 0.8), fit.predict_interval(at, 0.8)):
        assert a.tolist() == b.tolist()


@pytest.mark.parametrize("name", sorted(LAWS))
def test_fits_are_deterministic_bit_for_bit(name):
    losses = noisy(rectified(SIZES, 40.0, 20.0, 0.5, 1.2), 0.02, 11)
    a = LAWS[name]().fit(SIZES, losses)
    b = LAWS[name]().fit(SIZES, losses.copy())
    assert a.params_ == b.params_
    assert a.predict_interval([TARGET]) == b.predict_interval([TARGET])


@pytest.mark.parametrize("bad, message", [
    ([3.0, np.nan, 2.0, 1.9], "NaN, infinite or <= 0"),
    ([3.0, np.inf, 2.0, 1.9], "NaN, infinite or <= 0"),
    ([3.0, -1.0, 2.0, 1.9], "NaN, infinite or <= 0"),
    ([3.0, 2.5], "at least 3 are needed"),
])
def test_bad_points_raise_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        RectifiedLaw().fit(SIZES[: len(bad)], bad)


def test_predict_before_fit_says_what_to_do():
    with pytest.raises(FitError, match="call fit"):
        RectifiedLaw().predict([1000])


def test_engine_does_not_import_torch():
    code = ("import sys, lensllm_hf.engine.laws, lensllm_hf.engine.fit, lensllm_hf.engine.ranking, lensllm_hf.engine.methods, lensllm_hf.engine.protocol, lensllm_hf.engine.policies, lensllm_hf.cli; "
            "lensllm_hf.cli.build_parser(); assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_free_F_lensllm_fit_is_the_rectified_fit_renamed():
    losses = noisy(rectified(SIZES, 40.0, 20.0, 0.5, 1.2), 0.005, 4)
    shared = LensLLMLaw.free_F(RectifiedLaw().fit(SIZES, losses).to_fit())
    own = LensLLMLaw().fit(SIZES, losses).to_fit()
    assert shared == own
    with pytest.raises(FitError, match="takes a rectified fit"):
        LensLLMLaw.free_F(PowerLaw().fit(SIZES, losses).to_fit())
