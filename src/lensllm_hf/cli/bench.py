"""``lensllm bench``: the selection protocol of DESIGN.md §2 on curve tables, for every method."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from ..bench import DEFAULT_BUDGETS, DEFAULT_TARGET, run_bench, summarize
from ..curves import CurveTable
from ..errors import LensLLMError
from ..methods import METHODS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="score every selection method on curve tables (PearCorr, RelAcc, compute)",
        description="Run the model-selection protocol on curve tables and score each method.",
    )
    parser.add_argument("--curves", action="append", required=True, metavar="CSV", help="a curve table; repeat for more")
    parser.add_argument("--target", type=int, default=DEFAULT_TARGET, help="target size (default: %(default)s)")
    parser.add_argument("--budgets", default=",".join(map(str, DEFAULT_BUDGETS)),
                        help="comma-separated budgets (default: %(default)s)")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of: {', '.join(all_methods())}")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write every row and the time")
    parser.set_defaults(run=run)


def all_methods() -> list[str]:
    return [*METHODS, "adaptive", "halving"]


def run(args: argparse.Namespace) -> int:
    try:
        budgets = [int(float(b)) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        raise LensLLMError(f"--budgets {args.budgets!r} is not a list of numbers; write e.g. 204800,102400") from None
    methods = all_methods() if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in all_methods()]
    if unknown:
        raise LensLLMError(f"unknown method {unknown[0]!r}; choose from {', '.join(all_methods())}")
    for budget in budgets:
        if budget >= args.target:
            raise LensLLMError(f"budget {budget} is not below the target {args.target}; lower it or raise --target")
    start = time.perf_counter()
    tables = [CurveTable.read_csv(path) for path in args.curves]
    rows = run_bench(tables, methods, target=args.target, budgets=budgets)
    seconds = time.perf_counter() - start
    print(format_summary(summarize(rows)))
    print(f"{len(rows)} rows in {seconds:.2f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": [_clean(r) for r in rows], "seconds": seconds}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def format_summary(summary: dict) -> str:
    """Means over budgets per dataset and method, one line each."""
    lines = [f"{'dataset':<12} {'method':<11} {'PearCorr':>8} {'RelAcc':>7} {'compute':>8} {'median err':>10}"]
    for dataset, methods in summary.items():
        for method, cell in methods.items():
            err = cell["median_rel_error"]
            lines.append(f"{dataset:<12} {method:<11} {cell['pearson']:>8.1f} {cell['relacc']:>7.1f} "
                         f"{100 * cell['compute_fraction']:>7.2f}% {'-' if math.isnan(err) else f'{100 * err:.1f}%':>10}")
    return "\n".join(lines)


def _clean(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
