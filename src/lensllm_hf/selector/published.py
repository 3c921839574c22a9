"""Candidates ranked from a fit published in their model card instead of being trained.

Example:
    >>> rows = published_rows(candidates, dataset="imdb", config=None, split="test", metric="eval_loss",
    ...                       target=25_000, level=0.9)
    >>> rows["gpt2"].source
    'hub card gpt2'
"""

from __future__ import annotations

from collections.abc import Sequence

from ..ranking import CandidateFit
from .candidates import Candidate, peft_summary

__all__ = ["published_row", "published_rows"]


def published_rows(candidates: Sequence[Candidate], *, dataset: str, config: str | None, split: str | None,
                   metric: str, target: float, level: float) -> dict[str, CandidateFit]:
    """Candidate name -> its ranking row from a matching published fit (candidates without one left out)."""
    found = {}
    for c in candidates:
        row = published_row(c.model, name=c.name, dataset=dataset, config=config, split=split, metric=metric,
                            adapter=peft_summary(c.peft_config), target=target, level=level)
        if row is not None:
            found[c.name] = row
    return found


def published_row(model: str, *, name: str, dataset: str, config: str | None, split: str | None, metric: str,
                  adapter: str | None, target: float, level: float) -> CandidateFit | None:
    """One candidate's row from its card (Hub repo or local folder), None when no fit matches or it is unreachable."""
    from .. import hub_cards

    published_candidate = getattr(hub_cards, "published_candidate", None)
    if published_candidate is not None:  # the card module's own reading of a fit into a ranking row
        return published_candidate(model, name=name, dataset=dataset, config=config, split=split, metric=metric,
                                   adapter=adapter, target=target, level=level)
    try:
        fits = hub_cards.load_fits(model)
    except hub_cards.HubError:  # offline, private, missing: train it instead
        return None
    fit = hub_cards.find_fit(fits, dataset=dataset, config=config, split=split, metric=metric, adapter=adapter)
    if fit is None:
        return None
    row = fit.to_candidate_fit(target, level)
    row.model, row.flops = name, 0.0
    return row
