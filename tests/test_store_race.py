"""Two real processes racing on one local store, one SIGKILLed at a random moment (benchmarks/store_race.py).

Each trial checks, from the store and from the workers' logs: no complete record is ever lost, no
run is executed by both workers at once while both live, every run is complete at the end, and no
reader ever sees a damaged record.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

if not hasattr(os, "fork") or sys.platform == "win32":
    pytest.skip("SIGKILL and POSIX claims: Linux and macOS only", allow_module_level=True)

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "store_race.py"
_spec = importlib.util.spec_from_file_location("store_race", _PATH)
store_race = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(store_race)


def test_two_processes_one_killed_lose_nothing_and_never_run_a_run_twice_at_once():
    result = store_race.trial(0, n_keys=6, seed=1)
    assert result["violations"] == []
    assert result["executions"] >= 6


@pytest.mark.slow
def test_twenty_random_kill_times():
    results = [store_race.trial(i, n_keys=8, seed=7) for i in range(20)]
    assert [r["violations"] for r in results] == [[]] * 20
    assert sum(r["victim_was_running"] for r in results) >= 10  # most kills land mid-race


@pytest.mark.slow
@pytest.mark.parametrize("sabotage, what", [("claims", "at once while both lived"), ("overwrite", "complete record lost")])
def test_the_race_checks_catch_a_broken_store(sabotage, what):
    found = []
    for i in range(4):
        found += store_race.trial(i, n_keys=8, seed=3, sabotage=sabotage)["violations"]
        if any(what in v for v in found):
            break
    assert any(what in v for v in found)
