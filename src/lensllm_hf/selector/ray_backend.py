"""Ray as the distributed backend: every (candidate, subset size) run is a Ray task.

Each run becomes one ``@ray.remote`` task that calls the selection's ``attempt(key)`` in a Ray
worker process: it claims the run in the shared store, trains it with the callback, and writes
its record there (a folder for one machine, any fsspec URL for a cluster). Ray gives each GPU
task a process of its own and sets ``CUDA_VISIBLE_DEVICES``, so two runs never share a GPU. A
worker that dies (out of memory, a lost node) is retried by Ray (``max_retries``); a Python error
is not retried — the run's record says ``failed``, as in the serial backend. A run that another
selection holds is handed back as deferred and submitted again after the others.

Why Ray core, not ``Trainer.hyperparameter_search(backend="ray")``, Ray Tune or Ray Train: those
vary the arguments of one Trainer (one model, one dataset), pickle the whole Trainer, or run DDP
inside one run (which ``accelerate launch`` already gives); a selection is many independent runs
of different models.

Example:
    >>> backend = RayBackend()            # a local Ray cluster on this machine
    >>> backend.run(keys, runner.attempt)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import LensLLMError

__all__ = ["RayBackend"]


class RayBackend:
    """Runs a batch of runs as Ray tasks, in parallel, on a local or a remote Ray cluster.

    Args:
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``); None starts a local one
            with this machine's CPUs and GPUs, or joins the one this process already uses.
        num_gpus: GPUs per run; None: 1 when the cluster has GPUs, else 0 (CPU runs).
        num_cpus: CPUs per run.
        max_retries: how often Ray retries a run whose worker died.
        poll_s: seconds before a run claimed by another selection is submitted again.
        on_done: called with each run's key as it finishes (progress display).
    """

    def __init__(self, address: str | None = None, *, num_gpus: float | None = None, num_cpus: float = 1,
                 max_retries: int = 3, poll_s: float = 2.0, on_done: Callable[[Any], None] | None = None):
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.poll_s = poll_s
        self.on_done = on_done

    def run(self, keys: Sequence[Any], attempt: Callable[[Any], Any]) -> list[Any]:
        """Every run's outcome in the order of ``keys`` (its record, or None when its candidate cannot run)."""
        from .runner import Deferred

        ray = _ray(self.address)
        gpus = self.num_gpus
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
        task = ray.remote(_attempt).options(num_gpus=gpus, num_cpus=self.num_cpus, max_retries=self.max_retries,
                                            retry_exceptions=False)
        runner = getattr(attempt, "__self__", None)
        shared = ray.put(attempt)  # the selection (data, store, parameters) is sent once, not per run
        results: dict[Any, Any] = {}
        waiting = {task.remote(shared, key): key for key in dict.fromkeys(keys)}
        retry_at: list[tuple[float, Any]] = []
        while waiting or retry_at:
            now = time.monotonic()
            for when, key in [r for r in retry_at if r[0] <= now]:
                retry_at.remove((when, key))
                waiting[task.remote(shared, key)] = key
            if not waiting:
                time.sleep(max(0.0, min(w for w, _ in retry_at) - now))
                continue
            done, _ = ray.wait(list(waiting), num_returns=1, timeout=self.poll_s)
            for ref in done:
                key = waiting.pop(ref)
                outcome, failure = ray.get(ref)
                if isinstance(outcome, Deferred):
                    retry_at.append((time.monotonic() + self.poll_s, key))
                    continue
                if failure is not None and runner is not None:
                    runner.failures.setdefault(key.model, failure)  # the worker's copy of the runner knew it
                results[key] = outcome
                if self.on_done is not None:
                    self.on_done(key)
        return [results[key] for key in keys]


def _attempt(attempt: Callable[[Any], Any], key: Any) -> tuple[Any, str | None]:
    """In the worker: one run, and its candidate's error when it could not run."""
    outcome = attempt(key)
    failures = getattr(getattr(attempt, "__self__", None), "failures", {})
    return outcome, (failures.get(key.model) if outcome is None else None)


def _ray(address: str | None):
    """The ``ray`` module, joined to a cluster (local when ``address`` is None); no usage stats sent."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise LensLLMError("the Ray backend needs Ray: pip install 'lensllm_hf[ray]' (or pick backend: serial)") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as error:  # an unreachable address, a version mismatch: one line
            from .._utils import one_line

            where = address or "a local cluster"
            raise LensLLMError(f"cannot start or join Ray at {where} ({one_line(error, 200)}); check --ray-address "
                               "or drop it to start a local cluster") from None
    return ray
