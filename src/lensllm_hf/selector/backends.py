"""Where the bought runs execute. A backend takes a batch of run keys and returns their records.

Every backend calls the same ``attempt(key)`` per run (:meth:`Runner.attempt`): it returns the
record, None (the candidate cannot run), or a :class:`~lensllm_hf.selector.runner.Deferred`
when another live process holds the run. Deferred runs are asked again after the others, every
``poll_s`` seconds, until their owner finishes them (the record is then read) or its heartbeat
stops (the claim is then taken over and the run made here). So selections sharing one store
split the runs between them and never train one twice while both live.

A backend object serves one selection: ``run(keys, attempt)`` once per batch the strategy buys,
then ``close()``. A backend for a cluster (:class:`~lensllm_hf.selector.ray_backend.RayBackend`)
keeps this contract: ``run(keys, attempt)`` in any order, in parallel, with the deferred runs
re-submitted; its workers start once (on the first batch, or earlier with ``start(runs)``) and
stay warm for the next batches until ``close()``.

Example:
    >>> SerialBackend().run(plan.keys(), runner.attempt)
    [RunRecord(...), RunRecord(...), None, ...]
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..records import RunKey, RunRecord
from .runner import Deferred

__all__ = ["BACKEND_CLASSES", "Attempt", "Backend", "SerialBackend", "make_backend"]

#: One run: its record, None when its candidate cannot run, or Deferred when claimed elsewhere.
Attempt = Callable[[RunKey], "RunRecord | Deferred | None"]


class Backend(Protocol):
    """Runs batches of runs for one selection: ``run(keys, attempt) -> [record or None, ...]`` in the order of
    ``keys``, then ``close()`` (stops its workers, if any)."""

    def run(self, keys: Sequence[RunKey], attempt: Attempt) -> list[RunRecord | None]: ...

    def close(self) -> None: ...


class SerialBackend:
    """One run after another in this process; runs claimed by another process are done last.

    Args:
        poll_s: seconds between two looks at runs claimed elsewhere.
        on_wait: called with the deferred runs each time the backend waits (progress display).
    """

    def __init__(self, poll_s: float = 2.0, on_wait: Callable[[list[Deferred]], None] | None = None):
        self.poll_s = poll_s
        self.on_wait = on_wait

    def run(self, keys: Sequence[RunKey], attempt: Attempt) -> list[RunRecord | None]:
        results: dict[RunKey, RunRecord | None] = {}
        pending = list(dict.fromkeys(keys))
        while pending:
            deferred: list[Deferred] = []
            for key in pending:
                outcome = attempt(key)
                if isinstance(outcome, Deferred):
                    deferred.append(outcome)
                else:
                    results[key] = outcome
            pending = [d.key for d in deferred]
            if pending:
                if self.on_wait is not None:
                    self.on_wait(deferred)
                time.sleep(self.poll_s)
        return [results[key] for key in keys]

    def close(self) -> None:
        """Nothing to stop: the runs ran in this process."""


def _ray_backend(**kwargs) -> Backend:
    from .ray_backend import RayBackend  # imports Ray itself only when it runs

    return RayBackend(**kwargs)


#: ``backend`` parameter value -> class.
BACKEND_CLASSES: dict[str, Callable[..., Backend]] = {"serial": SerialBackend, "ray": _ray_backend}


def make_backend(name: str, **kwargs) -> Backend:
    """The backend called ``name`` (see :data:`BACKEND_CLASSES`)."""
    return BACKEND_CLASSES[name](**kwargs)
