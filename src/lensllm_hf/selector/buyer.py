"""The selector's side of the buying loop: its backend as the loop's buyer.

A selection runs :func:`lensllm_hf.engine.loop.run_loop` with a policy (``strategy``: grid,
adaptive, halving, or your own :class:`~lensllm_hf.engine.loop.Policy`) and a
:class:`RecordBuyer`, which turns each (candidate, size) run into the plan's run key, has the
selector's backend make the batch (``backend.run(keys, attempt)``: serial, or Ray in
parallel), and gives the loop each run's loss and FLOPs, keeping the records.

Example:
    >>> buyer = RecordBuyer(plan, make, Metric("loss"), runner.failures)  # make(keys) -> records
    >>> result = run_loop(GridPolicy(), names, plan.run_sizes, 4000, buyer, params=buyer.params, runs=buyer.runs)
    >>> buyer.records["gpt2"][0].train_size
    0
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..engine.loop import Outcome, Run
from ..engine.methods.base import RunInfo, run_info
from ..errors import LensLLMError
from ..records import RunKey, RunRecord
from .plan import RunPlan
from .scoring import Metric, curve_table

__all__ = ["RecordBuyer"]


class RecordBuyer:
    """The loop's :data:`~lensllm_hf.engine.loop.Buyer` over the selector's runs.

    Args:
        plan: the run plan, which names each (candidate, size) run's key.
        make: ``make(keys) -> records`` in order, None where the candidate cannot run (the
            selector's backend under its progress bar).
        metric: the number each run scores.
        failures: candidate -> why it cannot run (the runner's), the error of a run that did not complete.

    Attributes (filled as runs come in; the loop reads ``params`` and ``runs`` at every ranking):
        records: candidate -> its complete records.
        runs: candidate -> what its records say beyond the losses (the NTK probe, warnings).
        params: candidate -> parameter count.
    """

    def __init__(self, plan: RunPlan, make: Callable[[list[RunKey]], list[RunRecord | None]], metric: Metric,
                 failures: Mapping[str, str]) -> None:
        self.plan, self.make, self.metric, self.failures = plan, make, metric, failures
        self.records: dict[str, list[RunRecord]] = {}
        self.runs: dict[str, RunInfo] = {}
        self.params: dict[str, float] = {}

    def __call__(self, batch: list[Run]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for (name, size), rec in zip(batch, self.make([self.plan.key(name, size) for name, size in batch])):
            if rec is None or rec.status != "complete":
                outcomes.append(LensLLMError(self.failures.get(name) or f"run on {size} examples did not complete"))
                continue
            self.records.setdefault(name, []).append(rec)
            outcomes.append((self.metric.value(rec), float(rec.total_flos or 0.0)))
        self.runs.update(run_info(self.records))
        table = curve_table(self.records, self.metric, source="")
        if table is not None and table.params is not None:
            self.params.update(zip(table.models, table.params.tolist()))
        return outcomes
