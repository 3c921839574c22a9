"""The LensLLM law read as dynamics: F(Theta, t_D) with t_D the steps of the run at size D."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.engine.fit import Fit
from lensllm_hf.engine.laws import FitError, LensLLMDynamicsLaw, LensLLMLaw, spectrum_F
from lensllm_hf.engine.methods import rank
from lensllm_hf.engine.methods.base import RunInfo

SIZES = np.array([0, 128, 256, 512, 1024, 2048, 4096], dtype=float)
LAM = np.array([0.05, 0.4, 1.5, 4.0, 9.0])
COEF = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
ETA = 2e-3
BATCH = 16  # a fixed number of epochs: t_D = D / 16


def curve(sizes, B, beta, E, scale, steps_of=lambda d: d / BATCH):
    """L(D) = B / (F(Theta, t_D) + D^beta) + E with F(Theta, t) = sum c^2 exp(-2 scale eta lambda t)."""
    sizes = np.asarray(sizes, dtype=float)
    F = spectrum_F(LAM, COEF, scale * ETA * np.where(sizes > 0, steps_of(sizes), 0.0))
    return B / (F + sizes**beta) + E


def law(steps_of=lambda d: d / BATCH, sizes=SIZES):
    return LensLLMDynamicsLaw(LAM, COEF, ETA, {float(d): float(steps_of(d)) for d in sizes if d > 0})


def test_recovers_its_parameters_from_its_own_curves():
    truth = {"B": 30.0, "beta": 0.45, "E": 0.6, "scale": 0.5}
    losses = curve(SIZES, **truth) * np.exp(np.random.default_rng(0).normal(0, 1e-4, SIZES.size))
    fitted = law().fit(SIZES, losses)
    for name, value in truth.items():
        assert fitted.params_[name] == pytest.approx(value, rel=0.05), name
    assert fitted.params_["steps_per_example"] == pytest.approx(1 / BATCH)
    assert fitted.params_["steps_exponent"] == pytest.approx(1.0)
    # t_D grows with D, so the prediction at the target uses the target's own (longer) run.
    target = 65_536.0
    assert fitted.predict([target])[0] == pytest.approx(curve([target], **truth)[0], rel=0.02)
    # At D = 0 no step was taken: the zero-shot loss is B / ||r||^2 + E.
    assert fitted.predict([0])[0] == pytest.approx(truth["B"] / np.sum(COEF**2) + truth["E"], rel=0.01)


def test_with_the_same_steps_at_every_size_it_is_the_lensllm_law():
    """t_D constant: F is one number along the curve, as in lensllm's fit of one free t."""
    constant = lambda d: 40.0 + 0.0 * np.asarray(d)  # noqa: E731  (max_steps fixed)
    sizes = SIZES[SIZES > 0]
    losses = curve(sizes, 30.0, 0.45, 0.6, 2.0, constant)
    dynamics = law(constant, sizes).fit(sizes, losses)
    lensllm = LensLLMLaw(LAM, COEF).fit(sizes, losses)
    assert dynamics.params_["steps_exponent"] == pytest.approx(0.0, abs=1e-9)
    at = [*sizes, 65_536.0]
    np.testing.assert_allclose(dynamics.predict(at), lensllm.predict(at), rtol=1e-3)
    # The same F: lensllm's eta * t is the dynamics law's scale * eta * t.
    F = spectrum_F(LAM, COEF, dynamics.params_["scale"] * ETA * 40.0)
    assert float(F) == pytest.approx(lensllm.params_["F"], rel=1e-2)


def test_its_fit_round_trips_and_predicts_the_same():
    fit = law().fit(SIZES, curve(SIZES, 30.0, 0.45, 0.6, 0.5)).to_fit()
    again = Fit.from_dict(json.loads(json.dumps(fit.to_dict())))
    at = [0.0, 512.0, 1e5]
    assert again.predict(at).tolist() == fit.predict(at).tolist()
    low, high = again.predict_interval([1e5])
    assert low[0] < again.predict([1e5])[0] < high[0]


@pytest.mark.parametrize("kwargs, message", [
    ({"eigenvalues": None}, "NTK probe"),
    ({"eta": None}, "learning rate"),
    ({"steps": {}}, "optimizer steps"),
])
def test_without_probe_rate_or_steps_it_says_what_is_missing(kwargs, message):
    args = {"eigenvalues": LAM, "coefficients": COEF, "eta": ETA, "steps": {128.0: 8.0}} | kwargs
    with pytest.raises(FitError, match=message):
        LensLLMDynamicsLaw(**args).fit(SIZES, curve(SIZES, 30.0, 0.45, 0.6, 0.5))


def test_the_method_reads_steps_from_the_table_and_the_probe_from_the_records():
    sizes = SIZES[:5]
    truths = {"a": (30.0, 0.45, 0.6, 0.5), "b": (20.0, 0.40, 0.7, 0.5)}
    losses = np.array([curve(sizes, *p) for p in truths.values()])
    steps = np.tile(np.where(sizes > 0, sizes / BATCH, 0.0), (2, 1))
    table = CurveTable(list(truths), sizes.astype(np.int64), losses, steps=steps)
    runs = {m: RunInfo(tuple(LAM), tuple(COEF), eta=ETA) for m in truths}
    ranking = rank(table, 65_536, "lensllm-dynamics", runs=runs)
    for row in ranking.ranked:
        own = law(sizes=sizes).fit(sizes, losses[list(truths).index(row.model)])
        assert row.fit.law == "lensllm-dynamics"
        assert row.score == pytest.approx(own.predict([65_536])[0], rel=1e-9)
    assert ranking.best == min(truths, key=lambda m: curve([65_536.0], *truths[m])[0])
    # Without the probe every candidate fails with the reason, and the ranking still stands.
    failed = rank(table, 65_536, "lensllm-dynamics")
    assert all(r.status == "failed" and "NTK probe" in r.error for r in failed.candidates)
