"""One fitted law as model-card metadata: :class:`CardFit` and the ``lensllm`` block of the YAML.

A card's ``lensllm`` key holds a list of fits, one per (dataset, config, split, metric,
adapter); :meth:`CardFit.to_dict` writes one entry (``None`` values left out)::

    lensllm:
    - model: gpt2
      dataset: imdb                # a Hub dataset ID or a short description
      dataset_config: plain_text
      dataset_split: test
      metric: eval_loss
      adapter: lora r=8            # only when fine-tuned through an adapter
      law: rectified
      params: {B: 12.1, F: 3.4, beta: 0.41, E: 1.2}
      sizes: [0, 200, 400, 800, 1600, 3200]
      losses: [4.2, 3.4, 3.3, 3.2, 3.05, 2.9]
      transition_size: 800
      target_size: 1638400
      predicted_loss: 2.31
      interval: [2.2, 2.43]
      library_version: 0.1.0
      date: '2025-06-01'

The field names of the dataset follow ``huggingface_hub.EvalResult`` (``dataset_config``,
``dataset_split``). The observed losses also become ``model-index`` eval results
(:func:`eval_results_for`), never marked verified.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from huggingface_hub import EvalResult

from .. import __version__
from ..laws import LAWS, ScalingLaw
from ..ranking import CandidateFit, Ranking
from .errors import CardError, CardMetadataError

__all__ = [
    "METADATA_KEY",
    "TASK_TYPE",
    "CardFit",
    "as_fit_list",
    "eval_results_for",
    "find_fit",
    "fits_from_ranking",
    "is_result_of",
    "merge_fits",
    "parse_fits",
]

#: The key of the card's YAML that holds the fits.
METADATA_KEY = "lensllm"
#: The Hub task of the eval results: the package fine-tunes causal language models.
TASK_TYPE = "text-generation"

_IDENTITY = ("model", "dataset", "dataset_config", "dataset_split", "metric", "adapter")
_PREDICTION = ("target_size", "predicted_loss", "interval")
_PROVENANCE = ("library_version", "date")
_LAW_FIELDS = ("law", "params", "sizes", "losses", "transition_size")
_KNOWN = {*_IDENTITY, *_LAW_FIELDS, *_PREDICTION, *_PROVENANCE}


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


@dataclass(eq=False)
class CardFit:
    """A fitted scaling law with what it was fitted on: one entry of a card's ``lensllm`` block.

    Attributes:
        law: the fitted law; it predicts (``fit.law.predict([1_638_400])``).
        dataset: Hub dataset ID (``"imdb"``) or a short description of the data.
        dataset_config: dataset configuration, if any.
        dataset_split: the split the losses were measured on, if known.
        metric: the metric the losses are (``"eval_loss"``).
        adapter: the adapter fine-tuned instead of the full model (e.g. ``"lora r=8"``), if any.
        model: the model the fit is for (Hub ID or path).
        target_size: the full dataset size the prediction is for.
        predicted_loss: the law's loss at ``target_size``.
        interval: the prediction interval at ``target_size``, as (low, high).
        library_version: the ``lensllm_hf`` version that made the fit.
        date: the day the fit was made, ISO format.
        extra: fields of the entry this version does not know; written back unchanged.
        source: where the fit was read from (a repo ID or a README path); not written.

    Example:
        >>> from lensllm_hf.laws import RectifiedLaw
        >>> law = RectifiedLaw().fit([0, 200, 400, 800, 1600, 3200], [4.2, 3.4, 3.3, 3.2, 3.05, 2.9])
        >>> fit = CardFit.from_law(law, dataset="imdb", dataset_split="test", target_size=1_638_400)
        >>> fit.key
        ('imdb', None, 'test', 'eval_loss', None)
        >>> round(float(CardFit.from_dict(fit.to_dict()).predict([1_638_400])[0]), 6) == round(fit.predicted_loss, 6)
        True
    """

    law: ScalingLaw
    dataset: str
    dataset_config: str | None = None
    dataset_split: str | None = None
    metric: str = "eval_loss"
    adapter: str | None = None
    model: str | None = None
    target_size: float | None = None
    predicted_loss: float | None = None
    interval: tuple[float, float] | None = None
    library_version: str = __version__
    date: str = field(default_factory=_today)
    extra: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    @property
    def key(self) -> tuple[str, str | None, str | None, str, str | None]:
        """What a card holds one fit for: (dataset, config, split, metric, adapter)."""
        return (self.dataset, self.dataset_config, self.dataset_split, self.metric, self.adapter)

    def predict(self, sizes) -> np.ndarray:
        """The law's loss at each training-subset size."""
        return self.law.predict(sizes)

    def predict_interval(self, sizes, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """The law's ``level`` interval at each size."""
        return self.law.predict_interval(sizes, level=level)

    # -- building -----------------------------------------------------------------------
    @classmethod
    def from_law(cls, law: ScalingLaw, *, dataset: str, target_size: float | None = None, level: float = 0.9,
                 **info: Any) -> CardFit:
        """A fit from a fitted law; the prediction and its ``level`` interval at ``target_size`` are computed.

        ``info`` sets the other attributes (``dataset_config``, ``metric``, ``model``, ...).
        """
        fit = cls(law=law, dataset=dataset, target_size=target_size, **info)
        if target_size is not None:
            low, high = law.predict_interval([target_size], level=level)
            fit.predicted_loss = float(law.predict([target_size])[0])
            fit.interval = (float(low[0]), float(high[0]))
        return fit

    @classmethod
    def from_candidate(cls, candidate: CandidateFit, *, target_size: float | None, dataset: str,
                       config: str | None = None, split: str | None = None, metric: str = "eval_loss",
                       adapter: str | None = None) -> CardFit:
        """A fit from one row of a :class:`~lensllm_hf.ranking.Ranking` (what ``lensllm fit --json`` writes)."""
        if candidate.status != "complete":
            raise CardError(f"{candidate.model}: its fit failed ({candidate.error}); there is no law to write")
        if not candidate.law or not candidate.params:
            raise CardError(f"{candidate.model}: this ranking has no fitted law for it (a baseline such as ZeroShot "
                            "ranks without one); rank the candidates with a scaling law first")
        entry = {"model": candidate.model, "dataset": dataset, "dataset_config": config, "dataset_split": split,
                 "metric": metric, "adapter": adapter, "law": candidate.law, "params": candidate.params,
                 "sizes": candidate.sizes, "losses": candidate.losses, "transition_size": candidate.transition_size,
                 "target_size": target_size, "predicted_loss": candidate.predicted_loss,
                 "interval": candidate.interval, "library_version": __version__, "date": _today()}
        known = {k: v for k, v in entry.items() if v is not None}
        return cls.from_dict(known, where=f"ranking row {candidate.model!r}")

    def to_candidate_fit(self, target_size: float | None = None, level: float = 0.9) -> CandidateFit:
        """The fit as a ranking row, predicted at ``target_size`` (default: the card's own target).

        This is how a selector uses a published fit instead of training the candidate.
        """
        target = self.target_size if target_size is None else target_size
        predicted, interval = self.predicted_loss, list(self.interval) if self.interval else None
        if target is not None and (target != self.target_size or predicted is None):
            predicted = float(self.predict([target])[0])
            low, high = self.predict_interval([target], level=level)
            interval = [float(low[0]), float(high[0])]
        data = self.law.to_dict()
        return CandidateFit(model=self.model or "", predicted_loss=predicted, interval=interval, law=data["law"],
                            params=data["params"], sizes=data["sizes"], losses=data["losses"],
                            transition_size=data["transition_size"], score=predicted,
                            source=f"hub card {self.source}" if self.source else "hub card")

    # -- (de)serialising ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The entry of the ``lensllm`` block: plain YAML-able data, ``None`` values left out."""
        law = self.law.to_dict()
        entry: dict[str, Any] = {
            "model": self.model,
            "dataset": self.dataset,
            "dataset_config": self.dataset_config,
            "dataset_split": self.dataset_split,
            "metric": self.metric,
            "adapter": self.adapter,
            "law": law["law"],
            "params": {k: float(v) for k, v in law["params"].items()},
            "sizes": [_compact(s) for s in law["sizes"]],
            "losses": [float(x) for x in law["losses"]],
            "transition_size": _compact(law["transition_size"]),
            "target_size": _compact(self.target_size),
            "predicted_loss": None if self.predicted_loss is None else float(self.predicted_loss),
            "interval": None if self.interval is None else [float(x) for x in self.interval],
            "library_version": self.library_version,
            "date": self.date,
        }
        entry.update({k: v for k, v in self.extra.items() if k not in entry})
        return {k: v for k, v in entry.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "lensllm[0]") -> CardFit:
        """Read one entry, checking every field; errors name the field, e.g. ``lensllm[2].sizes``."""
        if not isinstance(data, Mapping):
            raise CardMetadataError(f"{where} must be a mapping of fit fields, got {type(data).__name__}")
        check = _Checker(data, where)
        law_name = check.text("law", required=True)
        if law_name not in LAWS:
            raise CardMetadataError(f"{where}.law: unknown law {law_name!r}; known laws: {', '.join(sorted(LAWS))}")
        sizes, losses = check.numbers("sizes"), check.numbers("losses")
        if len(sizes) != len(losses):
            raise CardMetadataError(f"{where}.losses: {len(losses)} losses for {len(sizes)} sizes; they must pair up")
        if any(x <= 0 for x in losses):
            raise CardMetadataError(f"{where}.losses: every loss must be positive")
        params = check.params()
        try:
            law = ScalingLaw.from_dict({"law": law_name, "params": params, "sizes": sizes, "losses": losses,
                                        "transition_size": check.number("transition_size")})
        except KeyError as missing:
            raise CardMetadataError(f"{where}.params: the {law_name} law needs {missing}; "
                                    f"got {', '.join(params) or 'none'}") from None
        except (ValueError, TypeError, ArithmeticError) as error:
            raise CardMetadataError(f"{where}.params: cannot rebuild the {law_name} law ({error})") from None
        interval = check.numbers("interval", required=False)
        if interval is not None and (len(interval) != 2 or interval[0] > interval[1]):
            raise CardMetadataError(f"{where}.interval: must be [low, high], got {data.get('interval')!r}")
        date = data.get("date")
        return cls(
            law=law,
            dataset=check.text("dataset", required=True),
            dataset_config=check.text("dataset_config"),
            dataset_split=check.text("dataset_split"),
            metric=check.text("metric", required=True),
            adapter=check.text("adapter"),
            model=check.text("model"),
            target_size=check.number("target_size"),
            predicted_loss=check.number("predicted_loss"),
            interval=None if interval is None else (interval[0], interval[1]),
            library_version=check.text("library_version") or "unknown",
            # an unquoted date in hand-edited YAML loads as a datetime.date
            date=date.isoformat() if isinstance(date, dt.date) else (check.text("date") or "unknown"),
            extra={k: v for k, v in data.items() if k not in _KNOWN},
        )


def parse_fits(block: Any, source: str = "card") -> list[CardFit]:
    """The fits of a card's ``lensllm`` value (``None`` when the card has none: no fits).

    Raises:
        CardMetadataError: the block is malformed; the message names ``source`` and the field.
    """
    if block is None:
        return []
    if not isinstance(block, list):
        raise CardMetadataError(f"{source}: '{METADATA_KEY}' must be a list of fits, got {type(block).__name__}")
    fits = [CardFit.from_dict(entry, where=f"{source}: {METADATA_KEY}[{i}]") for i, entry in enumerate(block)]
    for fit in fits:
        fit.source = source
    return fits


def merge_fits(existing: Iterable[CardFit], new: Iterable[CardFit]) -> list[CardFit]:
    """``existing`` with each new fit replacing the one of the same :attr:`~CardFit.key` in place, or appended."""
    merged = list(existing)
    for fit in new:
        same = [i for i, old in enumerate(merged) if old.key == fit.key]
        if same:
            merged[same[0]] = fit
            merged = [old for i, old in enumerate(merged) if i not in same[1:]]
        else:
            merged.append(fit)
    return merged


def find_fit(fits: Iterable[CardFit], *, dataset: str, config: str | None = None, split: str | None = None,
             metric: str = "eval_loss", adapter: str | None = None, model: str | None = None) -> CardFit | None:
    """The fit for exactly this dataset, config, split, metric and adapter, or None.

    ``model`` narrows to fits recorded for that model (None: any). A fit for another config or
    adapter is not a substitute, so matching is exact.

    Example:
        >>> fit = find_fit(load_fits("alice/gpt2-tiny"), dataset="imdb", split="test")  # doctest: +SKIP
        >>> fit.law.predict([100_000]) if fit else "train it"  # doctest: +SKIP
    """
    wanted = (dataset, config, split, metric, adapter)
    return next((f for f in fits if f.key == wanted and (model is None or f.model == model)), None)


def fits_from_ranking(ranking: Ranking | Mapping[str, Any], model: str, *, dataset: str, config: str | None = None,
                      split: str | None = None, metric: str = "eval_loss", adapter: str | None = None
                      ) -> list[CardFit]:
    """The fit of ``model`` in a ranking (a :class:`Ranking` or its JSON dict), ready for a card.

    Example:
        >>> ranking = Ranking.read_json("fit.json")  # doctest: +SKIP
        >>> write_card("out/gpt2", fits_from_ranking(ranking, "gpt2", dataset="imdb", split="test"))  # doctest: +SKIP
    """
    if not isinstance(ranking, Ranking):
        ranking = Ranking.from_dict(dict(ranking))
    rows = [c for c in ranking.candidates if c.model == model]
    if not rows:
        known = ", ".join(c.model for c in ranking.candidates) or "no candidates"
        raise CardError(f"model {model!r} is not in this ranking (it has: {known}); pass one of those")
    return [CardFit.from_candidate(row, target_size=ranking.target, dataset=dataset, config=config, split=split,
                                   metric=metric, adapter=adapter) for row in rows]


def eval_results_for(fits: Iterable[CardFit]) -> list[EvalResult]:
    """The observed losses as Hub eval results (not verified): one per (fit, subset size).

    The subset size (and adapter) is part of the metric name, so results of different sizes,
    datasets or adapters sit side by side and re-writing a fit updates its values.
    """
    results = []
    for fit in fits:
        for size, loss in zip(fit.law.sizes_.tolist(), fit.law.losses_.tolist()):
            results.append(EvalResult(
                task_type=TASK_TYPE, dataset_type=fit.dataset, dataset_name=fit.dataset,
                dataset_config=fit.dataset_config, dataset_split=fit.dataset_split,
                metric_type=fit.metric, metric_name=_metric_name(fit, size), metric_value=float(loss),
                verified=False,
            ))
    return results


def is_result_of(result: EvalResult, fit: CardFit) -> bool:
    """Whether ``result`` is an observed loss written for a fit with the same key as ``fit``.

    Zero-shot results are left out: they describe the base model whatever the adapter.
    """
    same_data = (result.task_type, result.dataset_type, result.dataset_config, result.dataset_split,
                 result.metric_type) == (TASK_TYPE, fit.dataset, fit.dataset_config, fit.dataset_split, fit.metric)
    suffix = f" with adapter {fit.adapter}" if fit.adapter else ""
    pattern = f"{re.escape(fit.metric)} after fine-tuning on [0-9.e+]+ examples{re.escape(suffix)}"
    return same_data and re.fullmatch(pattern, result.metric_name or "") is not None


def _metric_name(fit: CardFit, size: float) -> str:
    if size == 0:
        return f"{fit.metric} zero-shot"
    name = f"{fit.metric} after fine-tuning on {_compact(size)} examples"
    return f"{name} with adapter {fit.adapter}" if fit.adapter else name


def _compact(x: float | None) -> float | int | None:
    """Whole numbers as ints, so the YAML reads ``sizes: [200, 400]``."""
    if x is None:
        return None
    x = float(x)
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


class _Checker:
    """Reads typed fields of one entry; each error names the field."""

    def __init__(self, data: Mapping[str, Any], where: str):
        self.data, self.where = data, where

    def _fail(self, key: str, expected: str) -> CardMetadataError:
        return CardMetadataError(f"{self.where}.{key}: expected {expected}, got {self.data.get(key)!r}")

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "a non-empty string" if key in self.data else "a value (the field is missing)")
        return value

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not _is_number(value):
            raise self._fail(key, "a finite number")
        return float(value)

    def numbers(self, key: str, required: bool = True) -> list[float] | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, Sequence) or isinstance(value, str) or not all(_is_number(v) for v in value):
            raise self._fail(key, "a list of finite numbers")
        return [float(v) for v in value]

    def params(self) -> dict[str, float]:
        value = self.data.get("params")
        if not isinstance(value, Mapping) or not value:
            raise self._fail("params", "a mapping of parameter names to numbers")
        for name, number in value.items():
            if not _is_number(number):
                raise CardMetadataError(f"{self.where}.params.{name}: expected a finite number, got {number!r}")
        return {str(k): float(v) for k, v in value.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def as_fit_list(fits: CardFit | Iterable[CardFit]) -> list[CardFit]:
    """``fits`` as a non-empty list of :class:`CardFit`, or a :class:`CardError` saying how to make one."""
    items = [fits] if isinstance(fits, CardFit) else list(fits)
    if not items or not all(isinstance(f, CardFit) for f in items):
        raise CardError("expected one or more CardFit objects; convert a ranking with "
                        "fits_from_ranking(ranking, model, dataset=...)")
    return items
