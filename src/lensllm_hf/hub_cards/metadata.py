"""One fit as model-card metadata: :class:`CardFit` and the ``lensllm`` block of the YAML.

A card's ``lensllm`` key holds a list of entries, one per (dataset, config, split, metric,
adapter). Each carries the one :class:`~lensllm_hf.engine.fit.Fit` value the ranking made, as
``Fit.to_dict()`` writes it, so a fit read back from a card predicts and gives intervals
exactly as the ranking did; :meth:`CardFit.to_dict` writes one entry (``None`` values left out)::

    lensllm:
    - model: gpt2
      dataset: imdb                # a Hub dataset ID or a short description
      dataset_config: plain_text
      dataset_split: test
      metric: eval_loss
      adapter: lora r=8            # only when fine-tuned through an adapter
      target_size: 1638400
      level: 0.9
      predicted_loss: 2.31         # the fit's, at target_size: for readers; recomputed when read
      interval: [2.2, 2.43]
      fit:                         # Fit.to_dict(): law, params, points, which were used, interval terms
        law: local-loglog
        params: {a: 1.52, b: -0.061}
        sizes: [0, 200, 400, 800, 1600, 3200]
        losses: [4.2, 3.4, 3.3, 3.2, 3.05, 2.9]
        used: [false, false, true, true, true, true]
        terms: {noise_var: 0.0001, largest_size: 3200, extrapolation_sd_per_doubling: 0.022, ...}
        warnings: []
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from huggingface_hub import EvalResult

from .. import __version__
from .._utils import check_prediction
from ..engine.fit import Fit, FitError, Prediction, check_level
from ..engine.ranking import CandidateFit, Ranking
from ..errors import BoundsError, CardError, CardMetadataError, LensLLMError

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
_PREDICTION = ("target_size", "level", "predicted_loss", "interval")
_PROVENANCE = ("library_version", "date")
_KNOWN = {*_IDENTITY, *_PREDICTION, *_PROVENANCE, "fit"}
# The fields of entries written before the fit value existed: such an entry cannot be rebuilt.
_OLD_LAYOUT = {"law", "params", "sizes", "losses", "transition_size"}


def _today() -> str:
    return dt.datetime.now(dt.UTC).date().isoformat()


@dataclass(eq=False)
class CardFit:
    """One entry of a card's ``lensllm`` block: a :class:`~lensllm_hf.engine.fit.Fit` with what it was fitted on.

    Attributes:
        fit: the fit, exactly as the ranking had it; ``card_fit.predict(...)`` and
            ``card_fit.predict_interval(...)`` are its own.
        dataset: Hub dataset ID (``"imdb"``) or a short description of the data.
        dataset_config: dataset configuration, if any.
        dataset_split: the split the losses were measured on, if known.
        metric: the metric the losses are (``"eval_loss"``).
        adapter: the adapter fine-tuned instead of the full model (e.g. ``"lora r=8"``), if any.
        model: the model the fit is for (Hub ID or path).
        target_size: the full dataset size the ranking predicted for.
        level: the interval level of the ranking (0.9: 90 % intervals).
        library_version: the ``lensllm_hf`` version that made the fit.
        date: the day the fit was made, ISO format.
        extra: fields of the entry this version does not know; written back unchanged.
        source: where the fit was read from (a repo ID or a README path); not written.

    Example:
        >>> fit = Fit("power", {"B": 4.0, "beta": 0.5, "E": 1.0}, (100.0, 400.0), (1.4, 1.2), (True, True),
        ...           {"noise_var": 1e-4, "largest_size": 400.0, "extrapolation_sd_per_doubling": 0.02})
        >>> card_fit = CardFit(fit, dataset="imdb", dataset_split="test", target_size=1600)
        >>> card_fit.key
        ('imdb', None, 'test', 'eval_loss', None)
        >>> CardFit.from_dict(card_fit.to_dict()).interval == card_fit.interval
        True
    """

    fit: Fit
    dataset: str
    dataset_config: str | None = None
    dataset_split: str | None = None
    metric: str = "eval_loss"
    adapter: str | None = None
    model: str | None = None
    target_size: float | None = None
    level: float = 0.9
    library_version: str = __version__
    date: str = field(default_factory=_today)
    extra: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fit, Fit):
            raise CardError(f"CardFit.fit must be a lensllm_hf.engine.fit.Fit, got {type(self.fit).__name__}")
        self.level = check_level(self.level)

    @property
    def key(self) -> tuple[str, str | None, str | None, str, str | None]:
        """What a card holds one fit for: (dataset, config, split, metric, adapter)."""
        return (self.dataset, self.dataset_config, self.dataset_split, self.metric, self.adapter)

    @property
    def law(self) -> str:
        """The fitted law's name (``fit.law``)."""
        return self.fit.law

    @property
    def prediction(self) -> Prediction | None:
        """The fit's prediction at :attr:`target_size` and :attr:`level` (None without a target)."""
        return None if self.target_size is None else self.fit.prediction(self.target_size, self.level)

    @property
    def predicted_loss(self) -> float | None:
        """The loss of :attr:`prediction`, or None."""
        prediction = self.prediction
        return None if prediction is None else prediction.predicted_loss

    @property
    def interval(self) -> tuple[float, float] | None:
        """The interval of :attr:`prediction`, or None."""
        prediction = self.prediction
        return None if prediction is None else prediction.interval

    def predict(self, sizes) -> np.ndarray:
        """The fit's loss at each training-subset size."""
        return self.fit.predict(sizes)

    def predict_interval(self, sizes, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The fit's interval at each size (default level: the card's :attr:`level`)."""
        return self.fit.predict_interval(sizes, self.level if level is None else level)

    # -- building -----------------------------------------------------------------------
    @classmethod
    def from_candidate(cls, candidate: CandidateFit, *, dataset: str, config: str | None = None,
                       split: str | None = None, metric: str = "eval_loss", adapter: str | None = None) -> CardFit:
        """A card entry from one row of a :class:`~lensllm_hf.engine.ranking.Ranking`: the row's own Fit,
        at its ranking's target and level."""
        if candidate.status != "complete":
            raise CardError(f"{candidate.model}: its fit failed ({candidate.error}); there is no fit to write")
        if candidate.fit is None:
            raise CardError(f"{candidate.model}: this ranking has no fitted law for it (a baseline such as ZeroShot "
                            "ranks without one); rank the candidates with a scaling law first")
        prediction = candidate.prediction
        if prediction is None:
            raise CardError(f"{candidate.model}: the row belongs to no ranking, so it has no target or level; "
                            "take it from a Ranking")
        return cls(fit=candidate.fit, dataset=dataset, dataset_config=config, dataset_split=split, metric=metric,
                   adapter=adapter, model=candidate.model, target_size=prediction.at, level=prediction.level)

    def to_candidate_fit(self, target_size: float | None = None) -> CandidateFit:
        """The fit as a ranking row scored at ``target_size`` (default: the card's own).

        This is how a selector uses a published fit instead of training the candidate: the row
        carries this very Fit, so in a :class:`~lensllm_hf.engine.ranking.Ranking` at the card's
        target and level its prediction and interval are the ones the card's ranking had.
        """
        target = self.target_size if target_size is None else float(target_size)
        if target is None:
            raise CardError(f"{self.model or 'this fit'}: the card has no target size; pass target_size")
        return CandidateFit(model=self.model or "", fit=self.fit, score=float(self.fit.predict([target])[0]),
                            flops=0.0, source=f"hub card {self.source}" if self.source else "hub card",
                            warnings=list(self.fit.warnings))

    # -- (de)serialising ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The entry of the ``lensllm`` block: plain YAML-able data, ``None`` values left out."""
        interval = self.interval
        entry: dict[str, Any] = {
            "model": self.model,
            "dataset": self.dataset,
            "dataset_config": self.dataset_config,
            "dataset_split": self.dataset_split,
            "metric": self.metric,
            "adapter": self.adapter,
            "target_size": _compact(self.target_size),
            "level": self.level,
            "predicted_loss": self.predicted_loss,
            "interval": None if interval is None else list(interval),
            "fit": self.fit.to_dict(),
            "library_version": self.library_version,
            "date": self.date,
        }
        entry.update({k: v for k, v in self.extra.items() if k not in entry})
        return {k: v for k, v in entry.items() if v is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "lensllm[0]") -> CardFit:
        """Read one entry, checking every field; errors name the field, e.g. ``lensllm[2].fit.sizes``.

        ``predicted_loss`` and ``interval`` are not read: they are recomputed from the fit.
        """
        if not isinstance(data, Mapping):
            raise CardMetadataError(f"{where} must be a mapping of fit fields, got {type(data).__name__}")
        if "fit" not in data and _OLD_LAYOUT & set(data):
            raise CardMetadataError(f"{where}.fit: missing; this entry was written by an earlier lensllm_hf (law and "
                                    "params without the fit's interval terms); fit again and rewrite it with "
                                    "'lensllm card write'")
        try:
            fit = Fit.from_dict(data.get("fit"), where=f"{where}.fit")
        except FitError as error:
            raise CardMetadataError(str(error), field=f"{where}.fit") from None
        check = _Checker(data, where)
        try:
            level = check_level(data.get("level", 0.9), f"{where}.level")
        except LensLLMError as error:
            raise CardMetadataError(str(error), field=f"{where}.level") from None
        date = data.get("date")
        target_size = check.size("target_size")
        if target_size is not None:  # a hand-edited parameter must not read as an infinite loss
            try:
                check_prediction(fit, target_size, level, f"{where}.fit")
            except BoundsError as error:
                raise CardMetadataError(str(error), field=f"{where}.fit") from None
        return cls(
            fit=fit,
            dataset=check.text("dataset", required=True),
            dataset_config=check.text("dataset_config"),
            dataset_split=check.text("dataset_split"),
            metric=check.text("metric", required=True),
            adapter=check.text("adapter"),
            model=check.text("model"),
            target_size=target_size,
            level=level,
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
        >>> fit.predict([100_000]) if fit else "train it"  # doctest: +SKIP
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
        known = ", ".join(repr(c.model) for c in ranking.candidates) or "no candidates"
        raise CardError(f"model {model!r} is not in this ranking (it has: {known}); pass one of those")
    return [CardFit.from_candidate(row, dataset=dataset, config=config, split=split, metric=metric, adapter=adapter)
            for row in rows]


def eval_results_for(fits: Iterable[CardFit]) -> list[EvalResult]:
    """The observed losses as Hub eval results (not verified): one per (fit, subset size).

    The subset size (and adapter) is part of the metric name, so results of different sizes,
    datasets or adapters sit side by side and re-writing a fit updates its values.
    """
    results = []
    for fit in fits:
        for size, loss in zip(fit.fit.sizes, fit.fit.losses, strict=True):
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
        shown = repr(self.data.get(key))
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return CardMetadataError(f"{self.where}.{key}: expected {expected}, got {shown}", field=f"{self.where}.{key}")

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self._fail(key, "a non-empty string" if key in self.data else "a value (the field is missing)")
        return value

    def size(self, key: str) -> float | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not _is_number(value) or value <= 0:
            raise self._fail(key, "a finite number > 0")
        return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def as_fit_list(fits: CardFit | Iterable[CardFit]) -> list[CardFit]:
    """``fits`` as a non-empty list of :class:`CardFit`, or a :class:`CardError` saying how to make one."""
    items = [fits] if isinstance(fits, CardFit) else list(fits)
    if not items or not all(isinstance(f, CardFit) for f in items):
        raise CardError("expected one or more CardFit objects; convert a ranking with "
                        "fits_from_ranking(ranking, model, dataset=...)")
    return items
