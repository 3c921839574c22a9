"""Trainer callbacks: :class:`LensLLMCallback` records runs for LensLLM (``ntk`` is its NTK probe).

Example (an illustration: ``trainer`` is yours)::

    from lensllm_hf import LensLLMCallback
    LensLLMCallback(store="runs/", trainer=trainer)   # or trainer.add_callback(LensLLMCallback(store="runs/"))
"""

from .callback import CallbackError, LensLLMCallback

__all__ = ["CallbackError", "LensLLMCallback"]
