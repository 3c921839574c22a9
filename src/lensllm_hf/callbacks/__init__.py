"""Trainer callbacks: :class:`LensLLMCallback` records runs for LensLLM (``ntk`` is its NTK probe).

Example:
    >>> from lensllm_hf import LensLLMCallback
    >>> trainer.add_callback(LensLLMCallback())
"""

from .callback import CallbackError, LensLLMCallback

__all__ = ["CallbackError", "LensLLMCallback"]
