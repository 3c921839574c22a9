"""torch's threads for the runs a selection makes on CPU: the cores, shared among local workers; the user's wins."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from lensllm_hf import LensLLMSelector  # noqa: E402
from lensllm_hf.selector.loading import load_candidate  # noqa: E402
from lensllm_hf.selector.threads import cpu_cores, run_threads, startup_threads  # noqa: E402

from tiny_models import TINY_SELECTION  # noqa: E402

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the thread count is set on CPU only")


@pytest.fixture
def fresh_torch(monkeypatch):
    """torch as a process with no thread setting starts: no OMP_NUM_THREADS, torch's own count; restored after."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(startup_threads())
    yield
    torch.set_num_threads(before)


def _threads_seen_by_runs(models, data, tmp_path, **train_kwargs) -> set[int]:
    """Train one run per size and return the torch thread counts its model loads saw."""
    seen = set()

    def loader(candidate):
        seen.add(torch.get_num_threads())
        return load_candidate(candidate.model)

    settings = {**TINY_SELECTION, "zero_shot": False, "ntk_probe": False,
                "training_args": {**TINY_SELECTION["training_args"], "num_train_epochs": 1}}
    selector = LensLLMSelector([{"model": models["small"], "name": "small"}], *data, output_dir=tmp_path,
                               model_loader=loader, **settings)
    records = selector.train(sizes=[8], **train_kwargs)
    assert [r.status for r in records] == ["complete"]
    return seen


def test_runs_use_the_cores_shared_among_local_workers_then_the_count_is_restored(models, data, tmp_path,
                                                                                  fresh_torch):
    start = torch.get_num_threads()
    assert _threads_seen_by_runs(models, data, tmp_path / "a", local_workers=2) == {max(1, cpu_cores() // 2)}
    assert torch.get_num_threads() == start
    assert _threads_seen_by_runs(models, data, tmp_path / "b") == {cpu_cores()}
    assert run_threads(local_workers=10**6) == 1  # never below one thread


def test_the_users_own_setting_wins(models, data, tmp_path, fresh_torch, monkeypatch):
    mine = 1 if startup_threads() > 1 else 2  # a count torch would not start with
    torch.set_num_threads(mine)
    assert run_threads() is None
    assert _threads_seen_by_runs(models, data, tmp_path / "call", local_workers=2) == {mine}

    torch.set_num_threads(startup_threads())
    monkeypatch.setenv("OMP_NUM_THREADS", str(startup_threads()))  # the environment says so, even at torch's count
    assert run_threads(local_workers=2) is None
    assert _threads_seen_by_runs(models, data, tmp_path / "env", local_workers=2) == {startup_threads()}
