"""Scaling laws of fine-tuning loss against training-subset size. Pure numpy/scipy, no torch.

Every law follows the scikit-learn shape: parameters in ``__init__``, ``fit(sizes, losses)``
returns ``self``, fitted values end in ``_``, ``predict`` and ``predict_interval``.

Example:
    >>> from lensllm_hf.laws import RectifiedLaw
    >>> law = RectifiedLaw().fit([0, 200, 400, 800, 1600, 3200], [4.2, 3.4, 3.3, 3.2, 3.05, 2.9])
    >>> float(law.predict(1_638_400)[0]) < 2.9
    True
"""

from .ats import AtSLaw
from .base import FitError, ScalingLaw, SeparableLaw
from .phases import detect_transition, transition_index
from .power import PowerLaw
from .rectified import LensLLMLaw, RectifiedLaw

#: Every law by its name, for ``ScalingLaw.from_dict`` and the command line.
LAWS: dict[str, type[ScalingLaw]] = {law.name: law for law in (LensLLMLaw, RectifiedLaw, PowerLaw, AtSLaw)}

__all__ = [
    "LAWS",
    "AtSLaw",
    "FitError",
    "LensLLMLaw",
    "PowerLaw",
    "RectifiedLaw",
    "ScalingLaw",
    "SeparableLaw",
    "detect_transition",
    "transition_index",
]
