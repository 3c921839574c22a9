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

    ``attempt`` is the runner's bound method (:meth:`Runner.attempt`): the runner is pickled once
    per batch (its ``__getstate__`` leaves the full datasets out) and every task calls its copy.
    What a worker's copy learns (a candidate's failure, the runs it made) comes back with the
    task's result and goes into the driver's runner. Runs are submitted smallest first and no
    more at once than the cluster can run, so a candidate that fails on a small size is known
    failed before its larger runs start: they are not started, as in the serial backend.

    Args:
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``); None starts a local one
            with this machine's CPUs and GPUs, or joins the one this process already uses.
        num_gpus: GPUs per run; None: 1 when the cluster has GPUs, else 0 (CPU runs).
        num_cpus: CPUs per run.
        max_retries: how often Ray retries a run whose worker died.
        poll_s: seconds before a run claimed by another selection is submitted again.
        max_in_flight: runs submitted at once; None: as many as the cluster's CPUs (or GPUs)
            hold now.
        on_done: called with each run's key as it finishes (progress display).
    """

    def __init__(self, address: str | None = None, *, num_gpus: float | None = None, num_cpus: float = 1,
                 max_retries: int = 3, poll_s: float = 2.0, max_in_flight: int | None = None,
                 on_done: Callable[[Any], None] | None = None):
        self.address = address
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.poll_s = poll_s
        self.max_in_flight = max_in_flight
        self.on_done = on_done
        self._shared: tuple[Any, Any] | None = None

    def run(self, keys: Sequence[Any], attempt: Callable[[Any], Any]) -> list[Any]:
        """Every run's outcome in the order of ``keys`` (its record, or None when its candidate cannot run)."""
        from .runner import Deferred

        runner = getattr(attempt, "__self__", None)
        failures: dict[str, str] = getattr(runner, "failures", {})
        made: list[Any] = getattr(runner, "made", [])
        settled = getattr(runner, "settled", None)
        results: dict[Any, Any] = {}
        queue = []
        for key in dict.fromkeys(keys):  # runs recorded already (a resumed selection) need no worker
            rec = settled(key) if settled is not None and key.model not in failures else None
            if rec is not None or key.model in failures:
                results[key] = rec
                self._done(key)
            else:
                queue.append(key)
        if not queue:
            return [results[key] for key in keys]
        ray = _ray(self.address)
        resources = ray.cluster_resources()
        gpus = self.num_gpus
        if gpus is None:
            gpus = 1 if resources.get("GPU", 0) > 0 else 0
        if gpus > resources.get("GPU", 0):
            raise LensLLMError(f"the runs ask {gpus:g} GPU(s) each and the Ray cluster has "
                               f"{resources.get('GPU', 0):g}; lower ray_num_gpus (0: CPU runs) or add GPUs")
        task = ray.remote(_attempt).options(num_gpus=gpus, num_cpus=self.num_cpus, max_retries=self.max_retries,
                                            retry_exceptions=False)
        if self.max_in_flight:
            capacity = self.max_in_flight
        else:
            by_cpu = int(resources.get("CPU", 0) // self.num_cpus) if self.num_cpus else len(keys)
            by_gpu = int(resources.get("GPU", 0) // gpus) if gpus else len(keys)
            capacity = max(1, min(by_cpu, by_gpu))
        # The selection (data, store, parameters) is sent once, not per run nor per batch: a loop
        # strategy buys many small batches (what the driver learns meanwhile, it filters itself).
        owner = runner if runner is not None else attempt
        if self._shared is None or self._shared[0] is not owner:
            self._shared = (owner, ray.put(attempt))
        shared = self._shared[1]
        # Smallest runs first: a failure on a small size stops that candidate's larger runs.
        queue.sort(key=lambda k: k.train_size or 0)
        waiting: dict[Any, Any] = {}
        retry_at: list[tuple[float, Any]] = []
        try:
            while queue or waiting or retry_at:
                now = time.monotonic()
                for when, key in [r for r in retry_at if r[0] <= now]:
                    retry_at.remove((when, key))
                    queue.insert(0, key)
                while queue and len(waiting) < capacity:
                    key = queue.pop(0)
                    if key.model in failures:  # failed on another size meanwhile: spend nothing more on it
                        results[key] = None
                        self._done(key)
                        continue
                    waiting[task.remote([shared], key)] = key  # in a list: the worker resolves it, once
                if not waiting:
                    if retry_at:
                        time.sleep(max(0.0, min(w for w, _ in retry_at) - time.monotonic()))
                    continue
                done, _ = ray.wait(list(waiting), num_returns=1, timeout=self.poll_s)
                for ref in done:
                    key = waiting.pop(ref)
                    outcome, failure, was_made = self._get(ray, ref, key)
                    if isinstance(outcome, Deferred):
                        retry_at.append((time.monotonic() + self.poll_s, key))
                        continue
                    if failure is not None:
                        failures.setdefault(key.model, failure)  # the worker's copy of the runner knew it
                    if was_made:
                        made.append(key)
                    results[key] = outcome
                    self._done(key)
        finally:
            for ref in waiting:  # interrupted (Ctrl-C, an error): stop the runs in flight
                ray.cancel(ref, force=True)
        return [results[key] for key in keys]

    def _get(self, ray, ref, key) -> tuple[Any, str | None, bool]:
        """A task's (outcome, failure, made); a worker that died on every try fails its candidate."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # a Python error that is not the candidate's: as in serial
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, BaseException) else error) from None
        except ray.exceptions.RayError as error:  # the worker died on every try (killed, out of memory, node lost)
            from .._utils import one_line

            return None, (f"the run on {key.train_size} examples lost its Ray worker {self.max_retries + 1} times "
                          f"({one_line(error, 200)})"), False

    def _done(self, key) -> None:
        if self.on_done is not None:
            self.on_done(key)


#: In a worker: the last selection's runner (its object ref's id -> the runner), kept between tasks.
_WORKER_RUNNER: dict[str, Any] = {}
_FROZEN = False


def _attempt(shared: list, key: Any) -> tuple[Any, str | None, bool]:
    """In the worker: one run, its candidate's error when it could not run, and whether it was made here.

    The runner is fetched once per worker and selection, not per task: its tokenized data and
    what it learnt (failed candidates) stay for the worker's next runs. After the first run the
    worker's long-lived objects (torch, transformers, the data) are frozen for the garbage
    collector, as the selector does in its own process: each run's full collection (which frees
    its model) then skips them.
    """
    global _FROZEN
    import gc

    import ray

    ref = shared[0]
    attempt = _WORKER_RUNNER.get(ref.hex())
    if attempt is None:
        _WORKER_RUNNER.clear()
        attempt = _WORKER_RUNNER[ref.hex()] = ray.get(ref)
    outcome = attempt(key)
    if not _FROZEN:
        gc.collect()
        gc.freeze()
        _FROZEN = True
    runner = getattr(attempt, "__self__", None)
    failure = getattr(runner, "failures", {}).get(key.model)
    return outcome, failure, key in getattr(runner, "made", [])


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
