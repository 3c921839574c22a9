"""Selection methods: turn a curve table (every candidate's points up to the budget) into a ranking.

A method sees only the columns a budget allows (``CurveTable.up_to``). Law methods fit each
candidate on its own and predict the loss at the target; the papers' baselines rank
by something observed. ``default`` is the method the selector uses (``lensllm_hf.engine.methods.default``).

Example:
    >>> import numpy as np
    >>> table = CurveTable(["a", "b"], np.array([200, 400, 800, 1600]),
    ...                    np.array([[3.0, 2.8, 2.6, 2.45], [3.1, 2.85, 2.62, 2.4]]))
    >>> rank(table, target=102_400).best
    'b'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from ..curves import CurveError, CurveTable
from .default import DefaultMethod
from ...errors import LensLLMError
from ..fit import check_level
from ..laws import AtSLaw, LensLLMLaw, PowerLaw, RectifiedLaw, ScalingLaw
from .base import LEVEL, Method, RunInfo, each_row, extrapolation_warnings, flops_spent
from ..ranking import CandidateFit, Ranking

__all__ = ["LEVEL", "METHODS", "LawMethod", "Method", "ObservedMethod", "rank"]

#: Builds a candidate's law: (table, row, what its records say) -> an unfitted law.
LawFactory = Callable[[CurveTable, int, RunInfo], ScalingLaw]


@dataclass
class LawMethod(Method):
    """Fit one law per candidate and rank by its predicted loss at the target."""

    name: str
    make_law: LawFactory

    def rank(self, table, target, level=LEVEL, runs=None):
        runs = runs or {}
        rows = [self.fit_one(table, i, target, runs.get(table.models[i], RunInfo()))
                for i in each_row(table, f"{self.name}: fitting")]
        return Ranking(target, self.name, rows, level)

    def fit_one(self, table: CurveTable, row: int, target: float, info: RunInfo = RunInfo()) -> CandidateFit:
        model = table.models[row]
        flops = flops_spent(table, row, self.sizes_used(table))
        try:
            sizes, losses = table.points(row)
            law = self.make_law(table, row, info)
            if isinstance(law, LensLLMLaw) and law.eigenvalues is None:
                # Without a probe LensLLM is the rectified law: share that fit rather than redo it.
                fit = LensLLMLaw.free_F(_fitted(RectifiedLaw(law.extrapolation_sd_per_doubling), sizes, losses).to_fit())
            else:
                fit = _fitted(law, sizes, losses).to_fit()
            if info.warnings:
                fit = replace(fit, warnings=fit.warnings + info.warnings)
            predicted = float(fit.predict([target])[0])
        except (LensLLMError, ValueError, np.linalg.LinAlgError) as error:
            return CandidateFit.failed(model, str(error), flops=flops)
        if not math.isfinite(predicted) or predicted <= 0:
            return CandidateFit.failed(model, f"{self.name}: the fit predicts a non-positive or infinite loss "
                                              f"({predicted:.4g}); add points or use another method", flops=flops)
        return CandidateFit(model=model, fit=fit, score=predicted, flops=flops,
                            warnings=extrapolation_warnings(fit, target))


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
    """A baseline that ranks by an observed quantity: no fit, no predicted loss, no P(best)."""

    name: str
    score_of: Callable[[CurveTable, int], float]
    used: Callable[[CurveTable], np.ndarray]
    predicts_loss: bool = False

    def rank(self, table, target, level=LEVEL, runs=None):
        rows = []
        for i, model in enumerate(table.models):
            flops = flops_spent(table, i, self.used(table))
            try:
                score = float(self.score_of(table, i))
                if not math.isfinite(score):
                    raise CurveError(f"{table.source}: model {model!r}: {self.name} needs a finite value "
                                     f"({table.problems.get(model, 'missing')})")
            except LensLLMError as error:
                rows.append(CandidateFit.failed(model, str(error), flops=flops))
                continue
            rows.append(CandidateFit(model=model, score=score, flops=flops))
        return Ranking(target, self.name, rows, level)

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


def _lensllm(table: CurveTable, row: int, info: RunInfo) -> ScalingLaw:
    return LensLLMLaw(eigenvalues=info.eigenvalues, coefficients=info.coefficients)


#: Every selection method by name. ``default`` is DefaultMethod (``lensllm_hf.engine.methods.default``): AtS's
#: line fitted locally and shrunk across candidates; its fits carry the law ``local-loglog``.
METHODS: dict[str, Method] = {
    "lensllm": LawMethod("lensllm", _lensllm),
    "rectified": LawMethod("rectified", lambda t, r, i: RectifiedLaw()),
    "power": LawMethod("power", lambda t, r, i: PowerLaw()),
    "ats": LawMethod("ats", lambda t, r, i: AtSLaw()),
    "zeroshot": ObservedMethod("zeroshot", _zero_shot, lambda t: np.array([0])),
    "subtuning": ObservedMethod("subtuning", _largest, lambda t: np.array([int(t.sizes.max())])),
    "modelsize": ObservedMethod("modelsize", _model_size, lambda t: np.array([], dtype=int)),
    "default": DefaultMethod(),
}


def rank(table: CurveTable, target: float, method: str = "default", level: float = LEVEL,
         runs: Mapping[str, RunInfo] | None = None) -> Ranking:
    """Rank the candidates of ``table`` by ``method`` for fine-tuning on ``target`` examples.

    ``runs`` maps a row's model name to what its run records say (probe spectrum, warnings;
    see :func:`lensllm_hf.engine.methods.base.run_info`).
    """
    if method not in METHODS:
        raise LensLLMError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    level = check_level(level)
    if isinstance(target, bool) or not isinstance(target, int | float) or not math.isfinite(target):
        raise LensLLMError(f"target must be a finite number of examples, got {target!r}")
    largest = float(table.sizes.max()) if table.sizes.size else 0.0
    if not target > largest:
        raise LensLLMError(f"target {target:g} must be larger than the largest subset size used ({largest:g}); "
                           "raise --target or lower --budget")
    return METHODS[method].rank(table, float(target), level, runs)
