"""Ray as the distributed backend: a pool of warm Ray actors, each running one run after another.

A :class:`RayBackend` lives for one selection: :meth:`~RayBackend.start` joins (or starts) the Ray
cluster and starts the actors in the background, so they import torch and transformers while
this process prepares; :meth:`~RayBackend.run` sends each batch of runs to the actors as they
free up (``ray.wait``), calling ``on_done`` as each run finishes; :meth:`~RayBackend.close`
stops the actors, and the local cluster if it started one. Each actor calls the selection's
``attempt(key)`` per run: it claims the run in the shared store, trains it with the callback and
writes its record there (a folder for one machine, any fsspec URL for a cluster). The runner
(data, store, parameters) reaches each actor once, so imports, data and tokenizing happen once
per worker, not per run. On a local cluster this backend started, with CPU runs, this process
is one of the workers (N CPUs: this process and N - 1 actors): it holds the run stack and the
data already, and would otherwise only wait.

An actor holds its CPUs and GPUs for its life, and Ray sets its ``CUDA_VISIBLE_DEVICES``, so two
runs never share a GPU. An actor whose process dies (out of memory, a lost node) is restarted by
Ray and its run tried again (``max_retries``); a Python error is not retried: the run's record
says ``failed``, as in the serial backend. A run that another selection holds is handed back as
deferred and sent again after the others.

Why Ray core, not ``Trainer.hyperparameter_search(backend="ray")``, Ray Tune or Ray Train: those
vary the arguments of one Trainer (one model, one dataset), pickle the whole Trainer, or run DDP
inside one run (which ``accelerate launch`` already gives); a selection is many independent runs
of different models.

Example:
    >>> with RayBackend(cluster_cpus=2) as backend:   # a local Ray cluster of 2 CPUs  # doctest: +SKIP
    ...     backend.start(runs=28)                    # returns at once; the actors warm up
    ...     records = backend.run(keys, runner.attempt)
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import LensLLMError

__all__ = ["RayBackend", "check_reachable"]


class RayBackend:
    """Runs batches of runs on a pool of Ray actors, in parallel, on a local or a remote Ray cluster.

    ``attempt`` is the runner's bound method (:meth:`Runner.attempt`): the runner is sent to the
    actors once per selection (its ``__getstate__`` leaves the full datasets out) and every actor
    keeps its copy. What an actor's copy learns (a candidate's failure, the runs it made) comes
    back with each run's result and goes into the driver's runner. Runs are sent smallest first
    and one per actor, so a candidate that fails on a small size is known failed before its larger
    runs start: they are not started, as in the serial backend. On a local cluster it starts for
    CPU runs, this process takes runs too: while the cluster starts, and beside N - 1 actors.

    Args:
        address: the Ray cluster (``"auto"``, ``"ray://host:10001"``); None joins the one this
            process (or ``RAY_ADDRESS``) already uses, else starts a local one.
        num_gpus: GPUs per run; None: 1 when the cluster has GPUs, else 0 (CPU runs).
        num_cpus: CPUs per run.
        cluster_cpus: CPUs the runs may use: a local cluster starts with this many, and no more
            runs go at once than they hold; None: all of the cluster's.
        max_retries: how often a run whose actor died is tried again.
        poll_s: seconds before a run claimed by another selection is sent again.
        max_in_flight: at most this many actors (runs at once); None: as many as the cluster holds.
        on_done: called with each run's key as it finishes (progress display).
        connect_timeout_s: how long to wait for a TCP connection to a given address before Ray is
            asked to join it (Ray itself retries an address where nothing listens for minutes).
    """

    def __init__(self, address: str | None = None, *, num_gpus: float | None = None, num_cpus: float = 1,
                 cluster_cpus: int | None = None, max_retries: int = 3, poll_s: float = 2.0,
                 max_in_flight: int | None = None, on_done: Callable[[Any], None] | None = None,
                 connect_timeout_s: float = 5.0):
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self.num_gpus = num_gpus
        self.num_cpus = num_cpus
        self.cluster_cpus = cluster_cpus
        self.max_retries = max_retries
        self.poll_s = poll_s
        self.max_in_flight = max_in_flight
        self.on_done = on_done
        self._starter: threading.Thread | None = None
        self._started = threading.Event()
        self._release = threading.Event()
        self._error: BaseException | None = None
        self._owns_cluster = False
        self._actor_class: Any = None
        self._capacity = 0
        self._driver_runs = False
        self._actors: list[Any] = []
        self._shared: tuple[Any, Any] | None = None
        #: seconds from start() to the cluster joined (``cluster_s``) and to the first run done (``first_run_s``).
        self.timings: dict[str, float] = {}

    # -- life cycle -------------------------------------------------------------------------------

    def start(self, runs: int | None = None) -> RayBackend:
        """Join or start the cluster and start up to ``runs`` actors, in the background; returns at once.

        A second call does nothing. :meth:`run` waits for the start (and raises its error).
        """
        if self._starter is None:
            self._t0 = time.perf_counter()
            self._driver_runs = self._local_cpu_runs()
            # Ray ties the processes of a local cluster to the thread that starts them (Linux
            # PR_SET_PDEATHSIG): that thread waits in _start_cluster until close().
            self._starter = threading.Thread(target=self._start_cluster, args=(runs,), name="lensllm-ray-start",
                                             daemon=True)
            self._starter.start()
        return self

    def close(self) -> None:
        """Stop the actors (runs still in them end) and the local cluster if this backend started it."""
        if self._starter is None:
            return
        self._started.wait()
        ray = _ray_module()
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        self._shared = None
        if self._owns_cluster:
            ray.shutdown()
            self._owns_cluster = False
        self._release.set()
        self._starter.join()
        self._starter = None
        self._started.clear()
        self._release.clear()

    def __enter__(self) -> RayBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start_cluster(self, runs: int | None) -> None:
        try:
            ray = _ray_module()
            if not ray.is_initialized():
                check_reachable(self.address, self.connect_timeout_s)
                local = self.address is None and not os.environ.get("RAY_ADDRESS")
                # Started from this thread, Ray cannot set its SIGTERM handler and says so: a
                # plain SIGTERM ends the process, and its cluster with it, all the same.
                worker_log = logging.getLogger("ray._private.worker")
                worker_log.addFilter(_no_sigterm_note)
                try:
                    ray.init(address=self.address, num_cpus=self.cluster_cpus if local else None,
                             include_dashboard=False, log_to_driver=False, configure_logging=False)
                except Exception as error:  # an unreachable address, a version mismatch: one line
                    from .._utils import one_line

                    where = self.address or os.environ.get("RAY_ADDRESS") or "a local cluster"
                    raise LensLLMError(f"cannot start or join Ray at {where} ({one_line(error, 200)}); check "
                                       "--ray-address or drop it to start a local cluster") from None
                finally:
                    worker_log.removeFilter(_no_sigterm_note)
                self._owns_cluster = local
            self.timings["cluster_s"] = time.perf_counter() - self._t0
            self._capacity = self._size_pool(ray.cluster_resources())
            self._grow(runs or self._capacity)  # the driver's own slot first takes one of the runs
        except BaseException as error:  # noqa: BLE001 - raised again in run(), in the caller's thread
            self._error = error
        finally:
            self._started.set()
        if self._owns_cluster:
            self._release.wait()

    def _size_pool(self, resources: dict[str, float]) -> int:
        """How many actors the cluster holds (CPUs, GPUs, ``cluster_cpus``, ``max_in_flight``); sets the GPUs per run."""
        gpus = self.num_gpus
        if gpus is None:
            gpus = 1 if resources.get("GPU", 0) > 0 else 0
        if gpus > resources.get("GPU", 0):
            raise LensLLMError(f"the runs ask {gpus:g} GPU(s) each and the Ray cluster has "
                               f"{resources.get('GPU', 0):g}; lower ray_num_gpus (0: CPU runs) or add GPUs")
        ray = _ray_module()
        # max_restarts=-1: a dead actor comes back (its run tried again, up to max_retries times);
        # the pool never shrinks below what the cluster holds.
        self._actor_class = ray.remote(_Worker).options(num_cpus=self.num_cpus, num_gpus=gpus, max_restarts=-1,
                                                        max_task_retries=self.max_retries)
        cpus = min(resources.get("CPU", 0), self.cluster_cpus or float("inf"))
        limits = [self.max_in_flight or 10**6]
        if self.num_cpus:
            limits.append(int(cpus // self.num_cpus))
        if gpus:
            limits.append(int(resources.get("GPU", 0) // gpus))
        slots = max(1, min(limits))
        self._driver_runs = self._driver_runs and self._owns_cluster and not gpus
        return slots - 1 if self._driver_runs else slots

    def _local_cpu_runs(self) -> bool:
        """Whether this backend will start a local cluster for CPU runs.

        Then this process is one of its slots: it holds the run stack and the data already, and
        would otherwise only wait; it runs runs while the cluster starts and whenever it is free.
        """
        ray = sys.modules.get("ray")
        if self.address is not None or os.environ.get("RAY_ADDRESS") or (ray is not None and ray.is_initialized()):
            return False
        if self.num_gpus is not None:
            return self.num_gpus == 0
        import torch

        return not torch.cuda.is_available()

    def _grow(self, wanted: int) -> None:
        """Start actors up to ``wanted`` (at most the pool's size); they import the run stack at once."""
        while len(self._actors) < min(wanted, self._capacity):
            self._actors.append(self._actor_class.remote())

    def _wait_started(self) -> Any:
        assert self._starter is not None
        self._started.wait()
        if self._error is not None:
            error, self._error = self._error, None
            self.close()
            raise error
        return _ray_module()

    # -- running ----------------------------------------------------------------------------------

    def run(self, keys: Sequence[Any], attempt: Callable[[Any], Any]) -> list[Any]:
        """Every run's outcome in the order of ``keys`` (its record, or None when its candidate cannot run)."""
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
        # Smallest runs first: a failure on a small size stops that candidate's larger runs.
        queue.sort(key=lambda k: k.train_size or 0)
        retry_at: list[tuple[float, Any]] = []
        self.start(len(queue))
        while self._driver_runs and queue and not self._started.is_set():  # runs here while the cluster starts
            key = self._next(queue, results, failures)
            if key is not None:
                self._settle(key, self._in_driver(attempt, key), None, False, results, retry_at, failures, made)
        ray = self._wait_started()
        self._grow(len(queue) + len(retry_at))
        # The selection (data, store, parameters) is sent once, not per run nor per batch: a loop
        # strategy buys many small batches (what the driver learns meanwhile, it filters itself).
        owner = runner if runner is not None else attempt
        if self._shared is None or self._shared[0] is not owner:
            self._shared = (owner, ray.put(attempt))
        shared = [self._shared[1]]  # in a list: the actor gets the reference and resolves it once
        idle = list(self._actors)
        waiting: dict[Any, tuple[Any, Any]] = {}
        try:
            while queue or waiting or retry_at:
                now = time.monotonic()
                for when, key in [r for r in retry_at if r[0] <= now]:
                    retry_at.remove((when, key))
                    queue.insert(0, key)
                while queue and idle:
                    key = self._next(queue, results, failures)
                    if key is not None:
                        actor = idle.pop(0)
                        waiting[actor.attempt.remote(shared, key)] = (actor, key)
                key = self._next(queue, results, failures) if self._driver_runs else None
                if key is not None:  # this process's own slot: the actors' runs go on meanwhile
                    outcome = self._in_driver(attempt, key)
                    self._settle(key, outcome, None, False, results, retry_at, failures, made)
                    ready, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=0) if waiting else ([], [])
                elif waiting:
                    ready, _ = ray.wait(list(waiting), num_returns=1, timeout=self.poll_s)
                else:
                    if retry_at:
                        time.sleep(max(0.0, min(w for w, _ in retry_at) - time.monotonic()))
                    continue
                for ref in ready:
                    actor, key = waiting.pop(ref)
                    idle.append(actor)
                    self._settle(key, *self._get(ray, ref, key), results, retry_at, failures, made)
        finally:
            if waiting:  # interrupted (Ctrl-C, an error): the runs in flight end with their actors
                for actor, _ in waiting.values():
                    ray.kill(actor)
                busy = {id(actor) for actor, _ in waiting.values()}
                self._actors = [a for a in self._actors if id(a) not in busy]
        return [results[key] for key in keys]

    def _next(self, queue: list[Any], results: dict[Any, Any], failures: dict[str, str]) -> Any:
        """The next run to send, or None; runs of a candidate that failed meanwhile cost nothing more."""
        while queue:
            key = queue.pop(0)
            if key.model not in failures:
                return key
            results[key] = None
            self._done(key)
        return None

    def _settle(self, key: Any, outcome: Any, failure: str | None, was_made: bool, results: dict[Any, Any],
                retry_at: list[tuple[float, Any]], failures: dict[str, str], made: list[Any]) -> None:
        """Record a finished run (or send it again later when another selection holds it)."""
        from .runner import Deferred

        self.timings.setdefault("first_run_s", time.perf_counter() - self._t0)
        if isinstance(outcome, Deferred):
            retry_at.append((time.monotonic() + self.poll_s, key))
            return
        if failure is not None:
            failures.setdefault(key.model, failure)  # the actor's copy of the runner knew it
        if was_made:
            made.append(key)
        results[key] = outcome
        self._done(key)

    def _in_driver(self, attempt: Callable[[Any], Any], key: Any) -> Any:
        """One run in this process, with the threads Ray gives an actor of ``num_cpus`` CPUs (unless set)."""
        if os.environ.get("OMP_NUM_THREADS"):
            return attempt(key)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, int(self.num_cpus)))
        try:
            return attempt(key)
        finally:
            torch.set_num_threads(threads)

    def _get(self, ray, ref, key) -> tuple[Any, str | None, bool]:
        """A run's (outcome, failure, made); an actor that died on every try fails the run's candidate."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as error:  # a Python error that is not the candidate's: as in serial
            cause = getattr(error, "cause", None)
            raise (cause if isinstance(cause, BaseException) else error) from None
        except ray.exceptions.RayError as error:  # the actor died on every try (killed, out of memory, node lost)
            from .._utils import one_line

            return None, (f"the run on {key.train_size} examples lost its Ray worker {self.max_retries + 1} times "
                          f"({one_line(error, 200)})"), False

    def _done(self, key) -> None:
        if self.on_done is not None:
            self.on_done(key)


class _Worker:
    """A Ray actor: one process that makes runs one after another.

    It imports the run stack when it starts (while the driver prepares), fetches the selection's
    runner once (its tokenized data and what it learnt, failed candidates, stay for its next
    runs), and after its first run freezes its long-lived objects for the garbage collector, as
    the selector does in its own process: each run's full collection (which frees its model) then
    skips them.
    """

    def __init__(self) -> None:
        import transformers.trainer  # noqa: F401 - the run stack, loaded before the first run arrives

        from . import runner  # noqa: F401

        self._runner_id: str | None = None
        self._attempt: Any = None
        self._frozen = False

    def attempt(self, shared: list, key: Any) -> tuple[Any, str | None, bool]:
        """One run, its candidate's error when it could not run, and whether it was made here."""
        import gc

        import ray

        ref = shared[0]
        if self._runner_id != ref.hex():
            self._attempt, self._runner_id = ray.get(ref), ref.hex()
        outcome = self._attempt(key)
        if not self._frozen:
            gc.collect()
            gc.freeze()
            self._frozen = True
        runner = getattr(self._attempt, "__self__", None)
        failure = getattr(runner, "failures", {}).get(key.model)
        return outcome, failure, key in getattr(runner, "made", [])


def _no_sigterm_note(record: logging.LogRecord) -> bool:
    return "SIGTERM handler is not set" not in record.getMessage()


def _ray_module():
    """The ``ray`` module (no usage statistics sent); a one-line error when Ray is not installed."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise LensLLMError("the Ray backend needs Ray: pip install 'lensllm_hf[ray]' (or pick backend: serial)") from None
    return ray


#: Port of each address scheme when the address names none (Ray client, Ray dashboard over HTTP(S)).
_DEFAULT_PORTS = {"ray": 10001, "http": 80, "https": 443}


def check_reachable(address: str | None, timeout_s: float) -> None:
    """Fail within ``timeout_s``, in one line, when nothing listens at the Ray cluster's address.

    ``address`` is the selection's (``host:port``, ``ray://host[:port]``, ``http(s)://...``;
    ``auto`` and None mean ``RAY_ADDRESS`` when it is set). ``ray.init`` would retry an address
    where nothing answers for minutes, printing a GCS line every 40 s. ``auto`` without
    ``RAY_ADDRESS`` (Ray looks for a cluster started on this machine) and a local cluster are
    left to Ray.
    """
    from urllib.parse import urlsplit

    target = os.environ.get("RAY_ADDRESS") if address in (None, "auto") else address
    if not target or target in ("auto", "local"):
        return
    scheme, sep, _ = target.partition("://")
    try:
        parts = urlsplit(target if sep else f"//{target}")
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(scheme if sep else "", 0)
    except ValueError:
        host, port = None, 0
    if not host or not port:
        raise LensLLMError(f"Ray address {target!r} is not host:port, ray://host:port or auto; fix --ray-address "
                           "(or RAY_ADDRESS)")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        why = "no answer" if isinstance(error, TimeoutError) else (error.strerror or type(error).__name__).lower()
        raise LensLLMError(f"cannot reach the Ray cluster at {target} ({why} within {timeout_s:g} s); start it "
                           "(ray start --head) or fix --ray-address, or drop it to start a local cluster") from None
