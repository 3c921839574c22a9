"""benchmarks/gpu_check.py in its tiny form on the CPU: the GPU check works end to end before a GPU is at hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("peft")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_check_runs_a_whole_selection_in_its_tiny_form(gpu_check, tmp_path, one_torch_thread):
    report = gpu_check.main(["--tiny", "--output-dir", str(tmp_path), "--json", str(tmp_path / "report.json")])
    assert report["device"] == "cpu" and report["tiny"]
    names = {"qwen2-tiny", "llama-tiny-lora", "pythia-tiny"}
    runs = report["runs"]
    assert {r["model"] for r in runs} == names and len(runs) == 9 and report["records"] == 9
    assert all(r["status"] == "complete" and r["wall_s"] > 0 for r in runs)
    # bf16 weights throughout; LoRA trains only its adapter.
    lora = [r for r in runs if r["model"] == "llama-tiny-lora"]
    assert all(0 < r["trainable_parameters"] < r["parameters"] for r in lora)
    assert all(r["trainable_parameters"] == r["parameters"] for r in runs if r["model"] != "llama-tiny-lora")
    # The probe ran in every training run (not the zero-shot evaluation) and its time is the run's share.
    trained = [r for r in runs if r["size"] > 0]
    assert all(r["probe_s"] > 0 and 0 < r["probe_share"] < 1 for r in trained)
    assert all(r["probe_s"] is None for r in runs if r["size"] == 0)
    # No GPU memory on the CPU; the estimate is whatever the cost estimate's memory model gives.
    assert all(r["peak_bytes"] is None for r in runs)
    assert set(report["callback_overhead"]) == names
    assert all(o["without_s"] > 0 and o["with_s"] > 0 for o in report["callback_overhead"].values())
    assert {row["model"] for row in report["ranking"]} == names and report["best"] in names
    assert (tmp_path / "report.json").is_file()


def test_the_full_form_refuses_to_run_without_a_gpu(gpu_check, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit, match="no CUDA device here"):
        gpu_check.main(["--output-dir", str(tmp_path)])
