"""The one Fit value: predictions, intervals, P(best), and JSON that survives hostile input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from lensllm_hf.errors import LensLLMError
from lensllm_hf.engine.fit import FORMS, Fit, FitError
from lensllm_hf.engine.methods import METHODS, rank
from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.engine.ranking import CandidateFit, Ranking, p_best

SIZES = np.array([0, 200, 400, 800, 1600, 3200, 6400])
TARGET = 409_600


def line_fit(a=1.0, b=-0.1, noise_var=1e-4, k=0.02, **terms) -> Fit:
    return Fit("ats", {"a": a, "b": b}, (200.0, 400.0, 800.0), (2.2, 2.1, 2.0), (True, True, True),
               {"noise_var": noise_var, "largest_size": 800.0, "extrapolation_sd_per_doubling": k, **terms})


def table(n=5, seed=0) -> CurveTable:
    rng = np.random.default_rng(seed)
    x = np.log(np.maximum(SIZES, 100))
    losses = np.exp(rng.uniform(1, 1.5, (n, 1)) - rng.uniform(0.03, 0.12, (n, 1)) * (x - x[0])
                    + 0.01 * rng.standard_normal((n, SIZES.size)))
    return CurveTable([f"m{i}" for i in range(n)], SIZES, losses)


def test_a_line_predicts_its_formula_and_its_interval_by_hand():
    fit = line_fit()
    assert fit.predict([1600])[0] == pytest.approx(math.exp(1.0 - 0.1 * math.log(1600)), rel=1e-12)
    # No parameter spread: sd^2 = noise + (k * doublings)^2, 3 doublings beyond 800.
    lo, hi = fit.predict_interval([6400], 0.9)
    sd = math.sqrt(1e-4 + (0.02 * 3) ** 2)
    z = stats.norm.ppf(0.95)
    centre = 1.0 - 0.1 * math.log(6400)
    assert lo[0] == pytest.approx(math.exp(centre - z * sd)) and hi[0] == pytest.approx(math.exp(centre + z * sd))


def test_the_far_term_takes_over_beyond_the_short_range():
    base = line_fit(k=0.01)
    far = line_fit(k=0.01, extrapolation_sd_far=0.002, extrapolation_exponent=2.0)
    near, distant = [1600.0], [800.0 * 2**9]
    assert far.log_sds(near)[1][0] == base.log_sds(near)[1][0]  # 0.01 * 1 > 0.002 * 1
    assert far.log_sds(distant)[1][0] == pytest.approx(math.sqrt(1e-4 + (0.002 * 81) ** 2))
    assert far.log_sds(distant)[0][0] == far.log_sds(distant)[1][0]  # no _below terms: symmetric


def test_beyond_the_horizon_the_spread_grows_by_the_margin():
    """Within ``extrapolation_horizon`` doublings the spread is the backtest's; beyond, times
    (d / horizon) ** ``extrapolation_margin``, the relative spread too; fits without the terms as before."""
    plain = line_fit(k=0.01, extrapolation_sd_per_doubling_relative=0.005)
    grown = line_fit(k=0.01, extrapolation_sd_per_doubling_relative=0.005, extrapolation_horizon=2.0,
                     extrapolation_margin=0.5)
    within, beyond = [1600.0, 3200.0], [800.0 * 2**8]
    assert grown.log_sds(within)[1].tolist() == plain.log_sds(within)[1].tolist()
    assert grown.log_sds(beyond)[1][0] == pytest.approx(math.sqrt(1e-4 + (0.01 * 8 * 2.0) ** 2))
    assert grown.log_sds(beyond, relative=True)[0][0] == pytest.approx(math.sqrt(1e-4 + (0.005 * 8 * 2.0) ** 2))
    with pytest.raises(FitError, match="extrapolation_margin must be >= 0"):
        line_fit(extrapolation_horizon=2.0, extrapolation_margin=-1.0)


def test_a_split_fit_has_its_own_spread_below_and_leaves_a_tail_on_each_side():
    fit = line_fit(k=0.01, extrapolation_sd_per_doubling_below=0.03, extrapolation_sd_far=0.002,
                   extrapolation_sd_far_below=0.001, extrapolation_exponent=2.0)
    below, above = fit.log_sds([6400.0, 800.0 * 2**9])
    assert below.tolist() == pytest.approx([math.sqrt(1e-4 + 0.09**2), math.sqrt(1e-4 + 0.27**2)])
    assert above.tolist() == pytest.approx([math.sqrt(1e-4 + 0.03**2), math.sqrt(1e-4 + (0.002 * 81) ** 2)])
    lo, hi = fit.predict_interval([6400], 0.8)
    centre, z = float(fit.log_predict([6400])[0]), stats.norm.ppf(0.9)
    assert (math.log(lo[0]), math.log(hi[0])) == pytest.approx((centre - z * below[0], centre + z * above[0]))
    # Relative to the other candidates: the _relative terms, symmetric; the full spreads without them.
    assert [sd.tolist() for sd in fit.log_sds([6400.0], relative=True)] == [below[:1].tolist(), above[:1].tolist()]
    shared = line_fit(k=0.01, extrapolation_sd_per_doubling_below=0.03, extrapolation_sd_per_doubling_relative=0.005)
    assert shared.log_sds([6400.0], relative=True)[0][0] == pytest.approx(math.sqrt(1e-4 + 0.015**2))
    with pytest.raises(FitError, match="must be >= 0"):
        line_fit(extrapolation_sd_per_doubling_below=-0.01)
    with pytest.raises(FitError, match="must be >= 0"):
        line_fit(extrapolation_sd_far_relative=-0.01)


def test_p_best_of_split_distributions_matches_quadrature():
    """Each loss a split normal in log space (median, spread below, spread above): P(best) by
    brute-force quadrature of the density of one times the survival of the others."""
    mu, below, above = np.array([0.0, 0.05, -0.02]), np.array([0.3, 0.05, 0.1]), np.array([0.1, 0.4, 0.1])
    x = np.linspace(-4, 4, 400_001)

    def cdf(i):
        return stats.norm.cdf((x - mu[i]) / np.where(x < mu[i], below[i], above[i]))

    cdfs = [cdf(i) for i in range(3)]
    exact = [np.sum(np.diff(cdfs[i]) * np.prod([1 - cdfs[j][1:] for j in range(3) if j != i], axis=0)) for i in range(3)]
    assert p_best(mu, below, above).tolist() == pytest.approx(exact, abs=1e-4)
    assert p_best(mu, below, below).tolist() == p_best(mu, below).tolist()


@pytest.mark.parametrize("method", ["default", "ats", "rectified", "power", "lensllm"])
def test_a_ranking_read_back_re_predicts_exactly(method):
    ranking = rank(table(), TARGET, method)
    again = Ranking.from_dict(json.loads(json.dumps(ranking.to_dict())))
    assert [c.model for c in again.candidates] == [c.model for c in ranking.candidates]
    for a, b in zip(ranking.candidates, again.candidates):
        assert a.fit == b.fit
        assert a.predicted_loss == b.predicted_loss and a.interval == b.interval and a.p_best == b.p_best
        for size in (1e3, 1e5, 1e7):
            assert a.fit.predict_interval([size], 0.8)[1].tolist() == b.fit.predict_interval([size], 0.8)[1].tolist()
    assert again.pick_statement() == ranking.pick_statement()


def test_p_best_sums_to_one_is_deterministic_and_matches_two_candidates_by_hand():
    mu, sd = np.array([0.0, 0.05, 0.3, 0.1]), np.array([0.1, 0.05, 0.2, 0.3])
    p = p_best(mu, sd)
    assert p.sum() == pytest.approx(1.0, abs=1e-12) and np.all(p >= 0)
    assert p.tolist() == p_best(mu, sd).tolist()
    two = p_best([0.0, 0.1], [0.1, 0.2])
    assert two[0] == pytest.approx(stats.norm.cdf(0.1 / math.hypot(0.1, 0.2)), abs=1e-4)
    # Swapping candidates swaps their probabilities; equal candidates share evenly.
    assert p_best(mu[::-1], sd[::-1]).tolist() == pytest.approx(p[::-1].tolist(), abs=1e-12)
    assert p_best([0.2] * 3, [0.1] * 3).tolist() == pytest.approx([1 / 3] * 3)


def test_every_complete_row_of_a_law_method_has_p_best_and_baselines_have_none():
    ranking = rank(table(), TARGET, "default")
    assert all(c.p_best is not None for c in ranking.ranked)
    assert sum(c.p_best for c in ranking.ranked) == pytest.approx(1.0, abs=1e-12)
    baseline = rank(table(), TARGET, "zeroshot")
    assert all(c.p_best is None and c.fit is None for c in baseline.candidates)
    assert "gives no probabilities" in baseline.pick_statement()


def test_pick_statement_names_near_ties():
    tie = Ranking(1e5, "ats", [CandidateFit("a", fit=line_fit(1.0), score=1.0),
                               CandidateFit("b", fit=line_fit(1.001), score=1.001),
                               CandidateFit("c", fit=line_fit(3.0), score=3.0)])
    assert tie.near_ties == ["b"]
    assert tie.pick_statement().startswith("best: a, P(best) 0.") and "overlaps with b (P(best) 0." in tie.pick_statement()
    assert "give these two more data" in tie.pick_statement()
    clear = Ranking(1e5, "ats", [CandidateFit("a", fit=line_fit(1.0, noise_var=1e-6, k=0.0), score=1.0),
                                 CandidateFit("b", fit=line_fit(1.5, noise_var=1e-6, k=0.0), score=1.5)])
    assert clear.near_ties == [] and clear.pick_statement() == "best: a, P(best) 1.00"


def good() -> dict:
    return line_fit().to_dict()


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(law="cubic"), "fit.law"),
    (lambda d: d.update(law=["ats"]), "fit.law"),
    (lambda d: d.update(params=[1, 2]), "fit.params"),
    (lambda d: d["params"].update(a="1.0"), "fit.params.a"),
    (lambda d: d["params"].update(a=float("nan")), "fit.params.a"),
    (lambda d: d["params"].update(a=True), "fit.params.a"),
    (lambda d: d["params"].pop("b"), "parameters a, b; missing b"),
    (lambda d: d.update(sizes=[1.0] * 20_000), "fit.sizes"),
    (lambda d: d.update(sizes="200,400,800"), "fit.sizes"),
    (lambda d: d.update(losses=[2.2, 2.1]), "same length"),
    (lambda d: d.update(losses=[2.2, -2.1, 2.0]), "losses > 0"),
    (lambda d: d.update(used=[1, 1, 1]), "fit.used"),
    (lambda d: d["terms"].pop("noise_var"), "interval terms"),
    (lambda d: d["terms"].update(noise_var=-1.0), "must be >= 0"),
    (lambda d: d["terms"].update({"cov.a.a": -1.0}), "variances"),
    (lambda d: d["terms"].update(extrapolation_exponent=100.0), "extrapolation_exponent"),
    (lambda d: d.update(warnings="oops"), "fit.warnings"),
    (lambda d: d.update(extra=1), "unknown field 'extra'"),
])
def test_hostile_fits_are_one_line_errors_naming_the_field(change, field):
    data = good()
    change(data)
    with pytest.raises(FitError) as info:
        Fit.from_dict(data)
    assert field in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("data, field", [
    ([], "expected an object"),
    ({"target": "1e5", "method": "m", "ranking": []}, "target"),
    ({"target": 1e5, "method": "m", "level": 2.0, "ranking": []}, "level"),
    ({"target": 1e5, "method": "m", "ranking": {}}, "ranking"),
    ({"target": 1e5, "method": "m", "ranking": [{"model": ""}]}, "ranking[0].model"),
    ({"target": 1e5, "method": "m", "ranking": [{"model": "a", "status": "done"}]}, "ranking[0].status"),
    ({"target": 1e5, "method": "m", "ranking": [{"model": "a", "fit": {"law": "x"}}]}, "ranking[0].fit.law"),
    ({"target": 1e5, "method": "m", "ranking": [{"model": "a", "score": "1"}]}, "ranking[0].score"),
])
def test_hostile_rankings_are_one_line_errors(data, field):
    with pytest.raises(LensLLMError) as info:
        Ranking.from_dict(data)
    assert field in str(info.value) and "\n" not in str(info.value)


def test_bad_sizes_and_levels_to_predict_at():
    fit = line_fit()
    with pytest.raises(LensLLMError, match="finite numbers >= 0"):
        fit.predict([-1.0])
    with pytest.raises(LensLLMError, match="between 0 and 1"):
        fit.predict_interval([1e5], level=90)


def test_every_form_has_what_a_fit_needs():
    assert set(FORMS) == {"ats", "local-loglog", "power", "rectified", "lensllm"}
    assert "default" in METHODS and FORMS["local-loglog"] is FORMS["ats"]


def test_records_warnings_and_probe_reach_the_fit():
    from lensllm_hf.engine.methods.base import RunInfo

    t = table(3)
    runs = {"m0": RunInfo(eigenvalues=(0.01, 0.1, 1.0), coefficients=(1.0, 1.0, 1.0),
                          warnings=("stream mode with a decaying learning rate",))}
    ranking = rank(t, TARGET, "lensllm", runs=runs)
    row = {c.model: c for c in ranking.candidates}
    assert "stream mode with a decaying learning rate" in row["m0"].fit.warnings
    assert "eta_t" in row["m0"].fit.params and "eta_t" not in row["m1"].fit.params
    assert row["m1"].fit.warnings[0].startswith("no NTK probe")
    default = {c.model: c for c in rank(t, TARGET, "default", runs=runs).candidates}
    assert default["m0"].fit.warnings == ("stream mode with a decaying learning rate",)


def test_run_info_takes_the_probe_of_the_largest_complete_run_and_every_warning():
    from types import SimpleNamespace

    from lensllm_hf.engine.methods.base import run_info

    def rec(model, size, eig, status="complete", warnings=(), config_hash="h1"):
        ntk = {"eigenvalues": eig, "coefficients": [1.0] * len(eig)} if eig else None
        return SimpleNamespace(model_id=model, config_hash=config_hash, status=status, train_size=size, ntk=ntk,
                               warnings=list(warnings))

    records = [rec("a", 200, [0.1, 0.2]), rec("a", 800, [0.3, 0.4], warnings=["decaying LR in stream mode"]),
               rec("a", 1600, [9.0, 9.0], status="failed"), rec("b", 200, None, warnings=["two epochs"]),
               rec("c", 400, [1.0], config_hash="h2")]
    info = run_info({"a": records[:3], "b": [records[3]], "c#h2": [records[4]]})
    assert info["a"].eigenvalues == (0.3, 0.4) and info["a"].warnings == ("decaying LR in stream mode",)
    assert info["b"].eigenvalues is None and info["b"].warnings == ("two epochs",)
    assert info["c#h2"].eigenvalues == (1.0,)


def test_p_best_is_accurate_when_spreads_differ_a_lot():
    from scipy import integrate

    mu, sd = np.array([0.0, 0.02, 0.1]), np.array([0.3, 0.005, 0.05])

    def density(x, i):
        others = [stats.norm.sf(x, mu[j], sd[j]) for j in range(3) if j != i]
        return stats.norm.pdf(x, mu[i], sd[i]) * np.prod(others)

    exact = [integrate.quad(density, -3, 3, args=(i,), points=list(mu), limit=400)[0] for i in range(3)]
    assert p_best(mu, sd).tolist() == pytest.approx(exact, abs=2e-4)


def test_p_best_uses_relative_spreads_only_when_every_row_has_them():
    """A fresh fit (shared bend left out) beside a card's fit without relative spreads would be
    compared on unequal terms: then every row uses its full spreads."""
    shared = {"extrapolation_sd_per_doubling_relative": 0.001, "extrapolation_sd_far_relative": 0.0}
    fresh = [line_fit(a=1.0, k=0.05, **shared), line_fit(a=1.05, k=0.05, **shared)]
    mixed = [fresh[0], line_fit(a=1.05, k=0.05)]
    size = 800.0 * 2**6

    def ranking(fits):
        return Ranking(size, "default", [CandidateFit(f"m{i}", fit=f, score=float(f.predict([size])[0]))
                                         for i, f in enumerate(fits)])

    sure, unsure = ranking(fresh).ranked[0].p_best, ranking(mixed).ranked[0].p_best
    assert sure > 0.95
    mu = [float(f.log_predict([size])[0]) for f in mixed]
    assert unsure == pytest.approx(p_best(mu, [float(f.log_sds([size])[0][0]) for f in mixed])[0], abs=1e-12)
    assert unsure < 0.7


def test_an_absurd_spread_from_a_hostile_card_means_anything_not_a_uniform_p_best():
    """A spread of 1e200 per doubling overflows to inf; P(best) treats it as 'anything', so the
    wide row wins half the time and the sure rows share the rest by their own distributions."""
    size = 800.0 * 2**6
    fits = [line_fit(a=1.0, k=0.01), line_fit(a=1.5, k=0.01), line_fit(a=1.2, k=1e200)]
    with np.errstate(over="ignore"):
        rows = Ranking(size, "default", [CandidateFit(f"m{i}", fit=f, score=float(f.predict([size])[0]))
                                         for i, f in enumerate(fits)])
    p = {c.model: c.p_best for c in rows.ranked}
    assert p["m2"] == pytest.approx(0.5, abs=0.01) and p["m0"] == pytest.approx(0.5, abs=0.01) and p["m1"] < 1e-6
