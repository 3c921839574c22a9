"""The engine's docstring examples run and show what they print (``python -m doctest`` style).

Run by the default suite; the same modules can be checked with
``pytest --doctest-modules src/lensllm_hf/engine/fit.py src/lensllm_hf/laws ...``.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

ENGINE_MODULES = [
    "lensllm_hf.engine.fit",
    "lensllm_hf.engine.ranking",
    "lensllm_hf.engine.methods.base",
    "lensllm_hf.engine.methods",
    "lensllm_hf.engine.methods.default",
    "lensllm_hf.engine.protocol",
    "lensllm_hf.engine.loop",
    "lensllm_hf.engine.policies",
    "lensllm_hf.engine.curves",
    "lensllm_hf._utils",
    "lensllm_hf.engine.laws",
    "lensllm_hf.engine.laws.base",
    "lensllm_hf.engine.laws.ats",
    "lensllm_hf.engine.laws.power",
    "lensllm_hf.engine.laws.rectified",
    "lensllm_hf.engine.laws.phases",
    "lensllm_hf.cli.fit",
    "lensllm_hf.cli.bench",
    "lensllm_hf.errors",
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
