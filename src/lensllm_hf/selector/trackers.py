"""Experiment trackers: each run of a selection logs as its own run, all of them in one group.

A selection makes many short Trainer runs in one process. Left alone, the trackers' Trainer
callbacks would pour them into one run (W&B keeps ``wandb.run`` open between Trainers) or into a
scratch folder that is deleted with the run (TensorBoard writes under ``output_dir``). So, per
run, when ``report_to`` names the tracker:

- every tracker gets ``run_name = "<candidate>-D<size>"``;
- W&B: ``WANDB_RUN_GROUP`` is the selection's group, and the run is finished when training ends;
- MLflow: the tag ``lensllm.selection`` holds the group (``MLFLOW_TAGS``); MLflow's callback
  already ends the run it started;
- TensorBoard: events go to ``<log_root>/<group>/<candidate>-D<size>``.

The environment is put back after each run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["TRACKERS", "named_trackers", "tracked_run"]

TRACKERS = ("wandb", "mlflow", "tensorboard")


def named_trackers(report_to: str | Sequence[str] | None) -> set[str]:
    """The trackers among ``report_to`` (``"all"`` names every one that ``TrainingArguments`` would use)."""
    if report_to is None or report_to == "none":
        return set()
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if "all" in names:
        from transformers.integrations import get_available_reporting_integrations

        names = get_available_reporting_integrations()
    return {n for n in names if n in TRACKERS}


@contextlib.contextmanager
def tracked_run(report_to: str | Sequence[str] | None, *, group: str, run_name: str,
                log_root: str) -> Iterator[dict[str, Any]]:
    """Set up the trackers for one run; yields the ``TrainingArguments`` keywords to add.

    Example:
        >>> with tracked_run(["tensorboard"], group="sel-1", run_name="gpt2-D800", log_root="runs") as extra:
        ...     extra
        {'run_name': 'gpt2-D800'}
    """
    trackers = named_trackers(report_to)
    if not trackers:
        yield {}
        return
    env: dict[str, str] = {}
    if "wandb" in trackers:
        env["WANDB_RUN_GROUP"] = group
    if "mlflow" in trackers:
        tags = json.loads(os.environ.get("MLFLOW_TAGS") or "{}")
        env["MLFLOW_TAGS"] = json.dumps({**tags, "lensllm.selection": group})
    if "tensorboard" in trackers:
        env["TENSORBOARD_LOGGING_DIR"] = os.path.join(log_root, _safe(group), _safe(run_name))
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield {"run_name": run_name}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        wandb = sys.modules.get("wandb")
        if "wandb" in trackers and wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()  # the next Trainer must start its own run, not log into this one


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "run"
