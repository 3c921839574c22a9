"""``lensllm predict``: one candidate's predicted loss and interval at any size, from its saved Fit.

    lensllm predict SOURCE --model M --at N [--level L] [--dataset D] [--json OUT]

SOURCE is a selection or fit JSON (what ``lensllm select`` and ``lensllm fit --json`` write), a
model card (a model folder or its README.md, see ``lensllm card``), or a Hub repo ID whose card
holds fits (``alice/tiny``: read as ``lensllm card show`` reads it). A SOURCE that is no file or
folder here is taken for a repo ID unless it reads as a path (``.json`` or ``.md`` at the end, a
leading ``/``, ``.`` or ``~``, or more than one ``/``). The prediction comes from
the very :class:`~lensllm_hf.engine.fit.Fit` the ranking made, so at the ranking's target and level it
is the ranking's number, exactly. The JSON written with ``--json``::

    {"model": "gpt2", "at": 1638400, "predicted_loss": 2.31, "interval": [2.2, 2.43], "level": 0.9,
     "law": "local-loglog"}
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._utils import atomic_write_text, check_output_file, check_prediction, display, load_json, read_bounded
from ..engine.curves import MAX_SUBSET_SIZE
from ..engine.fit import Prediction
from ..errors import LensLLMError

__all__ = ["ModelPrediction", "add_parser", "predict", "run"]

_SOURCE_HINT = ("pass a selection or fit JSON ('lensllm select', 'lensllm fit --json'), a model folder / README.md "
                "or a Hub repo ID")


@dataclass(frozen=True)
class ModelPrediction(Prediction):
    """One prediction of ``lensllm predict``: the Fit's :class:`~lensllm_hf.engine.fit.Prediction`
    with the model and law it is for and what its reader must know (its JSON is :meth:`to_dict`)."""

    model: str = ""
    law: str = ""
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "at": _compact(self.at), "predicted_loss": self.predicted_loss,
                "interval": list(self.interval), "level": self.level, "law": self.law}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict one model's loss and interval at a size from a saved fit",
        description="Predict one candidate's loss and its interval at --at examples from the fit saved in a "
                    "selection or fit JSON or in a model card. At the ranking's own target and level the numbers "
                    "are the ranking's.")
    parser.add_argument("source", metavar="SOURCE",
                        help="selection.json / 'lensllm fit --json' output, a model folder or README.md, or a Hub "
                             "repo ID")
    parser.add_argument("--model", required=True, metavar="M", help="the candidate, as named in SOURCE")
    parser.add_argument("--at", required=True, metavar="N",
                        help="training-set size to predict at (e.g. 1638400 or 1.6e6)")
    parser.add_argument("--level", metavar="L", help="interval level, e.g. 0.9 (default: the one SOURCE was made with)")
    parser.add_argument("--dataset", metavar="D", help="which fit of a card: its dataset (needed when it has several)")
    parser.add_argument("--config", metavar="C", help="which fit of a card: its dataset configuration")
    parser.add_argument("--split", metavar="S", help="which fit of a card: its dataset split")
    parser.add_argument("--adapter", metavar="A", help="which fit of a card: its adapter (e.g. 'lora r=8')")
    parser.add_argument("--json", metavar="OUT", help="also write the prediction as JSON to this file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Every argument is checked before anything is read: one line, exit 2.
    at = _positive(args.at, "--at")
    level = None if args.level is None else _level(args.level)
    if args.json is not None:
        check_output_file(args.json, "prediction JSON")
    card_filters = {"dataset": args.dataset, "config": args.config, "split": args.split, "adapter": args.adapter}
    prediction = predict(args.source, args.model, at, level=level, **card_filters)
    low, high = prediction.interval
    print(f"{display(prediction.model)} at {prediction.at:,.0f} examples: "
          f"predicted loss {prediction.predicted_loss:.4g}, "
          f"{100 * prediction.level:g}% interval [{low:.4g}, {high:.4g}] ({display(prediction.law)} law)")
    for note in prediction.warnings:
        print(f"lensllm predict: warning: {display(note)}", file=sys.stderr)
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(prediction.to_dict(), indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {display(args.json)}")
    return 0


def predict(source: str | Path, model: str, at: float, *, level: float | None = None, dataset: str | None = None,
            config: str | None = None, split: str | None = None, adapter: str | None = None) -> ModelPrediction:
    """``model``'s predicted loss and ``level`` interval at ``at`` examples, from the Fit saved in ``source``.

    Args:
        source: a selection or fit JSON, a model card (a model folder or its README.md), or a Hub repo ID.
        model: the candidate's name in ``source``.
        at: the training-set size.
        level: the interval level (default: the ranking's or the card's).
        dataset, config, split, adapter: choose among several fits of one card.

    Raises:
        LensLLMError: one line naming the problem and the fix.

    Example:
        >>> predict("selection.json", "gpt2", 1_638_400).interval  # doctest: +SKIP
        (2.2, 2.43)
    """
    from ..engine.methods.base import extrapolation_warnings

    fit, source_level, name = _find(str(source), model, dataset=dataset, config=config, split=split, adapter=adapter)
    level = source_level if level is None else level
    prediction = check_prediction(fit, at, level, f"{_shown(Path(source))}: the {display(fit.law)} fit of {_name(name)}")
    notes = tuple(dict.fromkeys([*fit.warnings, *extrapolation_warnings(fit, at)]))
    return ModelPrediction(**vars(prediction), model=name, law=fit.law, warnings=notes)


def _find(source: str, model: str, **card_filters: str | None):
    """(fit, level, model name) of ``model`` in the ranking JSON or model card at ``source`` (a path or repo ID)."""
    path = Path(source)
    try:  # anything here that is not a folder is a file to read (a FIFO or a device: one line, never a repo ID)
        is_dir = path.is_dir()
        is_file = not is_dir and path.exists()
    except OSError:  # a name too long for a path
        is_dir = is_file = False
    if not (is_dir or is_file):
        if _reads_as_path(source):
            raise LensLLMError(f"{_shown(path)}: no such file or folder; {_SOURCE_HINT}")
        return _from_card(source, model, card_filters)  # a Hub repo ID, read as 'lensllm card show' reads it
    if is_file and path.suffix.lower() != ".md":
        data = _json_or_none(path)
        if data is not None:
            return _from_ranking(path, data, model, card_filters)
        if path.name != "README.md":
            raise LensLLMError(f"{_shown(path)}: neither JSON nor a model card (README.md); {_SOURCE_HINT}")
    return _from_card(path, model, card_filters)


def _json_or_none(path: Path) -> Any:
    """The JSON in ``path``, or None when it is not JSON (then it may be a model card)."""
    try:
        text = read_bounded(path, _shown(path)).decode("utf-8")
    except UnicodeDecodeError:
        raise LensLLMError(f"{_shown(path)}: not a text file; {_SOURCE_HINT}") from None
    except OSError as error:
        raise LensLLMError(f"{_shown(path)}: cannot read it ({error.strerror or error}); {_SOURCE_HINT}") from None
    try:
        return load_json(text, _shown(path))
    except json.JSONDecodeError:
        return None


def _from_ranking(path: Path, data: Any, model: str, card_filters: dict[str, str | None]):
    from ..engine.ranking import Ranking

    given = [f"--{k}" for k, v in card_filters.items() if v is not None]
    if given:
        raise LensLLMError(f"{' '.join(given)}: only for a model card with several fits; {_shown(path)} is a ranking "
                           "JSON with one fit per model (leave them out)")
    ranking = Ranking.from_dict(data, where=_shown(path))
    rows = [c for c in ranking.candidates if c.model == model]
    if not rows:
        raise LensLLMError(f"{_shown(path)}: no model {_name(model)}; it ranks "
                           f"{_names(c.model for c in ranking.candidates)}; pass one of those to --model")
    row = rows[0]
    if row.fit is None:
        why = f"its fit failed ({display(row.error)})" if row.status != "complete" else \
            f"the {display(ranking.method)} method ranks it without a fitted law"
        raise LensLLMError(f"{_shown(path)}: {_name(model)} has no fit to predict from: {why}")
    return row.fit, ranking.level, row.model


def _reads_as_path(source: str) -> bool:
    """Whether a source that is not here was meant as a local path rather than a Hub repo ID."""
    return (source.lower().endswith((".json", ".md")) or source.startswith(("/", ".", "~"))
            or source.count("/") > 1 or "\\" in source)


def _from_card(path: Path | str, model: str, card_filters: dict[str, str | None]):
    from ..hub_cards import load_fits

    fits = load_fits(path)
    if not fits:
        raise LensLLMError(f"{_shown(path)}: its model card has no lensllm fits; write one with 'lensllm card write'")
    mine = [f for f in fits if f.model in (model, None)]
    if not mine:
        raise LensLLMError(f"{_shown(path)}: no fit for model {_name(model)}; the card has fits for "
                           f"{_names(f.model for f in fits)}; pass one of those to --model")
    wanted = {"dataset": "dataset", "config": "dataset_config", "split": "dataset_split", "adapter": "adapter"}
    chosen = [f for f in mine if all(v is None or getattr(f, wanted[k]) == v for k, v in card_filters.items())]
    if len(chosen) != 1:
        listed = "; ".join(_describe(f) for f in mine)
        if not chosen:
            raise LensLLMError(f"{_shown(path)}: no fit of {_name(model)} matches; it has: {listed}")
        raise LensLLMError(f"{_shown(path)}: {len(chosen)} fits of {_name(model)} match ({listed}); choose one with "
                           "--dataset (and --config, --split, --adapter)")
    card_fit = chosen[0]
    return card_fit.fit, card_fit.level, model


def _describe(card_fit: Any) -> str:
    parts = [f"--dataset {card_fit.dataset}"]
    for flag, value in (("--config", card_fit.dataset_config), ("--split", card_fit.dataset_split),
                        ("--adapter", card_fit.adapter)):
        if value is not None:
            parts.append(f"{flag} {value}")
    return display(" ".join(parts))


def _positive(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LensLLMError(f"{flag} {display(text)!r}: not a number; pass a number of examples, e.g. 1638400") from None
    if not 0 < value <= MAX_SUBSET_SIZE:
        raise LensLLMError(f"{flag} {display(text)}: must be a number of examples above 0 and at most "
                           f"{MAX_SUBSET_SIZE:.0e} (no data set is larger)")
    return value


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise LensLLMError(f"--level {display(text)!r}: must be a number between 0 and 1 (e.g. 0.9 for 90 % intervals)")
    return value


def _name(model: str) -> str:
    return repr(_short(model))


def _names(models) -> str:
    names = [_short(m) if m is not None else "(unnamed)" for m in models]
    shown = ", ".join(repr(n) for n in names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "") if names else "nothing"


def _short(text: str, limit: int = 80) -> str:
    text = display(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown(path: Path | str) -> str:
    return _short(str(path), 120)


def _compact(x: float) -> float | int:
    """A whole number of examples as an int in the JSON (``"at": 1638400``)."""
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)
