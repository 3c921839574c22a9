"""The Ray backend's life cycle, quickly: one local cluster and warm workers for a whole selection.

The one Ray test of the default suite; it starts its own local cluster (2 CPUs) through the
backend, so it skips when this process already has Ray up. The runs are stand-ins that sleep and
say which process ran them; the selection-level Ray tests (real runs, a killed worker, halving,
GPUs) are in test_scale_out.py, marked slow.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lensllm_hf.records import RunKey

TESTS = Path(__file__).resolve().parent


class Marker:
    """A runner stand-in: ``attempt`` sleeps, then returns which process ran the run, and when it ended."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.failures: dict[str, str] = {}
        self.made: list = []

    def attempt(self, key):
        time.sleep(self.seconds)
        self.made.append(key)
        return {"size": key.train_size, "pid": os.getpid(), "end": time.time()}


def test_one_cluster_and_warm_workers_serve_every_batch_then_stop(monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already up in this process")
    import lensllm_hf
    from lensllm_hf.selector.ray_backend import RayBackend

    # The local cluster's workers inherit this environment: this checkout and this file's stand-in.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(lensllm_hf.__file__).parents[1]), str(TESTS)]))

    finished: list[tuple[int, float]] = []
    runner = Marker(seconds=0.5)
    with RayBackend(cluster_cpus=2, on_done=lambda key: finished.append((key.train_size, time.time()))) as backend:
        backend.start(runs=4)  # returns at once: the cluster and its actor start in the background
        batches = [backend.run([RunKey("m", size, 0, "h") for size in sizes], runner.attempt)
                   for sizes in ((1, 2, 3, 4), (5, 6), (7, 8))]
    assert not ray.is_initialized()  # the backend started the local cluster, and closed it
    first, second, third = batches
    assert [r["size"] for batch in batches for r in batch] == [1, 2, 3, 4, 5, 6, 7, 8]
    pids = {r["pid"] for batch in batches for r in batch}
    # 2 CPUs: this process (it runs runs while the cluster starts, then beside the actor) and one
    # actor, the same for every batch once up (its imports and the runner's data once).
    assert os.getpid() in pids and len(pids) == 2
    (actor,) = pids - {os.getpid()}
    assert any(r["pid"] == actor for r in second) and any(r["pid"] == actor for r in third)
    # Each run was reported as it finished, not when its batch did.
    assert sorted(size for size, _ in finished) == [1, 2, 3, 4, 5, 6, 7, 8]
    reported = dict(finished)
    assert min(reported[s] for s in (1, 2, 3, 4)) < max(r["end"] for r in first)
    # Every run counts once among the runs made: this process's own, and the actor's as they came back.
    assert sorted(k.train_size for k in runner.made) == [1, 2, 3, 4, 5, 6, 7, 8]


@pytest.mark.slow
def test_a_selection_on_its_own_local_cluster_ranks_as_serial_and_shows_each_run(models, data, tmp_path, monkeypatch,
                                                                                capsys):
    """`--backend ray --ray-num-cpus 2`, as the CLI runs it: the workers start while the selection prepares,
    this process trains runs beside one actor, the bar moves per run, the cluster is gone after."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray cluster is already up in this process")
    import lensllm_hf
    from lensllm_hf import LensLLMSelector
    from tiny_models import TINY_SELECTION

    monkeypatch.setenv("PYTHONPATH", str(Path(lensllm_hf.__file__).parents[1]))
    candidates = [{"model": models["small"], "name": "small"}, {"model": models["large"], "name": "large"}]
    serial = LensLLMSelector(candidates, *data, output_dir=tmp_path / "serial", **TINY_SELECTION).run()
    selector = LensLLMSelector(candidates, *data, output_dir=tmp_path / "ray", backend="ray", ray_num_cpus=2,
                               **{**TINY_SELECTION, "progress": True})
    selector.start_backend(runs=8)
    parallel = selector.run()
    assert not ray.is_initialized()
    assert list(parallel.ranking.model) == list(serial.ranking.model)
    assert parallel.ranking.predicted_loss.tolist() == pytest.approx(serial.ranking.predicted_loss.tolist(), rel=1e-6)
    assert sorted((k.model, k.train_size) for k in selector.made_) == sorted(
        (m, s) for m in ("small", "large") for s in (0, 8, 16, 32))
    bar = capsys.readouterr().err.replace("\r", "\n")
    shown = [int(line.split("|")[2].split("/")[0]) for line in bar.splitlines() if line.count("|") >= 2]
    assert set(range(1, 9)) <= set(shown)  # every finished run moved the bar, one by one
