"""Selection methods: turn a curve table (every candidate's points up to the budget) into a ranking.

A method sees only the columns a budget allows (``CurveTable.up_to``). Law methods fit each
candidate on its own and predict the loss at the target; the baselines of DESIGN.md §2 rank
by something observed. ``default`` is the method the selector uses (see :class:`DefaultMethod`).

Example:
    >>> table = CurveTable.read_csv("flan.csv").up_to(12_800)
    >>> rank(table, target=1_638_400).best
    'google/mt5-large'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .curves import CurveError, CurveTable
from .errors import LensLLMError
from .laws import AtSLaw, LensLLMLaw, PowerLaw, RectifiedLaw, ScalingLaw
from .ranking import CandidateFit, Ranking

__all__ = ["METHODS", "Method", "LawMethod", "rank"]

#: Interval level used throughout (a 90 % interval).
LEVEL = 0.9


class Method:
    """Ranks the candidates of a table; ``predicts_loss`` is False for the baselines."""

    name: str
    predicts_loss = True

    def rank(self, table: CurveTable, target: float, level: float = LEVEL) -> Ranking:
        raise NotImplementedError

    def sizes_used(self, table: CurveTable) -> np.ndarray:
        """The subset sizes whose fine-tuning this method needs (for its compute cost)."""
        return table.sizes[table.sizes > 0]


@dataclass
class LawMethod(Method):
    """Fit one law per candidate and rank by its predicted loss at the target."""

    name: str
    make_law: Callable[[CurveTable, int], ScalingLaw]

    def rank(self, table, target, level=LEVEL):
        return Ranking(target, self.name, [self.fit_one(table, i, target, level) for i in range(len(table.models))])

    def fit_one(self, table: CurveTable, row: int, target: float, level: float = LEVEL) -> CandidateFit:
        model = table.models[row]
        try:
            sizes, losses = table.points(row)
            law = _fitted(self.make_law(table, row), sizes, losses)
            predicted = float(law.predict([target])[0])
            lo, hi = law.predict_interval([target], level)
        except (LensLLMError, ValueError, np.linalg.LinAlgError) as error:
            return CandidateFit.failed(model, str(error), **_observed(table, row))
        if not math.isfinite(predicted) or predicted <= 0:
            return CandidateFit.failed(model, f"{self.name}: the fit predicts a non-positive or infinite loss "
                                              f"({predicted:.4g}); add points or use another method", **_observed(table, row))
        return CandidateFit(
            model=model,
            predicted_loss=predicted,
            interval=[float(lo[0]), float(hi[0])],
            law=law.name,
            params=law.params_,
            sizes=law.sizes_.tolist(),
            losses=law.losses_.tolist(),
            transition_size=law.transition_size_,
            score=predicted,
            flops=_flops(table, row, self.sizes_used(table)),
        )


_FIT_CACHE: dict[tuple, ScalingLaw] = {}


def _fitted(law: ScalingLaw, sizes: np.ndarray, losses: np.ndarray) -> ScalingLaw:
    """Fit ``law``, reusing an identical earlier fit: benchmarks and the adaptive loop refit the
    same points many times."""
    key = (type(law), repr(sorted(vars(law).items())), sizes.tobytes(), losses.tobytes())
    if key not in _FIT_CACHE:
        if len(_FIT_CACHE) > 20_000:
            _FIT_CACHE.clear()
        _FIT_CACHE[key] = law.fit(sizes, losses)
    return _FIT_CACHE[key]


@dataclass
class ObservedMethod(Method):
    """A baseline that ranks by an observed quantity and predicts no loss."""

    name: str
    score_of: Callable[[CurveTable, int], float]
    used: Callable[[CurveTable], np.ndarray]
    predicts_loss: bool = False

    def rank(self, table, target, level=LEVEL):
        rows = []
        for i, model in enumerate(table.models):
            try:
                score = float(self.score_of(table, i))
                if not math.isfinite(score):
                    raise CurveError(f"{table.source}: model {model!r}: {self.name} needs a finite value "
                                     f"({table.problems.get(model, 'missing')})")
            except LensLLMError as error:
                rows.append(CandidateFit.failed(model, str(error), **_observed(table, i)))
                continue
            rows.append(CandidateFit(model=model, score=score, law=self.name, flops=_flops(table, i, self.used(table)),
                                     **_observed(table, i)))
        return Ranking(target, self.name, rows)

    def sizes_used(self, table):
        return self.used(table)


def _zero_shot(table: CurveTable, row: int) -> float:
    return float(table.column(0)[row])


def _largest(table: CurveTable, row: int) -> float:
    return float(table.column(int(table.sizes.max()))[row])


def _model_size(table: CurveTable, row: int) -> float:
    if table.params is None:
        raise CurveError(f"{table.source}: modelsize needs a 'size' column with parameter counts")
    return -math.log(table.params[row])  # larger models rank first


def _observed(table: CurveTable, row: int) -> dict:
    ok = np.isfinite(table.losses[row])
    return {"sizes": table.sizes[ok].astype(float).tolist(), "losses": table.losses[row][ok].tolist()}


def _flops(table: CurveTable, row: int, sizes: np.ndarray) -> float:
    """FLOPs spent on the runs at ``sizes``: recorded FLOPs, else parameters x examples."""
    if table.flops is not None:
        cols = np.isin(table.sizes, sizes)
        spent = table.flops[row, cols]
        if np.all(np.isfinite(spent)):
            return float(np.sum(spent))
    scale = table.params[row] if table.params is not None and np.isfinite(table.params[row]) else 1.0
    return float(np.sum(sizes) * scale)


def _lensllm(table: CurveTable, row: int) -> ScalingLaw:
    F = table.ntk_F[row] if table.ntk_F is not None else None
    return LensLLMLaw(F=float(F) if F is not None and np.isfinite(F) else None)


METHODS: dict[str, Method] = {
    "lensllm": LawMethod("lensllm", _lensllm),
    "rectified": LawMethod("rectified", lambda t, r: RectifiedLaw()),
    "power": LawMethod("power", lambda t, r: PowerLaw()),
    "ats": LawMethod("ats", lambda t, r: AtSLaw()),
    "zeroshot": ObservedMethod("zeroshot", _zero_shot, lambda t: np.array([0])),
    "subtuning": ObservedMethod("subtuning", _largest, lambda t: np.array([int(t.sizes.max())])),
    "modelsize": ObservedMethod("modelsize", _model_size, lambda t: np.array([], dtype=int)),
}


def rank(table: CurveTable, target: float, method: str = "default", level: float = LEVEL) -> Ranking:
    """Rank the candidates of ``table`` by ``method`` for fine-tuning on ``target`` examples."""
    if method not in METHODS:
        raise LensLLMError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    largest = float(table.sizes.max()) if table.sizes.size else 0.0
    if not target > largest:
        raise LensLLMError(f"target {target:g} must be larger than the largest subset size used ({largest:g}); "
                           "raise --target or lower --budget")
    return METHODS[method].rank(table, target, level)


def _register_default() -> None:
    from .default import DefaultMethod

    METHODS["default"] = DefaultMethod()


_register_default()
