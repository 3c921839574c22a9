"""Select the model to fine-tune: :class:`LensLLMSelector` runs the subset fine-tunes and ranks.

Example:
    >>> from lensllm_hf import LensLLMSelector
    >>> selector = LensLLMSelector(["EleutherAI/pythia-70m", "gpt2"], train, test, target_size=50_000, budget=1_600)
    >>> result = selector.run()
    >>> result.best, result.ranking
"""

from .candidates import Candidate, as_candidates
from .core import LensLLMSelector, PlannedRun
from .data import evaluate_metric, token_accuracy
from .result import SelectionResult

__all__ = ["Candidate", "LensLLMSelector", "PlannedRun", "SelectionResult", "as_candidates", "evaluate_metric",
           "token_accuracy"]
