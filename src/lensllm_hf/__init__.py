"""lensllm_hf: pick the open LLM to fine-tune before paying for it.

The scaling-law engine (:mod:`lensllm_hf.engine.laws`) is pure numpy/scipy; the Trainer-facing parts
(:class:`LensLLMCallback`, :class:`LensLLMSelector`) import torch and transformers lazily, on
first use, so ``import lensllm_hf`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "LensLLMCallback": "lensllm_hf.callbacks",
    "LensLLMSelector": "lensllm_hf.selector",
    "SelectionResult": "lensllm_hf.selector",
}

__all__ = ["LensLLMCallback", "LensLLMSelector", "SelectionResult", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lensllm_hf' has no attribute {name!r}")
