"""Coverage of the methods' 90 % intervals on held-out points of the real curves, per table.

For every table, budget (1/8 .. 1/512 of 1,638,400) and model, each method is fitted on the
columns up to the budget and its interval is checked on every later column. The target is
85-95 % on each table, at every distance ahead; the interval score (lower is better) says
whether a change that moves the coverage made the intervals better or only wider.

    python benchmarks/interval_coverage.py [--methods default,ats,rectified,power] [--curves A.csv B.csv]
    python benchmarks/interval_coverage.py --short   # also: curves cut to their first 3-4 sizes
    python benchmarks/interval_coverage.py --by-budget   # also: coverage at each budget alone

Coverage at each budget tells a level that is off everywhere (the spread at the short distances)
from a growth that is off (the far ones): default's 90 % intervals hold 93-97 % of Gigaword's
columns at every budget and 98 % of those 7 or more doublings ahead (the far term is too wide
there), while FLAN's hold 76-81 % at the budgets 1/128-1/32 (its later columns are harder to
predict than the earlier ones its backtest sees).

The truth suite's coverage (tiny models, curves of 3-5 points, true losses from full-size runs)
comes from its cached runs in seconds: ``python benchmarks/truth_coverage.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lensllm_hf.engine.protocol import DEFAULT_BUDGETS
from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.engine.methods import METHODS

CURVES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "finetune-curves"


def coverage(method: str, table: CurveTable, budgets, level: float = 0.9) -> tuple[float, float, float, dict[str, float]]:
    """(coverage, median log-width, mean interval score, coverage by doublings ahead) of one
    method on one table.

    The interval score (Gneiting & Raftery 2007, in log-loss units) is the interval's width plus
    2 / (1 - level) times how far the truth falls outside it: a proper score, lower is better, so
    an interval cannot win by coverage alone (too wide) or by width alone (too narrow).
    """
    hits, widths, scores, by_doubling = [], [], [], {}
    penalty = 2 / (1 - level)
    for budget in budgets:
        seen = table.up_to(budget)
        for held in table.sizes[table.sizes > budget]:
            ranking = METHODS[method].rank(seen, float(held), level)
            truth = dict(zip(table.models, table.column(int(held))))
            for c in ranking.ranked:
                lo, hi = c.interval
                hit = lo <= truth[c.model] <= hi
                hits.append(hit)
                widths.append(np.log(hi / lo))
                y = np.log(truth[c.model])
                scores.append(widths[-1] + penalty * (max(np.log(lo) - y, 0.0) + max(y - np.log(hi), 0.0)))
                ahead = int(round(np.log2(held / budget)))
                key = "1-3" if ahead <= 3 else "4-6" if ahead <= 6 else "7+"
                by_doubling.setdefault(key, []).append(hit)
    return float(np.mean(hits)), float(np.median(widths)), float(np.mean(scores)), {k: float(np.mean(v)) for k, v in sorted(by_doubling.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="default,ats,rectified,power")
    parser.add_argument("--curves", nargs="*", default=[str(CURVES / "flan.csv"), str(CURVES / "gigaword.csv")])
    parser.add_argument("--short", action="store_true", help="also score tables cut to their 3-4 smallest sizes")
    parser.add_argument("--by-budget", action="store_true", help="also print the coverage at each budget alone")
    args = parser.parse_args()
    tables = [CurveTable.read_csv(path) for path in args.curves]
    print(f"{'table':<22} {'method':<10} {'coverage':>8} {'median log-width':>16} {'score':>6}  coverage by doublings ahead")
    for table in tables:
        cases = [(table.name, table, DEFAULT_BUDGETS)]
        if args.short:
            # Short curves: only the first 3 or 4 fine-tuned sizes (200..800, 200..1600), every later
            # column held out (8+ doublings ahead).
            cases += [(f"{table.name} 200..{b}", table, (b,)) for b in (800, 1600)]
        for name, tab, budgets in cases:
            for method in args.methods.split(","):
                cov, width, score, by = coverage(method, tab, budgets)
                print(f"{name:<22} {method:<10} {100 * cov:>7.1f}% {width:>16.3f} {score:>6.3f}  "
                      + " ".join(f"{k}:{100 * v:.0f}%" for k, v in by.items()))
                if args.by_budget and len(budgets) > 1:
                    print(f"{'':<22} {'':<10} by budget: " + " ".join(
                        f"{b}:{100 * coverage(method, tab, (b,))[0]:.0f}%" for b in sorted(budgets)))


if __name__ == "__main__":
    main()
