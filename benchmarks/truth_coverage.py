"""Interval coverage and P(best) of the methods on the truth suite's cached runs, in seconds.

Reads the run records that ``benchmarks/truth_suite.py`` left in its cache (it trains nothing):
each problem's selection store (``problems/<name>-<stamp>/store``) is ranked with
``methods.rank(table, target, method)``, and judged against the truth store of its task
(``truth/<task>-<target>-<stamp>``): the true loss of a candidate is the mean ``final_eval_loss``
of its target-size runs over the truth seeds, as the suite computes it.

    python benchmarks/truth_coverage.py [--cache lensllm_out/truth] [--methods default,rectified]

Per method it prints: intervals holding the true loss (of all candidates), the pick's P(best)
and whether the pick is truly best, and the Brier score of the P(best)s (sum over candidates of
(p - 1[truly best])^2; uniform P(best) scores (k - 1) / k).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from lensllm_hf.engine.methods import rank
from lensllm_hf.records import Store, load_table
from truth_suite import PROBLEMS

#: Task and target size of each problem of the suite, by name.
SPECS = {p.name: (p.task, p.target) for p in PROBLEMS}


def problems(cache: Path) -> list[tuple[str, str, dict[str, float], set[str], int]]:
    """(problem name, selection store, true loss per candidate, the candidates some truth seed
    finds best, target) for every cached problem; a pick among the latter is right, as in the suite."""
    out = []
    for folder in sorted((cache / "problems").iterdir()):
        name = folder.name.rsplit("-", 1)[0]
        if name not in SPECS:
            continue
        task, target = SPECS[name]
        truths = sorted((cache / "truth").glob(f"{task}-{target}-*"))
        if not truths or not (folder / "store").is_dir():
            continue
        runs: dict[str, list[float]] = {}
        for rec in Store(str(truths[-1])).records():
            if rec.status == "complete" and rec.final_eval_loss is not None and rec.train_size == target:
                runs.setdefault(rec.model_id, []).append(float(rec.final_eval_loss))
        truth = {m: float(np.mean(v)) for m, v in runs.items() if len(v) >= 2}
        if not truth:
            continue
        seeds = min(len(runs[m]) for m in truth)
        bests = {min(truth, key=lambda m: runs[m][i]) for i in range(seeds)} | {min(truth, key=truth.get)}
        out.append((name, str(folder / "store"), truth, bests, target))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="lensllm_out/truth", help="truth_suite.py's --cache (the same default)")
    parser.add_argument("--methods", default="default,rectified,ats")
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("-v", "--verbose", action="store_true", help="print every candidate")
    args = parser.parse_args()
    if not (Path(args.cache) / "problems").is_dir():
        print(f"truth_coverage: no truth-suite cache in {args.cache}; "
              f"run python benchmarks/truth_suite.py --cache {args.cache} first (about 5 min)", file=sys.stderr)
        sys.exit(2)
    cases = [(name, load_table(store), truth, bests, target)
             for name, store, truth, bests, target in problems(Path(args.cache))]
    for method in args.methods.split(","):
        held = counted = right = 0
        briers, picks = [], []
        for name, table, truth, bests, target in cases:
            ranking = rank(table, target, method, args.level)
            rows = [c for c in ranking.ranked if c.model in truth]
            best = min(truth, key=truth.get)
            cov = [c.interval[0] <= truth[c.model] <= c.interval[1] for c in rows]
            held, counted = held + sum(cov), counted + len(cov)
            brier = sum((c.p_best - (c.model == best)) ** 2 for c in rows) if rows and rows[0].p_best is not None else math.nan
            briers.append(brier)
            picks.append(rows[0].p_best if rows and rows[0].p_best is not None else math.nan)
            right += ranking.best in bests
            print(f"  {method:<10} {name:<10} covered {sum(cov)}/{len(cov)}  pick {ranking.best:<16} "
                  f"p_best {picks[-1]:.2f} {'right' if ranking.best in bests else 'WRONG'}  Brier {brier:.2f}")
            if args.verbose:
                for c in rows:
                    lo, hi = c.interval
                    z = math.log(truth[c.model] / c.predicted_loss) / max(math.log(hi / c.predicted_loss), 1e-12)
                    print(f"      {c.model:<16} true {truth[c.model]:.3f} pred {c.predicted_loss:.3f} "
                          f"[{lo:.3f}, {hi:.3f}] p {c.p_best:.2f} (error / half-width {z:+.2f})")
        k = np.mean([len(t) for _, _, t, _, _ in cases])
        print(f"{method:<10} coverage {held}/{counted} ({100 * held / max(counted, 1):.0f}%)  picks right {right}/{len(cases)}  "
              f"mean p_best of picks {np.nanmean(picks):.2f}  mean Brier {np.nanmean(briers):.2f} "
              f"(uniform {(k - 1) / k:.2f})")


if __name__ == "__main__":
    main()
