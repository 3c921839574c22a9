"""Which runs to buy: every strategy spends compute through ONE function, ``buy(keys) -> records``.

``buy`` takes a batch of run keys and returns their records in order (None for a candidate
that cannot run); the selector supplies it (a backend underneath, so a batch can run in
parallel, plus the progress bar). A strategy returns what it bought and, when it ranked the
candidates itself, the ranking.

- :class:`GridStrategy`: every candidate on every size, in one batch.
- :class:`LoopStrategy`: an engine loop with the shape of :func:`lensllm_hf.adaptive.select_adaptive`
  (``loop(models, sizes, target, buy_one, *, method, level, max_flops) -> AdaptiveResult``),
  which asks for one (model, size) at a time; ``adaptive`` (:func:`lensllm_hf.adaptive.select_adaptive`)
  and ``halving`` (:func:`lensllm_hf.halving.select_halving`) are two. Both loops first give
  every candidate the same smallest sizes, whatever the losses: those columns are bought as one
  batch each (``start_columns``), so a parallel backend runs them together. Later rounds depend
  on the fits in between and go one run at a time.

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
from ..ranking import Ranking
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
    """

    plan: RunPlan
    names: list[str]
    target_size: int
    method: str
    level: float
    metric: Metric
    max_flops: float | None = None
    failures: Mapping[str, str] = field(default_factory=dict)


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
    """A one-run-at-a-time engine loop (``select_adaptive``'s shape) over ``buy``.

    Args:
        name: the strategy's name in results (``"adaptive"``).
        loop: ``loop(models, sizes, target, buy_one, *, method, level, max_flops) -> result`` with
            ``result.ranking`` and ``result.bought`` (see :mod:`lensllm_hf.adaptive`).
        start_columns: ``(run sizes, max_flops) -> n``: the loop buys the first ``n`` sizes for
            every candidate whatever the losses (its start); when it asks for one of them, the
            whole column is bought in one batch.
    """

    def __init__(self, name: str, loop: Callable[..., Any],
                 start_columns: Callable[[Sequence[int], float | None], int] | None = None):
        self.name = name
        self.loop = loop
        self.start_columns = start_columns

    def select(self, context: StrategyContext, buy: Buy) -> Bought:
        recs: dict[str, list[RunRecord]] = {}
        sizes = context.plan.run_sizes
        batched = set(sizes[:self.start_columns(sizes, context.max_flops)] if self.start_columns else [])
        ready: dict[tuple[str, int], RunRecord | None] = {}

        def buy_one(name: str, size: int) -> tuple[float, float]:
            if (name, size) not in ready:
                # A start column: every candidate still in the race gets it, so buy them together.
                names = [n for n in context.names if n not in context.failures and (n, size) not in ready] \
                    if size in batched else [name]
                names = names if name in names else [name, *names]
                for n, got in zip(names, buy([context.plan.key(n, size) for n in names])):
                    ready[(n, size)] = got
            rec = ready.pop((name, size))
            if rec is None or rec.status != "complete":
                raise LensLLMError(context.failures.get(name) or f"run on {size} examples did not complete")
            recs.setdefault(name, []).append(rec)
            return context.metric.value(rec), float(rec.total_flos or 0.0)

        if not context.names:
            return Bought({}, {}, Ranking(context.target_size, f"{self.name}-{context.method}", []))
        result = self.loop(context.names, context.plan.run_sizes, context.target_size, buy_one, method=context.method,
                           level=context.level, max_flops=context.max_flops)
        sizes = {name: sorted(int(s) for s in bought) for name, bought in result.bought.items()}
        return Bought(recs, sizes, result.ranking)


def _adaptive() -> LoopStrategy:
    import inspect

    from ..adaptive import select_adaptive

    # Its first `start_points` columns go to every candidate unless a FLOPs cap may skip some.
    start = inspect.signature(select_adaptive).parameters["start_points"].default
    return LoopStrategy("adaptive", select_adaptive, lambda sizes, max_flops: start if max_flops is None else 0)


def _halving() -> LoopStrategy:
    from ..halving import MIN_START_SIZES, select_halving

    def start(sizes: Sequence[int], max_flops: float | None) -> int:
        # Zero-shot and the first MIN_START_SIZES fine-tuned sizes, for every candidate, always.
        return (1 if 0 in sizes else 0) + MIN_START_SIZES

    return LoopStrategy("halving", select_halving, start)


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
