"""``trainer.push_to_hub()`` with the fits on the pushed card.

``Trainer.push_to_hub`` calls ``create_model_card``, which writes README.md from scratch (unknown
keys such as ``lensllm`` are dropped), after ``on_push_begin`` and just before the upload, and
there is no ``on_push_end``: a callback cannot get the fits onto the pushed card. This helper
wraps ``create_model_card`` for the one call so the fits are written into the fresh card
before the upload: one commit, with the fits, in blocking and non-blocking pushes alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .hub import push_fits
from .local import write_card
from .metadata import CardFit, as_fit_list

__all__ = ["push_to_hub_with_fits"]


def push_to_hub_with_fits(trainer: Any, fits: CardFit | Iterable[CardFit], **push_kwargs: Any) -> Any:
    """``trainer.push_to_hub(**push_kwargs)``, with ``fits`` in the pushed card's ``lensllm`` metadata.

    The card the Trainer creates (its tags, ``model-index`` and text) is kept; the fits are
    added to it in ``output_dir/README.md`` before the upload, so the local card carries them
    too, even when the push fails. Should a future ``transformers`` no longer call
    ``create_model_card`` from ``push_to_hub``, the fits are pushed afterwards with
    :func:`push_fits` instead (for a blocking push).

    Args:
        trainer: a ``transformers.Trainer``.
        fits: one :class:`CardFit` or several (see :func:`fits_from_ranking`).
        push_kwargs: passed to ``Trainer.push_to_hub`` (``commit_message``, ``blocking``, ``token``...).

    Returns:
        What ``Trainer.push_to_hub`` returns (a ``CommitInfo``, or a future when not blocking).

    Example:
        >>> args = TrainingArguments("out", hub_model_id="alice/gpt2-imdb")  # doctest: +SKIP
        >>> trainer = Trainer(model, args=args, train_dataset=train)  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
        >>> push_to_hub_with_fits(trainer, fits_from_ranking(ranking, "gpt2", dataset="imdb"))  # doctest: +SKIP
    """
    fits = as_fit_list(fits)
    create_model_card = trainer.create_model_card
    patched_before = "create_model_card" in vars(trainer)
    written = False

    def create_model_card_with_fits(*args: Any, **kwargs: Any) -> Any:
        nonlocal written
        result = create_model_card(*args, **kwargs)
        if trainer.is_world_process_zero():  # the only process that writes the card
            write_card(trainer.args.output_dir, fits)
            written = True
        return result

    trainer.create_model_card = create_model_card_with_fits  # this instance, this call only
    try:
        commit = trainer.push_to_hub(**push_kwargs)
    finally:  # put back what was there
        if patched_before:
            trainer.create_model_card = create_model_card
        else:
            del trainer.create_model_card
    if not written and trainer.is_world_process_zero() and getattr(trainer, "hub_model_id", None):
        if hasattr(commit, "result"):  # a non-blocking push: let it land first
            commit.result()
        write_card(trainer.args.output_dir, fits)
        token = push_kwargs.get("token") or getattr(trainer.args, "hub_token", None)
        push_fits(trainer.hub_model_id, fits, create_pr=False, token=token)
    return commit
