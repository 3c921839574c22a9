"""``lensllm demo``: the main job end to end, offline, on tiny local models (about a minute on CPU).

    lensllm demo [--output-dir lensllm_out/demo]

Builds four tiny pre-trained models and a task dataset, runs the selection, prints the ranking
and writes what ``lensllm select`` writes. Running it again with the same directory resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run a whole selection offline on tiny local models (about a minute on CPU)",
        description="Build four tiny pre-trained models (GPT-2, Llama, Pythia, OPT configs) and a task dataset, "
                    "select the one to fine-tune, and write the ranking, the plot and the model cards.")
    parser.add_argument("--output-dir", default="lensllm_out/demo", metavar="DIR",
                        help="where everything goes (default: %(default)s); the same DIR resumes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import rerun_command, run_demo
    from .select import report

    started = time.perf_counter()
    out = Path(args.output_dir)
    print(f"lensllm demo: building tiny models and data in {out} (offline)", file=sys.stderr)
    result = run_demo(out, progress=not args.no_progress, log=lambda line: print(line, file=sys.stderr))
    code = report(result, out, command="demo")
    print(f"\ndone in {time.perf_counter() - started:.0f}s; rerun the selection in place (recorded runs are "
          f"skipped) with: {rerun_command(out)}")
    return code
