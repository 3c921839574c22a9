"""``lensllm select CONFIG.yaml``: fine-tune the candidates on small subsets and rank them.

    lensllm select CONFIG.yaml [--output-dir DIR]              # the whole selection (resumes)
    lensllm select CONFIG.yaml --worker [--local-workers N]    # make pending runs until none is left
    lensllm select CONFIG.yaml --only MODEL --size N           # one run, e.g. from 'lensllm plan'
    lensllm select CONFIG.yaml --from-store                    # fit and rank what the store holds

A worker is the selection without its ranking: it takes the pending runs of the plan one after
another in this one process (imports, data and tokenised features made once), claiming each in
the store, so N workers started on a shared store split the runs and never train one twice; it
waits for the runs other workers hold (taking over one whose worker died) and exits when every
run is recorded. Then ``--from-store`` ranks. (A flag of ``select`` rather than a command of its
own: a worker takes exactly the config, flags and store of the selection it works for.)

Writes ``selection.json`` (the ``lensllm fit --json`` shape), ``selection.png``,
``selection.md`` and a model card per candidate (``cards/<model>/README.md``) into the output
directory; the run records stay in its ``store/``, so running again resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from .._utils import atomic_write_text, display
from ..errors import LensLLMError

__all__ = ["add_parser", "check_candidates", "load_config", "run", "write_outputs"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from ..selector.params import add_cli_flags

    parser = subparsers.add_parser(
        "select", help="fine-tune candidates on small subsets and rank them (the main job)",
        description="Fine-tune every candidate of CONFIG.yaml on nested subsets, fit the scaling law and rank the "
                    "candidates by predicted loss at the target size. Runs already recorded are skipped; runs "
                    "another selection is making on the same store are waited for, never trained twice.")
    parser.add_argument("config", metavar="CONFIG.yaml", help="the selection config (candidates, dataset, sizes, ...)")
    add_cli_flags(parser)
    parser.add_argument("--only", action="append", metavar="MODEL",
                        help="make only this candidate's runs (repeatable); no ranking is written")
    parser.add_argument("--size", action="append", type=int, metavar="N",
                        help="make only the runs of this subset size (repeatable; 0 = zero-shot)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--from-store", action="store_true", help="train nothing: fit and rank the recorded runs")
    mode.add_argument("--worker", action="store_true",
                      help="rank nothing: make the pending runs in this process until none is left (start N workers "
                           "on one store, then --from-store)")
    parser.add_argument("--local-workers", type=int, metavar="N",
                        help="with --worker: how many workers run on this machine; on CPU each run uses the cores / N "
                             "torch threads (default: all the cores this process may use)")
    parser.set_defaults(run=run)


def load_config(args: argparse.Namespace):
    """(config, flags given): the config file with the command line's flags over it, all checked before any
    data or model loads."""
    from .. import records
    from ..selector.config import SelectConfig
    from ..selector.params import cli_values

    config = SelectConfig.from_yaml(args.config)
    overrides = cli_values(args)
    for key in ("output_dir", "store"):
        if overrides.get(key) and "://" not in str(overrides[key]):
            overrides[key] = str(Path(overrides[key]).resolve())
    config = config.with_overrides(overrides)
    if not getattr(args, "from_store", False):  # runs will be made: their TrainingArguments must build
        config.check_training_args()
    store = config.params.get("store") or str(Path(config.resolved_output_dir()) / "store")
    records.require_persistent(store)
    return config, overrides


def check_candidates(selector, config) -> None:
    """The selector's :meth:`~lensllm_hf.LensLLMSelector.check_candidates`, its error naming the config file."""
    from ..errors import ConfigError

    try:
        selector.check_candidates()
    except LensLLMError as error:
        raise ConfigError(f"{display(config.path or 'config')}: {error}", key="candidates", path=config.path) from None


def run(args: argparse.Namespace) -> int:
    with log_to_stderr("select"):
        return _run(args)


@contextlib.contextmanager
def log_to_stderr(command: str) -> Iterator[None]:
    """The library's log lines (INFO and up: each halving round's cuts) on stderr, as ``lensllm COMMAND: ...``."""
    logger = logging.getLogger("lensllm_hf")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"lensllm {command}: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _run(args: argparse.Namespace) -> int:
    if args.local_workers is not None and (not args.worker or args.local_workers < 1):
        raise LensLLMError(f"--local-workers {args.local_workers}: give a whole number >= 1, with --worker")
    config, _ = load_config(args)
    selector = config.selector(output_dir=config.resolved_output_dir())
    if not args.from_store:  # the runs to make must be able to start, before any model loads
        check_candidates(selector, config)
    out = Path(selector.output_dir)
    if args.worker and selector.params_.backend == "ray":
        raise LensLLMError("--worker makes its runs in this process; add --backend serial (Ray spreads the runs "
                           "itself: run one 'lensllm select' instead of workers)")
    if args.worker and selector.strategy != "grid":
        print(f"lensllm select: note: a worker makes every run of the grid; the {selector.strategy} strategy buys only "
              "what it needs when one 'lensllm select' runs it", file=sys.stderr)
    if args.worker or args.only or args.size:
        return train_only(selector, args)
    if not args.from_store:
        # What the runs still to make will cost, before the first one starts.
        pending = [(p.candidate, p.size) for p in selector.plan() if p.status != "complete"]
        if pending:
            selector.start_backend(runs=len(pending))  # Ray's workers warm up while the cost is estimated
            cost = selector.estimate_cost()
            wanted = set(pending)
            cost.runs = [r for r in cost.runs if (r.model, r.size) in wanted]
            note = " (the full grid; the strategy may buy fewer)" if selector.strategy != "grid" else ""
            print(f"lensllm select: {cost.summary()}{note}", file=sys.stderr)
    result = selector.from_store() if args.from_store else selector.run()
    return report(result, out, command="select")


def train_only(selector, args: argparse.Namespace) -> int:
    """Make runs without ranking (a worker, a plan line); print the runs made here. Exit 1 when one failed."""
    made = selector.train(only=args.only, sizes=args.size, local_workers=args.local_workers or 1)
    here = set(selector.made_)
    for rec in made:
        if rec.key in here:
            print(f"{display(rec.model_id)} D={rec.train_size}: {rec.status}"
                  + (f" ({display(rec.error)})" if rec.error else ""))
    for name, error in selector.failures_.items():
        if not any(r.model_id == name for r in made):
            print(f"{display(name)}: failed ({display(error)})")
    elsewhere = len(made) - sum(rec.key in here for rec in made)
    print(f"{len(made) - elsewhere} run(s) made here, {elsewhere} recorded already or by another process; "
          f"records in {display(selector.store_)}")
    failed = [r for r in made if r.status != "complete"]
    return 1 if failed or selector.failures_ else 0


def report(result, out: Path, *, command: str) -> int:
    """Print the ranking and where the files are; the exit code (2 when nothing was ranked)."""
    paths = write_outputs(result, out)
    print(result.fits.format())
    saved = result.fraction_saved
    print(f"\nFLOPs spent {result.flops:.3g}" + (f", {saved:.1%} saved against fine-tuning every candidate on "
                                                 f"{result.target_size:,.0f} examples" if saved is not None else ""))
    for c in result.fits.candidates:
        if c.status != "complete":
            print(f"lensllm {command}: warning: {display(c.model)} not ranked: {display(c.error)}", file=sys.stderr)
    print("\nfiles:")
    for label, path in paths.items():
        print(f"  {label:<10} {display(path)}")
    if result.best is None:
        print(f"lensllm {command}: error: no candidate could be ranked; see the errors above", file=sys.stderr)
        return 2
    return 0


def write_outputs(result, out: Path) -> dict[str, Path]:
    """selection.json, selection.md, selection.png, curves.csv and the model cards, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"ranking": result.to_json(out / "selection.json")}
    table = out / "selection.md"
    atomic_write_text(table, result.to_markdown() + "\n")
    paths["table"] = table
    result.plot(out / "selection.png")
    paths["plot"] = out / "selection.png"
    if result.table is not None:  # the observed losses, for `lensllm fit` / `lensllm bench` or a spreadsheet
        paths["curves"] = result.table.to_csv(out / "curves.csv")
    try:
        cards = result.write_cards(out / "cards")
    except LensLLMError as error:  # a card problem must not hide the ranking
        print(f"warning: model cards not written: {error}", file=sys.stderr)
    else:
        if cards:
            paths["cards"] = out / "cards"
    if result.info.get("store"):
        paths["store"] = Path(result.info["store"]) if "://" not in result.info["store"] else result.info["store"]
    return paths
