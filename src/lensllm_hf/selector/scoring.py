"""From run records to a result: the number each run scores, the curve table, the compute, the result.

Example:
    >>> metric = Metric("loss")
    >>> metric.value(record)            # the run's eval loss (1 - value for a greater-is-better metric)
    >>> table = curve_table(records_by_candidate, metric, source="runs/")
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import records
from ..engine.curves import CurveTable
from ..engine.ranking import Ranking
from ..records import RunRecord
from .data import evaluate_metric, token_accuracy
from .result import SelectionResult

__all__ = ["Metric", "curve_table", "full_cost", "selection_result"]


@dataclass
class Metric:
    """What a selection ranks: the eval loss, or ``1 - value`` of a greater-is-better metric.

    Attributes:
        name: ``"loss"``, ``"accuracy"`` (next-token accuracy, built in) or another metric's name.
        fn: ``EvalPrediction -> float`` computing ``name`` (default: built in or ``evaluate``).
        greater_is_better: default True for anything but the loss.
    """

    name: str = "loss"
    fn: Callable | None = None
    greater_is_better: bool | None = None

    @property
    def key(self) -> str:
        """The key in the Trainer's metrics: ``eval_loss`` or ``eval_<name>``."""
        return "eval_loss" if self.name == "loss" else f"eval_{self.name}"

    @property
    def greater(self) -> bool:
        if self.name == "loss":
            return False
        return True if self.greater_is_better is None else bool(self.greater_is_better)

    @property
    def label(self) -> str:
        """What the ranked numbers are, e.g. ``"1 - eval_accuracy"``."""
        return f"1 - {self.key}" if self.greater else self.key

    def compute_fn(self) -> Callable | None:
        """The function the Trainer's ``compute_metrics`` calls, None for the loss (loaded once)."""
        if self.name == "loss":
            return None
        if self.fn is None:
            self.fn = token_accuracy if self.name == "accuracy" else evaluate_metric(self.name)
        return self.fn

    def value(self, rec: RunRecord) -> float:
        """The number ranked for one run (NaN when the run did not report it)."""
        if self.name == "loss":
            value = rec.final_eval_loss
        else:
            last = rec.evaluations[-1].metrics if rec.evaluations else {}
            value = last.get(self.key)
            if value is not None and self.greater:
                value = 1.0 - value
        return float(value) if value is not None else float("nan")


def curve_table(recs: Mapping[str, Sequence[RunRecord]], metric: Metric, *, source: str) -> CurveTable | None:
    """The candidates x sizes table of the complete runs' scores, None when there is none."""
    complete = []
    for rs in recs.values():
        for r in rs:
            if r.status == "complete":
                value = metric.value(r)
                if math.isfinite(value) and value > 0:
                    complete.append(dataclasses.replace(r, final_eval_loss=value))
    if not complete:
        return None
    table = records.load_table(complete, zero_shot=False, streamed=False)
    # NaN cells are runs not made (adaptive, or a run in flight elsewhere): not problems.
    return dataclasses.replace(table, problems={}, source=source)


def full_cost(rs: Sequence[RunRecord], target: float) -> float:
    """FLOPs of one candidate fine-tuned on ``target`` examples: FLOPs per example of its largest run."""
    sized = [r for r in rs if r.train_size and r.total_flos]
    if not sized:
        return 0.0
    largest = max(sized, key=lambda r: r.train_size)
    return float(largest.total_flos) / int(largest.train_size) * target


def selection_result(ranking: Ranking, table: CurveTable | None, recs: Mapping[str, Sequence[RunRecord]],
                     bought: Mapping[str, list[int]], *, failures: Mapping[str, str], strategy: str, metric: Metric,
                     info: dict[str, Any]) -> SelectionResult:
    """The :class:`SelectionResult`: compute spent per candidate, against the cost of the target (the ranking's)."""
    spent_by: dict[str, float] = {}
    full = 0.0
    for c in ranking.candidates:
        used = bought.get(c.model, [])
        rs = [r for r in recs.get(c.model, []) if r.status == "complete" and r.train_size in used]
        spent_by[c.model] = float(sum(r.total_flos or 0.0 for r in rs))
        if c.status == "complete" and c.source is None:
            c.flops = spent_by[c.model]
            full += full_cost(rs, ranking.target)
    for c in ranking.candidates:
        if c.status != "complete" and c.model in failures:
            c.error = failures[c.model]  # the run's own error, not "too few points"
    return SelectionResult(fits=ranking, table=table, strategy=strategy, flops=float(sum(spent_by.values())),
                           full_flops=full or None, bought={k: list(v) for k, v in bought.items()},
                           metric=metric.label, info=info)
