"""``lensllm select`` and ``lensllm plan`` on a YAML config of tiny local models, and SIGKILL-resume."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from lensllm_hf.cli import main  # noqa: E402
from lensllm_hf.records import list_records, read_record  # noqa: E402

from tiny_models import make_tiny_gpt2, write_select_config as write_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_select_writes_outputs_and_resumes(tmp_path, capsys):
    config = write_config(tmp_path / "cfg")
    out = tmp_path / "out"
    assert main(["select", str(config), "--output-dir", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "best:" in printed and str(out / "selection.json") in printed and str(out / "selection.png") in printed
    data = json.loads((out / "selection.json").read_text())
    assert {c["model"] for c in data["ranking"]} == {"models/small", "large"}  # names as written in the config
    assert (out / "selection.png").stat().st_size > 20_000
    assert (out / "selection.md").read_text().startswith("| # | model |")
    assert {p.parent.name for p in (out / "cards").glob("*/README.md")} == {"models--small", "large"}
    stamps = {p: os.stat(p).st_mtime_ns for p in list_records(out / "store")}
    assert len(stamps) == 8

    assert main(["select", str(config), "--output-dir", str(out), "--no-progress"]) == 0  # resumes: nothing to run
    assert {p: os.stat(p).st_mtime_ns for p in list_records(out / "store")} == stamps
    assert json.loads((out / "selection.json").read_text())["best"] == data["best"]

    # Two records made hostile (a 5,001-digit number, an eval loss of 1e308): each named and skipped in one
    # line, the selection ranks from the others, and no other record is touched.
    digits, huge = (next(p for p in stamps if Path(p).name.startswith(f"{name}__D8__"))
                    for name in ("large", "models--small"))
    Path(digits).write_text(re.sub(r'"num_parameters": \d+', '"num_parameters": ' + "9" * 5001,
                                   Path(digits).read_text(encoding="utf-8")), encoding="utf-8")
    Path(huge).write_text(re.sub(r'"final_eval_loss": [0-9.e+-]+', '"final_eval_loss": 1e308',
                                 Path(huge).read_text(encoding="utf-8")), encoding="utf-8")
    capsys.readouterr()
    assert main(["select", str(config), "--output-dir", str(out), "--from-store", "--no-progress"]) == 0
    warned = capsys.readouterr().err.splitlines()
    assert any(f"{Path(digits).name}: a number written with 5,001 characters" in line for line in warned), warned
    assert any(f"{Path(huge).name}: final_eval_loss=1e+308: must be at most 1e+06" in line
               for line in warned), warned
    assert all(line.startswith("lensllm select: warning: ") and ".py:" not in line for line in warned), warned
    assert {c["status"] for c in json.loads((out / "selection.json").read_text())["ranking"]} == {"complete"}
    assert {p: os.stat(p).st_mtime_ns for p in stamps if p not in (digits, huge)} == \
        {p: t for p, t in stamps.items() if p not in (digits, huge)}


def test_plan_lines_run_from_anywhere_and_from_store_ranks(tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path / "cfg")
    (tmp_path / "planner").mkdir()
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "planner")  # no --output-dir: the default folder, made absolute in the lines
    assert main(["plan", str(config)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 2 * 4 and "--from-store" in captured.err and "0 of 8 runs already recorded" in captured.err
    out = tmp_path / "planner" / "lensllm_out" / "select"
    argv = shlex.split(lines[0])
    command = argv.index("select")  # this interpreter's own lensllm comes first
    assert "--only" in argv and "--size" in argv
    assert argv[command + 1] == str(config) and argv[argv.index("--output-dir") + 1] == str(out)
    # A scheduler's job runs the line somewhere else, without the virtualenv on PATH.
    bare = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(lines[0], shell=True, cwd=tmp_path / "worker", env=bare, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and "D=0: complete" in done.stdout, done.stderr[-2000:]
    monkeypatch.chdir(tmp_path / "worker")
    for line in lines[1:]:
        assert main(shlex.split(line)[command:]) == 0
    assert "D=8: complete" in capsys.readouterr().out
    assert not (tmp_path / "worker" / "lensllm_out").exists()  # nothing went relative to the worker's folder
    monkeypatch.chdir(tmp_path / "planner")
    assert main(["plan", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "" and "8 of 8 runs already recorded" in captured.err  # nothing left to run
    finish = shlex.split(captured.err.strip().splitlines()[-1].split("When they are done: ", 1)[1])
    monkeypatch.chdir(tmp_path / "worker")
    assert main([*finish[command:], "--no-progress"]) == 0
    assert json.loads((out / "selection.json").read_text())["best"] in {"models/small", "large"}


def test_a_worker_makes_every_pending_run_once_and_ranks_nothing(tmp_path, capsys):
    config = write_config(tmp_path / "cfg")
    out = tmp_path / "out"
    assert main(["plan", str(config), "--output-dir", str(out)]) == 0
    worker = shlex.split(next(line.split(": ", 1)[1] for line in capsys.readouterr().err.splitlines()
                              if "--worker" in line))
    worker = worker[worker.index("select"):]
    assert main([*worker, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "8 run(s) made here, 0 recorded already" in printed and "large D=32: complete" in printed
    assert not (out / "selection.json").exists()  # a worker ranks nothing
    stamps = {p: os.stat(p).st_mtime_ns for p in list_records(out / "store")}
    assert len(stamps) == 8 and all(read_record(p).status == "complete" for p in stamps)

    assert main([*worker, "--no-progress"]) == 0  # a late worker finds nothing left and trains nothing
    assert "0 run(s) made here, 8 recorded already" in capsys.readouterr().out
    assert {p: os.stat(p).st_mtime_ns for p in list_records(out / "store")} == stamps
    # Ranking from the store trains nothing, so it never imports torch (the TrainingArguments
    # check, the task metrics' callback): it costs the fits, not the training stack, after the workers.
    rank = ("import sys; from lensllm_hf.cli import main; code = main(sys.argv[1:]); "
            "print('torch' in sys.modules); sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", rank, "select", str(config), "--output-dir", str(out), "--from-store",
                           "--no-progress"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False"
    assert json.loads((out / "selection.json").read_text())["best"] in {"models/small", "large"}


@pytest.mark.parametrize("flags, message", [
    (["--worker", "--from-store"], None),  # argparse: not allowed with each other
    (["--local-workers", "2"], "--local-workers 2: give a whole number >= 1, with --worker"),
    (["--worker", "--local-workers", "0"], "--local-workers 0: give a whole number >= 1, with --worker"),
    (["--worker", "--backend", "ray"], "--worker makes its runs in this process; add --backend serial"),
])
def test_bad_worker_flags_are_one_line_exit_2(tmp_path, capsys, flags, message):
    config = write_config(tmp_path / "cfg")
    capsys.readouterr()
    if message is None:
        with pytest.raises(SystemExit) as stop:
            main(["select", str(config), *flags])
        assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
        return
    assert main(["select", str(config), "--output-dir", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "store").exists() or not list_records(tmp_path / "o" / "store")


def test_halving_prints_each_rounds_cuts_on_stderr(tmp_path, capsys):
    config = write_config(tmp_path / "cfg", strategy="halving", budget=64,
                          candidates=["models/small", "models/large", "models/mid"])
    make_tiny_gpt2(tmp_path / "cfg" / "models" / "mid", n_layer=1, n_embd=32, seed=2)
    capsys.readouterr()
    assert main(["select", str(config), "--output-dir", str(tmp_path / "out"), "--no-progress"]) == 0
    rounds = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lensllm select: halving round")]
    assert rounds and "done" in rounds[-1]
    assert any("; cut, " in line and "P(best)" in line for line in rounds)


def test_a_damaged_record_is_run_again(tmp_path, capsys):
    config = write_config(tmp_path / "cfg")
    out = tmp_path / "out"
    assert main(["select", str(config), "--output-dir", str(out), "--only", "large", "--no-progress"]) == 0
    damaged = next(p for p in list_records(out / "store") if "__D16__" in Path(p).name)
    Path(damaged).write_text('{"schema_version": 2, "model": ', encoding="utf-8")  # cut mid-write by hand
    kept = {p: os.stat(p).st_mtime_ns for p in list_records(out / "store") if p != damaged}
    capsys.readouterr()
    assert main(["select", str(config), "--output-dir", str(out), "--only", "large", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "large D=16: complete" in captured.out
    # Said on stderr, one line per warning naming the file: no source path of the code that warned.
    warned = captured.err.splitlines()
    assert warned and all(line.startswith("lensllm select: warning: ") and ".py:" not in line for line in warned)
    assert "__D16__" in warned[0] and "not valid JSON" in warned[0]
    assert read_record(damaged).status == "complete"
    assert {p: os.stat(p).st_mtime_ns for p in kept} == kept  # only the damaged run ran again


def test_select_only_rejects_an_unknown_candidate(tmp_path, capsys):
    config = write_config(tmp_path / "cfg")
    capsys.readouterr()
    assert main(["select", str(config), "--output-dir", str(tmp_path / "o"), "--only", "gpt5", "--size", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "gpt5: not a candidate" in err and len(err.splitlines()) == 1


def test_nothing_ranked_exits_nonzero_but_writes_the_failures(tmp_path, capsys):
    # Folders that exist (a missing one is a config error) but hold no model: each fails to load.
    for name in ("not-a-model", "neither"):
        (tmp_path / "cfg" / name).mkdir(parents=True)
    config = write_config(tmp_path / "cfg", candidates=["./not-a-model", "./neither"])
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["select", str(config), "--output-dir", str(out), "--no-progress"]) == 2
    assert "no candidate could be ranked" in capsys.readouterr().err
    assert json.loads((out / "selection.json").read_text())["best"] is None


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("candidates: [gpt2\n", "not valid YAML"),
    ("- just a list\n", "must be a YAML mapping"),
    ("candidates: [gpt2]\n", "'dataset' is missing"),
    ("candidates: [gpt2]\ndataset: {files: {train: nope.jsonl}}\n", "does not exist"),
    ("candidates: [gpt2]\ndataset: wikitext\nbudgets: 3\n", "unknown key 'budgets'; did you mean 'budget'?"),
])
def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["select", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_sigkill_mid_selection_then_rerun_completes_and_skips_recorded_runs(tmp_path):
    # Enough epochs that each run lasts a moment, so the kill lands inside one.
    config = write_config(tmp_path / "cfg", epochs=25)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "lensllm_hf.cli", "select", str(config), "--output-dir", str(out), "--no-progress"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    complete: dict[str, int] = {}
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "store").is_dir():
                found = {p: read_record(p).status for p in list_records(out / "store")}
                complete = {p: os.stat(p).st_mtime_ns for p, status in found.items() if status == "complete"}
                if len(complete) >= 3 and "interrupted" in found.values():  # killed inside a training run
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the selection ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    after_kill = list_records(out / "store")
    statuses = [read_record(p).status for p in after_kill]  # every file parses: nothing half-written
    assert statuses.count("complete") >= len(complete) and set(statuses) <= {"complete", "interrupted"}
    assert statuses.count("interrupted") == 1  # the run in flight, and only it, is lost
    kept = {p: os.stat(p).st_mtime_ns for p in after_kill if read_record(p).status == "complete"}

    assert main(["select", str(config), "--output-dir", str(out), "--no-progress"]) == 0
    final = list_records(out / "store")
    assert len(final) == 8 and all(read_record(p).status == "complete" for p in final)
    assert all(os.stat(p).st_mtime_ns == stamp for p, stamp in kept.items())  # recorded runs were skipped
    assert json.loads((out / "selection.json").read_text())["best"] is not None


RACE = """
import json, sys, torch
torch.set_num_threads(1)
from lensllm_hf.selector.config import SelectConfig
config, out, store = sys.argv[1:4]
selector = SelectConfig.from_yaml(config).selector(output_dir=out, store=store, progress=False)
result = selector.run()
print(json.dumps({"made": [[k.model, k.train_size] for k in selector.made_], "best": result.best,
                  "ranking": [[c.model, c.predicted_loss] for c in result.fits.candidates]}))
"""


@pytest.mark.slow
def test_two_workers_split_the_runs_then_from_store_ranks(tmp_path):
    config = write_config(tmp_path / "cfg", epochs=8)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("OMP_NUM_THREADS", None)  # each worker sets its own share: the cores / 2
    command = [sys.executable, "-m", "lensllm_hf.cli", "select", str(config), "--output-dir", str(out), "--worker",
               "--local-workers", "2", "--no-progress"]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    made = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        made.append([line.split(":")[0] for line in stdout.splitlines() if line.endswith(": complete")])
    assert sorted(made[0] + made[1]) == sorted(set(made[0] + made[1])) and len(made[0] + made[1]) == 8
    assert made[0] and made[1], made  # both did some of the work
    records = [read_record(p) for p in list_records(out / "store")]
    assert len(records) == 8 and {r.status for r in records} == {"complete"}
    assert main(["select", str(config), "--output-dir", str(out), "--from-store", "--no-progress"]) == 0


@pytest.mark.slow
def test_two_selections_on_one_store_split_the_runs_and_agree(tmp_path):
    # Enough epochs that runs overlap in time; both processes start together on one store.
    config = write_config(tmp_path / "cfg", epochs=8)
    store = tmp_path / "shared-store"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(config), str(tmp_path / f"out{i}"), str(store)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outcomes = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-3000:]
        outcomes.append(json.loads(stdout.strip().splitlines()[-1]))
    made = [tuple(run) for outcome in outcomes for run in outcome["made"]]
    assert len(made) == len(set(made)) == 2 * 4  # every run made once, by one of the two
    assert all(outcome["made"] for outcome in outcomes), outcomes  # both did some of the work
    assert outcomes[0]["best"] == outcomes[1]["best"] is not None
    assert outcomes[0]["ranking"] == outcomes[1]["ranking"]
    records = [read_record(p) for p in list_records(store)]
    assert len(records) == 8 and {r.status for r in records} == {"complete"}
