"""``lensllm plan CONFIG.yaml``: one shell command per run, for any cluster scheduler.

    lensllm plan CONFIG.yaml --output-dir /shared/sel > runs.txt
    # run each line anywhere that sees the store (e.g. a Slurm array job), then:
    lensllm select CONFIG.yaml --output-dir /shared/sel --from-store

Each line is ``lensllm select CONFIG.yaml --only MODEL --size N`` with the same output
directory (or ``--store``), so every run writes its record into the one shared store. Runs
already recorded are left out (``--all`` lists them too).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

__all__ = ["add_parser", "commands", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="print one 'lensllm select --only --size' command per run, for a cluster",
        description="Print one command per (candidate, subset size) run of CONFIG.yaml, so any scheduler can run "
                    "them against a shared store; then 'lensllm select CONFIG.yaml --from-store' ranks.")
    parser.add_argument("config", metavar="CONFIG.yaml", help="the selection config")
    parser.add_argument("--output-dir", metavar="DIR", help="as for 'lensllm select' (where the store is)")
    parser.add_argument("--store", metavar="URL", help="the shared run store, a folder or fsspec URL")
    parser.add_argument("--all", action="store_true", help="also list the runs already recorded")
    parser.set_defaults(run=run)


def commands(selector, config_path: str, *, output_dir: str | None = None, store: str | None = None,
             include_done: bool = False) -> list[str]:
    """The ``lensllm select ... --only MODEL --size N`` line of every planned run."""
    base = ["lensllm", "select", str(Path(config_path).resolve())]
    if output_dir:
        base += ["--output-dir", str(Path(output_dir).resolve())]
    if store:
        base += ["--store", store if "://" in store else str(Path(store).resolve())]
    lines = []
    for planned in selector.plan():
        if planned.status == "complete" and not include_done:
            continue
        argv = [*base, "--only", planned.candidate, "--size", str(planned.size), "--no-progress"]
        lines.append(shlex.join(argv))
    return lines


def run(args: argparse.Namespace) -> int:
    from ..config import SelectConfig

    config = SelectConfig.from_yaml(args.config)
    selector = config.selector(output_dir=args.output_dir, store=args.store, progress=False)
    plan = selector.plan()
    lines = commands(selector, args.config, output_dir=args.output_dir, store=args.store, include_done=args.all)
    for line in lines:
        print(line)
    done = sum(p.status == "complete" for p in plan)
    finish = ["lensllm", "select", str(Path(args.config).resolve())]
    if args.output_dir:
        finish += ["--output-dir", str(Path(args.output_dir).resolve())]
    if args.store:
        finish += ["--store", args.store]
    note = (f"# {len(lines)} command(s); {done} of {len(plan)} runs already recorded in {selector.store_}."
            f"\n# When they are done: {shlex.join([*finish, '--from-store'])}")
    if selector.strategy == "adaptive":
        note += "\n# (adaptive strategy: the plan lists the full grid; 'lensllm select' alone buys only what it needs)"
    print(note, file=sys.stderr)
    return 0
