"""Candidates ranked from a fit published in their model card instead of being trained.

Example:
    >>> rows = published_rows(candidates, dataset="imdb", config=None, split="test", metric="eval_loss",
    ...                       target=25_000)
    >>> rows["gpt2"].source
    'hub card gpt2'
"""

from __future__ import annotations

from collections.abc import Sequence

from ..engine.ranking import CandidateFit
from .candidates import Candidate, peft_summary

__all__ = ["published_rows"]


def published_rows(candidates: Sequence[Candidate], *, dataset: str, config: str | None, split: str | None,
                   metric: str, target: float) -> dict[str, CandidateFit]:
    """Candidate name -> its ranking row from a matching published fit (candidates without one left out).

    Each row is :func:`lensllm_hf.hub_cards.published_candidate`'s: the card's own Fit, read from
    the Hub repo or local folder of the candidate's model; a card that cannot be read or has no
    fit for this dataset, config, split, metric and adapter leaves the candidate to be trained.
    """
    from ..hub_cards import published_candidate

    found = {}
    for c in candidates:
        row = published_candidate(c.model, name=c.name, dataset=dataset, config=config, split=split, metric=metric,
                                  adapter=peft_summary(c.peft_config), target=target)
        if row is not None:
            found[c.name] = row
    return found
