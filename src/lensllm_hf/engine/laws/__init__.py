"""Scaling laws of fine-tuning loss against training-subset size. Pure numpy/scipy, no torch.

Every law follows the scikit-learn shape: parameters in ``__init__``, ``fit(sizes, losses)``
returns ``self``, fitted values end in ``_``, ``predict`` and ``predict_interval``; ``to_fit()``
gives the one serialisable :class:`~lensllm_hf.engine.fit.Fit` that the rest of the package carries.

Example:
    >>> from lensllm_hf.engine.laws import RectifiedLaw
    >>> law = RectifiedLaw().fit([0, 200, 400, 800, 1600, 3200], [4.2, 3.4, 3.3, 3.2, 3.05, 2.9])
    >>> float(law.predict(1_638_400)[0]) < 2.9
    True
"""

from ..fit import FitError
from .ats import AtSLaw
from .base import ScalingLaw, SeparableLaw
from .phases import detect_transition, transition_index
from .power import PowerLaw
from .rectified import LensLLMLaw, RectifiedLaw, spectrum_F

#: Every law class by its name (the ``default`` method's line, ``local-loglog``, is not a law
#: class: it needs every candidate of a table at once, see ``lensllm_hf.engine.methods.default``).
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
    "spectrum_F",
    "transition_index",
]
