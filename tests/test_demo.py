"""``lensllm demo``: the whole selection offline, its outputs, resume and determinism."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lensllm_hf.cli import main  # noqa: E402
from lensllm_hf.demo import DEMO_MODELS, build_tokenizer, number_words, task_texts  # noqa: E402
from lensllm_hf.records import list_records  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One demo run as a user would start it: a fresh process, offline."""
    out = tmp_path_factory.mktemp("demo") / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lensllm_hf.cli", "demo", "--output-dir", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=600)
    return out, done, time.perf_counter() - t0


def test_demo_prints_the_ranking_and_where_the_files_are(demo):
    out, done, seconds = demo
    assert done.returncode == 0, done.stderr[-3000:]
    assert seconds < 300  # the budget on 2 CPU cores (about a minute here)
    for spec in DEMO_MODELS:
        assert spec.name in done.stdout
    assert "best: tiny-" in done.stdout
    for name in ("selection.json", "selection.png", "selection.md"):
        assert str(out / name) in done.stdout and (out / name).stat().st_size > 0
    assert "Traceback" not in done.stderr


def test_demo_curves_feed_fit_and_bench(demo, capsys):
    """README's fit and bench commands run on the table the demo writes (no outside data needed)."""
    from lensllm_hf.cli import main
    from lensllm_hf.engine.curves import CurveTable

    out, done, _ = demo
    table = CurveTable.read_csv(out / "curves.csv")
    assert sorted(table.models) == sorted(spec.name for spec in DEMO_MODELS)
    largest = int(table.sizes.max())
    assert main(["fit", str(out / "curves.csv"), "--target", "20000", "--budget", str(largest // 2)]) == 0
    assert main(["bench", "--curves", str(out / "curves.csv"), "--target", str(largest),
                 "--budgets", f"{largest // 2},{largest // 4}", "--methods", "default,ats,zeroshot"]) == 0
    assert "P(best) of pick / truly best" in capsys.readouterr().out  # the calibration column


def test_demo_outputs_are_those_of_select(demo):
    out, done, _ = demo
    data = json.loads((out / "selection.json").read_text())
    assert {c["model"] for c in data["ranking"]} == {spec.name for spec in DEMO_MODELS}
    assert all(c["status"] == "complete" for c in data["ranking"])
    assert data["selection"]["fraction_saved"] > 0.5
    assert len({p.parent.name for p in (out / "cards").glob("*/README.md")}) == len(DEMO_MODELS)
    # Four architectures of different sizes, and every run recorded (zero-shot plus 6 subset sizes).
    architectures = {json.loads((out / "models" / s.name / "config.json").read_text())["model_type"]
                     for s in DEMO_MODELS}
    assert architectures == {"gpt2", "llama", "gpt_neox", "opt"}
    assert len(list_records(out / "store")) == len(DEMO_MODELS) * 7
    # The config it wrote is a 'lensllm select' config: selecting again from its store gives the same.
    before = (out / "selection.json").read_text()
    assert main(["select", str(out / "config.yaml"), "--output-dir", str(out), "--from-store", "--no-progress"]) == 0
    assert json.loads((out / "selection.json").read_text())["ranking"] == json.loads(before)["ranking"]


def test_demo_rerun_resumes_without_training(demo, capsys):
    out, _, _ = demo
    stamps = {p: os.stat(p).st_mtime_ns for p in list_records(out / "store")}
    best = json.loads((out / "selection.json").read_text())["best"]
    t0 = time.perf_counter()
    assert main(["demo", "--output-dir", str(out), "--no-progress"]) == 0
    assert time.perf_counter() - t0 < 30
    assert {p: os.stat(p).st_mtime_ns for p in list_records(out / "store")} == stamps
    assert f"best: {best}" in capsys.readouterr().out


def test_the_printed_rerun_command_resumes_in_place_from_any_folder(demo, tmp_path, monkeypatch, capsys):
    out, done, _ = demo
    line = next(text for text in done.stdout.splitlines() if "rerun the selection in place" in text)
    argv = shlex.split(line.split(" with: ", 1)[1])
    assert argv[:2] == ["lensllm", "select"] and Path(argv[2]).is_absolute()
    stamps = {p: os.stat(p).st_mtime_ns for p in list_records(out / "store")}
    (out / "selection.json").unlink()
    monkeypatch.chdir(tmp_path)  # anywhere
    assert main([*argv[1:], "--no-progress"]) == 0
    assert {p: os.stat(p).st_mtime_ns for p in list_records(out / "store")} == stamps  # nothing trained again
    assert (out / "selection.json").exists() and not (tmp_path / "lensllm_out").exists()


def test_demo_selection_is_deterministic(demo, tmp_path):
    """The same models and data, trained again from scratch (store removed), give the same losses."""
    out, _, _ = demo
    again = tmp_path / "again"
    shutil.copytree(out, again, ignore=shutil.ignore_patterns("store", "cards", "selection.*"))
    assert main(["select", str(again / "config.yaml"), "--output-dir", str(again), "--no-progress",
                 "--only", "tiny-gpt2"]) == 0
    for size in (0, 32, 1024):
        name = f"tiny-gpt2__D{size}__"
        (first,) = [p for p in list_records(out / "store") if Path(p).name.startswith(name)]
        (second,) = [p for p in list_records(again / "store") if Path(p).name.startswith(name)]
        a, b = json.loads(Path(first).read_text()), json.loads(Path(second).read_text())
        assert Path(first).name == Path(second).name  # same config hash: same data, same arguments
        assert a["final_eval_loss"] == pytest.approx(b["final_eval_loss"], rel=1e-6)


def test_demo_text_and_tokenizer_are_fixed():
    assert number_words(412) == "four hundred twelve" and number_words(70) == "seventy"
    assert task_texts(3, seed=1) == task_texts(3, seed=1)
    tokenizer = build_tokenizer()
    ids = tokenizer("412 in words : four hundred twelve .")["input_ids"]
    assert "<unk>" not in tokenizer.convert_ids_to_tokens(ids) and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == 3 + 3 + 3 + 1 + 1  # one token per digit and per word, then <eos>


def test_demo_models_are_built_the_same_every_time(tmp_path):
    from safetensors.torch import load_file

    from lensllm_hf.demo import build_models

    spec = next(s for s in DEMO_MODELS if s.family == "opt")  # the quickest to pre-train
    first = build_models(tmp_path / "a", specs=(spec,), log=lambda _: None)[spec.name]
    second = build_models(tmp_path / "b", specs=(spec,), log=lambda _: None)[spec.name]
    a, b = load_file(f"{first}/model.safetensors"), load_file(f"{second}/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
