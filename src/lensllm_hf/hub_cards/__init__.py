"""Fitted scaling laws as Hugging Face model-card metadata: written, pushed and read back.

A card's YAML gets a ``lensllm`` key holding a list of entries, each the ranking's one
:class:`~lensllm_hf.engine.fit.Fit` with dataset, metric, adapter, target, level, version and date
(see :mod:`.metadata` for the layout),
one per (dataset, config, split, metric, adapter); the observed losses also go into the
card's standard ``model-index``. Everything goes through ``huggingface_hub``'s ``ModelCard``,
``ModelCardData``, ``EvalResult`` and ``metadata_update``.

Example:
    >>> from lensllm_hf.engine.ranking import Ranking
    >>> from lensllm_hf.hub_cards import fits_from_ranking, write_card, push_fits, load_fits, find_fit
    >>> ranking = Ranking.read_json("fit.json")  # doctest: +SKIP
    >>> fits = fits_from_ranking(ranking, "gpt2", dataset="imdb", split="test")  # doctest: +SKIP
    >>> write_card("out/gpt2", fits)  # the local card  # doctest: +SKIP
    >>> push_fits("alice/gpt2", fits)  # a commit to your repo, a pull request to others'  # doctest: +SKIP
    >>> fit = find_fit(load_fits("alice/gpt2"), dataset="imdb", split="test")  # doctest: +SKIP
    >>> fit.predict_interval([1_638_400])  # the ranking's Fit, rebuilt  # doctest: +SKIP
"""

from ..errors import CardError, CardMetadataError, HubCacheWarning, HubError, NetworkError, redact
from .hub import load_fits, push_fits
from .local import card_with_fits, read_card, write_card
from .metadata import METADATA_KEY, CardFit, eval_results_for, find_fit, fits_from_ranking, merge_fits, parse_fits
from .reuse import published_candidate
from .trainer import push_to_hub_with_fits

#: Earlier names: a Hub refusal is one :class:`HubError` whose ``status`` says which (401, 403, 404).
HubAuthError = HubPermissionError = HubNotFoundError = HubError
#: Earlier name of :class:`~lensllm_hf.errors.NetworkError` (no network, a 5xx, ``HF_HUB_OFFLINE``).
HubUnavailableError = NetworkError

__all__ = [
    "METADATA_KEY",
    "CardError",
    "CardFit",
    "CardMetadataError",
    "HubAuthError",
    "HubCacheWarning",
    "HubError",
    "HubNotFoundError",
    "HubPermissionError",
    "HubUnavailableError",
    "NetworkError",
    "card_with_fits",
    "eval_results_for",
    "find_fit",
    "fits_from_ranking",
    "load_fits",
    "merge_fits",
    "parse_fits",
    "published_candidate",
    "push_fits",
    "push_to_hub_with_fits",
    "read_card",
    "redact",
    "write_card",
]
