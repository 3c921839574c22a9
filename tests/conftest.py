"""Shared fixtures and helpers. The real fine-tuning curves live beside the checkout, never inside it.

Test modules import the plain helpers (``from conftest import make_record``); pytest puts this
folder on the path, as it does for ``tiny_models`` and ``hub_server``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CURVES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "finetune-curves"


def make_record(model="org/model-a", train_size=200, seed=0, loss=3.0, status="complete", chash="cfg1", *,
                flos=1e12, zero_shot=None, F=None, stream=None, params=1000, revision=None, adapter=None):
    """A run record as the callback writes it: one evaluation at the end of training (``loss``, None
    unless complete), plus a zero-shot evaluation, stream-mode points (``{size: loss}``) and an NTK
    probe (``F``) when asked."""
    from lensllm_hf.records import Evaluation, RunRecord

    evaluations = []
    if zero_shot is not None:
        evaluations.append(Evaluation(step=0, examples_seen=0, eval_loss=zero_shot, metrics={"eval_loss": zero_shot},
                                      total_flos=0.0))
    for size, value in (stream or {}).items():
        evaluations.append(Evaluation(step=size // 8, examples_seen=size, eval_loss=value, at_examples=size,
                                      total_flos=flos * size / train_size))
    evaluations.append(Evaluation(step=max(1, train_size // 8), examples_seen=train_size, eval_loss=loss,
                                  metrics={"eval_loss": loss}, total_flos=flos))
    model_info = {"id": model, "num_parameters": params} | ({"revision": revision} if revision is not None else {})
    return RunRecord(model=model_info, train_size=train_size, seed=seed, status=status, config_hash=chash,
                     adapter_hash=adapter, evaluations=evaluations,
                     final_eval_loss=loss if status == "complete" else None, total_flos=flos,
                     ntk=None if F is None else {"F": F, "eigenvalues": [1.0], "r": [1.0]})


@pytest.fixture(scope="session")
def curves_dir() -> Path:
    if not (CURVES / "flan.csv").is_file():
        pytest.skip(f"the shared curve tables are not at {CURVES}")
    return CURVES


@pytest.fixture(scope="session")
def lcdb_dir() -> Path:
    folder = CURVES.parent / "learning-curves-lcdb"
    if not (folder / "lcdb-1000.csv").is_file():
        pytest.skip(f"the shared LCDB tables are not at {folder}")
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, which only contend on a shared 2-core machine
    (the demo does the same); the thread count is put back after the module."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Two tiny GPT-2 candidates of different sizes, saved with save_pretrained (paths by name)."""
    from tiny_models import make_tiny_gpt2

    root = tmp_path_factory.mktemp("models")
    return {"small": make_tiny_gpt2(root / "small", n_layer=1, n_embd=16, seed=0),
            "large": make_tiny_gpt2(root / "large", n_layer=2, n_embd=64, seed=1)}


@pytest.fixture(scope="module")
def data():
    """(train, eval) text datasets the tiny models can learn."""
    from tiny_models import make_text_dataset

    return make_text_dataset(200, seed=0), make_text_dataset(32, seed=1)


@pytest.fixture
def memory_store():
    """A fresh ``memory://`` store URL, emptied afterwards (fsspec's memory filesystem is process-wide)."""
    import uuid

    import fsspec

    url = f"memory://lensllm-{uuid.uuid4().hex[:8]}"
    yield url
    fs = fsspec.filesystem("memory")
    if fs.exists(url.removeprefix("memory:/")):
        fs.rm(url.removeprefix("memory:/"), recursive=True)


class SmallThenLeader:
    """A policy of one's own for the buying loop: every candidate on the ``start`` smallest sizes in
    one batch, then the leader of each ranking on its next size, until the leader's sizes run out.
    It keeps the books it saw after its first batch (``seen``) and the leaders it chose."""

    name = "small-then-leader"

    def __init__(self, start: int = 3):
        self.start, self.seen, self.leaders = start, [], []

    def runs(self, state):
        yield [(m, s) for m in state.alive() for s in state.sizes[:self.start]]
        self.seen.append({m: list(s) for m, s in state.bought.items()})  # the books are live
        while (leader := state.ranking().best) is not None and state.next_size(leader) is not None:
            self.leaders.append(leader)
            yield [(leader, state.next_size(leader))]


@pytest.fixture
def small_then_leader() -> SmallThenLeader:
    return SmallThenLeader()


@pytest.fixture
def no_hang():
    """Fail, instead of hanging the suite, if something blocks for good (a FIFO read, a connection
    retried for minutes): a guard against hangs, far above any run's time, not a timing check."""
    import signal

    def stop(*_):
        raise TimeoutError("blocked for 5 minutes")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(300)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
