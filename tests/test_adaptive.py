"""The adaptive policy in the buying loop: it buys data only where the decision needs it."""

from __future__ import annotations

import numpy as np
import pytest

from lensllm_hf.engine.loop import one_by_one, run_loop
from lensllm_hf.engine.policies import AdaptivePolicy, HalvingPolicy
from lensllm_hf.errors import LensLLMError

SIZES = [0, 200, 400, 800, 1600, 3200, 6400, 12800, 25600]
TARGET = 1_000_000


def curve(scale, size):
    return scale * (3.2 if size == 0 else 2.8 * (size / 200) ** -0.12) * np.exp(1e-3 * np.sin(size))


def make_buy(scales, log, fail=()):
    def buy(model, size):
        log.append((model, size))
        if model in fail:
            raise LensLLMError(f"{model} could not be loaded")
        return curve(scales[model], size), 10.0 * size
    return one_by_one(buy)


def test_a_clear_winner_stops_early():
    scales = {"best": 0.6, "mid": 1.0, "worst": 1.3}
    log = []
    result = run_loop(AdaptivePolicy(), list(scales), SIZES, TARGET, make_buy(scales, log), method="ats")
    assert result.ranking.best == "best"
    grid_cost = 3 * 10.0 * sum(SIZES)
    assert result.flops < grid_cost / 4
    assert len(log) == len(set(log)), "a run was bought twice"
    assert result.flops == pytest.approx(sum(10.0 * s for _, s in log))


def test_close_candidates_get_more_data_than_clear_losers():
    scales = {"a": 1.0, "b": 1.004, "loser": 1.6}
    result = run_loop(AdaptivePolicy(), list(scales), SIZES, TARGET, make_buy(scales, []), method="ats")
    assert max(result.bought["a"]) > max(result.bought["loser"])
    assert result.ranking.best in {"a", "b"}


def test_a_failing_candidate_does_not_stop_the_others():
    scales = {"good": 0.8, "broken": 0.5, "fine": 1.0}
    result = run_loop(AdaptivePolicy(), list(scales), SIZES, TARGET, make_buy(scales, [], fail={"broken"}),
                      method="ats")
    assert result.ranking.best == "good"
    broken = next(c for c in result.ranking.candidates if c.model == "broken")
    assert broken.status == "failed" and "could not be loaded" in broken.error


def test_flops_budget_is_respected():
    scales = {"a": 1.0, "b": 1.001, "c": 1.002}
    cap = 10.0 * 3 * (200 + 400 + 800 + 1600 + 3200)
    result = run_loop(AdaptivePolicy(), list(scales), SIZES, TARGET, make_buy(scales, []), method="ats", max_flops=cap)
    assert result.flops <= cap


def test_bad_arguments():
    with pytest.raises(LensLLMError, match="no candidates"):
        run_loop(AdaptivePolicy(), [], SIZES, TARGET, make_buy({}, []))
    with pytest.raises(LensLLMError, match="must exceed the largest subset size"):
        run_loop(AdaptivePolicy(), ["a"], SIZES, 100, make_buy({"a": 1.0}, []))


@pytest.mark.parametrize("loop", ["adaptive", "halving"])
def test_every_round_ranks_with_the_probe_the_caller_gives(loop):
    """``runs`` (the NTK probe, warnings) reaches every ranking of the loop, as it reaches the
    grid's: the lensllm fits use the spectrum and carry the records' warnings."""
    from lensllm_hf.engine.laws.rectified import NO_PROBE_WARNING
    from lensllm_hf.engine.methods.base import RunInfo

    policy = {"adaptive": AdaptivePolicy, "halving": HalvingPolicy}[loop]
    scales = {"a": 1.0, "b": 1.1, "c": 1.3}
    probe = RunInfo(eigenvalues=(0.01, 0.1, 1.0), coefficients=(1.0, 1.0, 1.0), warnings=("stream mode",))
    runs = {name: probe for name in scales}
    probed = run_loop(policy(), list(scales), SIZES, TARGET, make_buy(scales, []), method="lensllm", runs=runs).ranking
    free = run_loop(policy(), list(scales), SIZES, TARGET, make_buy(scales, []), method="lensllm").ranking
    assert probed.ranked and all("eta_t" in c.fit.params and "stream mode" in c.fit.warnings for c in probed.ranked)
    assert all(NO_PROBE_WARNING in c.fit.warnings and "eta_t" not in c.fit.params for c in free.ranked)


@pytest.mark.parametrize("loop", ["adaptive", "halving"])
def test_an_expected_cost_keeps_the_budget_from_the_first_column(loop):
    """Before a candidate's first run its cost is unknown: without an estimate the first columns
    are bought whole and overshoot a small budget; with one, no run that would pass it starts."""
    policy = {"adaptive": AdaptivePolicy, "halving": HalvingPolicy}[loop]
    scales = {"a": 1.0, "b": 1.1, "c": 1.3}
    cap = 10.0 * 200 * 2.5  # less than the first fine-tuned column (three runs on 200 examples)
    blind = run_loop(policy(), list(scales), SIZES, TARGET, make_buy(scales, []), method="ats", max_flops=cap)
    assert blind.flops > cap
    log = []
    told = run_loop(policy(), list(scales), SIZES, TARGET, make_buy(scales, log), method="ats", max_flops=cap,
                  flops_per_example={name: 10.0 for name in scales})
    assert 0 < told.flops <= cap and told.flops == pytest.approx(sum(10.0 * s for _, s in log))
    assert len(told.ranking.candidates) == 3  # too little data to rank is reported, not raised
    nonsense = run_loop(policy(), list(scales), SIZES, TARGET, make_buy(scales, []), method="ats", max_flops=cap,
                      flops_per_example={name: float("nan") for name in scales})
    assert nonsense.flops == blind.flops  # an estimate that is no number is no estimate
