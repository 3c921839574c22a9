"""Coverage of the laws' 90 % intervals on held-out points of the real curves.

For every table, budget (1/8 .. 1/512 of 1,638,400) and model, each law is fitted on the
columns up to the budget and its interval is checked on every later column.

    python benchmarks/interval_coverage.py [--laws rectified,ats,power,default]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lensllm_hf.bench import DEFAULT_BUDGETS
from lensllm_hf.curves import CurveTable
from lensllm_hf.methods import METHODS

CURVES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "finetune-curves"


def coverage(method: str, tables: list[CurveTable], level: float = 0.9) -> tuple[float, float, dict[int, float]]:
    hits, widths, by_doubling = [], [], {}
    for table in tables:
        for budget in DEFAULT_BUDGETS:
            seen = table.up_to(budget)
            for held in table.sizes[table.sizes > budget]:
                ranking = METHODS[method].rank(seen, float(held), level)
                truth = dict(zip(table.models, table.column(int(held))))
                for c in ranking.ranked:
                    hit = c.interval[0] <= truth[c.model] <= c.interval[1]
                    hits.append(hit)
                    widths.append(np.log(c.interval[1] / c.interval[0]))
                    by_doubling.setdefault(int(round(np.log2(held / budget))), []).append(hit)
    return float(np.mean(hits)), float(np.median(widths)), {k: float(np.mean(v)) for k, v in sorted(by_doubling.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laws", default="rectified,power,ats,default")
    parser.add_argument("--curves", nargs="*", default=[str(CURVES / "flan.csv"), str(CURVES / "gigaword.csv")])
    args = parser.parse_args()
    tables = [CurveTable.read_csv(path) for path in args.curves]
    print(f"{'method':<10} {'coverage':>8} {'median log-width':>16}  coverage by doublings ahead")
    for method in args.laws.split(","):
        cov, width, by = coverage(method, tables)
        print(f"{method:<10} {100 * cov:>7.1f}% {width:>16.3f}  " + " ".join(f"{k}:{100 * v:.0f}%" for k, v in by.items()))


if __name__ == "__main__":
    main()
