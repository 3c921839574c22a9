"""The one buying loop: a policy only decides, the loop buys, keeps the books and ranks."""

from __future__ import annotations

import dataclasses

import pytest

from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.engine.loop import run_loop
from lensllm_hf.engine.methods import rank
from lensllm_hf.engine.policies import GridPolicy
from lensllm_hf.engine.protocol import table_buyer
from lensllm_hf.errors import LensLLMError

TARGET = 1_638_400
SIZES = [0, 200, 400, 800, 1600, 3200]


def _flan(curves_dir, rows: int = 6) -> CurveTable:
    """The first ``rows`` candidates of the shared FLAN table, sizes up to 3,200."""
    table = CurveTable.read_csv(curves_dir / "flan.csv").up_to(SIZES[-1])
    return dataclasses.replace(table, models=table.models[:rows], losses=table.losses[:rows],
                               params=table.params[:rows])


def test_the_grid_policy_bought_by_the_loop_ranks_as_the_method_on_the_table(curves_dir):
    """The same loop serves the bench and the selector: grid through it is the method on the whole table."""
    table = _flan(curves_dir)
    calls = []

    def buy(runs):
        calls.append(runs)
        return table_buyer(table)(runs)

    result = run_loop(GridPolicy(), table.models, SIZES, TARGET, buy, level=0.8)
    direct = rank(table, TARGET, "default", level=0.8)
    assert len(calls) == 1 and len(calls[0]) == len(table.models) * len(SIZES)  # one batch
    assert result.ranking.level == 0.8 and [c.model for c in result.ranking.candidates] == [
        c.model for c in direct.candidates]
    assert [(c.predicted_loss, c.interval, c.p_best) for c in result.ranking.candidates] == [
        (c.predicted_loss, c.interval, c.p_best) for c in direct.candidates]
    assert result.bought == {m: SIZES for m in table.models} and result.rounds == 1


def test_a_policy_of_ones_own_decides_and_the_loop_buys_and_books(curves_dir, small_then_leader):
    table = _flan(curves_dir, rows=4)
    result = run_loop(small_then_leader, table.models, SIZES, TARGET, table_buyer(table))
    assert small_then_leader.seen == [{m: SIZES[:3] for m in table.models}]
    assert small_then_leader.leaders and result.bought == {
        m: SIZES[:3 + small_then_leader.leaders.count(m)] for m in table.models}
    assert result.flops == pytest.approx(sum(table.params[table.models.index(m)] * s
                                             for m, sizes in result.bought.items() for s in sizes))


def test_what_a_policy_asks_is_checked_before_it_is_bought(curves_dir):
    table = _flan(curves_dir, rows=3)
    bought = []

    def buy(runs):
        bought.extend(runs)
        return table_buyer(table)(runs)

    class Stray:
        name = "stray"

        def runs(self, state):
            yield [(state.models[0], 123)]

    with pytest.raises(LensLLMError, match="policy 'stray' asked for .* on 123, which is no candidate and size"):
        run_loop(Stray(), table.models, SIZES, TARGET, buy)
    assert bought == []
    with pytest.raises(LensLLMError, match="listed twice"):
        run_loop(GridPolicy(), ["a", "a"], SIZES, TARGET, buy)
    with pytest.raises(LensLLMError, match="returned 1 results for 6 runs; return one per run"):
        run_loop(GridPolicy(), table.models[:2], SIZES[:3], TARGET, lambda runs: [(1.0, 1.0)])
