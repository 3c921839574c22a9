"""Select the model to fine-tune: :class:`LensLLMSelector` runs the subset fine-tunes and ranks.

The package is split by responsibility: :mod:`.params` (the parameters, declared once),
:mod:`.plan` (the runs and their keys), :mod:`.runner` (making one run), :mod:`.buyer` (the
engine's buying loop buys through it), :mod:`.backends` (where they execute), :mod:`.scoring` (records to a
ranking), :mod:`.published` (fits from model cards) and :mod:`.core` (the selector itself);
:mod:`.formats` (text, prompt/completion and chat data: the Trainer per candidate),
:mod:`.loading` (causal or encoder-decoder, dtype, 4-bit) and :mod:`.task_metrics` (metrics on
generated answers).

Example:
    >>> from lensllm_hf import LensLLMSelector
    >>> selector = LensLLMSelector(["EleutherAI/pythia-70m", "gpt2"], train, test, target_size=50_000, budget=1_600)
    >>> result = selector.run()
    >>> result.best, result.ranking
"""

from .candidates import Candidate, as_candidates
from .core import LensLLMSelector
from .data import aligned_argmax, evaluate_metric, token_accuracy
from .formats import TaskFormat
from .loading import load_candidate
from .params import SelectionParams
from .plan import PlannedRun
from .result import SelectionResult

__all__ = ["Candidate", "LensLLMSelector", "PlannedRun", "SelectionParams", "SelectionResult", "TaskFormat",
           "aligned_argmax", "as_candidates", "evaluate_metric", "load_candidate", "token_accuracy"]
