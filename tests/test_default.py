"""The default selection method: shrunk local log-log lines with a backtested bandwidth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lensllm_hf.bench import run_bench, summarize
from lensllm_hf.curves import CurveTable
from lensllm_hf.default import BANDWIDTHS, DefaultMethod, choose_bandwidth
import json

from lensllm_hf.fit import Fit
from lensllm_hf.methods import METHODS, rank

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
    # The measured means this module's docstring quotes.
    assert summary["flan"]["default"]["pearson"] == pytest.approx(66.7, abs=0.1)
    assert summary["gigaword"]["default"]["relacc"] == pytest.approx(95.9, abs=0.1)


def test_one_way_imports_and_one_constant() -> None:
    """default.py never imports methods.py (methods registers default), and the extrapolation
    constant lives in lensllm_hf.fit only."""
    import subprocess
    import sys

    import inspect

    import lensllm_hf.default
    import lensllm_hf.laws.base
    import lensllm_hf.methods

    code = "import sys, lensllm_hf.default; assert 'lensllm_hf.methods' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    for module in (lensllm_hf.default, lensllm_hf.methods, lensllm_hf.laws.base):
        assert "EXTRAPOLATION_SD_PER_DOUBLING =" not in inspect.getsource(module)


def test_the_spread_comes_from_the_table_and_falls_back_on_short_ones() -> None:
    from lensllm_hf.default import extrapolation_spread
    from lensllm_hf.fit import EXTRAPOLATION_SD_PER_DOUBLING

    table, _ = _synthetic(n=12, noise=0.01)
    k, far, p = extrapolation_spread(table, math.inf)
    assert 0 < k < 0.1 and far >= 0 and 1.0 <= p <= 3.0
    assert extrapolation_spread(table.up_to(800), math.inf) == (EXTRAPOLATION_SD_PER_DOUBLING, 0.0, 1.0)
    # Noisier curves get wider intervals.
    noisy, _ = _synthetic(n=12, noise=0.05)
    assert extrapolation_spread(noisy, math.inf)[0] > k
