"""What a selection returns: the ranking (with each candidate's Fit) as a table, the pick, the compute, outputs.

Example:
    >>> result = selector.run()  # doctest: +SKIP
    >>> result.pick_statement()  # doctest: +SKIP
    'best: EleutherAI/pythia-70m, P(best) 0.93'
    >>> result.ranking[["model", "predicted_loss", "interval_low", "interval_high", "p_best"]]  # doctest: +SKIP
    >>> result.to_json("selection.json"); result.plot("selection.png")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._utils import atomic_write_text, display, json_safe
from ..engine.curves import CurveTable
from ..errors import LensLLMError
from ..engine.ranking import Ranking

__all__ = ["SelectionResult"]

#: Columns of :attr:`SelectionResult.ranking`, in order.
COLUMNS = ["model", "predicted_loss", "interval_low", "interval_high", "p_best", "law", "transition_size", "flops",
           "status", "source", "warnings", "error"]


@dataclass
class SelectionResult:
    """The outcome of :meth:`LensLLMSelector.run`.

    Attributes:
        fits: the :class:`~lensllm_hf.engine.ranking.Ranking`: per candidate its :class:`~lensllm_hf.engine.fit.Fit`,
            prediction, interval and P(best) at the target; the object behind ``ranking``, the
            plot and the cards. Its JSON is what ``lensllm fit --json`` writes.
        table: the observed losses, candidate x subset size (NaN: not run).
        strategy: the policy that chose the runs (``"grid"``, ``"adaptive"``, ``"halving"``).
        flops: FLOPs of the runs the decision used (the records' ``total_flos``).
        full_flops: FLOPs of fine-tuning every ranked candidate on ``target_size`` examples,
            extrapolated per candidate from its FLOPs per example.
        bought: per candidate, the subset sizes run (0 is the zero-shot evaluation).
        metric: what the losses are (``"eval_loss"`` or e.g. ``"1 - eval_accuracy"``).
        info: dataset name, config and split, adapters per candidate (for model cards).

    The target size and the interval level are the ranking's (:attr:`target_size`, :attr:`level`).

    Example:
        >>> result.best, f"{result.fraction_saved:.0%}"  # doctest: +SKIP
        ('gpt2', '91%')
    """

    fits: Ranking
    table: CurveTable | None
    strategy: str = "grid"
    flops: float = 0.0
    full_flops: float | None = None
    bought: dict[str, list[int]] = field(default_factory=dict)
    metric: str = "eval_loss"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def target_size(self) -> float:
        """The dataset size the predictions are for: the ranking's target."""
        return self.fits.target

    @property
    def level(self) -> float:
        """The level of every interval: the ranking's."""
        return self.fits.level

    def pick_statement(self) -> str:
        """The pick in one line, with its P(best) and the near-ties (``Ranking.pick_statement``)."""
        return self.fits.pick_statement()

    @property
    def best(self) -> str | None:
        """The candidate to fine-tune, or None when none could be ranked."""
        return self.fits.best

    @property
    def fraction_saved(self) -> float | None:
        """1 - flops / full_flops: the compute saved against fine-tuning every candidate on the target."""
        if not self.full_flops or not math.isfinite(self.full_flops):
            return None
        return 1.0 - self.flops / self.full_flops

    @property
    def ranking(self):
        """The ranking as a pandas DataFrame, best first, one row per candidate (failed ones last).

        Columns: model, predicted_loss, interval_low, interval_high, p_best (the probability
        that the candidate is the best at the target), law, transition_size (the smallest size
        its fit used), flops, status, source (a published card, when reused), warnings, error;
        the index is the rank (1 = best), failed candidates have none. The numbers are
        computed from each row's Fit, so they equal those of ``lensllm predict`` on the JSON.
        """
        import pandas as pd

        rows = []
        for c in self.fits.candidates:
            interval = c.interval or [None, None]
            rows.append([c.model, c.estimate, interval[0], interval[1], c.p_best, c.law, c.transition_size, c.flops,
                         c.status, c.source, "; ".join(c.warnings), c.error])
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame.index = pd.Index([i + 1 if s == "complete" else None for i, s in enumerate(frame["status"])],
                               name="rank", dtype="Int64")
        return frame

    def to_dict(self) -> dict[str, Any]:
        """The ranking JSON of ``lensllm fit --json`` (same keys, same rows, each with its Fit), plus
        a ``selection`` block (strategy, metric, compute, runs bought, dataset) that readers of
        ranking JSON ignore."""
        data = self.fits.to_dict()
        data["selection"] = json_safe({
            "strategy": self.strategy,
            "metric": self.metric,
            "flops": self.flops,
            "full_flops": self.full_flops,
            "fraction_saved": self.fraction_saved,
            "bought": self.bought,
            **{k: v for k, v in self.info.items() if k != "adapters"},
        })
        return data

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically; ``Ranking.read_json`` and ``lensllm predict`` read it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    def to_markdown(self) -> str:
        """A Markdown table of the ranking (with P(best)), the pick statement and the compute summary."""
        pct = f"{100 * self.level:g}%"
        lines = [f"| # | model | predicted loss | {pct} interval | P(best) | law | fitted from | FLOPs spent "
                 "| status |",
                 "|--:|:--|--:|:--|--:|:--|--:|--:|:--|"]
        for i, c in enumerate(self.fits.candidates, start=1):
            if c.status != "complete":
                lines.append(f"| - | {_md(c.model)} | - | - | - | - | - | {_num(c.flops)} | "
                             f"failed: {_md(c.error or '')} |")
                continue
            interval = f"[{c.interval[0]:.3f}, {c.interval[1]:.3f}]" if c.interval else "-"
            p_best = f"{c.p_best:.2f}" if c.p_best is not None else "-"
            source = f" ({c.source})" if c.source else ""
            lines.append(f"| {i} | {_md(c.model)} | {c.estimate:.4f} | {interval} | {p_best} | {_md(c.law or '-')} | "
                         f"{_num(c.transition_size)} | {_num(c.flops)} | complete{_md(source)} |")
        saved = self.fraction_saved
        lines.append("")
        lines.append(f"Target: {self.target_size:,.0f} examples; method: {self.fits.method}; "
                     f"strategy: {self.strategy}; metric: {self.metric}.")
        lines.append(f"FLOPs spent: {self.flops:.3g}" + (f" ({saved:.1%} saved against fine-tuning every candidate "
                                                           f"on the target, {self.full_flops:.3g})" if saved is not None
                                                           else "") + ".")
        warned = [(c.model, w) for c in self.fits.ranked for w in c.warnings]
        lines.extend(f"Warning ({_md(model)}): {_md(w)}" for model, w in warned)
        lines.append("")
        lines.append(f"**{_md(self.pick_statement())}**")
        return "\n".join(lines)

    def plot(self, path: str | Path | None = None, **kwargs: Any):
        """One PNG: loss against D (log-log) per candidate, fit, interval, transition, target.

        Returns the matplotlib Figure; with ``path`` it is also saved there.
        """
        from ..plotting import plot_selection

        return plot_selection(self, path, **kwargs)

    def card_fits(self, model: str | None = None) -> list:
        """The model-card fits of one candidate (default: the best), for ``hub_cards.push_fits``.

        Example:
            >>> from lensllm_hf.hub_cards import push_fits
            >>> push_fits("alice/pythia-70m", result.card_fits("EleutherAI/pythia-70m"))  # doctest: +SKIP
        """
        from ..hub_cards import fits_from_ranking

        model = model or self.best
        if model is None:
            raise LensLLMError("no candidate was ranked, so there is no fit to publish")
        adapters: Mapping[str, str | None] = self.info.get("adapters", {})
        return fits_from_ranking(self.fits, model, dataset=self.info.get("dataset") or "custom",
                                 config=self.info.get("dataset_config"), split=self.info.get("dataset_split"),
                                 metric=self.metric, adapter=adapters.get(model))

    def write_cards(self, folder: str | Path) -> dict[str, Path]:
        """A model card (README.md with the fitted law) per ranked candidate, under ``folder/<model>/``.

        Through :mod:`lensllm_hf.hub_cards`; push one with ``lensllm card push`` or
        ``hub_cards.push_fits(repo, result.card_fits(model))``. Returns the card path per candidate.
        """
        from ..hub_cards import write_card

        # A baseline ranking (ZeroShot...) has no fit; a published fit has its card already.
        models = [c.model for c in self.fits.ranked if c.fit is not None and not c.source]
        folders = {model: card_folder_name(model) for model in models}
        # Names that differ only in case ("GPT2", "gpt2") would share one folder on macOS and
        # Windows: those take the hashed form, which tells them apart everywhere.
        seen = Counter(name.lower() for name in folders.values())
        folders = {model: card_folder_name(model, hashed=True) if seen[name.lower()] > 1 else name
                   for model, name in folders.items()}
        written: dict[str, Path] = {}
        for model in models:
            folder_of = Path(folder) / folders[model]
            folder_of.mkdir(parents=True, exist_ok=True)
            written[model] = write_card(folder_of, self.card_fits(model))
        return written

    def __repr__(self) -> str:
        ranked = ", ".join(_short(c.model) for c in self.fits.ranked[:5])
        return (f"SelectionResult(best={self.best!r}, ranked=[{ranked}], strategy={self.strategy!r}, "
                f"flops={self.flops:.3g})")

    def _repr_markdown_(self) -> str:  # notebooks show the table
        return self.to_markdown()


#: Longest readable part of a card folder name; the whole name stays far below the 255 bytes file systems allow.
_FOLDER_READABLE = 80


def card_folder_name(model: str, *, hashed: bool = False) -> str:
    """The folder of ``model``'s card under ``write_cards``: readable, safe anywhere, one per name.

    A plain Hub ID keeps its shape (``org/name`` -> ``org--name``, as the Hub cache does); any
    other name (other characters, ``--`` already in it, too long), or any name when ``hashed``,
    gets a readable part plus a lower-case hash of the exact name, so no two candidates share a
    folder, on case-insensitive file systems too, and a 300-character name works.

    Example:
        >>> card_folder_name("EleutherAI/pythia-70m")
        'EleutherAI--pythia-70m'
        >>> len(card_folder_name("x" * 300)) <= _FOLDER_READABLE + 11
        True
    """
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", model.replace("/", "--")).strip("-.") or "model"
    plain = re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)?", model) is not None
    if plain and not hashed and "--" not in model and len(readable) <= _FOLDER_READABLE:
        return readable
    digest = hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{readable[:_FOLDER_READABLE].rstrip('-.')}-{digest}"


def _md(text: str) -> str:
    return display(text).replace("|", "\\|")


def _short(name: str, limit: int = 60) -> str:
    name = display(name)
    return name if len(name) <= limit else name[: limit - 1] + "…"



def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:,.0f}" if abs(value) < 1e6 else f"{value:.3g}"
