"""The engine's docstring examples run and show what they print (``python -m doctest`` style).

Run by the default suite; the same modules can be checked with
``pytest --doctest-modules src/lensllm_hf/fit.py src/lensllm_hf/laws ...``.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

ENGINE_MODULES = [
    "lensllm_hf.fit",
    "lensllm_hf.ranking",
    "lensllm_hf.method",
    "lensllm_hf.methods",
    "lensllm_hf.default",
    "lensllm_hf.bench",
    "lensllm_hf.adaptive",
    "lensllm_hf.halving",
    "lensllm_hf.curves",
    "lensllm_hf._utils",
    "lensllm_hf.laws",
    "lensllm_hf.laws.base",
    "lensllm_hf.laws.ats",
    "lensllm_hf.laws.power",
    "lensllm_hf.laws.rectified",
    "lensllm_hf.laws.phases",
    "lensllm_hf.cli.fit",
    "lensllm_hf.cli.bench",
]


@pytest.mark.parametrize("name", ENGINE_MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (run it verbosely)"


def test_the_engine_has_examples():
    attempted = sum(doctest.testmod(importlib.import_module(n), optionflags=doctest.ELLIPSIS).attempted
                    for n in ENGINE_MODULES)
    assert attempted >= 30
