"""``lensllm plan CONFIG.yaml``: one shell command per run, for any cluster scheduler.

    lensllm plan CONFIG.yaml --output-dir /shared/sel > runs.txt
    # run each line anywhere that sees the store (e.g. a Slurm array job), then:
    lensllm select CONFIG.yaml --output-dir /shared/sel --from-store

With ``--json OUT`` it also writes each run's estimated FLOPs (before anything trains: ``6 x
parameters x tokens`` as the Trainer counts them, from each candidate's config and tokenizer) and
its estimated peak memory in bytes (weights, gradients, optimizer states, activations, NTK probe;
see :mod:`lensllm_hf.selector.memory`)::

    {"runs": [{"model": NAME, "size": N, "estimated_flops": F, "memory": {"weights": B, ..., "peak": B},
               "command": "..."}],
     "total_estimated_flops": F, "full_fine_tuning_flops": F, "target_size": N}

plus ``gpu_hours`` (per run and in total) with ``--gpu NAME`` or ``--flops-per-second F``, and
with ``--gpu NAME`` ``fits_gpu`` per run and a warning on stderr naming the runs whose peak
exceeds one such GPU's memory. The estimate's summary line goes to stderr either way.

Each line is ``/abs/bin/lensllm select /abs/CONFIG.yaml --output-dir /abs/DIR [--store URL] --only
MODEL --size N``: this interpreter's own ``lensllm`` and absolute paths, so a line runs the same
from any folder without the virtualenv on PATH, and every run writes its record into the one
shared store (``plan`` run again counts them recorded). Runs already recorded are left out
(``--all`` lists them too). Lines may run at the same time: each run is claimed in the store
before it trains. Each line is a process of its own (imports, data, tokenising): where the
scheduler can give one task many runs, the ``--worker`` command printed on stderr makes them in
one process, N of them at once.
"""

from __future__ import annotations

import argparse
import json
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
    parser.add_argument("--json", metavar="OUT", help="write the runs with their estimated FLOPs (and GPU-hours) as JSON")
    device = parser.add_mutually_exclusive_group()
    device.add_argument("--gpu", metavar="NAME", help="estimate GPU-hours on this accelerator (H100, A100, L4, ...)")
    device.add_argument("--flops-per-second", type=float, metavar="F",
                        help="estimate GPU-hours at this peak FLOP/s (bf16 dense) per GPU")
    parser.set_defaults(run=run)


def base_command(config_path: str, config, given: dict) -> list[str]:
    """``lensllm select /abs/CONFIG.yaml --output-dir /abs/DIR [--store URL] [flags]`` of a config."""
    from ..selector.params import params_of

    from . import own_command

    argv = [*own_command(), "select", str(Path(config_path).resolve()), "--output-dir", config.resolved_output_dir()]
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
    return [line for _, line in planned_commands(selector, config_path, config, given, include_done=include_done)]


def planned_commands(selector, config_path: str, config, given: dict | None = None, *, include_done: bool = False
                     ) -> list[tuple[object, str]]:
    """(planned run, command line) of every run still to make (all with ``include_done``)."""
    base = base_command(config_path, config, given or {})
    out = []
    for planned in selector.plan():
        if planned.status == "complete" and not include_done:
            continue
        argv = [*base, "--only", planned.candidate, "--size", str(planned.size), "--no-progress"]
        out.append((planned, shlex.join(argv)))
    return out


def run(args: argparse.Namespace) -> int:
    from .._utils import atomic_write_text, check_output_file
    from ..selector.cost import gpu_hours
    from .select import check_candidates, load_config

    device = {"gpu": args.gpu, "flops_per_second": args.flops_per_second}
    if args.gpu is not None or args.flops_per_second is not None:
        gpu_hours(0.0, **device)  # an unknown GPU name fails now, in one line
    if args.json:
        check_output_file(args.json)
    config, given = load_config(args)
    selector = config.selector(output_dir=config.resolved_output_dir(), progress=False)
    check_candidates(selector, config)
    plan = selector.plan()
    pending = planned_commands(selector, args.config, config, given, include_done=args.all)
    for _, line in pending:
        print(line)
    done = sum(p.status == "complete" for p in plan)
    base = base_command(args.config, config, given)
    note = (f"# {len(pending)} command(s); {done} of {len(plan)} runs already recorded in {display(selector.store_)}."
            f"\n# Or start N workers instead, each making runs until none is left: {shlex.join([*base, '--worker'])}"
            f"\n# When they are done: {shlex.join([*base, '--from-store'])}")
    if selector.strategy in ("adaptive", "halving"):
        note += (f"\n# ({selector.strategy} strategy: the plan lists the full grid; 'lensllm select' alone buys only "
                 "what it needs)")
    wanted = {(p.candidate, p.size) for p, _ in pending}
    cost = selector.estimate_cost(only=[] if not pending else None)  # tokenizes each candidate's subset
    cost.runs = [r for r in cost.runs if (r.model, r.size) in wanted]
    with_device = args.gpu is not None or args.flops_per_second is not None
    if pending:
        print("# " + cost.summary(**device), file=sys.stderr)
        warning = cost.memory_warning(args.gpu) if args.gpu is not None else None
        if warning:
            print(f"lensllm plan: warning: {warning}", file=sys.stderr)
        for name, error in cost.memory_errors.items():
            print(f"lensllm plan: warning: no memory estimate for {display(name)} ({display(error)})", file=sys.stderr)
    print(note, file=sys.stderr)  # last: its final line is the command that ranks
    if args.json:
        estimates = {(r.model, r.size): r for r in cost.runs}
        too_big = {(r.model, r.size) for r in cost.too_big(args.gpu)} if args.gpu is not None else set()
        runs = []
        for planned, line in pending:
            estimate = estimates.get((planned.candidate, planned.size))
            flops = None if estimate is None else estimate.estimated_flops
            memory = None if estimate is None or estimate.memory is None else estimate.memory.to_dict()
            row = {"model": planned.candidate, "size": planned.size, "estimated_flops": flops, "memory": memory,
                   "command": line}
            if with_device:
                row["gpu_hours"] = None if flops is None else gpu_hours(flops, **device)
            if args.gpu is not None:
                row["fits_gpu"] = None if memory is None else (planned.candidate, planned.size) not in too_big
            runs.append(row)
        out = {"runs": runs, "total_estimated_flops": cost.total_flops, "full_fine_tuning_flops": cost.full_flops,
               "target_size": cost.target_size, "not_estimated": cost.errors}
        if with_device:
            out.update(gpu=args.gpu, flops_per_second=args.flops_per_second,
                       gpu_hours=gpu_hours(cost.total_flops, **device),
                       full_fine_tuning_gpu_hours=gpu_hours(cost.full_flops, **device))
        atomic_write_text(args.json, json.dumps(out, indent=2) + "\n")
    return 0
