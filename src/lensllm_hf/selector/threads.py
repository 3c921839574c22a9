"""How many threads torch uses for the runs a selection makes on CPU.

torch starts with one intra-op thread per physical core it sees, which inside a container is
the host's cores, not the pod's CPU limit, and which N worker processes on one machine each
take in full: their OpenMP threads then wait on each other and every step slows down many
times. So, for the runs it makes in this process on CPU, the selector sets torch's threads to

- the cores: the physical cores this process may use, counting its CPU affinity (Slurm's CPU
  binding, ``taskset``) and the cgroup CPU limit of a container (a Kubernetes pod's ``limits``),
  as ``joblib.cpu_count(only_physical_cores=True)`` counts them;
- divided by the workers this machine runs, when that is known
  (``lensllm select CONFIG --worker --local-workers N``), and at least 1;

and puts the previous count back when the runs end.

The user's own setting wins. It is recognised as

- ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` in the environment (torch reads them when it
  starts), or
- a ``torch.get_num_threads()`` other than the count torch starts with on this machine, i.e.
  ``torch.set_num_threads`` was called. torch does not expose its start-up count, so it is
  computed by torch's rule: the machine's physical cores, at most the CPUs of the process's
  affinity. A ``torch.set_num_threads(n)`` with exactly that ``n`` cannot be told apart from the
  default; set ``OMP_NUM_THREADS=n`` to keep it then.

On a GPU (CUDA or MPS) nothing is changed: the runs do not compute on the CPU.

Example:
    >>> with torch_threads(local_workers=2):   # two workers on this machine: half the cores each
    ...     trainer.train()
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["THREAD_VARIABLES", "cpu_cores", "run_threads", "startup_threads", "torch_threads", "user_threads"]

#: Environment variables torch reads for its intra-op thread count when it starts.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def cpu_cores() -> int:
    """The physical cores this process may use (affinity and cgroup CPU limit counted), at least 1."""
    from joblib import cpu_count

    return max(1, int(cpu_count(only_physical_cores=True)))


def startup_threads() -> int:
    """The intra-op thread count torch starts with here when no environment variable sets it.

    torch's rule: the machine's physical cores (MKL builds: of the CPUs in the process's affinity).
    """
    import psutil

    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform (macOS, Windows)
        allowed = physical
    return max(1, min(physical, allowed))


def user_threads() -> int | None:
    """The thread count the user chose (environment or ``torch.set_num_threads``), or None."""
    import torch

    if any(os.environ.get(name, "").strip() for name in THREAD_VARIABLES):
        return torch.get_num_threads()
    current = torch.get_num_threads()
    return current if current != startup_threads() else None


def run_threads(local_workers: int = 1) -> int | None:
    """The torch thread count of this process's runs, or None to leave torch as it is (a GPU, the user's setting)."""
    import torch

    on_gpu = torch.cuda.is_available() or (hasattr(torch.backends, "mps") and torch.backends.mps.is_available())
    if on_gpu or user_threads() is not None:
        return None
    return max(1, cpu_cores() // max(1, int(local_workers)))


@contextlib.contextmanager
def torch_threads(local_workers: int = 1) -> Iterator[int | None]:
    """Runs inside use :func:`run_threads` threads; the previous count is restored after. Yields the count set."""
    threads = run_threads(local_workers)
    if threads is None:
        yield None
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
