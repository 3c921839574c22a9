"""Adaptive compute: buy more data only for candidates that could still be the best.

Every candidate is first fine-tuned on the smallest sizes; then, round after round, the laws
are fitted, and only the candidates that could still be the best (P(best) at least
``CONTENDER_P``) get their data doubled. It stops when one candidate is clearly ahead, or when the sizes (or the
FLOPs budget) run out. The same loop serves the selector, where buying a size trains a run,
and ``lensllm bench``, where a curve table stands in for training: buying reveals a column.

Runs are bought in batches through one :data:`Buy` function: each start column, and each
round's runs, is one call, so a parallel backend (Ray) trains them together. Which of a
batch's runs fit ``max_flops`` is decided before it is bought, in order, each run's cost
projected from its candidate's FLOPs per example so far, or before its first run from the
caller's estimate (``flops_per_example``; :class:`Ledger`, shared with
:mod:`lensllm_hf.engine.halving`). :func:`one_by_one` turns a one-run ``buy(model, size)`` into a
:data:`Buy`.

Example:
    >>> def buy(model, size):        # stands in for fine-tuning: (test loss, FLOPs)
    ...     scale = {"small": 2.0, "large": 0.7}[model]
    ...     return scale * 3.0 * (max(size, 100) / 100) ** -0.1, 1e6 * size
    >>> result = select_adaptive(["small", "large"], [0, 200, 400, 800, 1600, 3200], 1_638_400, one_by_one(buy))
    >>> result.ranking.best, result.bought["small"]
    ('large', [0, 200, 400, 800])
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .curves import CurveTable
from ..errors import LensLLMError
from .methods.base import RunInfo
from .methods import LEVEL, rank
from .ranking import CandidateFit, Ranking

__all__ = ["AdaptiveResult", "Buy", "Ledger", "one_by_one", "select_adaptive", "table_buyer"]

#: ``buy(runs) -> results``: fine-tune each ``(model, size)`` of a batch (a backend may run them
#: in parallel); per run, in order, ``(test loss, FLOPs)`` or the :class:`LensLLMError` that failed it.
Buy = Callable[[list[tuple[str, int]]], list["tuple[float, float] | LensLLMError"]]


def one_by_one(buy_one: Callable[[str, int], tuple[float, float]]) -> Buy:
    """A :data:`Buy` that runs a batch one run after another with ``buy_one(model, size) -> (loss, FLOPs)``;
    a :class:`LensLLMError` it raises fails that run only."""

    def buy(runs: list[tuple[str, int]]) -> list[tuple[float, float] | LensLLMError]:
        results: list[tuple[float, float] | LensLLMError] = []
        for model, size in runs:
            try:
                results.append(buy_one(model, size))
            except LensLLMError as error:
                results.append(error)
        return results

    return buy


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
    runs: Mapping[str, RunInfo] | None = None,
    flops_per_example: Mapping[str, float] | None = None,
) -> AdaptiveResult:
    """Rank ``models`` for ``target`` examples, buying subset sizes only where they matter.

    Args:
        models: candidate names.
        sizes: the subset sizes that may be bought, ascending (0 = zero-shot evaluation).
        target: the full training size the ranking is for.
        buy: fine-tunes a batch of (candidate, size) runs (see :data:`Buy`; :func:`one_by_one`
            adapts a one-run function): each start column is one batch, each round's runs another.
            A run's :class:`LensLLMError` or NaN loss fails that candidate only.
        method: the selection method fitted each round (see ``lensllm_hf.engine.methods``).
        level: interval level used to decide which candidates could still win.
        start_points: how many of the smallest sizes every candidate gets first.
        start_share: with ``max_flops``, every candidate keeps getting the next size while
            that spends at most this share of the budget; the rest goes to the contenders.
        max_flops: start no run whose projected cost takes the total past this (None: only sizes limit it).
        params: parameter counts (kept in the ranking's table, used by ``modelsize``).
        runs: what each candidate's run records say (the NTK probe, warnings; see
            :func:`lensllm_hf.engine.methods.base.run_info`), read at every round: a caller may update the
            mapping as runs are bought.
        flops_per_example: candidate -> FLOPs per training example expected before any of its
            runs (the selector's estimate), so that ``max_flops`` holds from the first column.
    """
    models = list(models)
    sizes = sorted(int(s) for s in sizes)
    if not models:
        raise LensLLMError("no candidates to select from; pass at least one model")
    if len(sizes) < 3:
        raise LensLLMError(f"adaptive selection needs at least 3 subset sizes, got {sizes}; add sizes")
    if target <= sizes[-1]:
        raise LensLLMError(f"target {target:g} must exceed the largest subset size {sizes[-1]}; raise the target")
    ledger = Ledger(models, sizes, buy, max_flops, flops_per_example)

    # Every candidate first gets the smallest sizes, and then whole columns while they take at
    # most `start_share` of the budget: a fair look at all before spending on the leaders.
    for col in range(len(sizes)):
        alive = ledger.alive(range(len(models)))
        if col >= start_points:
            cost = ledger.cost_per_example()
            projected = sum(cost.get(row, 0.0) * sizes[col] for row in alive)
            if max_flops is None or ledger.flops + projected > start_share * max_flops:
                break
        ledger.buy(ledger.affordable([(row, col) for row in alive]))

    table = ledger.table(params, "adaptive")
    rounds = 0
    while True:
        rounds += 1
        ranking = rank(table, target, method, level, runs=runs)
        contenders = _contenders(ranking.ranked)
        wanted = [(row, ledger.next_column(row)) for row in ledger.alive(models.index(c.model) for c in contenders)]
        # Leaders first, so a tight budget goes where it matters.
        wanted = ledger.affordable([(row, col) for row, col in wanted if col is not None])
        if len(contenders) <= 1 or not wanted:
            break
        ledger.buy(wanted)

    ledger.explain_failures(ranking.candidates)
    return AdaptiveResult(Ranking(target, ranking.method, ranking.candidates, level),
                          bought=ledger.bought, flops=ledger.flops, rounds=rounds)


class Ledger:
    """The runs an engine loop bought: losses, FLOPs, failures, and what a next run would cost.

    Args:
        models, sizes: the candidates and the subset sizes (ascending); runs are ``(row, col)`` into them.
        buy: buys a batch (see :data:`Buy`).
        max_flops: the budget :meth:`affordable` keeps to, or None.
        flops_per_example: candidate -> FLOPs per training example expected before its first
            fine-tuning run (the selector's cost estimate); its measured runs replace it.
    """

    def __init__(self, models: list[str], sizes: list[int], buy: Buy, max_flops: float | None,
                 flops_per_example: Mapping[str, float] | None = None) -> None:
        self.models, self.sizes, self._buy, self.max_flops = models, sizes, buy, max_flops
        # An estimate that is no number is no estimate (the run then costs 0 until measured).
        self._expected = {row: float(flops_per_example[m]) for row, m in enumerate(models)
                          if flops_per_example and _cost(flops_per_example.get(m)) is not None}
        self.losses = np.full((len(models), len(sizes)), np.nan)
        self.bought: dict[str, list[int]] = {m: [] for m in models}
        self.failed: dict[str, str] = {}
        self.flops = 0.0
        self._per_example: dict[int, float] = {}
        self._refused: set[int] = set()  # rows with a run the budget did not allow

    def affordable(self, runs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """The runs, in order, that fit the budget bought together: each one's cost is projected
        from its candidate's FLOPs per example (:meth:`cost_per_example`; 0 where unknown)."""
        if self.max_flops is None:
            return list(runs)
        per_example = self.cost_per_example()
        kept, spend = [], self.flops
        for row, col in runs:
            cost = per_example.get(row, 0.0) * self.sizes[col]
            if spend + cost <= self.max_flops:
                kept.append((row, col))
                spend += cost
            else:
                self._refused.add(row)
        return kept

    def buy(self, runs: Sequence[tuple[int, int]]) -> None:
        """Buy ``runs`` in one batch and record each result; a failed run fails its candidate only."""
        if not runs:
            return
        results = self._buy([(self.models[row], self.sizes[col]) for row, col in runs])
        if len(results) != len(runs):
            raise LensLLMError(f"buy returned {len(results)} results for {len(runs)} runs; return one per run")
        for (row, col), result in zip(runs, results):
            model, size = self.models[row], self.sizes[col]
            if isinstance(result, LensLLMError):
                self.failed[model] = str(result)
                continue
            loss, flops = result
            self.bought[model].append(size)
            self.flops += float(flops or 0.0)
            if size > 0 and flops:
                self._per_example[row] = float(flops) / size
            if not (isinstance(loss, numbers.Real) and math.isfinite(loss) and loss > 0):
                self.failed[model] = f"the run on {size} examples gave loss {loss}; check its learning rate and data"
                continue
            self.losses[row, col] = loss

    def explain_failures(self, candidates: Sequence[CandidateFit]) -> None:
        """Give the loop's own reasons to a final ranking: a failed run replaces the method's
        error; a candidate whose runs the budget refused says so beside it (the method alone
        would only say "too few points")."""
        for c in candidates:
            row = self.models.index(c.model) if c.model in self.models else None
            if c.model in self.failed:
                c.status, c.error = "failed", self.failed[c.model]
            elif c.status == "failed" and row in self._refused:
                fine_tuned = len([s for s in self.bought[c.model] if s > 0])
                c.error = (f"{c.error} (max_flops {self.max_flops:.3g} refused its next run after "
                           f"{fine_tuned} fine-tuned; raise max_flops)")

    def alive(self, rows) -> list[int]:
        """The rows whose candidate has not failed, in order."""
        return [row for row in rows if self.models[row] not in self.failed]

    def cost_per_example(self) -> dict[int, float]:
        """Row -> FLOPs per example of its last fine-tuning run, or the expected cost before one
        (rows with neither left out)."""
        return {**self._expected, **self._per_example}

    def next_column(self, row: int) -> int | None:
        """The column after the row's largest bought loss, or None when the sizes ran out."""
        made = np.flatnonzero(~np.isnan(self.losses[row]))
        col = int(made.max()) + 1 if made.size else 0
        return col if col < len(self.sizes) else None

    def table(self, params: Sequence[float] | None, source: str) -> CurveTable:
        """A live view: later purchases fill the same loss array."""
        return CurveTable(list(self.models), np.asarray(self.sizes), self.losses,
                          params=None if params is None else np.asarray(params, dtype=float), source=source)


def _cost(value) -> float | None:
    """``value`` as a finite FLOPs count >= 0, else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


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
    """:data:`Buy` for a curve table: buying a size reveals that column; FLOPs are parameters x examples."""
    scale = table.params if table.params is not None else np.ones(len(table.models))

    def buy(runs: list[tuple[str, int]]) -> list[tuple[float, float]]:
        rows = [table.models.index(model) for model, _ in runs]
        return [(float(table.column(size)[row]), float(scale[row] * size)) for row, (_, size) in zip(rows, runs)]

    return buy
