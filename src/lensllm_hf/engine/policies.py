"""Which runs to buy next: grid, adaptive and halving, as policies of the one buying loop.

A policy only decides (see :class:`lensllm_hf.engine.loop.Policy`): it reads the loop's books
and yields the next batch of (candidate, size) runs; :func:`lensllm_hf.engine.loop.run_loop`
buys them (what fits ``max_flops``), records them and ranks. Each batch is one call of the
buyer, so a parallel backend trains it together; only the batches follow one another.

- :class:`GridPolicy`: every candidate on every size, in one batch.
- :class:`AdaptivePolicy`: every candidate on the smallest sizes, then, round after round, the
  next size only for the candidates that could still be the best.
- :class:`HalvingPolicy`: successive halving on the loss *predicted at the target*.

Example (two crossing curves: "steep" starts worse and ends better):
    >>> from lensllm_hf.engine.loop import run_loop
    >>> curves = {"flat": (3.0, 0.10), "steep": (4.5, 0.16)}
    >>> def buy(runs):
    ...     return [(curves[m][0] * s ** -curves[m][1], 1e8 * s) for m, s in runs]
    >>> run_loop(HalvingPolicy(), ["flat", "steep"], [200, 400, 800, 1600, 3200, 6400], 100_000, buy).ranking.best
    'steep'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import LensLLMError
from .loop import LoopState, Policy, Run
from .methods import METHODS
from .ranking import CandidateFit, Ranking

__all__ = ["CONTENDER_P", "ETA", "MIN_START_SIZES", "POLICIES", "AdaptivePolicy", "GridPolicy", "HalvingPolicy",
           "start_column"]

_log = logging.getLogger(__name__)

#: Adaptive: a candidate stays a contender (gets more data) while its P(best) is at least this.
CONTENDER_P = 0.02
#: Halving rate: each round keeps at most ``ceil(alive / ETA)`` candidates and doubles their data.
ETA = 2
#: Fine-tuned sizes (D > 0) every candidate gets before halving's first cut: a line and its residual need three.
MIN_START_SIZES = 3


@dataclass
class GridPolicy:
    """Every candidate on every size (zero-shot included), in one batch, candidate by candidate;
    with ``only``, just those of the runs (``--from-store``: the runs a store holds)."""

    only: Collection[Run] | None = None
    name = "grid"

    def runs(self, state: LoopState) -> Iterator[list[Run]]:
        yield [(model, size) for model in state.models for size in state.sizes
               if self.only is None or (model, size) in self.only]


@dataclass
class AdaptivePolicy:
    """Buy more data only for the candidates that could still be the best.

    Every candidate first gets the ``start_points`` smallest sizes, and then whole columns while
    that spends at most ``start_share`` of ``max_flops``: a fair look at all before spending on
    the leaders. Then each round the candidates that could still win (P(best) at least
    :data:`CONTENDER_P`, or, for a method without probabilities, an interval reaching below the
    top of the leader's) get their next size, leaders first; it stops when one is left.
    """

    start_points: int = 4
    start_share: float = 0.5
    name = "adaptive"

    def runs(self, state: LoopState) -> Iterator[list[Run]]:
        if len(state.sizes) < 3:
            raise LensLLMError(f"adaptive selection needs at least 3 subset sizes, got {state.sizes}; add sizes")
        for col, size in enumerate(state.sizes):
            alive = state.alive()
            if col >= self.start_points:
                cost = state.cost_per_example()
                projected = sum(cost.get(model, 0.0) * size for model in alive)
                if state.max_flops is None or state.flops + projected > self.start_share * state.max_flops:
                    break
            yield [(model, size) for model in alive]
        while True:
            contenders = _contenders(state.ranking().ranked)
            if len(contenders) <= 1:
                return
            yield _next_sizes(state, state.alive(c.model for c in contenders))


class HalvingPolicy:
    """Successive halving: every candidate starts small, and each round at most half of them get more data.

    The algorithm behind ASHA and Hyperband (Jamieson & Talwalkar, 2016; Li et al., 2018), with
    one change that model selection needs: candidates are promoted by the loss *predicted at the
    target*, never by the loss observed so far. Fine-tuning curves cross (a large model that
    starts well flattens, a small one that starts badly keeps falling), so halving on the
    observed loss drops the eventual winners.

    1. Every candidate gets the smallest sizes up to :data:`MIN_START_SIZES` fine-tuned ones,
       then, in the order of a first ranking, every size up to the start size
       (:func:`start_column`).
    2. Each round the method ranks every candidate at the target. The candidates that can still
       win keep running, best first, at most ``ceil(n / ETA)`` of the ``n`` of the last round:
       with ``p_best`` on the rows, the smallest set holding ``level`` of the probability of
       being the best; otherwise those whose ``level`` interval reaches below the top of the
       leader's. Everyone still running may be picked, not only last round's: one dropped on
       fewer points comes back when the others' new points push their predictions above its own.
    3. It stops when one candidate is left or the sizes or ``max_flops`` run out.

    Each round logs one line (logger ``lensllm_hf.engine.policies``, level INFO; ``lensllm
    select`` prints it on stderr): who goes on, who is back, and who is cut, with P(best) and why.

    The final ranking is the method's on every point bought: a candidate dropped early keeps its
    prediction from its fewer points (and its wider interval) and stays ``complete``. Replayed on
    the shared tables: docs/selector.md.
    """

    name = "halving"

    def runs(self, state: LoopState) -> Iterator[list[Run]]:
        _check_halving(state)
        positive = [col for col, size in enumerate(state.sizes) if size > 0]
        first = positive[min(MIN_START_SIZES, len(positive)) - 1]
        for size in state.sizes[:first + 1]:
            yield [(model, size) for model in state.alive()]
        # Their costs, in the order of the first ranking, set the start size.
        running = state.alive()
        order = [c.model for c in state.ranking().ranked if c.model in running]
        order += [model for model in running if model not in order]
        cost = state.cost_per_example()
        start = start_column(state.sizes, first, [cost.get(model, math.nan) for model in order],
                             spent=state.flops, max_flops=state.max_flops)
        for size in state.sizes[first + 1:start + 1]:
            yield [(model, size) for model in state.alive(order)]
        alive, round_ = state.alive(), 0
        while True:
            round_ += 1
            ranking, running, previous, cap = state.ranking(), state.alive(), alive, math.ceil(len(alive) / ETA)
            alive = _survivors(ranking, running, state.level, cap=cap)
            wanted = _next_sizes(state, alive) if len(alive) > 1 else []
            _log.info(_round_line(round_, ranking, running, previous, alive, state.level, cap, done=not wanted))
            if not wanted:
                return
            yield wanted
            alive = state.alive(alive)


#: ``strategy`` name -> a new policy of that name.
POLICIES: dict[str, Callable[[], Policy]] = {"grid": GridPolicy, "adaptive": AdaptivePolicy,
                                             "halving": HalvingPolicy}


def _next_sizes(state: LoopState, models: Sequence[str]) -> list[Run]:
    """Each candidate's next size, in the given order (those whose sizes ran out left out)."""
    return [(model, size) for model in models if (size := state.next_size(model)) is not None]


def _could_win(ranked: list[CandidateFit]) -> list[CandidateFit]:
    """The leader (first) and every row whose interval (or estimate) reaches below the top of the leader's."""
    leader = ranked[0]
    top = leader.interval[1] if leader.interval else leader.estimate
    return [c for c in ranked if c is leader or (c.interval[0] if c.interval else c.estimate) <= top]


def _contenders(ranked: list[CandidateFit]) -> list[CandidateFit]:
    """Adaptive's candidates that could still be the best: P(best) >= CONTENDER_P, else :func:`_could_win`."""
    if not ranked:
        return []
    if all(c.p_best is not None for c in ranked):
        return [c for c in ranked if c is ranked[0] or c.p_best >= CONTENDER_P]
    return _could_win(ranked)


def _survivors(ranking: Ranking, alive: list[str], level: float, cap: int) -> list[str]:
    """Halving's candidates of ``alive`` that can still win, at most ``cap``, best first."""
    rows = [c for c in ranking.ranked if c.model in alive]
    if not rows:
        return []
    if all(c.p_best is not None and math.isfinite(c.p_best) for c in rows):
        total = sum(c.p_best for c in rows)
        kept, mass = [], 0.0
        for c in sorted(rows, key=lambda c: -c.p_best):
            kept.append(c.model)
            mass += c.p_best
            if mass >= level * total:
                break
        return kept[:cap]
    return [c.model for c in _could_win(sorted(rows, key=lambda c: c.estimate))][:cap]


def _round_line(round_: int, ranking: Ranking, running: list[str], previous: list[str], kept: list[str],
                level: float, cap: int, *, done: bool) -> str:
    """One halving round in words: who goes on (and who is back), who of last round's is cut and why, with P(best)."""
    rows = {c.model: c for c in ranking.candidates}
    by_share = _survivors(ranking, running, level, cap=len(running))  # who can still win, before the places

    def shown(name: str) -> str:
        p = getattr(rows.get(name), "p_best", None)
        return name + (f" ({p:.2g})" if p is not None and math.isfinite(p) else "")

    reasons: dict[str, list[str]] = {}
    for name in (n for n in previous if n not in kept):
        if name in by_share:
            why = f"only {cap} place(s) this round"
        elif getattr(rows.get(name), "p_best", None) is not None:
            why = f"P(best) outside the {level:.0%} the leaders hold"
        else:
            why = "interval above the leader's"
        reasons.setdefault(why, []).append(shown(name))
    back = [n for n in kept if n not in previous]
    text = (f"halving round {round_}{', done' if done else ''} (P(best) in brackets): "
            f"{', '.join(map(shown, kept)) or 'nobody'} {'stays' if done else 'goes on'}")
    text += f"; back: {', '.join(back)}" if back else ""
    return text + ("".join(f"; cut, {why}: {', '.join(names)}" for why, names in reasons.items()) or "; nobody cut")


def _check_halving(state: LoopState) -> None:
    if sum(s > 0 for s in state.sizes) < MIN_START_SIZES:
        raise LensLLMError(f"halving needs at least {MIN_START_SIZES} fine-tuned sizes (D > 0), got {state.sizes}; "
                           "add sizes")
    if not METHODS[state.method].predicts_loss:
        raise LensLLMError(f"halving promotes by the predicted loss, and {state.method!r} predicts none; "
                           "use a law method such as 'default'")


def start_column(sizes: Sequence[int], first: int, costs: Sequence[float], *, spent: float = 0.0,
                 max_flops: float | None = None) -> int:
    """The column halving fine-tunes every candidate up to before its first cut.

    Hyperband's bracket for a halving rate of 2: with ``n`` candidates, ``ceil(log2 n) - 1``
    rounds take the survivors from the start size to the two finalists, each round costing about
    as much as the last (half the candidates, twice the data). The start size is the largest one
    such that the two finalists would reach the largest size and the whole schedule fits
    ``max_flops``; never below ``first`` (the halving rate is the algorithm's, the level the
    ranking's, the budget the caller's: nothing else is set).

    Args:
        sizes: the subset sizes, ascending.
        first: the smallest allowed start column (``MIN_START_SIZES`` fine-tuned sizes).
        costs: FLOPs per example of each candidate still running, leaders first (NaN: not
            measured yet, counted at the mean of the others); round ``r`` is projected to
            train the first ``ceil(n / ETA**r)`` of them.
        spent: FLOPs already spent (the runs up to ``first``).
        max_flops: the budget, or None.
    """
    n = len(costs)
    if n <= 1:  # nothing to choose between: the fewest points that give a prediction
        return first
    rounds, left = 0, n
    while left > 2:  # the halving rounds before two finalists are left
        left, rounds = math.ceil(left / ETA), rounds + 1
    start = max(first, len(sizes) - 1 - rounds)  # the finalists reach the largest size
    if max_flops is None:
        return start
    costs = np.asarray(costs, dtype=float)
    known = costs[np.isfinite(costs)]
    costs = np.where(np.isfinite(costs), costs, known.mean() if known.size else 0.0)
    while start > first and spent + _schedule_cost(sizes, first, start, costs) > max_flops:
        start -= 1
    return start


def _schedule_cost(sizes: Sequence[int], first: int, start: int, costs: np.ndarray) -> float:
    """Projected FLOPs of the columns after ``first`` for all, then of the halving rounds."""
    total = float(costs.sum()) * sum(sizes[first + 1:start + 1])
    alive = len(costs)
    for col in range(start + 1, len(sizes)):
        alive = math.ceil(alive / ETA)
        if alive <= 1:
            break
        total += float(costs[:alive].sum()) * sizes[col]
    return total
