"""``lensllm bench``: the selection protocol of DESIGN.md §2 on curve tables, for every method."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from .._utils import atomic_write_text, check_output_file, display, json_safe
from ..engine.protocol import DEFAULT_BUDGETS, DEFAULT_TARGET, run_bench, summarize
from ..engine.curves import CurveTable
from ..errors import LensLLMError
from ..engine.methods import METHODS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="score every selection method on curve tables (PearCorr, RelAcc, compute, P(best))",
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


def parse_budgets(text: str, target: int) -> list[int]:
    """``--budgets``: whole numbers > 0 below the target, at least one; else a one-line error."""
    parts = [b.strip() for b in text.split(",")]
    if not any(parts):
        raise LensLLMError(f"--budgets {text!r} names no budget; write e.g. 204800,102400")
    budgets = []
    for part in parts:
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            raise LensLLMError(f"--budgets: {part!r} is not a number; write e.g. 204800,102400") from None
        if not math.isfinite(value) or value <= 0 or value != int(value):
            raise LensLLMError(f"--budgets: {part!r} must be a whole number of examples > 0; write e.g. 204800,102400")
        if value >= target:
            raise LensLLMError(f"budget {int(value)} is not below the target {target}; lower it or raise --target")
        budgets.append(int(value))
    return budgets


def run(args: argparse.Namespace) -> int:
    # Every argument is checked before any table is read or fitted.
    if args.target <= 0:
        raise LensLLMError(f"--target {args.target} must be a number of examples > 0")
    budgets = parse_budgets(args.budgets, args.target)
    methods = all_methods() if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise LensLLMError(f"--methods {args.methods!r} names no method; choose from {', '.join(all_methods())}")
    unknown = [m for m in methods if m not in all_methods()]
    if unknown:
        raise LensLLMError(f"unknown method {display(unknown[0])!r}; choose from {', '.join(all_methods())}")
    if args.json is not None:
        check_output_file(args.json, "bench JSON")
    start = time.perf_counter()
    tables = [CurveTable.read_csv(path) for path in args.curves]
    rows = run_bench(tables, methods, target=args.target, budgets=budgets)
    seconds = time.perf_counter() - start
    summary = summarize(rows)
    print(format_summary(summary))
    print(format_calibration(summary))
    print(f"{len(rows)} rows in {seconds:.2f} s")
    if args.json is not None:
        data = {"rows": [json_safe(r) for r in rows], "summary": json_safe(summary), "seconds": seconds}
        atomic_write_text(args.json, json.dumps(data, indent=2) + "\n")
        print(f"wrote {display(args.json)}")
    return 0


def format_summary(summary: dict) -> str:
    """Means over budgets per dataset and method, one line each."""
    lines = [f"{'dataset':<12} {'method':<11} {'PearCorr':>8} {'RelAcc':>7} {'compute':>8} {'median err':>10} "
             f"{'Brier':>6}"]
    for dataset, methods in summary.items():
        for method, cell in methods.items():
            err = cell["median_rel_error"]
            lines.append(f"{display(dataset)[:12]:<12} {method:<11} {cell['pearson']:>8.1f} {cell['relacc']:>7.1f} "
                         f"{100 * cell['compute_fraction']:>7.2f}% {'-' if math.isnan(err) else f'{100 * err:.1f}%':>10} "
                         f"{cell['p_best_brier']:>6.3f}")
    return "\n".join(lines)


def format_calibration(summary: dict) -> str:
    """Per method, over every table and budget: mean P(best) of the picks against how often the
    pick was truly the best (a calibrated method has them about equal)."""
    lines = ["calibration: mean P(best) of the pick vs how often the pick is truly best"]
    methods = {m for cells in summary.values() for m in cells}
    for method in [m for m in all_methods() if m in methods]:
        cells = [cells[method] for cells in summary.values() if method in cells]
        p = sum(c["pick_p_best"] for c in cells) / len(cells)
        hit = sum(c["pick_is_best"] for c in cells) / len(cells)
        lines.append(f"  {method:<11} P(best) {p:.2f} vs truly best {hit:.2f}")
    return "\n".join(lines)
