"""Task metrics on generated answers: exact match, accuracy, ROUGE — computed locally.

The names are the ``evaluate`` library's (``exact_match``, ``accuracy``, ``rouge``), so results
read the same as ``evaluate.load(name).compute(...)``; they are computed here (ROUGE by the
``rouge_score`` package that ``evaluate``'s own ROUGE calls), because ``evaluate.load`` fetches
the metric's script from the Hub on every machine, which offline or in CI is no option.

A metric is ranked as an error, ``1 - metric``, so the scaling law is fitted to something that
falls with more data toward a floor, like a loss. That is sound when the metric is an average of
per-example scores in [0, 1] that improve smoothly with data (accuracy over many examples, ROUGE);
it is rough for exact match on a few dozen examples (each answer moves it by a whole step), so
evaluate on enough rows (``generation.rows``) for the steps to be small.

Example:
    >>> score("exact_match", ["Paris", " 42"], ["Paris", "42 "])
    1.0
    >>> round(score("rougeL", ["the cat sat"], ["the cat sat down"]), 3)
    0.857
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import LensLLMError

__all__ = ["TASK_METRICS", "GenerationConfig", "score"]

#: Metrics computed here, by their ``evaluate`` names (``rouge`` is ROUGE-L, as papers rank by).
TASK_METRICS = ("exact_match", "accuracy", "rouge", "rouge1", "rouge2", "rougeL")


def score(name: str, predictions: Sequence[str], references: Sequence[str]) -> float:
    """The mean of a per-example metric in [0, 1] over generated ``predictions``.

    ``exact_match``: the answer equals the reference once surrounding whitespace is stripped
    (``evaluate``'s exact_match with no normalisation, on stripped strings). ``accuracy``: the
    first line of the answer equals the reference label, case-insensitively (short answers and
    class labels). ``rouge``/``rougeL``, ``rouge1``, ``rouge2``: the F-measure, stemmed, from
    ``rouge_score``.
    """
    if name not in TASK_METRICS:
        raise LensLLMError(f"unknown task metric {name!r}; choose one of {', '.join(TASK_METRICS)} or 'loss'")
    if len(predictions) != len(references) or not references:
        raise LensLLMError(f"{name}: {len(predictions)} answers for {len(references)} references; need the same "
                           "number, at least one")
    if name == "exact_match":
        hits = [p.strip() == r.strip() for p, r in zip(predictions, references)]
    elif name == "accuracy":
        hits = [_first_line(p) == _first_line(r) for p, r in zip(predictions, references)]
    else:
        from rouge_score import rouge_scorer

        kind = "rougeL" if name == "rouge" else name
        scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
        hits = [scorer.score(r, p)[kind].fmeasure for p, r in zip(predictions, references)]
    return float(sum(hits) / len(hits))


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip().lower() if lines else ""


@dataclass(frozen=True)
class GenerationConfig:
    """How answers are generated for a task metric.

    Attributes:
        max_new_tokens: longest answer.
        num_beams: beam search width (1: greedy, deterministic).
        rows: how many eval rows are answered (the first ones); more rows, finer metric steps.
        batch_size: prompts generated at once.
    """

    max_new_tokens: int = 32
    num_beams: int = 1
    rows: int = 64
    batch_size: int = 16
