"""A ranking of candidate models by predicted loss at the target size, and its JSON shape.

``lensllm fit --json``, the selector's ``SelectionResult.to_json`` and the hub cards all use
this one shape::

    {"target": 1638400, "method": "default", "best": "gpt2",
     "ranking": [{"model": "gpt2", "status": "complete", "predicted_loss": 1.9,
                  "interval": [1.8, 2.0], "law": "rectified", "params": {...},
                  "sizes": [0, 200, ...], "losses": [...], "transition_size": 1600.0,
                  "error": null, "score": 1.9, "flops": 1.2e15}, ...]}

Ranked (complete) candidates come first, best first; failed ones follow with their error.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import LensLLMError

__all__ = ["CandidateFit", "Ranking"]


@dataclass
class CandidateFit:
    """One candidate's fit and prediction (or why it failed).

    ``score`` is what the ranking sorts on, lower is better: the predicted loss for laws, the
    observed loss for ZeroShot/SubTuning, minus log(parameters) for ModelSize.
    """

    model: str
    status: str = "complete"  # "complete" or "failed"
    predicted_loss: float | None = None
    interval: list[float] | None = None
    law: str | None = None
    params: dict[str, float] = field(default_factory=dict)
    sizes: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    transition_size: float | None = None
    error: str | None = None
    score: float | None = None
    flops: float | None = None
    source: str | None = None  # where the fit came from when not trained here (e.g. a Hub card)

    @classmethod
    def failed(cls, model: str, error: str, **known: Any) -> CandidateFit:
        return cls(model=model, status="failed", error=error, **known)


@dataclass
class Ranking:
    """Candidates ranked by ``score`` (lower is better) for one target size and method."""

    target: float
    method: str
    candidates: list[CandidateFit]

    def __post_init__(self) -> None:
        ok = [c for c in self.candidates if c.status == "complete" and c.score is not None and math.isfinite(c.score)]
        rest = [c for c in self.candidates if c not in ok]
        for c in rest:
            if c.status == "complete":
                c.status, c.error = "failed", c.error or "no finite score"
        self.candidates = sorted(ok, key=lambda c: c.score) + rest

    @property
    def best(self) -> str | None:
        """The model to fine-tune, or None when no candidate could be ranked."""
        first = self.candidates[0] if self.candidates else None
        return first.model if first is not None and first.status == "complete" else None

    @property
    def ranked(self) -> list[CandidateFit]:
        return [c for c in self.candidates if c.status == "complete"]

    def format(self) -> str:
        """A plain-text table for terminals: rank, model, prediction, interval, transition, law."""
        lines = [f"{'#':>3}  {'model':<40} {'predicted':>9}  {'90% interval':<17} {'transition':>10}  parameters"]
        for i, c in enumerate(self.candidates, start=1):
            if c.status != "complete":
                lines.append(f"{'-':>3}  {c.model:<40} {'failed':>9}  {c.error}")
                continue
            value = c.predicted_loss if c.predicted_loss is not None else c.score
            interval = f"[{c.interval[0]:.3f}, {c.interval[1]:.3f}]" if c.interval else "-"
            transition = f"{c.transition_size:,.0f}" if c.transition_size else "-"
            params = " ".join(f"{k}={v:.4g}" for k, v in c.params.items()) or (c.law or "")
            lines.append(f"{i:>3}  {c.model:<40} {value:>9.4f}  {interval:<17} {transition:>10}  {params}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "method": self.method,
            "best": self.best,
            "ranking": [_clean(asdict(c)) for c in self.candidates],
        }

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ranking:
        try:
            fields = set(CandidateFit.__dataclass_fields__)
            candidates = [CandidateFit(**{k: v for k, v in row.items() if k in fields}) for row in data["ranking"]]
            return cls(target=data["target"], method=data["method"], candidates=candidates)
        except (KeyError, TypeError) as error:
            raise LensLLMError(f"not a lensllm ranking ({error}); pass what 'lensllm fit --json' writes") from None

    @classmethod
    def read_json(cls, path: str | Path) -> Ranking:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LensLLMError(f"{path}: no such file; pass what 'lensllm fit --json' writes") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise LensLLMError(f"{path}: not valid JSON ({error}); pass what 'lensllm fit --json' writes") from None
        return cls.from_dict(data)


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
