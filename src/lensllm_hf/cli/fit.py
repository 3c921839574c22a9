"""``lensllm fit``: rank the models of a curve table or a record store."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..curves import CurveTable
from ..errors import LensLLMError
from ..methods import METHODS, rank


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit",
        help="fit the scaling law per model and rank the models at a target size",
        description="Fit each model's learning curve and rank the models by predicted loss at --target.",
    )
    parser.add_argument("source", help="a curve table (CSV) or a record store (folder or fsspec URL)")
    parser.add_argument("--target", type=float, required=True, help="full training-set size to predict the loss at")
    parser.add_argument("--budget", type=float, default=None, help="use only subset sizes up to this one")
    parser.add_argument("--method", default="default", choices=list(METHODS), help="selection method (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="also write the ranking as JSON")
    parser.set_defaults(run=run)


def load_source(source: str) -> CurveTable:
    """A CSV curve table, or the runs of a record store (a folder or any fsspec URL)."""
    if source.lower().endswith(".csv") or Path(source).is_file():
        return CurveTable.read_csv(source)
    from .. import records

    return records.load_table(source)


def run(args: argparse.Namespace) -> int:
    table = load_source(args.source)
    if args.budget is not None:
        table = table.up_to(args.budget)
        if table.sizes.size == 0:
            raise LensLLMError(f"{args.source}: no subset size is <= --budget {args.budget:g}; raise the budget")
    ranking = rank(table, args.target, args.method)
    print(f"{table.source}: {args.method} ranking at {args.target:,.0f} examples "
          f"(sizes {int(table.sizes.min()):,}..{int(table.sizes.max()):,})")
    print(ranking.format())
    for candidate in ranking.candidates:
        if candidate.status == "failed":
            print(f"lensllm fit: warning: {candidate.model} not ranked: {candidate.error}", file=sys.stderr)
    if args.json is not None:
        ranking.to_json(args.json)
        print(f"wrote {args.json}")
    if ranking.best is None:
        print(f"lensllm fit: error: {table.source}: no model could be ranked; fix the losses named above", file=sys.stderr)
        return 2
    print(f"best: {ranking.best}")
    return 0
