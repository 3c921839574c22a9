"""The default selection method: the law (shrunk local log-log lines) or the observed order, as
far as the table's own backtest supports each."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lensllm_hf.engine.protocol import run_bench, summarize
from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.engine.methods.default import BANDWIDTHS, DefaultMethod, choose_bandwidth
import json

import yaml

from lensllm_hf.engine.fit import Fit
from lensllm_hf.engine.methods import METHODS, rank

SIZES = np.array([0, 200, 400, 800, 1600, 3200, 6400, 12800, 25600])
TARGET = 1_638_400


def _synthetic(n: int = 12, noise: float = 0.005, seed: int = 0) -> tuple[CurveTable, np.ndarray]:
    """Curves flat up to a transition, then log L = a + b log D; returns the table and the
    true losses at the target."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(1.0, 2.0, n)
    b = rng.uniform(-0.12, -0.03, n)
    start = 800.0
    x = np.log(np.maximum(SIZES[1:], start))
    losses = np.exp(a[:, None] + b[:, None] * x[None, :] + noise * rng.standard_normal((n, x.size)))
    zero_shot = losses[:, :1] * rng.uniform(1.2, 3.0, (n, 1))
    table = CurveTable(models=[f"m{i}" for i in range(n)], sizes=SIZES, losses=np.hstack([zero_shot, losses]))
    return table, np.exp(a + b * math.log(TARGET))


def test_registered_as_default() -> None:
    assert METHODS["default"].name == "default"
    assert isinstance(METHODS["default"], DefaultMethod)


def test_recovers_a_planted_ranking() -> None:
    table, truth = _synthetic()
    ranking = rank(table, TARGET, "default")
    predicted = {c.model: c.predicted_loss for c in ranking.ranked}
    pred = np.array([predicted[m] for m in table.models])
    assert np.corrcoef(pred, truth)[0, 1] > 0.95
    assert ranking.best == table.models[int(np.argmin(truth))]
    assert np.median(np.abs(pred - truth) / truth) < 0.05


def test_every_field_is_filled_and_the_interval_brackets_the_prediction() -> None:
    table, _ = _synthetic()
    for c in rank(table, TARGET, "default").candidates:
        assert c.status == "complete"
        assert c.law == "local-loglog" and c.score == c.predicted_loss
        assert c.interval[0] < c.predicted_loss < c.interval[1]
        fit = c.fit
        assert len(fit.sizes) == len(table.sizes) and c.transition_size in fit.sizes
        assert not fit.used[0] and fit.used[-1]  # the zero-shot point is seen, not used
        assert c.flops is not None and c.flops > 0
        assert set(fit.params) == {"a", "b"} and {"bandwidth", "raw_slope", "noise_var"} <= set(fit.terms)


def test_the_fit_read_back_predicts_exactly_the_same() -> None:
    table, _ = _synthetic()
    for c in rank(table, TARGET, "default").ranked:
        again = Fit.from_dict(json.loads(json.dumps(c.fit.to_dict())))
        assert float(again.predict([TARGET])[0]) == c.predicted_loss
        lo, hi = again.predict_interval([TARGET], 0.9)
        assert [float(lo[0]), float(hi[0])] == c.interval


def test_a_bad_candidate_fails_alone() -> None:
    table, _ = _synthetic()
    losses = table.losses.copy()
    losses[3, 2:] = np.nan  # only zero-shot and 200 left: no slope
    broken = CurveTable(models=table.models, sizes=table.sizes, losses=losses,
                        problems={table.models[5]: "row 7: unusable loss at column '400' = '-1'"})
    ranking = rank(broken, TARGET, "default")
    failed = {c.model for c in ranking.candidates if c.status == "failed"}
    assert failed == {table.models[3], table.models[5]}
    assert len(ranking.ranked) == len(table.models) - 2
    assert all(c.error for c in ranking.candidates if c.status == "failed")


def test_deterministic() -> None:
    table, _ = _synthetic(noise=0.02)
    first = rank(table, TARGET, "default").to_dict()
    assert rank(table, TARGET, "default").to_dict() == first


def test_bandwidth_is_chosen_from_the_grid_and_falls_back_on_short_tables() -> None:
    table, _ = _synthetic()
    assert choose_bandwidth(table) in BANDWIDTHS
    assert choose_bandwidth(table.up_to(800)) == math.inf  # too few columns to backtest


def test_bending_curves_pick_a_local_slope() -> None:
    """Curves that steepen in log-log (as FLAN's do): the backtest prefers a finite bandwidth."""
    rng = np.random.default_rng(1)
    x = np.log(SIZES[1:] * 1.0)
    curv = -0.01 * (x - x[0]) ** 2
    losses = np.exp(rng.uniform(1, 2, (10, 1)) - 0.03 * (x - x[0]) + rng.uniform(0.5, 1.5, (10, 1)) * curv)
    table = CurveTable(models=[f"m{i}" for i in range(10)], sizes=SIZES,
                       losses=np.hstack([losses[:, :1] * 2, losses]))
    assert math.isfinite(choose_bandwidth(table))


def test_matches_or_beats_ats_on_the_shared_tables(curves_dir) -> None:
    tables = [CurveTable.read_csv(curves_dir / f"{name}.csv") for name in ("flan", "gigaword")]
    summary = summarize(run_bench(tables, methods=["ats", "default"]))
    for name in ("flan", "gigaword"):
        ats, default = summary[name]["ats"], summary[name]["default"]
        assert default["pearson"] >= ats["pearson"], name
        assert default["relacc"] >= ats["relacc"], name
    # The measured means docs/methods.md quotes.
    assert summary["flan"]["default"]["pearson"] == pytest.approx(66.8, abs=0.1)
    assert summary["gigaword"]["default"]["relacc"] == pytest.approx(95.9, abs=0.1)


def test_one_way_imports_and_one_constant() -> None:
    """default.py never imports the method registry (the registry imports default), and the
    extrapolation constant lives in lensllm_hf.engine.fit only."""
    import ast
    import inspect

    import lensllm_hf.engine.laws.base
    import lensllm_hf.engine.methods
    import lensllm_hf.engine.methods.default

    tree = ast.parse(inspect.getsource(lensllm_hf.engine.methods.default))
    imported = {(node.level, node.module) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and not any(module in (None, "methods") or (level == 2 and module == "methods")
                                for level, module in imported if level > 0)
    for module in (lensllm_hf.engine.methods.default, lensllm_hf.engine.methods, lensllm_hf.engine.laws.base):
        assert "EXTRAPOLATION_SD_PER_DOUBLING =" not in inspect.getsource(module)


def test_the_spread_comes_from_the_table_and_short_tables_backtest_two_point_lines() -> None:
    from lensllm_hf.engine.methods.default import EXPONENT_MARGIN, PRIOR_GROWTH, extrapolation_spread

    table, _ = _synthetic(n=12, noise=0.01)
    spread = extrapolation_spread(table, math.inf)
    k, p = spread["extrapolation_sd_per_doubling"], spread["extrapolation_exponent"]
    assert 0 < k < 0.1 and spread["extrapolation_sd_far"] >= 0 and 1.0 <= p <= 3.0
    assert 0 < spread["extrapolation_sd_per_doubling_below"] < 0.1  # long table: each side measured
    # Three fine-tuned sizes: the backtest predicts the third from lines through the first two,
    # the growth of the errors with the distance is the prior's, and the spread is symmetric.
    short = extrapolation_spread(table.up_to(800), math.inf)
    assert short["extrapolation_sd_per_doubling"] > 0
    assert short["extrapolation_exponent"] == PRIOR_GROWTH + EXPONENT_MARGIN
    assert not any(name.endswith("_below") for name in short)
    # Noisier curves get wider intervals, short tables included.
    noisy, _ = _synthetic(n=12, noise=0.05)
    for side in ("", "_below"):
        assert extrapolation_spread(noisy, math.inf)[f"extrapolation_sd_per_doubling{side}"] > spread[f"extrapolation_sd_per_doubling{side}"]
    assert extrapolation_spread(noisy.up_to(800), math.inf)["extrapolation_sd_per_doubling"] > short["extrapolation_sd_per_doubling"]


def test_a_table_without_any_backtest_gets_the_prior_spread_widened() -> None:
    from lensllm_hf.engine.methods.default import PRIOR_LINES, extrapolation_spread
    from lensllm_hf.engine.fit import EXTRAPOLATION_SD_PER_DOUBLING
    from scipy import stats

    table, _ = _synthetic(n=12, noise=0.01)
    spread = extrapolation_spread(table.up_to(400), math.inf)  # two fine-tuned sizes: nothing to hold out
    widen = stats.t.ppf(0.95, PRIOR_LINES) / stats.norm.ppf(0.95)
    assert spread == pytest.approx({"extrapolation_sd_per_doubling": EXTRAPOLATION_SD_PER_DOUBLING * widen,
                                    "extrapolation_exponent": 1.0})


def test_the_spread_is_wider_when_it_rests_on_fewer_candidates() -> None:
    """The same backtest errors, seen on 5 candidates or on 40 (four sizes each, so ten backtest
    lines or eighty): the estimate from ten is less sure, so it is wider."""
    from lensllm_hf.engine.methods.default import extrapolation_spread

    table, _ = _synthetic(n=5, noise=0.005, seed=3)
    table = CurveTable(table.models, table.sizes[[0, 3, 4, 5, 6]], table.losses[:, [0, 3, 4, 5, 6]])  # power phase
    many = CurveTable([f"m{i}" for i in range(40)], table.sizes, np.tile(table.losses, (8, 1)))
    few, many = extrapolation_spread(table, math.inf), extrapolation_spread(many, math.inf)
    assert few.keys() == many.keys() and few["extrapolation_exponent"] == many["extrapolation_exponent"]
    assert few["extrapolation_sd_per_doubling"] > many["extrapolation_sd_per_doubling"]
    assert few["extrapolation_sd_far"] >= many["extrapolation_sd_far"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_short_noisy_curves_get_intervals_that_hold_eight_doublings_ahead(seed: int) -> None:
    """Eight candidates seen at four sizes whose points scatter 8 % about their lines, predicted
    eight doublings beyond the largest: the table's own backtest (not the constant measured on
    long, clean curves) sets the width, and the 90 % intervals hold at least 7 of the 8 true
    losses (the constant alone held 4 to 7)."""
    rng = np.random.default_rng(seed)
    n, sizes, target = 8, np.array([0, 25, 50, 100, 200]), 200 * 2**8
    a, b = rng.uniform(1.0, 1.6, n), rng.uniform(-0.10, -0.02, n)
    seen = np.exp(a[:, None] + b[:, None] * np.log2(sizes[1:] / 25.0) + 0.08 * rng.standard_normal((n, 4)))
    table = CurveTable([f"m{i}" for i in range(n)], sizes, np.hstack([seen[:, :1] * 1.5, seen]))
    truth = dict(zip(table.models, np.exp(a + b * np.log2(target / 25.0))))
    ranking = rank(table, target, "default")
    held = [c.interval[0] <= truth[c.model] <= c.interval[1] for c in ranking.ranked]
    assert len(held) == n and sum(held) >= 7


def test_empty_columns_are_not_evidence() -> None:
    """An adaptive loop's table has columns nobody bought yet: the spread is the same as without them."""
    from lensllm_hf.engine.methods.default import extrapolation_spread

    table, _ = _synthetic(n=6, noise=0.01)
    short = table.up_to(1600)
    padded = CurveTable(short.models, table.sizes, np.hstack([short.losses, np.full((6, 4), np.nan)]))
    assert extrapolation_spread(padded, math.inf) == extrapolation_spread(short, math.inf)


def _bending(curvature: float, n: int = 12, seed: int = 0, noise: float = 0.003) -> CurveTable:
    """Curves whose log-log slope changes by ``curvature`` per doubling squared (negative: they
    steepen, positive: they flatten), seen at 200 .. 25,600 with ``noise`` in log-loss."""
    rng = np.random.default_rng(seed)
    x = np.log2(SIZES[1:] / 200.0)
    a, b = rng.uniform(1.0, 2.0, n), rng.uniform(-0.12, -0.05, n)
    log_losses = a[:, None] + b[:, None] * x + curvature * x**2 + noise * rng.standard_normal((n, x.size))
    return CurveTable([f"m{i}" for i in range(n)], SIZES, np.hstack([np.full((n, 1), 9.0), np.exp(log_losses)]))


@pytest.mark.parametrize("curvature", [-0.004, 0.004])
def test_the_interval_is_wider_on_the_side_the_curves_bend_to(curvature: float) -> None:
    """Lines through curves that steepen under-predict the fall, so the truth lies below them: the
    backtest sees it and widens the lower side (the upper for curves that flatten), and the
    fit, its interval and its card entry all carry the two sides."""
    from lensllm_hf.engine.methods.default import extrapolation_spread
    from lensllm_hf.hub_cards import CardFit

    table = _bending(curvature)
    spread = extrapolation_spread(table, choose_bandwidth(table))
    below, above = spread["extrapolation_sd_per_doubling_below"], spread["extrapolation_sd_per_doubling"]
    assert (below > 2 * above) if curvature < 0 else (above > 2 * below)
    c = rank(table, TARGET, "default").ranked[0]
    lo, hi = (math.log(v) for v in c.interval)
    centre = math.log(c.predicted_loss)
    assert (centre - lo > 2 * (hi - centre)) if curvature < 0 else (hi - centre > 2 * (centre - lo))
    card = CardFit.from_candidate(c, dataset="bend")
    back = CardFit.from_dict(yaml.safe_load(yaml.safe_dump(card.to_dict())))
    assert back.fit == c.fit and list(back.interval) == c.interval


def test_a_bend_every_candidate_shares_widens_the_intervals_but_not_the_doubt_about_the_pick() -> None:
    """Parallel curves that steepen alike: their 90 % intervals at the target overlap, because
    the bend carries them all far below their lines, but it carries them together, so P(best)
    (from the spread of each candidate's error about the others') stays sure of the lowest."""
    from lensllm_hf.engine.ranking import p_best

    rng = np.random.default_rng(1)
    x = np.log2(SIZES[1:] / 200.0)
    a = 1.0 + 0.08 * np.arange(6)
    log_losses = a[:, None] - 0.08 * x - 0.004 * x**2 + 0.003 * rng.standard_normal((a.size, x.size))
    table = CurveTable([f"m{i}" for i in range(a.size)], SIZES,
                       np.hstack([np.full((a.size, 1), 9.0), np.exp(log_losses)]))
    ranking = rank(table, TARGET, "default")
    first, second = ranking.ranked[:2]
    assert first.model == "m0" and first.interval[1] > second.interval[0]  # the intervals overlap
    assert first.p_best > 0.9
    # Taken apart, the same marginal distributions would leave the pick in doubt (0.61 here).
    fits = [c.fit for c in ranking.ranked]
    below, above = np.array([[float(sd[0]) for sd in f.log_sds([TARGET])] for f in fits]).T
    marginal = p_best([float(f.log_predict([TARGET])[0]) for f in fits], below, above)
    assert marginal[0] < 0.7


def test_a_candidate_seen_alone_at_a_size_says_nothing_of_the_others():
    """An adaptive loop's table: one candidate bought on past 3,200, the others not. Its errors
    at those sizes have nobody to be compared with, so the spreads P(best) uses are those of the
    table without its lone columns (before, they counted as zero and shrank them by 10 %)."""
    from lensllm_hf.engine.methods.default import extrapolation_spread

    rng = np.random.default_rng(0)
    x = np.log2(SIZES[1:] / 200.0)
    log_losses = (rng.uniform(1, 2, (8, 1)) + rng.uniform(-0.12, -0.05, (8, 1)) * x - 0.003 * x**2
                  + 0.02 * rng.standard_normal((8, x.size)))  # noisy enough that the prior hardly counts
    losses = np.hstack([np.full((8, 1), 9.0), np.exp(log_losses)])
    losses[1:, 6:] = np.nan
    ragged = CurveTable([f"m{i}" for i in range(8)], SIZES, losses)
    alone, together = extrapolation_spread(ragged, math.inf), extrapolation_spread(ragged.up_to(3200), math.inf)
    for term in ("extrapolation_sd_per_doubling_relative", "extrapolation_sd_far_relative"):
        assert alone[term] == pytest.approx(together[term], rel=0.05)


@pytest.mark.parametrize("curvature", [-0.004, 0.004])
def test_the_interval_as_used_leaves_its_share_of_the_backtest_beyond(curvature: float) -> None:
    """The interval takes the larger of a linear and a far spread, each calibrated on the
    backtest errors of its side: together they must leave (1 - level) / 2 of those errors
    beyond the side the curves bend to, not fewer (calibrated apart and then combined, they
    left 2-3 % here, and 1-2 % below FLAN's lines)."""
    from lensllm_hf.engine.methods.default import backtest, extrapolation_spread

    table = _bending(curvature, n=30, noise=0.01)
    bandwidth = choose_bandwidth(table)
    spread, errors = extrapolation_spread(table, bandwidth, level=0.9), backtest(table, bandwidth)
    # The spread alone at each distance ahead: a fit with nothing else, whose last point is at 1.
    bare = Fit("ats", {"a": 0.0, "b": 0.0}, (1.0,), (1.0,), (True,), {"noise_var": 0.0, "largest_size": 1.0, **spread})
    below, above = bare.log_sds(2.0 ** errors["ahead"].to_numpy())
    edge = 1.6448536 * np.sqrt(errors["fit_sd"].to_numpy() ** 2 + (below if curvature < 0 else above) ** 2)
    beyond = np.mean(-errors["error"] > edge) if curvature < 0 else np.mean(errors["error"] > edge)
    assert 0.04 <= beyond <= 0.055


def test_the_backtest_counts_rows_not_names_and_refuses_a_bad_bandwidth() -> None:
    """Two candidates may share a name (a table built in code, an adaptive loop's models): the
    backtest lines are one per row and cut, so the spreads do not depend on the names."""
    from lensllm_hf.engine.methods.default import backtest, extrapolation_spread
    from lensllm_hf.errors import LensLLMError

    table = _bending(-0.004)
    same = CurveTable(["same"] * len(table.models), table.sizes, table.losses)
    assert extrapolation_spread(same.up_to(800), math.inf) == extrapolation_spread(table.up_to(800), math.inf)
    assert backtest(same, math.inf)["row"].nunique() == len(table.models)
    for bad in (0.0, -1.0, math.nan):
        with pytest.raises(LensLLMError, match="bandwidth must be a positive number"):
            backtest(table, bad)


def _flat_noisy(n: int = 12, noise: float = 0.03, seed: int = 0) -> tuple[CurveTable, dict[str, float]]:
    """Curves that are flat in truth (each candidate at its own level), seen through noise: lines
    through them take noisy slopes and cross, wrongly; the observed order is right."""
    rng = np.random.default_rng(seed)
    level = np.linspace(1.0, 1.6, n)
    losses = level[:, None] * np.exp(noise * rng.standard_normal((n, SIZES.size - 1)))
    table = CurveTable([f"m{i}" for i in range(n)], SIZES, np.hstack([level[:, None] * 2, losses]))
    return table, dict(zip(table.models, level))


def _crossing(n: int = 12, seed: int = 0) -> tuple[CurveTable, dict[str, float]]:
    """Power laws that cross between the budget and the target: the candidates that fall fastest
    start highest, so the order observed at the budget is wrong at the target."""
    rng = np.random.default_rng(seed)
    slope = np.linspace(-0.03, -0.12, n)
    level = 1.0 - 6 * slope + 0.005 * rng.standard_normal(n)  # the steepest start highest
    x = np.log(SIZES[1:] / 200.0)
    losses = np.exp(level[:, None] + slope[:, None] * x + 0.003 * rng.standard_normal((n, x.size)))
    table = CurveTable([f"m{i}" for i in range(n)], SIZES, np.hstack([losses[:, :1] * 2, losses]))
    return table, dict(zip(table.models, np.exp(level + slope * math.log(TARGET / 200.0))))


def test_noisy_flat_curves_follow_the_observed_order() -> None:
    """Where the backtest shows the lines' relative falls are noise, the ranking is the order
    observed at the budget (the lines alone would cross and pick wrongly)."""
    table, truth = _flat_noisy()
    ranking = rank(table, TARGET, "default")
    observed = dict(zip(table.models, table.column(int(table.sizes.max()))))
    assert [c.model for c in ranking.ranked] == sorted(table.models, key=observed.get)
    fit = ranking.ranked[0].fit
    assert fit.terms["law_weight"] == 0.0 and fit.basis.startswith("observed order: ")
    lines = rank(table, TARGET, "ats")
    assert [c.model for c in lines.ranked] != [c.model for c in ranking.ranked]  # the lines cross


def test_crossing_power_laws_follow_the_law() -> None:
    """Where the backtest shows the law's relative falls come true, the law ranks, and it finds
    the candidate that overtakes the others after the budget."""
    table, truth = _crossing()
    ranking = rank(table, TARGET, "default")
    observed = dict(zip(table.models, table.column(int(table.sizes.max()))))
    worst, best = max(truth.values()), min(truth.values())
    relacc = {pick: (worst - truth[pick]) / (worst - best) for pick in (ranking.best, min(observed, key=observed.get))}
    assert relacc[ranking.best] > 0.9 and relacc[min(observed, key=observed.get)] < 0.1
    fit = ranking.ranked[0].fit
    assert fit.terms["law_weight"] == 1.0 and fit.basis.startswith("law: ")
    assert np.corrcoef([c.predicted_loss for c in ranking.ranked], [truth[c.model] for c in ranking.ranked])[0, 1] > 0.95


def test_the_fit_records_which_predictor_ranked_and_why() -> None:
    """Every fit carries the predictor and the evidence (its basis and the law's weight), through
    JSON and a card; a fit written without a basis still reads; a bad one is refused."""
    from lensllm_hf.engine.fit import FitError
    from lensllm_hf.hub_cards import CardFit

    table, _ = _synthetic()
    c = rank(table, TARGET, "default").ranked[0]
    assert c.fit.basis.startswith("law: ") and "backtest predictions" in c.fit.basis
    assert {"law_weight", "law_weight_estimate", "law_weight_lower", "law_weight_horizon"} <= set(c.fit.terms)
    again = Fit.from_dict(json.loads(json.dumps(c.fit.to_dict())))
    assert again == c.fit and again.basis == c.fit.basis
    card = CardFit.from_candidate(c, dataset="planted")
    assert CardFit.from_dict(yaml.safe_load(yaml.safe_dump(card.to_dict()))).fit.basis == c.fit.basis
    old = {k: v for k, v in c.fit.to_dict().items() if k != "basis"}
    assert Fit.from_dict(old).basis == "" and float(Fit.from_dict(old).predict([TARGET])[0]) == c.predicted_loss
    with pytest.raises(FitError, match="basis"):
        Fit.from_dict({**old, "basis": 3})


def test_a_rising_curve_is_not_extrapolated_upward() -> None:
    """A curve that rises at the end (a learner past its peak, an overfitting run) is a transient,
    not a trend: its predicted loss at the target is no higher than its last observed one."""
    table, _ = _synthetic()
    losses = table.losses.copy()
    losses[2, 1:] = np.exp(0.5 + 0.05 * np.log(SIZES[1:]))  # rises all along
    ranking = rank(CurveTable(table.models, table.sizes, losses), TARGET, "default")
    rising = next(c for c in ranking.ranked if c.model == table.models[2])
    assert rising.predicted_loss <= losses[2, -1] and rising.fit.params["b"] <= 0


def _stopped_early(table: CurveTable, truth: dict[str, float]) -> CurveTable:
    """The table as a halving loop leaves it: the half predicted worst stopped two sizes early."""
    losses = table.losses.copy()
    worst = sorted(range(len(table.models)), key=lambda row: -truth[table.models[row]])
    losses[worst[: len(worst) // 2], -2:] = np.nan
    return CurveTable(table.models, table.sizes, losses)


def _ragged_fit(curves) -> tuple:
    """The ranking of ``curves`` stopped early, its first fit and the square table's law weight."""
    table, truth = curves()
    ranking = rank(_stopped_early(table, truth), TARGET, "default")
    fit = ranking.ranked[0].fit
    assert fit.terms["law_weight_shared_size"] == 6400 and "sizes all of them share, up to 6400" in fit.basis
    return ranking, fit, rank(table.up_to(6400), TARGET, "default").ranked[0].fit.terms["law_weight"], truth


def test_a_ragged_table_reads_its_weight_on_the_sizes_every_candidate_shares() -> None:
    """An adaptive or halving loop's table: the candidates were last seen at different sizes, and
    the loop chose who got the later points by this very ranking. The law's weight is read on the
    sizes all candidates share, as on that square table: the law, where its relative falls came
    true there (crossing curves)."""
    _, fit, square, _ = _ragged_fit(_crossing)
    assert fit.terms["law_weight"] == square == 1.0 and fit.basis.startswith("law: ")


def test_a_ragged_table_of_noisy_flat_curves_follows_the_observed_order() -> None:
    """Where the shared sizes show the lines' relative falls are noise, a ragged table is ranked
    by the observed order too (the rule before, the law alone on every ragged table, picked a
    candidate whose noisy line crossed the others)."""
    ranking, fit, square, truth = _ragged_fit(_flat_noisy)
    assert fit.terms["law_weight"] == square == 0.0 and fit.basis.startswith("observed order: ")
    assert ranking.best == min(truth, key=truth.get)


def test_part_of_the_margin_applies_only_beyond_the_backtests_horizon() -> None:
    """Within the distances the backtest predicted, the errors were seen: half the exponent's
    margin grows the spread only beyond them; short tables (growth not measured) keep it all."""
    from lensllm_hf.engine.methods.default import EXPONENT_MARGIN, HORIZON_SHARE, backtest, extrapolation_spread

    table, _ = _synthetic(n=12, noise=0.01)
    spread = extrapolation_spread(table, math.inf)
    assert spread["extrapolation_horizon"] == pytest.approx(float(backtest(table, math.inf)["ahead"].max()))
    assert spread["extrapolation_margin"] == HORIZON_SHARE * EXPONENT_MARGIN > 0
    assert "extrapolation_horizon" not in extrapolation_spread(table.up_to(800), math.inf)


def test_p_best_reads_the_core_of_the_relative_errors_not_their_tail() -> None:
    """Most candidates follow their lines, a quarter bend far away from them: the intervals widen
    for the bends, but P(best)'s relative spread follows the many (it was the tail's: 0.072
    against 0.016, and the picks' P(best) understated how often they are right)."""
    from lensllm_hf.engine.methods.default import extrapolation_spread

    table, _ = _synthetic(n=16, noise=0.002)
    x = np.log2(SIZES[1:] / 1600.0)
    losses = table.losses.copy()
    for row, curvature in enumerate((0.03, -0.03, 0.04, -0.04)):
        losses[row, 1:] *= np.exp(np.where(x > 0, curvature * x**2, 0.0))
    spread = extrapolation_spread(CurveTable(table.models, SIZES, losses), math.inf)
    assert spread["extrapolation_sd_per_doubling_relative"] < 0.5 * spread["extrapolation_sd_per_doubling"]
