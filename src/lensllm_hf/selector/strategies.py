"""Which runs to buy: every strategy spends compute through ONE function, ``buy(keys) -> records``.

``buy`` takes a batch of run keys and returns their records in order (None for a candidate
that cannot run); the selector supplies it (a backend underneath, so a batch can run in
parallel, plus the progress bar). A strategy returns what it bought and, when it ranked the
candidates itself, the ranking.

- :class:`GridStrategy`: every candidate on every size, in one batch.
- :class:`LoopStrategy`: an engine loop with the shape of :func:`lensllm_hf.engine.adaptive.select_adaptive`
  (``loop(models, sizes, target, buy_runs, *, method, level, max_flops, runs, flops_per_example)
  -> AdaptiveResult``);
  ``adaptive`` (:func:`lensllm_hf.engine.adaptive.select_adaptive`) and ``halving``
  (:func:`lensllm_hf.engine.halving.select_halving`) are two. The loop asks for each start column and
  each round's runs as one batch, which goes to ``buy`` as it is, so a parallel backend runs
  them together; only the rounds follow one another (each depends on the fits before it).

Example:
    >>> bought = GridStrategy().select(context, buy)
    >>> bought.sizes
    {'gpt2': [0, 200, 400], 'opt': [0, 200, 400]}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import LensLLMError
from ..engine.methods.base import RunInfo, run_info
from ..engine.ranking import Ranking
from ..records import RunKey, RunRecord
from .plan import RunPlan
from .scoring import Metric

__all__ = ["STRATEGY_CLASSES", "Bought", "Buy", "GridStrategy", "LoopStrategy", "Strategy", "StrategyContext",
           "make_strategy"]

#: Buy a batch of runs: their records in the same order, None where the candidate cannot run.
Buy = Callable[[list[RunKey]], list["RunRecord | None"]]


@dataclass
class StrategyContext:
    """What a strategy may know: the plan, the candidates to train, the target and the method.

    Attributes:
        plan: every planned run.
        names: the candidates to train (those ranked from a published fit are left out).
        target_size, method, level, max_flops: of the selection.
        metric: the number ranked per run.
        failures: candidate -> error, filled while runs are bought.
        flops_per_example: candidate -> FLOPs per training example estimated before any run
            (with ``max_flops``: the budget holds from the first column).
    """

    plan: RunPlan
    names: list[str]
    target_size: int
    method: str
    level: float
    metric: Metric
    max_flops: float | None = None
    failures: Mapping[str, str] = field(default_factory=dict)
    flops_per_example: Mapping[str, float] = field(default_factory=dict)


@dataclass
class Bought:
    """What a strategy bought.

    Attributes:
        records: per candidate, every record bought (complete or not).
        sizes: per candidate, the sizes whose complete runs the decision used.
        ranking: the strategy's own ranking, or None (the selector then ranks the records).
    """

    records: dict[str, list[RunRecord]]
    sizes: dict[str, list[int]]
    ranking: Ranking | None = None


class Strategy(Protocol):
    name: str

    def select(self, context: StrategyContext, buy: Buy) -> Bought: ...


class GridStrategy:
    """Every candidate on every planned size (zero-shot included): one batch, the backend's order."""

    name = "grid"

    def select(self, context: StrategyContext, buy: Buy) -> Bought:
        keys = context.plan.keys(only=context.names)
        recs: dict[str, list[RunRecord]] = {}
        for rec in buy(keys):
            if rec is not None:
                recs.setdefault(rec.model_id, []).append(rec)
        sizes = {name: sorted(int(r.train_size) for r in rs if r.status == "complete") for name, rs in recs.items()}
        return Bought(recs, sizes)


class LoopStrategy:
    """An engine loop (``select_adaptive``'s shape) over ``buy``: each batch it asks for is one ``buy`` call.

    Args:
        name: the strategy's name in results (``"adaptive"``).
        loop: ``loop(models, sizes, target, buy_runs, *, method, level, max_flops, runs,
            flops_per_example) -> result``
            with ``result.ranking`` and ``result.bought``; ``buy_runs`` is a
            :data:`lensllm_hf.engine.adaptive.Buy`, and ``runs`` the candidates' :class:`RunInfo`, updated
            after every batch, so each round's ranking sees the probe as the grid's does.
    """

    def __init__(self, name: str, loop: Callable[..., Any]):
        self.name = name
        self.loop = loop

    def select(self, context: StrategyContext, buy: Buy) -> Bought:
        recs: dict[str, list[RunRecord]] = {}
        infos: dict[str, RunInfo] = {}  # what the records say (the NTK probe), as they come in

        def buy_runs(runs: list[tuple[str, int]]) -> list[tuple[float, float] | LensLLMError]:
            results: list[tuple[float, float] | LensLLMError] = []
            for (name, size), rec in zip(runs, buy([context.plan.key(name, size) for name, size in runs])):
                if rec is None or rec.status != "complete":
                    error = context.failures.get(name) or f"run on {size} examples did not complete"
                    results.append(LensLLMError(error))
                    continue
                recs.setdefault(name, []).append(rec)
                results.append((context.metric.value(rec), float(rec.total_flos or 0.0)))
            infos.update(run_info(recs))
            return results

        if not context.names:
            return Bought({}, {}, Ranking(context.target_size, f"{self.name}-{context.method}", [], context.level))
        result = self.loop(context.names, context.plan.run_sizes, context.target_size, buy_runs,
                           method=context.method, level=context.level, max_flops=context.max_flops, runs=infos,
                           flops_per_example=context.flops_per_example)
        sizes = {name: sorted(int(s) for s in bought) for name, bought in result.bought.items()}
        return Bought(recs, sizes, result.ranking)


def _adaptive() -> LoopStrategy:
    from ..engine.adaptive import select_adaptive

    return LoopStrategy("adaptive", select_adaptive)


def _halving() -> LoopStrategy:
    from ..engine.halving import select_halving

    return LoopStrategy("halving", select_halving)


#: ``strategy`` parameter value -> a factory of the strategy.
STRATEGY_CLASSES: dict[str, Callable[[], Strategy]] = {"grid": GridStrategy, "adaptive": _adaptive,
                                                      "halving": _halving}


def make_strategy(name: str) -> Strategy:
    """The strategy called ``name`` (see :data:`STRATEGY_CLASSES`)."""
    return STRATEGY_CLASSES[name]()


def group(records: Sequence[RunRecord | None]) -> dict[str, list[RunRecord]]:
    """Records by candidate name (None left out)."""
    out: dict[str, list[RunRecord]] = {}
    for rec in records:
        if rec is not None:
            out.setdefault(rec.model_id, []).append(rec)
    return out
