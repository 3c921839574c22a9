"""Fits in the README.md of a local model folder (a Trainer ``output_dir`` or a ``save_pretrained`` folder)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from .._utils import atomic_write_text, display, load_yaml, one_line, read_bounded
from ..errors import BoundsError, CardError, CardMetadataError
from .metadata import METADATA_KEY, CardFit, as_fit_list, eval_results_for, is_result_of, merge_fits, parse_fits

__all__ = ["CARD_NAME", "card_with_fits", "read_card", "write_card"]

#: The model card's file name in a model folder and on the Hub.
CARD_NAME = "README.md"

# A Jinja template for huggingface_hub's ModelCard.from_template: the YAML comes from CardData.
_NEW_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

This card carries scaling-law fits made with `lensllm_hf` in its `lensllm` metadata: the test
loss of this model fine-tuned on small subsets of a dataset, the law fitted to it, and the loss
it predicts on the full dataset. Read them with `lensllm card show` or
`lensllm_hf.hub_cards.load_fits`.
"""


def write_card(model_dir: str | os.PathLike, fits: CardFit | Iterable[CardFit]) -> Path:
    """Write fits into ``model_dir/README.md``, keeping the card's body and its other metadata.

    A fit replaces the card's fit with the same (dataset, config, split, metric, adapter);
    others are added beside it. Without a README.md a short card is created. The file is
    replaced in one step (:func:`~lensllm_hf._utils.atomic_write_text`: it keeps the file's
    permissions and, for a symlinked README.md, replaces the file the link points at), and only
    after the new card has been re-read and validated, so a malformed card is reported (naming
    the field) and left exactly as it was.

    Args:
        model_dir: a Trainer ``output_dir`` or a ``save_pretrained`` folder.
        fits: one :class:`CardFit` or several (see :func:`fits_from_ranking`).

    Returns:
        The path of the README.md written.

    Example:
        >>> ranking = Ranking.read_json("fit.json")  # doctest: +SKIP
        >>> write_card("out/gpt2", fits_from_ranking(ranking, "gpt2", dataset="imdb", split="test"))  # doctest: +SKIP
        PosixPath('out/gpt2/README.md')
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise CardError(f"{folder}: no such folder; pass a Trainer output_dir or a save_pretrained folder",
                        source=str(folder))
    fits = as_fit_list(fits)
    path = folder / CARD_NAME
    if path.exists():
        card = read_card(path)
    else:
        card = ModelCard.from_template(ModelCardData(), template_str=_NEW_CARD_TEMPLATE,
                                       model_name=fits[0].model or folder.resolve().name)
    updated = card_with_fits(card, fits, source=str(path), model_name=fits[0].model or folder.resolve().name)
    try:
        atomic_write_text(path, str(updated))
    except OSError as error:
        raise CardError(f"{path}: cannot write the card ({error.strerror or error}); check the folder's permissions "
                        "and free space", source=str(path)) from None
    return path


def read_card(path: str | os.PathLike, source: str | None = None) -> ModelCard:
    """Load a local card with huggingface_hub's own parsing, within bounds; malformed metadata is a
    :class:`CardMetadataError` naming ``source`` (default: the path).

    The file is read whole only when it is a regular file of at most
    :data:`~lensllm_hf._utils.MAX_DOCUMENT_BYTES`, and its YAML front matter is first read with
    the bounded loader (depth, aliases, number lengths), so a hostile card is one line, never a
    ``RecursionError`` inside ``yaml.safe_load``.
    """
    source = display(source or str(path))
    try:
        content = read_bounded(path, source).decode("utf-8")
    except UnicodeDecodeError:
        raise CardMetadataError(f"{source}: the card is not UTF-8 text; fix it by hand first", source=source) from None
    except OSError as error:
        raise CardError(f"{source}: cannot read the card ({error.strerror or error})", source=source) from None
    except BoundsError as error:
        raise CardMetadataError(str(error), source=source) from None
    try:
        block = REGEX_YAML_BLOCK.search(content)
        if block is not None:
            load_yaml(block.group(2), f"{source}: the card's metadata")
        return ModelCard(content)
    except BoundsError as error:
        raise CardMetadataError(f"{error}; fix the card by hand first", source=source) from None
    except (ValueError, TypeError, yaml.YAMLError) as error:  # TypeError: a key that is not text
        raise CardMetadataError(f"{source}: the card's metadata is malformed ({one_line(str(error), 300)}); "
                                "fix it by hand first", source=source) from None


def card_with_fits(card: ModelCard, fits: Iterable[CardFit], *, source: str, model_name: str) -> ModelCard:
    """A new card: ``card`` with ``fits`` merged into its ``lensllm`` block and ``model-index``.

    ``card`` itself is not changed. The result is checked the way huggingface_hub checks a card
    it loads (``ModelCardData`` parses and validates ``model-index``) and its ``lensllm`` block
    is read back, so nothing unreadable is ever written.

    Args:
        source: names the card in error messages (a path or a repo ID).
        model_name: the ``model-index`` name when the card has none yet.
    """
    fits = as_fit_list(fits)
    merged = merge_fits(parse_fits(card.data.get(METADATA_KEY), source), fits)
    updated = ModelCard(card.content)  # a copy, so a failure below leaves the caller's card alone
    data = updated.data
    data[METADATA_KEY] = [fit.to_dict() for fit in merged]
    # Results written for an earlier fit of the same key go: its sizes may differ from the new one.
    kept = [r for r in data.eval_results or [] if not any(is_result_of(r, fit) for fit in fits)]
    data.eval_results = _merge_results(kept, eval_results_for(fits))
    data.model_name = data.model_name or model_name
    try:
        parse_fits(ModelCard(updated.content).data.get(METADATA_KEY), source)
    except ValueError as error:  # a bug here, not the user's: say so rather than write it
        raise CardMetadataError(f"{source}: the updated card does not validate ({one_line(str(error), 300)})",
                                source=source) from None
    return updated


def _merge_results(existing: list[EvalResult], new: list[EvalResult]) -> list[EvalResult]:
    """``existing`` with each new result updating the same metric, else appended (as ``metadata_update`` does)."""
    merged = list(existing)
    for result in new:
        same = next((old for old in merged if old.is_equal_except_value(result)), None)
        if same is None:
            merged.append(result)
        else:
            same.metric_value = result.metric_value
    return merged
