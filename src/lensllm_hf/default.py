"""``default``: the selection method LensLLMSelector uses.

Provisional: AtS. Replaced by the measured choice (see the module docstring once it lands).
"""

from __future__ import annotations

from .laws import AtSLaw
from .methods import LawMethod

__all__ = ["DefaultMethod"]


def DefaultMethod() -> LawMethod:  # noqa: N802 - a factory standing in for the final class
    return LawMethod("default", lambda table, row: AtSLaw())
