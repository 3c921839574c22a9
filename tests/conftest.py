"""Shared fixtures. The real fine-tuning curves live beside the checkout, never inside it."""

from __future__ import annotations

from pathlib import Path

import pytest

CURVES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "finetune-curves"


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
