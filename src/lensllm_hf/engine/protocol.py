"""The selection protocol of DESIGN.md §2 on curve tables: PearCorr, RelAcc, compute, error.

Every method sees the columns up to each budget, ranks the candidates, and is scored against
the true losses at the target column.

Example:
    >>> sizes = np.array([0, 200, 400, 800, 1600, 3200, 6400, 12800])
    >>> slopes = np.array([[-0.05], [-0.08], [-0.11]])
    >>> losses = np.exp(1.0 + slopes * np.log(np.maximum(sizes, 100) / 100))
    >>> table = CurveTable(["a", "b", "c"], sizes, losses, source="toy.csv")
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

import numpy as np

from .curves import CurveError, CurveTable
from .loop import Buyer, Run, run_loop
from .methods import METHODS, rank
from .policies import AdaptivePolicy, HalvingPolicy

__all__ = ["DEFAULT_BUDGETS", "DEFAULT_TARGET", "grid_flops", "run_bench", "score_p_best", "score_ranking",
           "score_row", "summarize", "table_buyer"]

DEFAULT_TARGET = 1_638_400
DEFAULT_BUDGETS = (204_800, 102_400, 51_200, 25_600, 12_800, 6_400, 3_200)
#: The adaptive method may spend at most this fraction of fine-tuning every candidate at the target.
ADAPTIVE_FLOPS_FRACTION = 1 / 16


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


def run_bench(tables: Sequence[CurveTable], methods: Iterable[str] | None = None, target: int = DEFAULT_TARGET,
              budgets: Sequence[int] = DEFAULT_BUDGETS) -> list[dict]:
    """One row per (table, method, budget) with the scores of the protocol.

    Tables are scored in parallel processes (one per core), each on its own; the rows come
    back in input order, so the output does not depend on scheduling.
    """
    methods = list(methods or METHODS)
    jobs = [(table, methods, target, tuple(budgets)) for table in tables]
    workers = min(len(jobs), os.cpu_count() or 1)
    # fork needs no `if __name__ == "__main__"` guard in the caller's script; elsewhere run serially.
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [row for job in jobs for row in _bench_table(*job)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        return [row for rows in pool.map(_bench_table, *zip(*jobs)) for row in rows]


def _bench_table(table: CurveTable, methods: list[str], target: int, budgets: Sequence[int]) -> list[dict]:
    truth = table.column(target)
    if not np.all(np.isfinite(truth)):
        bad = [m for m, t in zip(table.models, truth) if not np.isfinite(t)]
        raise CurveError(f"{table.source}: no usable true loss at the target {target} for {', '.join(bad)}; "
                         "fix those cells or drop the rows")
    full_cost = _full_cost(table, target)
    rows = [_score(table.up_to(budget), method, target, budget, truth, full_cost)
            for budget in budgets for method in methods if method not in ("adaptive", "halving")]
    if "adaptive" in methods:
        rows.append(_score_adaptive(table.up_to(max(budgets)), target, truth, full_cost))
    if "halving" in methods:
        rows.extend(_score_halving(table.up_to(max(budgets)), target, budgets, truth, full_cost))
    return rows


def _score_adaptive(table: CurveTable, target: int, truth: np.ndarray, full_cost: float) -> dict:
    """The adaptive policy in the buying loop, the table standing in for training (:func:`table_buyer`)."""
    result = run_loop(AdaptivePolicy(), table.models, table.sizes.tolist(), target, table_buyer(table),
                      max_flops=ADAPTIVE_FLOPS_FRACTION * full_cost, params=_params(table))
    return score_row(table, "adaptive", None, target, result.ranking, truth, result.flops / full_cost)


def _score_halving(table: CurveTable, target: int, budgets: Sequence[int], truth: np.ndarray,
                   full_cost: float) -> list[dict]:
    """The halving rows: one per budget, each allowed what the grid spends at that budget
    (:func:`grid_flops`), so it compares with the grid methods' row of the same budget at equal
    or lower compute. Every size of ``table`` may be bought."""
    rows = []
    for budget in budgets:
        result = run_loop(HalvingPolicy(), table.models, table.sizes.tolist(), target, table_buyer(table),
                          max_flops=grid_flops(table, budget), params=_params(table))
        rows.append(score_row(table, "halving", budget, target, result.ranking, truth, result.flops / full_cost))
    return rows


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
    by_model = {c.model: c for c in ranking.candidates}
    scores = np.array([by_model[m].score if by_model[m].status == "complete" else np.nan for m in seen.models])
    ok = np.isfinite(scores)
    # A failed candidate cannot be chosen: it scores as the worst prediction.
    scores = np.where(ok, scores, np.nanmax(scores) + 1 if ok.any() else 0.0)
    pearson, relacc = score_ranking(scores, truth)
    errors = [abs(by_model[m].predicted_loss - t) / t for m, t in zip(seen.models, truth)
              if by_model[m].predicted_loss is not None]
    brier, pick_p, pick_right = score_p_best(ranking, seen.models, truth)
    return {
        "dataset": seen.name,
        "method": method,
        "budget": budget,
        "ratio": None if budget is None else budget / target,
        "pearson": pearson,
        "relacc": relacc,
        "compute_fraction": compute_fraction,
        "median_rel_error": float(np.median(errors)) if errors and _predicts_loss(method) else None,
        "failed": int((~ok).sum()),
        "p_best_brier": brier,
        "pick_p_best": pick_p,
        "pick_is_best": pick_right,
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
    return method in ("adaptive", "halving") or METHODS[method].predicts_loss


def _full_cost(table: CurveTable, target: int) -> float:
    """FLOPs of fine-tuning every candidate on the target size."""
    if table.params is not None and np.all(np.isfinite(table.params)):
        return float(np.sum(table.params) * target)
    return float(len(table.models) * target)


def summarize(rows: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Means over budgets per dataset and method, scores in percent (as the papers print them).

    Besides PearCorr and RelAcc: ``p_best_brier`` (mean Brier score of the P(best) forecasts),
    ``pick_p_best`` (mean P(best) the method gave its picks) and ``pick_is_best`` (how often the
    pick was truly the best): a calibrated method has the last two about equal.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        out.setdefault(row["dataset"], {}).setdefault(row["method"], {}).setdefault("_rows", []).append(row)
    for methods in out.values():
        for name, cell in methods.items():
            group = cell.pop("_rows")
            cell.update(
                pearson=100 * _mean(r["pearson"] for r in group),
                relacc=100 * _mean(r["relacc"] for r in group),
                compute_fraction=_mean(r["compute_fraction"] for r in group),
                median_rel_error=_mean(r["median_rel_error"] for r in group),
                p_best_brier=_mean(r["p_best_brier"] for r in group),
                pick_p_best=_mean(r["pick_p_best"] for r in group),
                pick_is_best=_mean(r["pick_is_best"] for r in group),
            )
    return out


def _mean(values: Iterable[float | None]) -> float:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(kept)) if kept else float("nan")
