"""Adaptive compute: buy more data only for candidates that could still be the best.

Every candidate is first fine-tuned on the smallest sizes; then, round after round, the laws
are fitted, and only the candidates that could still be the best (P(best) at least
``CONTENDER_P``) get their data doubled. It stops when one candidate is clearly ahead, or when the sizes (or the
FLOPs budget) run out. The same loop serves the selector, where buying a size trains a run,
and ``lensllm bench``, where a curve table stands in for training: buying reveals a column.

Example:
    >>> def buy(model, size):        # stands in for fine-tuning: (test loss, FLOPs)
    ...     scale = {"small": 2.0, "large": 0.7}[model]
    ...     return scale * 3.0 * (max(size, 100) / 100) ** -0.1, 1e6 * size
    >>> result = select_adaptive(["small", "large"], [0, 200, 400, 800, 1600, 3200], 1_638_400, buy)
    >>> result.ranking.best, result.bought["small"]
    ('large', [0, 200, 400, 800])
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .curves import CurveTable
from .errors import LensLLMError
from .methods import LEVEL, rank
from .ranking import CandidateFit, Ranking

__all__ = ["AdaptiveResult", "Buy", "select_adaptive", "table_buyer"]

#: ``buy(model, size) -> (loss, flops)``: fine-tune one candidate on one subset size.
Buy = Callable[[str, int], tuple[float, float]]


@dataclass
class AdaptiveResult:
    """What the adaptive loop decided and what it cost.

    Attributes:
        ranking: the final ranking (every candidate, with the points it was given).
        bought: per candidate, the subset sizes it was fine-tuned on, in order.
        flops: total FLOPs of those runs.
        rounds: how many fit-and-buy rounds ran.
    """

    ranking: Ranking
    bought: dict[str, list[int]] = field(default_factory=dict)
    flops: float = 0.0
    rounds: int = 0


def select_adaptive(
    models: Sequence[str],
    sizes: Sequence[int],
    target: float,
    buy: Buy,
    *,
    method: str = "default",
    level: float = LEVEL,
    start_points: int = 4,
    start_share: float = 0.5,
    max_flops: float | None = None,
    params: Sequence[float] | None = None,
) -> AdaptiveResult:
    """Rank ``models`` for ``target`` examples, buying subset sizes only where they matter.

    Args:
        models: candidate names.
        sizes: the subset sizes that may be bought, ascending (0 = zero-shot evaluation).
        target: the full training size the ranking is for.
        buy: fine-tunes one candidate on one size and returns (test loss, FLOPs); it may
            raise :class:`LensLLMError` or return NaN, which fails that candidate only.
        method: the selection method fitted each round (see ``lensllm_hf.methods``).
        level: interval level used to decide which candidates could still win.
        start_points: how many of the smallest sizes every candidate gets first.
        start_share: with ``max_flops``, every candidate keeps getting the next size while
            that spends at most this share of the budget; the rest goes to the contenders.
        max_flops: stop buying once this many FLOPs are spent (None: only sizes limit it).
        params: parameter counts (kept in the ranking's table, used by ``modelsize``).
    """
    sizes = sorted(int(s) for s in sizes)
    if not models:
        raise LensLLMError("no candidates to select from; pass at least one model")
    if len(sizes) < 3:
        raise LensLLMError(f"adaptive selection needs at least 3 subset sizes, got {sizes}; add sizes")
    if target <= sizes[-1]:
        raise LensLLMError(f"target {target:g} must exceed the largest subset size {sizes[-1]}; raise the target")
    losses = np.full((len(models), len(sizes)), np.nan)
    failed: dict[str, str] = {}
    state = AdaptiveResult(ranking=Ranking(target, f"adaptive-{method}", []), bought={m: [] for m in models})

    def purchase(row: int, col: int) -> None:
        model, size = models[row], sizes[col]
        try:
            loss, flops = buy(model, size)
        except LensLLMError as error:
            failed[model] = str(error)
            return
        state.bought[model].append(size)
        state.flops += float(flops or 0.0)
        if size > 0 and flops:
            flops_per_example[model] = float(flops) / size
        if not (math.isfinite(loss) and loss > 0):
            failed[model] = f"the run on {size} examples gave loss {loss}; check its learning rate and data"
            return
        losses[row, col] = loss

    flops_per_example: dict[str, float] = {}

    def affordable(row: int | None = None, col: int | None = None) -> bool:
        """Whether the run fits the budget, projecting its cost from the candidate's earlier runs."""
        if max_flops is None:
            return True
        projected = flops_per_example.get(models[row], 0.0) * sizes[col] if row is not None else 0.0
        return state.flops + projected <= max_flops

    # Every candidate first gets the smallest sizes, and then whole columns while they take at
    # most `start_share` of the budget: a fair look at all before spending on the leaders.
    for col in range(len(sizes)):
        alive = [row for row in range(len(models)) if models[row] not in failed]
        if col >= start_points:
            projected = sum(flops_per_example.get(models[row], 0.0) * sizes[col] for row in alive)
            if max_flops is None or state.flops + projected > start_share * max_flops:
                break
        for row in alive:
            if affordable(row, col):
                purchase(row, col)

    table = CurveTable(list(models), np.asarray(sizes), losses,
                       params=None if params is None else np.asarray(params, dtype=float), source="adaptive")
    while True:
        state.rounds += 1
        ranking = rank(table, target, method, level)
        contenders = _contenders(ranking.ranked)
        wanted = []
        for candidate in contenders:
            row = models.index(candidate.model)
            if candidate.model in failed:
                continue
            made = np.flatnonzero(~np.isnan(losses[row]))
            col = (made.max() + 1) if made.size else 0
            if col < len(sizes):
                wanted.append((row, col))
        wanted = [(row, col) for row, col in wanted if affordable(row, col)]
        if len(contenders) <= 1 or not wanted:
            break
        for row, col in wanted:  # leaders first, so a tight budget goes where it matters
            if affordable(row, col):
                purchase(row, col)

    for candidate in ranking.candidates:
        if candidate.model in failed:
            candidate.status, candidate.error = "failed", failed[candidate.model]
    state.ranking = Ranking(target, ranking.method, ranking.candidates, level)
    return state


#: A candidate stays a contender (gets more data) while its P(best) is at least this.
CONTENDER_P = 0.02


def _contenders(ranked: list[CandidateFit]) -> list[CandidateFit]:
    """The leader and every candidate that could still be the best: P(best) >= CONTENDER_P, or,
    for a method without probabilities, an interval reaching below the top of the leader's."""
    if not ranked:
        return []
    leader = ranked[0]
    if all(c.p_best is not None for c in ranked):
        return [c for c in ranked if c is leader or c.p_best >= CONTENDER_P]
    top = leader.interval[1] if leader.interval else leader.score
    return [c for c in ranked if c is leader or (c.interval[0] if c.interval else c.score) <= top]


def table_buyer(table: CurveTable) -> Buy:
    """``buy`` for a curve table: buying a size reveals that column; FLOPs are parameters x examples."""
    scale = table.params if table.params is not None else np.ones(len(table.models))

    def buy(model: str, size: int) -> tuple[float, float]:
        row = table.models.index(model)
        return float(table.column(size)[row]), float(scale[row] * size)

    return buy
