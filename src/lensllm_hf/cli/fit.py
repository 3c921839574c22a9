"""``lensllm fit``: rank the models of a curve table or a record store."""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path

from .._utils import check_output_file, display
from ..engine.curves import CurveTable
from ..errors import LensLLMError
from ..engine.methods.base import RunInfo, run_info, showing_progress
from ..engine.methods import LEVEL, METHODS, rank


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit the scaling law per model and rank the models at a target size",
        description="Fit each model's learning curve and rank the models by predicted loss at --target. "
                    "Warnings about the fits (far extrapolation, free NTK term, stream-mode runs) go to stderr.",
    )
    parser.add_argument("source", help="a curve table (CSV) or a record store (folder or fsspec URL)")
    parser.add_argument("--target", type=float, required=True, help="full training-set size to predict the loss at")
    parser.add_argument("--budget", type=float, default=None, help="use only subset sizes up to this one")
    parser.add_argument("--method", default="default", choices=list(METHODS), help="selection method (default: %(default)s)")
    parser.add_argument("--level", type=float, default=LEVEL, help="interval level (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="also write the ranking as JSON")
    parser.set_defaults(run=run)


def load_source(source: str) -> tuple[CurveTable, dict[str, RunInfo]]:
    """A CSV curve table, or the runs of a record store (a folder or any fsspec URL) with what
    their records say beyond the losses (NTK probe spectrum, warnings)."""
    if source.lower().endswith(".csv") or Path(source).is_file():
        return CurveTable.read_csv(source), {}
    from .. import records

    recs = records.load_records(source)
    table = replace(records.load_table(recs), source=source)
    return table, run_info(records.table_rows(recs))


def run(args: argparse.Namespace) -> int:
    # Every argument is checked before any work: a bad --json path must not cost a whole fit.
    if not math.isfinite(args.target) or args.target <= 0:
        raise LensLLMError(f"--target {args.target:g} must be a finite number of examples > 0")
    if args.budget is not None and (not math.isfinite(args.budget) or args.budget < 0):
        raise LensLLMError(f"--budget {args.budget:g} must be a finite number >= 0")
    if not 0 < args.level < 1:
        raise LensLLMError(f"--level {args.level:g} must be between 0 and 1 (e.g. 0.9)")
    if args.json is not None:
        check_output_file(args.json, "ranking JSON")
    table, runs = load_source(args.source)
    if args.budget is not None:
        table = table.up_to(args.budget)
        if table.sizes.size == 0:
            raise LensLLMError(f"{display(args.source)}: no subset size is <= --budget {args.budget:g}; raise the budget")
    with showing_progress():
        ranking = rank(table, args.target, args.method, args.level, runs=runs)
    print(f"{display(table.source)}: {args.method} ranking at {args.target:,.0f} examples "
          f"(sizes {int(table.sizes.min()):,}..{int(table.sizes.max()):,})")
    print(ranking.format())
    for candidate in ranking.candidates:
        name = display(candidate.model)
        if candidate.status == "failed":
            print(f"lensllm fit: warning: {name} not ranked: {display(candidate.error)}", file=sys.stderr)
            continue
        notes = [*(candidate.fit.warnings if candidate.fit is not None else ()), *candidate.warnings]
        for note in notes:
            print(f"lensllm fit: warning: {name}: {display(note)}", file=sys.stderr)
    if args.json is not None:
        ranking.to_json(args.json)
        print(f"wrote {display(args.json)}")
    if ranking.best is None:
        print(f"lensllm fit: error: {display(table.source)}: no model could be ranked; fix the losses named above",
              file=sys.stderr)
        return 2
    return 0
