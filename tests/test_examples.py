"""The examples run, offline, on tiny local models: the scripts with --offline-tiny, the notebook
with its ``OFFLINE_TINY`` parameter (executed by nbclient), so they cannot rot unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def offline_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src"),
            "MPLBACKEND": "Agg"}


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=offline_env(),
                          capture_output=True, text=True, timeout=300)


def test_add_callback_to_trainer_records_runs_that_lensllm_fit_ranks(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**offline_env(), "TMPDIR": str(scratch)}

    def script(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(EXAMPLES / "add_callback_to_trainer.py"), "--offline-tiny", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    done = script("--train-size", "16", "32", "--store", "runs")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("recorded tiny-gpt2") == 2 and "built tiny-gpt2" in done.stdout
    model = tmp_path / "lensllm_out" / "tiny-models" / "tiny-gpt2"
    built = (model / "config.json").stat().st_mtime_ns
    done = script("--train-size", "64", "--store", "runs")  # a later run: the same model, not a new one
    assert done.returncode == 0, done.stderr[-2000:]
    assert "built" not in done.stdout and (model / "config.json").stat().st_mtime_ns == built
    assert [p.name for p in scratch.iterdir() if p.name.startswith("tmp")] == []  # no temporary folders left behind
    from lensllm_hf.records import list_records, read_record

    recs = [read_record(p) for p in list_records(tmp_path / "runs")]
    assert sorted(r.train_size for r in recs) == [16, 32, 64]
    assert {r.model_id for r in recs} == {"tiny-gpt2"} and all(r.status == "complete" for r in recs)
    fit = subprocess.run([sys.executable, "-m", "lensllm_hf.cli", "fit", "runs", "--target", "20000"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert "tiny-gpt2" in fit.stdout


def test_select_models_offline_tiny_ranks_the_tiny_models(tmp_path):
    done = run_script("select_models.py", "--offline-tiny", "--output-dir", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best: tiny-" in done.stdout.lower()
    data = json.loads((tmp_path / "out" / "selection.json").read_text())
    assert {c["model"] for c in data["ranking"]} == {"tiny-gpt2", "tiny-llama", "tiny-pythia", "tiny-opt"}
    assert (tmp_path / "out" / "selection.png").stat().st_size > 20_000


def test_select_models_without_the_hub_points_to_the_demo(tmp_path):
    done = run_script("select_models.py", cwd=tmp_path)
    assert done.returncode == 1
    assert "lensllm demo" in done.stderr and "--offline-tiny" in done.stderr
    assert "Traceback" not in done.stderr


def test_colab_notebook_runs_offline(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / "lensllm_colab.ipynb", as_version=4)
    (parameters,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    parameters.source = parameters.source.replace("OFFLINE_TINY = False", "OFFLINE_TINY = True")
    assert "OFFLINE_TINY = True" in parameters.source
    for key, value in offline_env().items():
        monkeypatch.setenv(key, value)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "fine-tune: tiny-" in text and "lensllm:" in text  # the ranking, then the card's metadata
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the plot is shown
    assert any("text/html" in o.get("data", {}) for o in outputs)  # the ranking table
    assert (tmp_path / "lensllm_out" / "colab" / "selection.png").exists()
