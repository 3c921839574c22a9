"""The one buying loop: a policy decides which runs to buy, a buyer runs them, the loop keeps the books and ranks.

As Optuna's pruners and Ray Tune's schedulers separate them: a :class:`Policy` only decides which
(candidate, subset size) runs to buy next, or that it is done; a :data:`Buyer` only runs them
(the selector's backends fine-tune, ``lensllm bench`` reveals a column of a curve table); and
:func:`run_loop` asks, buys, records and ranks. So a policy scored on a table is the policy a
selection runs. Grid, adaptive and halving are in :mod:`lensllm_hf.engine.policies`.

The loop owns the books (:class:`LoopState`, which the policy reads): every run's loss and FLOPs,
the candidates that failed (a failed run or a loss that is no positive number fails its
candidate only, which is not bought again), and the budget: of each batch the policy asks for,
the runs that would take the total past ``max_flops`` are dropped, in the policy's order, each
run's cost projected from its candidate's FLOPs per example so far (before its first run, from
the caller's estimate ``flops_per_example``). It stops when the policy is done or none of the
runs it asks for may be bought. The final ranking is the method's on every point bought, at the
caller's target and level, with the loop's own reasons beside the candidates that failed.

Example:
    >>> def buy(runs):          # stands in for fine-tuning: (test loss, FLOPs) per run
    ...     scale = {"small": 2.0, "large": 0.7}
    ...     return [(scale[m] * 3.0 * (max(size, 100) / 100) ** -0.1, 1e6 * size) for m, size in runs]
    >>> from lensllm_hf.engine.policies import AdaptivePolicy
    >>> result = run_loop(AdaptivePolicy(), ["small", "large"], [0, 200, 400, 800, 1600, 3200], 1_638_400, buy)
    >>> result.ranking.best, result.bought["small"]
    ('large', [0, 200, 400, 800])
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import LensLLMError
from .curves import CurveTable
from .fit import check_level
from .methods import LEVEL, METHODS, rank
from .methods.base import RunInfo
from .ranking import Ranking

__all__ = ["Buyer", "LoopResult", "LoopState", "Outcome", "Policy", "Run", "one_by_one", "run_loop"]

#: One run: (candidate, subset size); size 0 is the zero-shot evaluation.
Run = tuple[str, int]
#: What a run gave: (test loss, FLOPs), or the :class:`LensLLMError` that failed it.
Outcome = tuple[float, float] | LensLLMError
#: Runs a batch (a backend may run it in parallel): one :data:`Outcome` per run, in order.
Buyer = Callable[[list[Run]], list[Outcome]]


@runtime_checkable
class Policy(Protocol):
    """Decides which runs to buy; never buys. Plug in your own (``LensLLMSelector.run(policy=...)``).

    Attributes:
        name: what results call the strategy (``"adaptive"``).

    Example (every candidate on the three smallest sizes, then the leader on one more):
        >>> class LeaderOnce:
        ...     name = "leader-once"
        ...     def runs(self, state):
        ...         for size in state.sizes[:3]:
        ...             yield [(model, size) for model in state.alive()]
        ...         leader = state.ranking().best
        ...         if leader is not None and state.next_size(leader) is not None:
        ...             yield [(leader, state.next_size(leader))]
    """

    name: str

    def runs(self, state: LoopState) -> Iterator[list[Run]]:
        """Yield batches of runs to buy, the most wanted first; return when done.

        ``state`` is live: after each ``yield`` the loop has bought what fits the budget and
        recorded it. A batch the budget leaves empty ends the loop. Bad input is raised before
        the first batch, so nothing is bought.
        """
        ...


@dataclass
class LoopResult:
    """What the loop bought and the ranking it ends with.

    Attributes:
        ranking: the final ranking (every candidate, with the points it was given).
        bought: per candidate, the subset sizes bought, in order.
        flops: total FLOPs of those runs.
        rounds: how many times the candidates were ranked (the policy's decisions and the end).
    """

    ranking: Ranking
    bought: dict[str, list[int]]
    flops: float
    rounds: int


class LoopState:
    """The loop's books, which a policy reads: losses, FLOPs, failures, costs and the ranking on them.

    Attributes:
        models, sizes: the candidates and the subset sizes that may be bought (ascending).
        target, method, level: what the ranking is for.
        max_flops: the budget (None: only the sizes limit it).
        bought: per candidate, the sizes bought, in order.
        failed: candidate -> why it failed.
        flops: FLOPs spent so far.
        rounds: rankings made so far.
    """

    def __init__(self, models: list[str], sizes: list[int], target: float, *, method: str, level: float,
                 max_flops: float | None, params: Mapping[str, float] | None, runs: Mapping[str, RunInfo] | None,
                 flops_per_example: Mapping[str, float] | None, source: str) -> None:
        self.models, self.sizes, self.target = models, sizes, target
        self.method, self.level, self.max_flops = method, level, max_flops
        self._params, self._runs, self._source = params, runs, source
        # An estimate that is no number is no estimate (the run then costs 0 until measured).
        self._expected = {m: float(flops_per_example[m]) for m in models
                          if flops_per_example and _cost(flops_per_example.get(m)) is not None}
        self._row = {m: i for i, m in enumerate(models)}
        self._losses = np.full((len(models), len(sizes)), np.nan)
        self.bought: dict[str, list[int]] = {m: [] for m in models}
        self.failed: dict[str, str] = {}
        self.flops = 0.0
        self.rounds = 0
        self._per_example: dict[str, float] = {}
        self._refused: set[str] = set()  # candidates with a run the budget did not allow
        self._ranking: Ranking | None = None

    # -- what a policy reads ------------------------------------------------------------------
    def alive(self, models: Iterable[str] | None = None) -> list[str]:
        """The candidates (all, or of ``models``, in their order) that have not failed."""
        return [m for m in (self.models if models is None else models) if m not in self.failed]

    def next_size(self, model: str) -> int | None:
        """The size after the largest one bought for ``model``, or None when the sizes ran out."""
        made = np.flatnonzero(~np.isnan(self._losses[self._row[model]]))
        col = int(made.max()) + 1 if made.size else 0
        return self.sizes[col] if col < len(self.sizes) else None

    def cost_per_example(self) -> dict[str, float]:
        """Candidate -> FLOPs per example of its last fine-tuning run, or its expected cost before
        one (candidates with neither left out)."""
        return {**self._expected, **self._per_example}

    def table(self) -> CurveTable:
        """The losses bought so far (NaN: not bought), with the caller's parameter counts."""
        params = None if self._params is None else np.array([float(self._params.get(m, math.nan))
                                                                for m in self.models])
        return CurveTable(list(self.models), np.asarray(self.sizes), self._losses.copy(), params=params,
                          source=self._source)

    def ranking(self) -> Ranking:
        """The method's ranking on what was bought, made once per purchase (each makes a round)."""
        if self._ranking is None:
            self._ranking = rank(self.table(), self.target, self.method, self.level, runs=self._runs)
            self.rounds += 1
        return self._ranking

    # -- what the loop does -------------------------------------------------------------------
    def _affordable(self, runs: Sequence[Run]) -> list[Run]:
        """The runs, in order, that fit the budget bought together (each one's cost projected
        from :meth:`cost_per_example`; 0 where unknown)."""
        if self.max_flops is None:
            return list(runs)
        per_example = self.cost_per_example()
        kept, spend = [], self.flops
        for model, size in runs:
            cost = per_example.get(model, 0.0) * size
            if spend + cost <= self.max_flops:
                kept.append((model, size))
                spend += cost
            else:
                self._refused.add(model)
        return kept

    def _record(self, runs: Sequence[Run], outcomes: Sequence[Outcome]) -> None:
        if len(outcomes) != len(runs):
            raise LensLLMError(f"the buyer returned {len(outcomes)} results for {len(runs)} runs; return one per run")
        self._ranking = None
        for (model, size), outcome in zip(runs, outcomes):
            if isinstance(outcome, LensLLMError):
                self.failed[model] = str(outcome)
                continue
            loss, flops = outcome
            self.bought[model].append(size)
            self.flops += float(flops or 0.0)
            if size > 0 and flops:
                self._per_example[model] = float(flops) / size
            if not (isinstance(loss, numbers.Real) and math.isfinite(loss) and loss > 0):
                self.failed[model] = f"the run on {size} examples gave loss {loss}; check its learning rate and data"
                continue
            self._losses[self._row[model], self.sizes.index(size)] = loss

    def _explained(self, ranking: Ranking) -> Ranking:
        """The final ranking with the loop's own reasons: a failed run replaces the method's error;
        a candidate whose runs the budget refused says so beside it (the method alone would only
        say "too few points"). Ranked again, so a candidate failed here moves to the end."""
        for c in ranking.candidates:
            if c.model in self.failed:
                c.status, c.error = "failed", self.failed[c.model]
            elif c.status == "failed" and c.model in self._refused:
                fine_tuned = len([s for s in self.bought.get(c.model, []) if s > 0])
                c.error = (f"{c.error} (max_flops {self.max_flops:.3g} refused its next run after "
                           f"{fine_tuned} fine-tuned; raise max_flops)")
        return dataclasses.replace(ranking)


def run_loop(policy: Policy, models: Sequence[str], sizes: Sequence[int], target: float, buyer: Buyer, *,
             method: str = "default", level: float = LEVEL, max_flops: float | None = None,
             params: Mapping[str, float] | None = None, runs: Mapping[str, RunInfo] | None = None,
             flops_per_example: Mapping[str, float] | None = None) -> LoopResult:
    """Rank ``models`` for ``target`` examples, buying the runs ``policy`` asks for through ``buyer``.

    Args:
        policy: decides which runs to buy (see :class:`Policy` and :mod:`lensllm_hf.engine.policies`).
        models: candidate names, distinct.
        sizes: the subset sizes that may be bought (0 = zero-shot evaluation).
        target: the full training size the ranking is for.
        buyer: runs a batch (see :data:`Buyer`; :func:`one_by_one` adapts a one-run function).
        method: the selection method that ranks (see ``lensllm_hf.engine.methods``).
        level: the ranking's interval level (policies may also use it to decide who can still win).
        max_flops: start no run whose projected cost takes the total past this (None: no cap).
        params: candidate -> parameter count, for the ranking's table (``modelsize``, costs);
            read at every ranking, so a caller may fill it as runs come in.
        runs: candidate -> what its run records say (the NTK probe, warnings; see
            :func:`lensllm_hf.engine.methods.base.run_info`), read at every ranking.
        flops_per_example: candidate -> FLOPs per example expected before any of its runs, so
            that ``max_flops`` holds from the first batch.

    Raises:
        LensLLMError: bad input (one line naming the fix), before anything is bought.
    """
    models, sizes = list(models), sorted(int(s) for s in sizes)
    _check(models, sizes, target, method, level, max_flops)
    state = LoopState(models, sizes, target, method=method, level=check_level(level), max_flops=max_flops,
                      params=params, runs=runs, flops_per_example=flops_per_example,
                      source=getattr(policy, "name", type(policy).__name__))
    for batch in policy.runs(state):
        unknown = [f"{m!r} on {s}" for m, s in batch if m not in state._row or s not in sizes]
        if unknown:
            raise LensLLMError(f"policy {state._source!r} asked for {unknown[0]}, which is no candidate and size "
                               "of this loop; ask only for state.models on state.sizes")
        wanted = state._affordable([(m, int(s)) for m, s in batch if m not in state.failed])
        if not wanted:
            break
        state._record(wanted, buyer(wanted))
    ranking = state._explained(state.ranking())
    return LoopResult(ranking, {m: list(s) for m, s in state.bought.items()}, state.flops, state.rounds)


def one_by_one(buy_one: Callable[[str, int], tuple[float, float]]) -> Buyer:
    """A :data:`Buyer` that runs a batch one run after another with ``buy_one(model, size) -> (loss, FLOPs)``;
    a :class:`LensLLMError` it raises fails that run only."""

    def buy(runs: list[Run]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for model, size in runs:
            try:
                outcomes.append(buy_one(model, size))
            except LensLLMError as error:
                outcomes.append(error)
        return outcomes

    return buy


def _check(models: list[str], sizes: list[int], target: float, method: str, level: float,
           max_flops: float | None) -> None:
    """Validate the loop's inputs once, with a one-line fix."""
    if not models:
        raise LensLLMError("no candidates to select from; pass at least one model")
    if len(set(models)) != len(models):
        raise LensLLMError("a candidate is listed twice; pass each model once")
    if not sizes or len(set(sizes)) != len(sizes) or any(s < 0 for s in sizes):
        raise LensLLMError(f"subset sizes {sizes} must be distinct and non-negative; fix the sizes")
    if not target > sizes[-1]:
        raise LensLLMError(f"target {target:g} must exceed the largest subset size {sizes[-1]}; raise the target")
    if method not in METHODS:
        raise LensLLMError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    check_level(level)
    if max_flops is not None and not (isinstance(max_flops, numbers.Real) and math.isfinite(max_flops)
                                      and max_flops > 0):
        raise LensLLMError(f"max_flops {max_flops} must be a positive number; pass None for no cap")


def _cost(value) -> float | None:
    """``value`` as a finite FLOPs count >= 0, else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None
