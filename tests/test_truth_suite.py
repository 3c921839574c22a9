"""The truth suite's generated tasks and problems (benchmarks/truth_suite.py; its runs are by hand)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "truth_suite.py"


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("truth_suite", _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_the_lookup_task_has_a_floor_no_model_passes(suite):
    """A noun drawn uniformly, then its one fixed colour: ln(nouns) nats a text is irreducible."""
    texts = suite.texts(suite.task_lookup, 2000, seed=3)
    colour_of: dict[str, set[str]] = {}
    for text in texts:
        the, noun, is_, colour, end = text.split()
        assert (the, is_, end) == ("the", "is", ".")
        colour_of.setdefault(noun, set()).add(colour)
    assert all(len(colours) == 1 for colours in colour_of.values())  # the rest is learnable
    assert len(colour_of) == len(suite._NOUNS) > 10
    assert len(set(suite._COLOUR.values())) > 3  # not one colour for every noun
    assert suite.texts(suite.task_lookup, 5, seed=3) == texts[:5]


def test_the_floor_problem_extrapolates_three_points_twelvefold(suite):
    floor = next(p for p in suite.PROBLEMS if p.name == "floor")
    fine_tuned = int(math.log2(floor.budget / floor.min_size)) + 1
    assert fine_tuned == 3 and floor.target == 12 * floor.budget
    assert floor.task == "lookup" and all(floor.budget < s < floor.target for s in floor.truth_curve)

