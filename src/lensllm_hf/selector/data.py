"""Data for the subset runs: nested subsets, the default causal-LM preprocessing, metrics.

Subsets are nested: the train set is shuffled once with the seed, and the subset of size D is
its first D rows, so a larger subset always contains the smaller ones (``datasets`` shuffle +
select, kept in memory so nothing is written to the datasets cache).

Example:
    >>> pool = subset_pool(train, budget=3200, seed=0)
    >>> pool.select(range(200))  # the 200-example subset
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import LensLLMError

__all__ = ["aligned_argmax", "content_fingerprint", "default_preprocess", "evaluate_metric", "geometric_sizes",
           "split_eval", "subset_pool", "token_accuracy"]


def geometric_sizes(min_size: int, budget: int) -> list[int]:
    """``min_size, 2*min_size, 4*min_size, ...`` up to ``budget`` (the papers' 200, 400, 800, ...)."""
    if not isinstance(min_size, int) or min_size < 1:
        raise LensLLMError(f"min_size={min_size!r}: the smallest subset must be a whole number >= 1 (200 by default)")
    if budget < min_size:
        raise LensLLMError(f"budget {budget} is below min_size {min_size}; raise the budget or lower min_size")
    sizes, size = [], min_size
    while size <= budget:
        sizes.append(size)
        size *= 2
    return sizes


def split_eval(dataset, eval_size: int, seed: int):
    """(train, eval): ``eval_size`` rows held out of ``dataset`` when no eval set is given."""
    if len(dataset) <= eval_size:
        raise LensLLMError(f"no eval_dataset and only {len(dataset)} training rows: cannot hold out {eval_size}; "
                           "pass eval_dataset=...")
    parts = dataset.train_test_split(test_size=eval_size, seed=seed, keep_in_memory=True)
    return parts["train"], parts["test"]


def subset_pool(dataset, budget: int, seed: int):
    """The first ``budget`` rows of one seeded shuffle: every subset is a prefix of it."""
    if len(dataset) < budget:
        raise LensLLMError(f"the train dataset has {len(dataset)} rows, fewer than the budget {budget}; "
                           "lower the budget or give more data")
    return dataset.shuffle(seed=seed, keep_in_memory=True).select(range(budget), keep_in_memory=True)


def check_text_column(dataset, column: str, where: str) -> None:
    names = list(getattr(dataset, "column_names", None) or [])
    if column not in names:
        raise LensLLMError(f"{where} has no text column {column!r} (its columns: {', '.join(names) or 'none'}); "
                           "set text_column to one of them or pass preprocess=... for your own features")


def default_preprocess(text_column: str = "text", max_length: int = 512) -> Callable:
    """Causal-LM features from a text column, with the candidate's tokenizer.

    The returned function maps ``(dataset, tokenizer) -> dataset`` with ``input_ids`` and
    ``attention_mask`` (labels come from the collator); one row per example, in order.
    """

    def preprocess(dataset, tokenizer):
        check_text_column(dataset, text_column, "the dataset")

        def encode(batch):
            texts = [t if isinstance(t, str) else "" for t in batch[text_column]]
            return tokenizer(texts, truncation=True, max_length=max_length)

        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, keep_in_memory=True,
                           desc="tokenizing")

    preprocess.__qualname__ = f"default_preprocess(text_column={text_column!r}, max_length={max_length})"
    return preprocess


def content_fingerprint(dataset, limit: int | None = None) -> str:
    """A hash of the rows themselves (stable across machines and cache folders, unlike paths)."""
    digest = hashlib.sha256()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    digest.update(str(n).encode())
    for batch in dataset.select(range(n), keep_in_memory=True).iter(batch_size=1024):
        digest.update(json.dumps(batch, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


# -- metrics other than the loss ---------------------------------------------------------------


def aligned_argmax(encoder_decoder: bool) -> Callable:
    """A ``preprocess_logits_for_metrics`` that keeps predicted token ids aligned with the labels.

    Position i of what it returns is the prediction for ``labels[i]``, whatever the model: an
    encoder-decoder's logits at i, a causal LM's at i - 1 (its position 0, which nothing
    predicts, holds -100, as padding does). Only ids are kept, so evaluation memory stays small.
    """

    def preprocess(logits, labels):
        if isinstance(logits, tuple):
            logits = logits[0]
        ids = logits.argmax(dim=-1)
        if not encoder_decoder:
            ids = ids.roll(1, dims=1)
            ids[:, 0] = -100
        return ids

    preprocess.__qualname__ = f"aligned_argmax(encoder_decoder={encoder_decoder})"
    return preprocess


def token_accuracy(eval_pred) -> float:
    """Token accuracy of the predictions against the labels (positions marked -100 are left out).

    The selector's Trainer hands it ids aligned with the labels (:func:`aligned_argmax`), for
    causal LMs (next-token accuracy) and encoder-decoders alike.

    Example:
        >>> from transformers import EvalPrediction
        >>> token_accuracy(EvalPrediction(predictions=np.array([[-100, 5, 6, 9]]),
        ...                               label_ids=np.array([[4, 5, 6, 7]])))  # 2 of 3 predicted
        0.6666666666666666
    """
    predictions, labels = _aligned(eval_pred)
    keep = (labels != -100) & (predictions != -100)
    return float((predictions[keep] == labels[keep]).mean()) if keep.any() else float("nan")


def evaluate_metric(name: str, **compute_kwargs: Any) -> Callable:
    """A ``metric_fn`` from the ``evaluate`` library (a Hub name or a local metric script path).

    ``evaluate.load`` fetches Hub metrics from the Hub even with ``HF_HUB_OFFLINE=1``; offline,
    pass the path of a local metric script, or use :func:`token_accuracy`.
    """
    try:
        import evaluate
    except ImportError:
        raise LensLLMError(f"metric {name!r} needs the 'evaluate' library (pip install evaluate), or pass "
                           "metric_fn=... (e.g. lensllm_hf.selector.token_accuracy)") from None
    try:
        metric = evaluate.load(name)
    except Exception as error:  # evaluate raises many kinds (network, file, import)
        raise LensLLMError(f"cannot load the metric {name!r} with evaluate ({type(error).__name__}: {error}); "
                           "offline, pass a local metric script path or metric_fn=...") from None

    def metric_fn(eval_pred) -> float:
        predictions, labels = _aligned(eval_pred)
        keep = (labels != -100) & (predictions != -100)
        result = metric.compute(predictions=predictions[keep], references=labels[keep], **compute_kwargs)
        return float(result[name] if name in result else next(iter(result.values())))

    metric_fn.__qualname__ = f"evaluate_metric({name!r})"
    return metric_fn


def _aligned(eval_pred) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(eval_pred.predictions)
    labels = np.asarray(eval_pred.label_ids)
    if predictions.shape != labels.shape:
        raise LensLLMError(f"token metrics take predicted ids aligned with the labels (shape {labels.shape}), got "
                           f"{predictions.shape}; in a Trainer of your own, pass preprocess_logits_for_metrics="
                           "lensllm_hf.selector.aligned_argmax(model.config.is_encoder_decoder)")
    return predictions, labels
