"""``lensllm plan CONFIG.yaml``: one shell command per run, for any cluster scheduler.

    lensllm plan CONFIG.yaml --output-dir /shared/sel > runs.txt
    # run each line anywhere that sees the store (e.g. a Slurm array job), then:
    lensllm select CONFIG.yaml --output-dir /shared/sel --from-store

Each line is ``lensllm select /abs/CONFIG.yaml --output-dir /abs/DIR [--store URL] --only MODEL
--size N``: absolute paths, so a line runs the same from any folder and every run writes its
record into the one shared store (``plan`` run again counts them recorded). Runs already
recorded are left out (``--all`` lists them too). Lines may run at the same time: each run is
claimed in the store before it trains.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .._utils import display

__all__ = ["add_parser", "commands", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..selector.params import add_cli_flags

    parser = subparsers.add_parser(
        "plan", help="print one 'lensllm select --only --size' command per run, for a cluster",
        description="Print one command per (candidate, subset size) run of CONFIG.yaml, so any scheduler can run "
                    "them against a shared store; then 'lensllm select CONFIG.yaml --from-store' ranks.")
    parser.add_argument("config", metavar="CONFIG.yaml", help="the selection config")
    add_cli_flags(parser)
    parser.add_argument("--all", action="store_true", help="also list the runs already recorded")
    parser.set_defaults(run=run)


def base_command(config_path: str, config, given: dict) -> list[str]:
    """``lensllm select /abs/CONFIG.yaml --output-dir /abs/DIR [--store URL] [flags]`` of a config."""
    from ..selector.params import params_of

    argv = ["lensllm", "select", str(Path(config_path).resolve()), "--output-dir", config.resolved_output_dir()]
    store = config.params.get("store")
    if store:
        argv += ["--store", store if "://" in store else str(Path(store).resolve())]
    for name, (_, spec, _) in params_of().items():  # the other flags given to plan hold for every run
        if spec.cli is None or name in ("output_dir", "store", "progress") or name not in given:
            continue
        value = config.params[name]
        if isinstance(value, bool):
            argv += [spec.cli] if value else []
        else:
            argv += [spec.cli, str(value)]
    return argv


def commands(selector, config_path: str, config, given: dict | None = None, *, include_done: bool = False
             ) -> list[str]:
    """The ``lensllm select ... --only MODEL --size N`` line of every planned run (``given``: flags to pass on)."""
    base = base_command(config_path, config, given or {})
    lines = []
    for planned in selector.plan():
        if planned.status == "complete" and not include_done:
            continue
        argv = [*base, "--only", planned.candidate, "--size", str(planned.size), "--no-progress"]
        lines.append(shlex.join(argv))
    return lines


def run(args: argparse.Namespace) -> int:
    from .select import load_config

    config, given = load_config(args)
    selector = config.selector(output_dir=config.resolved_output_dir(), progress=False)
    plan = selector.plan()
    lines = commands(selector, args.config, config, given, include_done=args.all)
    for line in lines:
        print(line)
    done = sum(p.status == "complete" for p in plan)
    finish = [*base_command(args.config, config, given), "--from-store"]
    note = (f"# {len(lines)} command(s); {done} of {len(plan)} runs already recorded in {display(selector.store_)}."
            f"\n# When they are done: {shlex.join(finish)}")
    if selector.strategy == "adaptive":
        note += "\n# (adaptive strategy: the plan lists the full grid; 'lensllm select' alone buys only what it needs)"
    print(note, file=sys.stderr)
    return 0
