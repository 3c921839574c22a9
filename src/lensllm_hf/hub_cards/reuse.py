"""A published fit as a ranking row: how a selection reuses a card instead of training a candidate."""

from __future__ import annotations

import warnings

from .._utils import check_prediction
from ..engine.ranking import CandidateFit
from ..errors import BoundsError, CardError, CardMetadataError, HubError
from .hub import load_fits
from .metadata import find_fit

__all__ = ["published_candidate"]


def published_candidate(model: str, *, name: str, dataset: str, config: str | None, split: str | None, metric: str,
                        adapter: str | None, target: float) -> CandidateFit | None:
    """The ranking row of ``model`` rebuilt from the fit its model card publishes, or None.

    The card of ``model`` (a Hub repo ID or a local model folder) is read with
    :func:`~lensllm_hf.hub_cards.load_fits`, and the fit for exactly this dataset, config,
    split, metric and adapter is taken (:func:`~lensllm_hf.hub_cards.find_fit`). The row carries
    that very :class:`~lensllm_hf.engine.fit.Fit`: in a ranking at the card's own target and level
    its prediction and interval are the ones the publishing ranking had, bit for bit.

    Args:
        model: where the card is: a Hub repo ID or a model folder (the candidate's model).
        name: the candidate's name in this selection (the row's ``model``).
        dataset, config, split, metric, adapter: what the fit must be for.
        target: the selection's target size; the row is scored there (its interval is at the
            level of the ranking it joins).

    Returns:
        The row (``source`` names the card, ``flops`` is 0: nothing was trained), or None when
        the card has no matching fit, the name is no repo ID and no folder, or the Hub cannot
        be asked (offline, private, missing, down): the candidate is then trained as usual. A
        card whose ``lensllm`` block is malformed is also None, with a warning naming the field.

    Example:
        >>> row = published_candidate("alice/gpt2", name="gpt2", dataset="imdb", config=None, split="test",
        ...                           metric="eval_loss", adapter=None, target=25_000)  # doctest: +SKIP
        >>> row.score, row.source  # doctest: +SKIP
        (2.31, 'hub card alice/gpt2')
    """
    try:
        fits = load_fits(model)
        found = find_fit(fits, dataset=dataset, config=config, split=split, metric=metric, adapter=adapter)
        if found is not None:  # the card's fit at this selection's target: a loss, or not reused
            check_prediction(found.fit, target, found.level, f"{found.source}: the published fit of {name}")
    except (CardMetadataError, BoundsError) as error:
        warnings.warn(f"{error}; {name} is trained instead of reusing its published fit", stacklevel=2)
        return None
    except (HubError, CardError):  # unreachable, or not a repo ID and not a folder: train it instead
        return None
    if found is None:
        return None
    row = found.to_candidate_fit(target)
    row.model = name
    return row
