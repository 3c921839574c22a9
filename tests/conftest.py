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
