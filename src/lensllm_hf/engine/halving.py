"""Successive halving: every candidate starts small, and each round half of them get twice the data.

The algorithm behind ASHA and Hyperband (Jamieson & Talwalkar, 2016; Li et al., 2018), with
one change that model selection needs: candidates are promoted by the loss *predicted at the
target*, never by the loss observed so far. Fine-tuning curves cross (a large model that
starts well flattens, a small one that starts badly keeps falling), so halving on the
observed loss drops the eventual winners.

The loop
    1. Every candidate is fine-tuned on the smallest sizes, up to the *start size* (below), as
       far as ``max_flops`` allows.
    2. Each round the method ranks every candidate at the target. The candidates that can
       still win, best first, keep running:
       - with ``p_best`` on the ranking rows: the smallest set holding ``level`` of the
         probability of being the best;
       - otherwise: the candidates whose ``level`` interval reaches below the top of the
         leader's interval.
       At most ``ceil(k / ETA)`` of them (``ETA = 2``, the halving; ``k`` = how many ran in
       the last round) get their next size, twice the data of their last.
       Every candidate still running may be picked, not only last round's: one dropped on
       fewer points comes back when the others' new points push their predictions above its
       own, so the last one standing is the method's best on all the evidence.
    3. It stops when one candidate is clear (only it can still win, or only one place is
       left), when the sizes run out, or when the next run would overspend ``max_flops``.

The start size (the one schedule setting)
    Hyperband's bracket for a halving rate of 2: with ``n`` candidates, ``ceil(log2 n) - 1``
    rounds take the survivors from the start size to the two finalists, each round costing
    about as much as the last (half the candidates, twice the data). The start size is the
    largest one such that

    - the two finalists would reach the largest size (more data than that cannot be bought),
    - the whole schedule fits ``max_flops``, projected from each candidate's measured cost
      per example (or its estimate, ``flops_per_example``, before a run is measured), round
      ``r`` training the ``ceil(n / 2**r)`` leaders of the first ranking;

    and never fewer than ``MIN_START_SIZES`` fine-tuned sizes (a slope and its residual need
    three points). Nothing else is set: the halving rate is the algorithm's, the level is
    the ranking's, the budget is the caller's.

Each start column, and each round's runs, is one call of ``buy`` (a batch: a parallel
backend trains it together); which runs fit ``max_flops`` is decided before the batch is
bought (see :class:`lensllm_hf.engine.adaptive.Ledger`).

Each round logs one line (``logging``, logger ``lensllm_hf.engine.halving``, level INFO; ``lensllm
select`` prints it on stderr): who goes on, and who is cut with their P(best) and why (outside
the ``level`` share of P(best) that the leaders hold, or past the round's ``ceil(k / ETA)`` places).

The final ranking is the method's ranking on every point bought. A candidate dropped early
keeps its prediction from its fewer points (and its wider interval) and stays ``complete``,
so it still scores.

Measured (``lensllm bench --methods default,halving`` on the shared FLAN and Gigaword
tables, target 1,638,400; each ``halving`` row may spend what the grid spends at that
budget; RelAcc / PearCorr / compute as a fraction of fine-tuning all on the target)

    ======== ======================== ========================= ==========================
    budget    FLAN halving             Gigaword halving          grid ``default`` (F / G)
    ======== ======================== ========================= ==========================
    3,200     0.932 / 0.27 / 0.32 %    0.914 / 0.78 / 0.23 %     0.932 / 0.914, 0.38 %
    6,400     0.932 / 0.27 / 0.32 %    0.943 / 0.87 / 0.41 %     0.932 / 0.943, 0.77 %
    12,800    0.853 / 0.39 / 0.69 %    0.943 / 0.89 / 0.84 %     0.853 / 0.943, 1.55 %
    25,600    0.932 / 0.44 / 1.88 %    1.000 / 0.94 / 2.02 %     0.932 / 1.000, 3.11 %
    51,200    0.932 / 0.51 / 3.52 %    0.914 / 0.94 / 3.03 %     0.932 / 1.000, 6.24 %
    >=102,400 1.000 / 0.58 / 6.95 %    0.914 / 0.94 / 3.03 %     0.936 / 0.914-1.0, 12-25 %
    ======== ======================== ========================= ==========================

    Within 2 % of the compute the mean RelAcc of the two tables is 0.94 at best (FLAN 0.932
    at 1.9 %, Gigaword 0.943 at 0.8 %; Gigaword reaches 1.000 at 2.02 %), below the 0.95
    aimed at: the near-tied leaders (FLAN: OPT-1.3B against Cerebras-2.7B; Gigaword:
    T5-v1.1-base against three Switch models) are told apart only from about 100k examples
    on, and getting two finalists there costs 3-7 %. Promoting on the observed loss instead
    drops the late winners (a test replays that on crossing curves).

Example (two crossing curves: "steep" starts worse and ends better):
    >>> sizes = np.array([200, 400, 800, 1600, 3200, 6400])
    >>> losses = np.array([[3.0 * s ** -0.10 for s in sizes], [4.5 * s ** -0.16 for s in sizes]])
    >>> table = CurveTable(["flat", "steep"], sizes, losses)
    >>> result = select_halving(table.models, sizes.tolist(), 100_000, table_buyer(table))
    >>> result.ranking.best
    'steep'
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from .adaptive import AdaptiveResult, Buy, Ledger, table_buyer
from .curves import CurveTable
from ..errors import LensLLMError
from .methods.base import RunInfo
from .methods import LEVEL, METHODS, rank
from .ranking import CandidateFit, Ranking

__all__ = ["ETA", "MIN_START_SIZES", "grid_flops", "score_on_table", "select_halving", "start_column"]

_log = logging.getLogger(__name__)

#: Halving rate: each round keeps at most ``ceil(alive / ETA)`` candidates and doubles their data.
ETA = 2

#: Fine-tuned sizes (D > 0) every candidate gets before the first cut: a line and its residual need three.
MIN_START_SIZES = 3


def select_halving(
    models: Sequence[str],
    sizes: Sequence[int],
    target: float,
    buy: Buy,
    *,
    method: str = "default",
    level: float = LEVEL,
    max_flops: float | None = None,
    params: Sequence[float] | None = None,
    runs: Mapping[str, RunInfo] | None = None,
    flops_per_example: Mapping[str, float] | None = None,
) -> AdaptiveResult:
    """Rank ``models`` for ``target`` examples by successive halving on the predicted loss.

    Args:
        models: candidate names (distinct).
        sizes: the subset sizes that may be bought (0 = zero-shot evaluation); each size is
            about twice the last, as in the selector's plans.
        target: the full training size the ranking is for.
        buy: fine-tunes a batch of (candidate, size) runs (see :data:`lensllm_hf.engine.adaptive.Buy`;
            ``adaptive.one_by_one`` adapts a one-run function): each start column is one batch,
            each round's runs another. A run's :class:`LensLLMError` or non-finite loss fails
            that candidate only.
        method: a method that predicts the loss at the target (see ``lensllm_hf.engine.methods``).
        level: probability (with ``p_best``) or interval level (without) that decides who can still win.
        max_flops: never start a run that would take the total past this (None: no cap).
        params, runs, flops_per_example: as for :func:`lensllm_hf.engine.adaptive.select_adaptive`
            (parameter counts; the records' NTK probe and warnings, read every round; the
            expected FLOPs per example before a candidate's first run).

    Returns:
        The final ranking, the sizes bought per candidate, the FLOPs spent and the rounds run.
    """
    models = list(models)
    sizes = sorted(int(s) for s in sizes)
    _check(models, sizes, target, method, level, max_flops)
    ledger = Ledger(models, sizes, buy, max_flops, flops_per_example)
    positive = [col for col, size in enumerate(sizes) if size > 0]
    first = positive[min(MIN_START_SIZES, len(positive)) - 1]

    # Every candidate gets the smallest sizes; their costs, in the order of the first ranking,
    # set the start size.
    for col in range(first + 1):
        ledger.buy(ledger.affordable([(row, col) for row in ledger.alive(range(len(models)))]))
    table = ledger.table(params, "halving")
    running = ledger.alive(range(len(models)))
    first_ranking = rank(table, target, method, level, runs=runs)
    order = [row for row in (models.index(c.model) for c in first_ranking.ranked) if row in running]
    order += [row for row in running if row not in order]
    cost = ledger.cost_per_example()
    start = start_column(sizes, first, [cost.get(row, math.nan) for row in order],
                         spent=ledger.flops, max_flops=max_flops)
    for col in range(first + 1, start + 1):
        ledger.buy(ledger.affordable([(row, col) for row in ledger.alive(order)]))

    alive = ledger.alive(range(len(models)))
    rounds = 0
    while True:
        rounds += 1
        ranking = rank(table, target, method, level, runs=runs)
        # Everyone still running may be (re)admitted: a candidate dropped on fewer points comes
        # back when the others' new points push their predictions above its own.
        running = [models[row] for row in ledger.alive(range(len(models)))]
        previous, cap = [models[row] for row in alive], math.ceil(len(alive) / ETA)
        kept = _survivors(ranking, running, level, cap=cap)
        alive = [models.index(name) for name in kept]
        wanted = [(row, ledger.next_column(row)) for row in alive]
        # Leaders first, so a tight budget goes where it matters.
        wanted = ledger.affordable([(row, col) for row, col in wanted if col is not None])
        _log.info(_round_line(rounds, ranking, running, previous, kept, level, cap,
                              done=len(alive) <= 1 or not wanted))
        if len(alive) <= 1 or not wanted:
            break
        ledger.buy(wanted)
        alive = ledger.alive(alive)

    ledger.explain_failures(ranking.candidates)
    return AdaptiveResult(ranking=Ranking(target, f"halving-{method}", ranking.candidates),
                          bought=ledger.bought, flops=ledger.flops, rounds=rounds)


def start_column(sizes: Sequence[int], first: int, costs: Sequence[float], *, spent: float = 0.0,
                 max_flops: float | None = None) -> int:
    """The column every candidate is fine-tuned up to before the first cut (see the module docstring).

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


def _survivors(ranking: Ranking, alive: list[str], level: float, cap: int) -> list[str]:
    """The candidates of ``alive`` that can still win, at most ``cap``, best first."""
    rows = {c.model: c for c in ranking.ranked if c.model in alive}
    if not rows:
        return []
    p_best = {name: getattr(row, "p_best", None) for name, row in rows.items()}
    if all(p is not None and math.isfinite(p) for p in p_best.values()):
        order = sorted(rows, key=lambda name: -p_best[name])
        total = sum(p_best.values())
        kept, mass = [], 0.0
        for name in order:
            kept.append(name)
            mass += p_best[name]
            if mass >= level * total:
                break
        return kept[:cap]
    order = sorted(rows.values(), key=lambda c: _value(c))
    leader = order[0]
    top = leader.interval[1] if leader.interval else _value(leader)
    return [c.model for c in order if c is leader or (c.interval[0] if c.interval else _value(c)) <= top][:cap]


def _round_line(round_: int, ranking: Ranking, running: list[str], previous: list[str], kept: list[str],
                level: float, cap: int, *, done: bool) -> str:
    """One round in words: who goes on (and who is back), who of last round's is cut and why, with P(best)."""
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


def _value(candidate: CandidateFit) -> float:
    return candidate.predicted_loss if candidate.predicted_loss is not None else candidate.score


def _check(models: list[str], sizes: list[int], target: float, method: str, level: float,
           max_flops: float | None) -> None:
    """Validate the inputs once, with a one-line fix."""
    if not models:
        raise LensLLMError("no candidates to select from; pass at least one model")
    if len(set(models)) != len(models):
        raise LensLLMError("a candidate is listed twice; pass each model once")
    if len(set(sizes)) != len(sizes) or any(s < 0 for s in sizes):
        raise LensLLMError(f"subset sizes {sizes} must be distinct and non-negative; fix the sizes")
    if sum(s > 0 for s in sizes) < MIN_START_SIZES:
        raise LensLLMError(f"halving needs at least {MIN_START_SIZES} fine-tuned sizes (D > 0), got {sizes}; add sizes")
    if not target > sizes[-1]:
        raise LensLLMError(f"target {target:g} must exceed the largest subset size {sizes[-1]}; raise the target")
    if method not in METHODS:
        raise LensLLMError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    if not METHODS[method].predicts_loss:
        raise LensLLMError(f"halving promotes by the predicted loss, and {method!r} predicts none; "
                           "use a law method such as 'default'")
    if not 0 < level < 1:
        raise LensLLMError(f"level {level} must be between 0 and 1 (e.g. 0.9)")
    if max_flops is not None and not (math.isfinite(max_flops) and max_flops > 0):
        raise LensLLMError(f"max_flops {max_flops} must be a positive number; pass None for no cap")


def grid_flops(table: CurveTable, budget: int) -> float:
    """FLOPs of the grid strategy at ``budget``: every candidate on every size up to it (parameters x examples)."""
    scale = table.params if table.params is not None else np.ones(len(table.models))
    return float(np.sum(scale) * table.sizes[table.sizes <= budget].sum())


def score_on_table(table: CurveTable, target: int, budgets: Sequence[int], truth: np.ndarray,
                   full_cost: float, method: str = "default") -> list[dict]:
    """``lensllm bench``'s ``halving`` rows: one per budget, with the grid's compute at that budget.

    Buying a size reveals that column of ``table`` (every size it holds may be bought); the
    halving may spend at most what fine-tuning every candidate on every size up to the budget
    costs, so each row compares with the grid methods' row of the same budget at equal or
    lower compute.

    Args:
        table: the columns that may be bought (the bench passes those up to its largest budget).
        target: the target size; ``truth`` holds every candidate's true loss there.
        budgets: the bench's budgets.
        full_cost: FLOPs of fine-tuning every candidate on ``target`` (the compute fraction's denominator).
        method: the method that predicts the loss at the target.
    """
    from .protocol import score_row

    rows = []
    for budget in budgets:
        result = select_halving(table.models, table.sizes.tolist(), target, table_buyer(table), method=method,
                                max_flops=grid_flops(table, budget), params=table.params)
        rows.append(score_row(table, "halving", budget, target, result.ranking, truth, result.flops / full_cost))
    return rows
