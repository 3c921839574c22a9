"""``lensllm bench``: the model-selection protocol (LensLLM, Lin et al.) on curve tables, for every method.

Each table sets its own target (its largest size) and budgets (its sizes from target / 8 down
to target / 512) unless ``--target``/``--budgets`` say otherwise; a folder stands for its CSV
files, and every table belongs to a family (its folder's name, or ``--family``) whose mean is
printed as a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from .._utils import atomic_write_text, check_output_file, display, json_safe
from ..engine.curves import CurveTable
from ..engine.methods import METHODS
from ..engine.policies import POLICIES
from ..engine.protocol import BenchTable, plan_table, run_bench, summarize, summarize_families
from ..errors import LensLLMError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="score every selection method on curve tables (PearCorr, RelAcc, coverage, P(best), compute)",
        description="Run the model-selection protocol on curve tables and score each method, per table and "
                    "per family of tables.",
    )
    parser.add_argument("--curves", action="append", required=True, metavar="PATH",
                        help="a curve table (CSV) or a folder of them; repeat for more")
    parser.add_argument("--family", default=None, metavar="NAME",
                        help="the family of every table given (default: each table's folder name)")
    parser.add_argument("--target", type=int, default=None,
                        help="target size (default: each table's largest size)")
    parser.add_argument("--budgets", default=None,
                        help="comma-separated budgets (default: each table's sizes from target/8 down to target/512 "
                             "that leave 3 fine-tuned sizes)")
    parser.add_argument("--methods", default=None, help=f"comma-separated subset of: {', '.join(all_methods())}")
    parser.add_argument("--per-table", action="store_true", help="also print one row per table and method")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json",
                        help="write every row, the per-table and per-family means and the time")
    parser.set_defaults(run=run)


def all_methods() -> list[str]:
    return [*METHODS, *(policy for policy in POLICIES if policy != "grid")]


def parse_budgets(text: str, target: int | None) -> list[int]:
    """``--budgets``: whole numbers > 0 (below ``target`` when given), at least one; else a one-line error."""
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
        if target is not None and value >= target:
            raise LensLLMError(f"budget {int(value)} is not below the target {target}; lower it or raise --target")
        budgets.append(int(value))
    return budgets


def table_paths(paths: list[str]) -> list[Path]:
    """Every table named: a file as given, a folder as its ``*.csv`` files (sorted); one-line errors."""
    out: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.csv") if p.is_file())
            if not found:
                raise LensLLMError(f"{display(path)}: a folder without curve tables (*.csv); pass a CSV or a folder of them")
            out.extend(found)
        else:
            out.append(path)
    return out


def plan_tables(paths: list[Path], target: int | None, budgets: list[int] | None,
                family: str | None) -> tuple[list[BenchTable], list[str]]:
    """The tables to score and a note per table left out. One table that cannot be scored is an
    error; among several it is left out with its reason, unless none is left."""
    plans, skipped = [], []
    for path in paths:
        try:
            plan = plan_table(CurveTable.read_csv(path), target, budgets, family)
        except LensLLMError as error:
            if len(paths) == 1:
                raise
            skipped.append(str(error))
            continue
        plans.append(plan)
        skipped.extend(plan.notes)
    if not plans:
        raise LensLLMError(f"no table could be scored; the first: {skipped[0]}")
    return plans, skipped


def run(args: argparse.Namespace) -> int:
    # Every argument is checked before any table is read or fitted.
    if args.target is not None and args.target <= 0:
        raise LensLLMError(f"--target {args.target} must be a number of examples > 0")
    budgets = None if args.budgets is None else parse_budgets(args.budgets, args.target)
    methods = all_methods() if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise LensLLMError(f"--methods {args.methods!r} names no method; choose from {', '.join(all_methods())}")
    unknown = [m for m in methods if m not in all_methods()]
    if unknown:
        raise LensLLMError(f"unknown method {display(unknown[0])!r}; choose from {', '.join(all_methods())}")
    if args.family is not None and not args.family.strip():
        raise LensLLMError("--family names no family; write e.g. --family llm")
    if args.json is not None:
        check_output_file(args.json, "bench JSON")
    start = time.perf_counter()
    plans, skipped = plan_tables(table_paths(args.curves), args.target, budgets, args.family)
    for note in skipped:
        print(f"lensllm bench: {note}", file=sys.stderr)
    rows = run_bench(plans, methods)
    seconds = time.perf_counter() - start
    families = summarize_families(rows)
    tables = summarize(rows)
    for family, cells in families.items():
        group = [p for p in plans if p.family == family]
        if args.per_table:
            print(format_tables([r for r in rows if r["family"] == family]) + "\n")
        print(format_family(family, group, cells) + "\n")
    print(f"{len(rows)} rows from {len(plans)} table(s) in {seconds:.2f} s")
    if args.json is not None:
        data = {"rows": [json_safe(r) for r in rows], "summary": json_safe(tables), "families": json_safe(families),
                "skipped": skipped, "seconds": seconds}
        atomic_write_text(args.json, json.dumps(data, indent=2) + "\n")
        print(f"wrote {display(args.json)}")
    return 0


_HEADER = ("| method | PearCorr | RelAcc | 90 % coverage | Brier (uniform) | P(best) of pick / truly best | compute |\n"
           "|---|---:|---:|---:|---:|---:|---:|")


def format_family(family: str, plans: list[BenchTable], cells: dict) -> str:
    """One family's means over its tables as a markdown table, under a line saying what was scored.

    Coverage is the mean at the target, with its lowest and highest over the distances from the
    budget; calibration compares the mean P(best) of the picks with how often they were best.
    """
    names = ", ".join(display(p.table.name) for p in plans[:4]) + (", ..." if len(plans) > 4 else "")
    targets = sorted({p.target for p in plans})
    counts = sorted({len(p.budgets) for p in plans})
    target = f"target {targets[0]:,}" if len(targets) == 1 else "target: each table's largest size"
    budgets = (f"budgets {min(min(p.budgets) for p in plans):,}..{max(max(p.budgets) for p in plans):,}"
               f" ({counts[0]}{'' if len(counts) == 1 else f'-{counts[-1]}'} per table)")
    lines = [f"### {display(family)}: {len(plans)} table(s) ({names}); {target}; {budgets}", "", _HEADER]
    for method, cell in cells.items():
        coverage = "-" if math.isnan(cell["coverage"]) else f"{100 * cell['coverage']:.0f} %"
        if not math.isnan(cell["coverage_min"]):
            coverage += f" ({100 * cell['coverage_min']:.0f}-{100 * cell['coverage_max']:.0f})"
        lines.append(_row([method], cell, coverage))
    return "\n".join(lines)


def format_tables(rows: list[dict]) -> str:
    """One markdown row per table and method: the means over its budgets."""
    head, rule = _HEADER.split("\n")
    lines = ["| table " + head, "|---" + rule]
    for dataset, methods in summarize(rows).items():
        for method, cell in methods.items():
            coverage = "-" if math.isnan(cell["coverage"]) else f"{100 * cell['coverage']:.0f} %"
            lines.append(_row([display(dataset), method], cell, coverage))
    return "\n".join(lines)


def _row(first: list[str], cell: dict, coverage: str) -> str:
    return "| " + " | ".join([
        *first, _number(cell["pearson"], ".1f"), _number(cell["relacc"], ".1f"), coverage,
        f"{_number(cell['p_best_brier'], '.3f')} ({_number(cell['uniform_brier'], '.3f')})",
        f"{_number(cell['pick_p_best'], '.2f')} / {_number(cell['pick_is_best'], '.2f')}",
        f"{100 * cell['compute_fraction']:.2f} %"]) + " |"


def _number(value: float, spec: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)
