"""The model-selection protocol of LensLLM and Lin et al. on curve tables: PearCorr, RelAcc, compute, error.

Every method sees the columns up to each budget, ranks the candidates, and is scored against
the true losses at the target column. Without a target and budgets a table sets its own
(:func:`plan_table`): its largest size, and its sizes from target / 8 down to target / 512.
Rows are summarised per table (:func:`summarize`) and per family of tables
(:func:`summarize_families`): a family's figure is the mean of its tables' means.

Example:
    >>> sizes = np.array([0, 200, 400, 800, 1600, 3200, 6400, 12800])
    >>> slopes = np.array([[-0.05], [-0.08], [-0.11]])
    >>> losses = np.exp(1.0 + slopes * np.log(np.maximum(sizes, 100) / 100))
    >>> table = CurveTable(["a", "b", "c"], sizes, losses, source="toy.csv")
    >>> plan_table(table).budgets   # 12800 / 8 down to 12800 / 512, with 3 fine-tuned sizes or more
    (1600, 800)
    >>> rows = run_bench([table], methods=["ats"], target=12800, budgets=[3200])
    >>> rows[0]["relacc"], rows[0]["pick_is_best"]
    (1.0, 1.0)
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .curves import CurveError, CurveTable
from .loop import Buyer, Run, run_loop
from .methods import METHODS, rank
from .policies import POLICIES

__all__ = ["BUDGET_RATIOS", "DEFAULT_BUDGETS", "DEFAULT_TARGET", "MIN_BUDGET_POINTS", "BenchTable", "grid_flops",
           "POLICY_CAPS", "at_compute", "plan_table", "run_bench", "score_p_best", "score_ranking", "score_row", "summarize", "summarize_families",
           "table_buyer"]

DEFAULT_TARGET = 1_638_400
DEFAULT_BUDGETS = (204_800, 102_400, 51_200, 25_600, 12_800, 6_400, 3_200)
#: A table's own budgets are its sizes between these fractions of the target (the papers' 1/8 .. 1/512).
BUDGET_RATIOS = (1 / 512, 1 / 8)
#: ... that leave a method at least this many fine-tuned sizes (D > 0) to fit.
MIN_BUDGET_POINTS = 3
#: The compute caps, as fractions of fine-tuning every candidate on the target, at which a policy
#: (adaptive, halving) is scored: one row each, to compare with the grid's rows at equal compute.
POLICY_CAPS = (0.005, 0.01, 0.02, 0.04)


@dataclass(frozen=True)
class BenchTable:
    """One table as the protocol scores it: its target, budgets (descending) and family.

    ``notes`` say what :func:`plan_table` left out (rows without a true loss at the target).
    """

    table: CurveTable
    target: int
    budgets: tuple[int, ...]
    family: str
    notes: tuple[str, ...] = ()


def plan_table(table: CurveTable, target: int | None = None, budgets: Sequence[int] | None = None,
               family: str | None = None) -> BenchTable:
    """What the protocol scores on ``table``; a table that cannot be scored raises CurveError.

    ``target`` defaults to the table's largest size; ``budgets`` to its sizes from target / 8
    down to target / 512 with at least :data:`MIN_BUDGET_POINTS` fine-tuned sizes at or below
    them; ``family`` to the name of the table's folder. Rows without a usable loss at the
    target cannot be judged and are left out (the notes say which).
    """
    where = Path(table.source).name
    target = int(table.sizes.max()) if target is None else int(target)
    positive = np.sort(table.sizes[table.sizes > 0])
    if budgets is None:
        low, high = (ratio * target for ratio in BUDGET_RATIOS)
        budgets = [int(s) for s in positive[::-1]
                   if low <= s <= high and np.count_nonzero(positive <= s) >= MIN_BUDGET_POINTS]
        if not budgets:
            raise CurveError(f"{where}: no size between target/512 and target/8 ({low:g}..{high:g}, target {target}) "
                             f"leaves {MIN_BUDGET_POINTS} fine-tuned sizes to fit; pass --target and --budgets")
    budgets = tuple(sorted({int(b) for b in budgets}, reverse=True))
    if budgets[0] >= target:
        raise CurveError(f"{where}: budget {budgets[0]} is not below the target {target}; lower it or raise --target")
    truth = table.column(target)
    judged = np.isfinite(truth)
    notes: tuple[str, ...] = ()
    if not judged.all():
        missing = [m for m, ok in zip(table.models, judged) if not ok]
        if judged.sum() < 2:
            raise CurveError(f"{where}: fewer than two rows have a usable loss at the target {target}; "
                             "fix those cells or pick another target")
        notes = (f"{where}: left out {len(missing)} row(s) without a usable loss at the target {target}: "
                 + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""),)
        table = _rows(table, judged)
    family = family if family is not None else (Path(table.source).parent.name or "tables")
    return BenchTable(table, target, budgets, family, notes)


def _rows(table: CurveTable, keep: np.ndarray) -> CurveTable:
    """``table`` with only the rows where ``keep`` is True."""
    pick = np.flatnonzero(keep)
    return replace(
        table,
        models=[table.models[i] for i in pick],
        losses=table.losses[pick],
        params=None if table.params is None else table.params[pick],
        families=None if table.families is None else [table.families[i] for i in pick],
        flops=None if table.flops is None else table.flops[pick],
        problems={m: p for m, p in table.problems.items() if m in {table.models[i] for i in pick}},
    )


def score_ranking(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(PearCorr, RelAcc) of predicted scores against true losses, both as fractions.

    The selected model is the one with the lowest score (the first on ties).
    """
    scores = np.asarray(scores, dtype=float)
    truth = np.asarray(truth, dtype=float)
    if np.ptp(scores) == 0 or np.ptp(truth) == 0:
        pearson = float("nan")
    else:
        pearson = float(np.corrcoef(scores, truth)[0, 1])
    chosen = truth[int(np.argmin(scores))]
    spread = truth.max() - truth.min()
    relacc = float((truth.max() - chosen) / spread) if spread > 0 else 1.0
    return pearson, relacc


def run_bench(tables: Sequence[CurveTable | BenchTable], methods: Iterable[str] | None = None,
              target: int | None = None, budgets: Sequence[int] | None = None) -> list[dict]:
    """One row per (table, method, budget) with the scores of the protocol.

    A :class:`CurveTable` is planned by :func:`plan_table` with ``target`` and ``budgets`` (each
    table's own when None); a :class:`BenchTable` is scored as planned. Tables are scored in
    parallel processes (one per core), each on its own; the rows come back in input order, so
    the output does not depend on scheduling.
    """
    methods = list(methods or METHODS)
    plans = [t if isinstance(t, BenchTable) else plan_table(t, target, budgets) for t in tables]
    workers = min(len(plans), os.cpu_count() or 1)
    # fork needs no `if __name__ == "__main__"` guard in the caller's script; elsewhere run serially.
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [row for plan in plans for row in _bench_table(plan, methods)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return [row for rows in pool.map(_bench_table, plans, [methods] * len(plans)) for row in rows]


def _bench_table(plan: BenchTable, methods: list[str]) -> list[dict]:
    table, target, budgets = plan.table, plan.target, plan.budgets
    truth = table.column(target)
    full_cost = _full_cost(table, target)
    rows = [_score(table.up_to(budget), method, target, budget, truth, full_cost)
            for budget in budgets for method in methods if method not in POLICIES]
    rows += [_score_policy(table.up_to(max(budgets)), method, target, cap, truth, full_cost)
             for method in methods if method in POLICIES for cap in POLICY_CAPS]
    return [{"family": plan.family, **row} for row in rows]


def _score_policy(table: CurveTable, policy: str, target: int, cap: float, truth: np.ndarray,
                  full_cost: float) -> dict:
    """A policy of :data:`POLICIES` in the buying loop, allowed ``cap`` of the full compute, the table
    standing in for training (:func:`table_buyer`): the object a selection runs. Every size of
    ``table`` may be bought."""
    result = run_loop(POLICIES[policy](), table.models, table.sizes.tolist(), target, table_buyer(table),
                      max_flops=cap * full_cost, params=_params(table))
    row = score_row(table, policy, None, target, result.ranking, truth, result.flops / full_cost)
    return {**row, "compute_cap": cap}


def table_buyer(table: CurveTable) -> Buyer:
    """The buying loop's buyer on a curve table: buying a size reveals that column; FLOPs are parameters x examples."""
    scale = table.params if table.params is not None else np.ones(len(table.models))

    def buy(runs: list[Run]) -> list[tuple[float, float]]:
        rows = [table.models.index(model) for model, _ in runs]
        return [(float(table.column(size)[row]), float(scale[row] * size)) for row, (_, size) in zip(rows, runs)]

    return buy


def grid_flops(table: CurveTable, budget: int) -> float:
    """FLOPs of the grid at ``budget``: every candidate on every size up to it (parameters x examples)."""
    scale = table.params if table.params is not None else np.ones(len(table.models))
    return float(np.sum(scale) * table.sizes[table.sizes <= budget].sum())


def _params(table: CurveTable) -> dict[str, float] | None:
    return None if table.params is None else dict(zip(table.models, table.params.tolist()))


def _score(seen: CurveTable, method: str, target: int, budget: int, truth: np.ndarray, full_cost: float) -> dict:
    ranking = rank(seen, target, method)
    spent = sum(c.flops or 0.0 for c in ranking.candidates)
    return score_row(seen, method, budget, target, ranking, truth, spent / full_cost)


def score_row(seen: CurveTable, method: str, budget: int | None, target: int, ranking, truth: np.ndarray,
              compute_fraction: float) -> dict:
    """The scores of one ranking of ``seen``'s candidates against their true losses at ``target``.

    Besides PearCorr and RelAcc: ``coverage``, the share of candidates whose interval at the target
    holds the truth (None for methods without intervals); ``p_best_brier`` and the uniform
    forecast's ``uniform_brier`` (1 - 1/n); ``p_best_by_model`` (the forecast, in table order) and
    ``truly_best`` (the truly best candidate's position in it), for reliability diagrams.
    """
    by_model = {c.model: c for c in ranking.candidates}
    scores = np.array([by_model[m].score if by_model[m].status == "complete" else np.nan for m in seen.models])
    ok = np.isfinite(scores)
    # A failed candidate cannot be chosen: it scores as the worst prediction.
    scores = np.where(ok, scores, np.nanmax(scores) + 1 if ok.any() else 0.0)
    pearson, relacc = score_ranking(scores, truth) if ok.any() else (float("nan"), float("nan"))
    predictions = [(by_model[m].prediction, t) for m, t in zip(seen.models, truth)]  # each made once
    errors = [abs(p.predicted_loss - t) / t for p, t in predictions if p is not None]
    intervals = [(p.interval, t) for p, t in predictions if p is not None]
    brier, pick_p, pick_right = score_p_best(ranking, seen.models, truth) if ok.any() else (float("nan"),) * 3
    forecast = [by_model[m].p_best if by_model[m].status == "complete" else 0.0 for m in seen.models]
    return {
        "dataset": seen.name,
        "method": method,
        "budget": budget,
        "target": target,
        "ratio": None if budget is None else budget / target,
        "candidates": len(seen.models),
        "pearson": pearson,
        "relacc": relacc,
        "compute_fraction": compute_fraction,
        "median_rel_error": float(np.median(errors)) if errors and _predicts_loss(method) else None,
        "coverage": float(np.mean([lo <= t <= hi for (lo, hi), t in intervals])) if intervals else None,
        "failed": int((~ok).sum()),
        "p_best_brier": brier,
        "uniform_brier": 1.0 - 1.0 / len(seen.models),
        "pick_p_best": pick_p,
        "pick_is_best": pick_right,
        "p_best_by_model": forecast if all(p is not None for p in forecast) else None,
        "truly_best": int(np.argmin(truth)),
    }


def score_p_best(ranking, models: Sequence[str], truth: np.ndarray) -> tuple[float, float, float]:
    """(Brier score, P(best) of the pick, 1.0 if the pick is truly best else 0.0) of one ranking.

    The Brier score sums (p_i - 1[i is truly best])^2 over the candidates. A method that gives no
    probabilities (ZeroShot, ...) is scored as the point forecast it makes: 1 for its pick, 0
    for the rest; a failed candidate has p = 0.

    Example:
        >>> from lensllm_hf.engine.ranking import CandidateFit, Ranking
        >>> r = Ranking(1e5, "zeroshot", [CandidateFit("a", score=1.0), CandidateFit("b", score=2.0)])
        >>> score_p_best(r, ["a", "b"], np.array([1.5, 1.2]))
        (2.0, 1.0, 0.0)
    """
    by_model = {c.model: c for c in ranking.candidates}
    ranked = ranking.ranked
    if ranked and all(c.p_best is not None for c in ranked):
        p = np.array([by_model[m].p_best if by_model[m].status == "complete" else 0.0 for m in models])
    else:
        p = np.array([1.0 if m == ranking.best else 0.0 for m in models])
    truly = np.zeros(len(models))
    truly[int(np.argmin(truth))] = 1.0
    pick = list(models).index(ranking.best) if ranking.best is not None else None
    pick_p = float(p[pick]) if pick is not None else 0.0
    return float(np.sum((p - truly) ** 2)), pick_p, float(pick is not None and truly[pick] == 1.0)


def _predicts_loss(method: str) -> bool:
    return method in POLICIES or METHODS[method].predicts_loss


def _full_cost(table: CurveTable, target: int) -> float:
    """FLOPs of fine-tuning every candidate on the target size."""
    if table.params is not None and np.all(np.isfinite(table.params)):
        return float(np.sum(table.params) * target)
    return float(len(table.models) * target)


#: What :func:`summarize` averages per (table, method), besides the scores in percent.
_MEANS = ("compute_fraction", "median_rel_error", "coverage", "p_best_brier", "uniform_brier", "pick_p_best",
          "pick_is_best")


def summarize(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Means over budgets per dataset and method, PearCorr and RelAcc in percent (as the papers print them).

    Besides them: ``coverage`` (share of true losses inside the 90 % intervals at the target),
    ``p_best_brier`` (mean Brier score of the P(best) forecasts) against ``uniform_brier`` (that of
    the forecast 1/n for every candidate), ``pick_p_best`` (mean P(best) the method gave its
    picks) and ``pick_is_best`` (how often the pick was truly the best): a calibrated method has
    the last two about equal.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        out.setdefault(row["dataset"], {}).setdefault(row["method"], {}).setdefault("_rows", []).append(row)
    for methods in out.values():
        for cell in methods.values():
            group = cell.pop("_rows")
            cell.update(pearson=100 * _mean(r["pearson"] for r in group), relacc=100 * _mean(r["relacc"] for r in group),
                        **{key: _mean(r.get(key) for r in group) for key in _MEANS})
    return out


def summarize_families(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Per family and method: the mean over its tables of :func:`summarize`'s per-table means,
    ``tables`` (how many), and the coverage at the target pooled per distance from the budget
    (doublings, to the half) with its lowest and highest (``coverage_min``, ``coverage_max``).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    families: dict[str, list[dict]] = {}
    for row in rows:
        families.setdefault(row["family"], []).append(row)
    for family, group in families.items():
        per_table = summarize(group)
        methods = list(dict.fromkeys(r["method"] for r in group))
        out[family] = {}
        for method in methods:
            cells = [cells[method] for cells in per_table.values() if method in cells]
            by_distance = coverage_by_distance([r for r in group if r["method"] == method])
            out[family][method] = {
                **{key: _mean(c[key] for c in cells) for key in ("pearson", "relacc", *_MEANS)},
                "tables": len(cells),
                "coverage_min": min(by_distance.values(), default=float("nan")),
                "coverage_max": max(by_distance.values(), default=float("nan")),
            }
    return out


def at_compute(rows: list[dict], cap: float) -> dict[str, dict[str, dict[str, float]]]:
    """Per family and method, the mean over tables of PearCorr and RelAcc (in %) and the compute
    spent, at most ``cap`` of fine-tuning every candidate on the target: a policy's row run at that
    cap, a grid method's row at its largest budget within it (tables where none fits left out;
    ``tables`` says how many remain)."""
    best: dict[tuple[str, str, str], dict] = {}
    for r in rows:
        if r.get("compute_cap", cap) != cap or (r["budget"] is not None and r["compute_fraction"] > cap):
            continue
        key = (r["family"], r["method"], r["dataset"])
        if key not in best or r["compute_fraction"] > best[key]["compute_fraction"]:
            best[key] = r
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (family, method, _), r in best.items():
        out.setdefault(family, {}).setdefault(method, []).append(r)
    return {family: {method: {"pearson": 100 * _mean(r["pearson"] for r in group),
                              "relacc": 100 * _mean(r["relacc"] for r in group),
                              "compute_fraction": _mean(r["compute_fraction"] for r in group), "tables": len(group)}
                     for method, group in methods.items()} for family, methods in out.items()}


def coverage_by_distance(rows: Iterable[dict]) -> dict[float, float]:
    """Coverage at the target pooled over ``rows`` (of one method) per doublings from budget to
    target, rounded to the half (LCDB's sizes step by sqrt(2)); each row weighs its candidates."""
    hits: dict[float, list[tuple[float, int]]] = {}
    for r in rows:
        if r.get("coverage") is not None and r.get("budget"):
            key = round(2 * math.log2(r["target"] / r["budget"])) / 2
            hits.setdefault(key, []).append((r["coverage"] * r["candidates"], r["candidates"]))
    return {k: sum(h for h, _ in v) / sum(n for _, n in v) for k, v in sorted(hits.items())}


def _mean(values: Iterable[float | None]) -> float:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else float("nan")
