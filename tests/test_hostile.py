"""Nothing hostile stops a command, and nothing waits forever (issue 19).

Damaged and hostile records, cards, fit files and claims; an unreachable Ray cluster; a write that
fails half-way; runs killed without a word. Each is one line (or a named, skipped record), exit 0
or 2, never a traceback or a hang, and nothing already recorded is lost. The Hub's cases are in
``test_hub_cards.py`` (they use its local server), the config's in ``test_config.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lensllm_hf
from lensllm_hf.cli import main
from lensllm_hf.records import Evaluation, RunKey, RunRecord, Store
from lensllm_hf.selector import runner

#: The source the tests import (a subprocess runs the same code).
SRC = str(Path(lensllm_hf.__file__).resolve().parents[1])
TARGET = "100000"


def _record(model: str, size: int, loss: float) -> RunRecord:
    return RunRecord(model={"id": model, "num_parameters": 1000}, train_size=size, seed=0, status="complete",
                     config_hash="cfg", evaluations=[Evaluation(step=size // 8, examples_seen=size, eval_loss=loss,
                                                                metrics={"eval_loss": loss}, total_flos=1e12)],
                     final_eval_loss=loss, total_flos=1e12)


def _store(folder: Path) -> dict[str, bytes]:
    """A store of two models at four sizes; returns every record's bytes, to check nothing is lost."""
    store = Store(folder)
    for model, offset in (("a", 0.0), ("b", 0.1)):
        for i, size in enumerate((200, 400, 800, 1600)):
            store.write(_record(model, size, 3.0 - 0.2 * i - offset))
    return _contents(folder)


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*.lensllm.json"))}


def _one_line_each(err: str, command: str) -> list[str]:
    """stderr's lines, each ``lensllm COMMAND: ...`` and none naming a source file (no traceback)."""
    lines = err.splitlines()
    assert all(line.startswith(f"lensllm {command}: ") for line in lines), err
    assert "Traceback" not in err and ".py:" not in err, err
    return lines


# -- records ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage, words", [
    (lambda text: re.sub(r'"num_parameters": \d+', '"num_parameters": ' + "9" * 5001, text),
     "a number written with 5,001 characters"),
    (lambda text: re.sub(r'"final_eval_loss": [0-9.]+', '"final_eval_loss": 1e308', text),
     "final_eval_loss=1e+308: must be at most 1e+06"),
    (lambda text: text.replace('"train_size": 200', '"train_size": 1e999'), "train_size=inf: must be a whole number"),
    (lambda text: re.sub(r'"metrics": \{[^}]*\}', '"metrics": {"eval_loss": "low"}', text),
     "evaluations[0].metrics.eval_loss='low': must be a number"),
    (lambda text: text.replace('"ntk": null', '"ntk": {"x": ' + "[" * 40 + "]" * 40 + "}"), "nested deeper"),
    (lambda text: text.replace('"ntk": null', '"ntk": ' + "[" * 50_000 + "]" * 50_000), "nested deeper"),
])
def test_a_hostile_record_is_named_and_skipped_and_the_others_rank(tmp_path, capsys, damage, words):
    """The record of a third model made hostile: 'lensllm fit STORE' names it in one warning line and ranks
    the two others as ever, exit 0; no record changes."""
    _store(tmp_path / "store")
    path = Path(Store(tmp_path / "store").write(_record("c", 200, 3.0)))
    path.write_text(damage(path.read_text(encoding="utf-8")), encoding="utf-8")
    before = _contents(tmp_path / "store")
    assert main(["fit", str(tmp_path / "store"), "--target", TARGET]) == 0
    captured = capsys.readouterr()
    warned = _one_line_each(captured.err, "fit")
    assert len(warned) == 1 and path.name in warned[0] and words in warned[0], warned
    assert "(skipped: its run counts as not done and runs again)" in warned[0]
    assert re.findall(r"^\s+\d\s+(\w)\s", captured.out, re.M) in (["a", "b"], ["b", "a"]), captured.out
    assert _contents(tmp_path / "store") == before


@pytest.mark.parametrize("claim", [
    {"heartbeat_at": 1e999, "pid": 1},                        # a heartbeat that never ages
    {"heartbeat_at": time.time() + 10 * 86_400, "pid": 1},    # one from next week
    {"heartbeat_at": "now", "pid": 10**50},                   # text, and a pid no kernel has
    {"heartbeat_at": time.time(), "ttl_s": 1e300, "pid": 10**50, "node": "same"},
])
def test_a_hostile_claim_never_holds_a_run_forever(tmp_path, claim):
    """A claim file whose heartbeat or ttl would never expire, or whose pid overflows: the run is taken over."""
    from lensllm_hf._utils import node_id

    store = Store(tmp_path)
    key = RunKey("a", 200, 0, "cfg")
    folder = tmp_path / ".lensllm-claims"
    folder.mkdir()
    data = {"owner": "x", **claim, "node": node_id() if claim.get("node") == "same" else "elsewhere"}
    text = json.dumps(data).replace("Infinity", "1e999")
    path = folder / f"{key.name.removesuffix('.lensllm.json')}.0.claim"
    path.write_text(text, encoding="utf-8")
    os.utime(path, (time.time() - 3600, time.time() - 3600))  # where the claim is unreadable, its file is old
    claim = store.claim(key, ttl_s=60)
    assert claim is not None
    claim.release()


# -- cards -----------------------------------------------------------------------------------------


def _card(folder: Path, front_matter: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "README.md").write_text(f"---\n{front_matter}\n---\n# model\n", encoding="utf-8")
    return folder


@pytest.mark.parametrize("front_matter, words", [
    ("deep: " + "[" * 50_000 + "]" * 50_000, "YAML nested deeper than 32 levels"),
    ("license: mit\nbig: " + "9" * 5001, "a number written with 5,001 characters at line 2"),
    ("a: &a [x, x]\n" + "".join(f"b{i}: *a\n" for i in range(500)), "more than 100 YAML aliases"),
])
@pytest.mark.parametrize("command", ["card show", "predict"])
def test_a_hostile_card_is_one_line_exit_2(tmp_path, capsys, front_matter, words, command):
    folder = _card(tmp_path / "model", front_matter)
    argv = ["card", "show", str(folder)] if command == "card show" else \
        ["predict", str(folder), "--model", "model", "--at", "1000"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = _one_line_each(captured.err, command.split()[0])
    assert len(lines) == 1 and words in lines[0] and "README.md" in lines[0], lines
    assert not captured.out


# -- fit files -------------------------------------------------------------------------------------


@pytest.fixture
def fit_json(tmp_path) -> Path:
    _store(tmp_path / "store")
    path = tmp_path / "fit.json"
    assert main(["fit", str(tmp_path / "store"), "--target", TARGET, "--json", str(path)]) == 0
    return path


@pytest.mark.parametrize("edit, words", [
    (lambda data: data["ranking"][0]["fit"]["params"].update(a=1e300),
     "refused at 100,000 examples: its prediction is not a finite number"),
    (lambda data: data["ranking"][0]["fit"]["params"].update(a=10.0),  # a loss of thousands
     "outside what its points allow (0 to 10 times its largest loss"),
])
def test_an_absurd_fit_is_refused_in_one_line_naming_it(fit_json, capsys, edit, words):
    """A hand-edited parameter (1e300, or one that predicts thousands): 'lensllm predict' refuses the fit in one
    line naming it, exit 2, and no numpy warning naming a source file."""
    data = json.loads(fit_json.read_text())
    edit(data)
    fit_json.write_text(json.dumps(data), encoding="utf-8")
    capsys.readouterr()
    model = data["ranking"][0]["model"]
    assert main(["predict", str(fit_json), "--model", model, "--at", "1e6"]) == 2
    captured = capsys.readouterr()
    lines = _one_line_each(captured.err, "predict")
    assert len(lines) == 1 and f"ranking[0].fit ('{model}')" in lines[0] and words in lines[0], lines
    assert not captured.out


def test_a_fit_json_with_a_5001_digit_number_is_one_line(fit_json, capsys):
    fit_json.write_text(re.sub(r'"target": [0-9.e+]+', '"target": ' + "1" * 5001, fit_json.read_text()))
    capsys.readouterr()
    assert main(["predict", str(fit_json), "--model", "a", "--at", "1e6"]) == 2
    lines = _one_line_each(capsys.readouterr().err, "predict")
    assert len(lines) == 1 and "a number written with 5,001 characters" in lines[0]


def test_a_fifo_named_like_a_fit_is_refused_not_waited_on(tmp_path, capsys, no_hang):
    """'card write --from FIFO' used to block forever on the read."""
    fifo = tmp_path / "fit.json"
    os.mkfifo(fifo)
    assert main(["card", "write", str(tmp_path), "--from", str(fifo), "--dataset", "d"]) == 2
    assert "fit.json: is a FIFO, not a regular file; pass a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["predict", "{src}", "--model", "a", "--at", "1e6"], ["card", "show", "{src}"]])
def test_a_fifo_or_device_given_as_the_source_is_named_not_taken_for_a_repo_id(tmp_path, capsys, monkeypatch,
                                                                             no_hang, argv):
    """An existing path that is not a folder is a local file to read, whatever it is: a FIFO or a
    device is named in one line (it was taken for a Hub repo ID and asked of the Hub)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fifo = tmp_path / "card"
    os.mkfifo(fifo)
    for source, kind in ((fifo, "a FIFO"), ("/dev/zero", "a character device")):
        assert main([a.format(src=source) for a in argv]) == 2
        lines = _one_line_each(capsys.readouterr().err, argv[0])
        assert len(lines) == 1 and f"{source}: is {kind}, not a regular file; pass a regular file" in lines[0], lines


def test_an_absurd_fit_in_a_card_is_refused(fit_json, tmp_path, capsys):
    """The same hand edit in a model card: 'card show' refuses the card in one line naming the fit."""
    assert main(["card", "write", str(tmp_path), "--from", str(fit_json), "--model", "a", "--dataset", "d"]) == 0
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    (tmp_path / "README.md").write_text(re.sub(r"(\n\s+a: )[-0-9.e+]+", r"\g<1>1.0e+300", text, count=1))
    capsys.readouterr()
    assert main(["card", "show", str(tmp_path)]) == 2
    lines = _one_line_each(capsys.readouterr().err, "card")
    assert len(lines) == 1 and "lensllm[0].fit: refused at 100,000 examples" in lines[0], lines


# -- Ray, temporary files --------------------------------------------------------------------------


def test_a_ray_address_where_nothing_listens_fails_fast_in_one_line(tmp_path, capsys, monkeypatch, no_hang):
    """'select --backend ray --ray-address 127.0.0.1:1': one line naming the address and the fix, before
    any run (the old code waited through Ray's GCS retries for minutes)."""
    pytest.importorskip("ray")
    import ray

    from tiny_models import make_text_dataset, make_tiny_gpt2

    make_tiny_gpt2(tmp_path / "small", n_layer=1, n_embd=16)
    make_text_dataset(64, seed=0).to_json(tmp_path / "train.jsonl")
    make_text_dataset(16, seed=1).to_json(tmp_path / "eval.jsonl")
    config = {"candidates": ["./small"], "dataset": {"files": {"train": "train.jsonl", "eval": "eval.jsonl"}},
              "target_size": 4000, "min_size": 8, "budget": 32, "max_length": 16, "backend": "ray",
              "training_args": {"per_device_train_batch_size": 8, "num_train_epochs": 1}}
    (tmp_path / "select.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    capsys.readouterr()
    assert main(["select", str(tmp_path / "select.yaml"), "--ray-address", "127.0.0.1:1", "--output-dir",
                 str(tmp_path / "out"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("lensllm select: error: cannot reach the Ray cluster at 127.0.0.1:1 (connection refused")
    assert "--ray-address" in error and not ray.is_initialized()
    assert not list((tmp_path / "out").rglob("*.lensllm.json"))


def test_the_write_probe_is_removed_when_a_write_fails_half_way(tmp_path):
    """A store whose file system refuses the probe's bytes after creating it (a file-size limit of 1 byte,
    as a full disk does): one RecordError line, and no '.lensllm-write-test-*' file is left behind."""
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))\n"
              "from lensllm_hf.records import RecordError, check_writable\n"
              "try:\n    check_writable(sys.argv[1])\n"
              "except RecordError as error:\n    print(error)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "store")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": SRC})
    assert "cannot write run records there" in done.stdout, done.stdout + done.stderr
    assert os.listdir(tmp_path / "store") == []


def test_scratch_folders_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    """A run SIGKILLed mid-way leaves its scratch folder (no ``finally`` runs); the next process's first run
    (:func:`scratch_dir`) removes it. Folders of live processes (this one), of other machines (another node
    tag) and of older versions stay."""
    mine = Path(runner.scratch_dir())
    try:
        tag = mine.name.removeprefix(runner.SCRATCH_PREFIX).split("-")[0]
        assert mine.name.startswith(f"{runner.SCRATCH_PREFIX}{tag}-{os.getpid()}-")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        stale = tmp_path / f"{runner.SCRATCH_PREFIX}{tag}-{dead.pid}-abc123"
        (stale / "checkpoint").mkdir(parents=True)
        live = tmp_path / f"{runner.SCRATCH_PREFIX}{tag}-{os.getpid()}-def456"
        live.mkdir()
        other_machine = tmp_path / f"{runner.SCRATCH_PREFIX}0000beef-{dead.pid}-ghi789"
        other_machine.mkdir()
        old_style = tmp_path / f"{runner.SCRATCH_PREFIX}xyz"
        old_style.mkdir()
        assert runner.clean_stale_scratch(str(tmp_path)) == [str(stale)]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (live, other_machine, old_style))
        assert mine.is_dir() and Path(tempfile.gettempdir()) == mine.parent
    finally:
        os.rmdir(mine)


# -- fuzz: records and cards -----------------------------------------------------------------------

JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["9" * 5001, "1e999", "-1e308", "\x00", "complete", "failed", "[" * 60]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=8), inner,
                                                                                 max_size=4)), max_leaves=12)


def _paths(value, prefix=()):
    """Every (path of keys and indexes) inside a JSON value."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _mutated_record(data) -> str:
    """A record's JSON text with one value replaced: by any JSON value, or by raw text (a long number,
    deep nesting, a float past the range)."""
    good = _record("a", 200, 3.0).to_dict()
    path = data.draw(st.sampled_from(list(_paths(good))[1:]))
    target = good
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = "@@RAW@@"
    depth = data.draw(st.sampled_from([33, 2000]))
    raw = data.draw(st.sampled_from([
        json.dumps(data.draw(JSON_VALUES)), "9" * data.draw(st.sampled_from([101, 4301, 5001])),
        "[" * depth + "]" * depth, f"1e{data.draw(st.integers(-400, 400))}"]))
    return json.dumps(good).replace('"@@RAW@@"', raw)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_records_no_traceback_exit_0_or_2_nothing_lost(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("fuzz-store")
    before = _store(folder)
    hostile = folder / data.draw(st.sampled_from(["a__D200__seed0__cfg__0000000000000000.lensllm.json",
                                                  "extra.lensllm.json", "sub/lensllm_record.json"]))
    hostile.parent.mkdir(exist_ok=True)
    hostile.write_text(_mutated_record(data), encoding="utf-8")
    with _quiet_streams():
        code = main(["fit", str(folder), "--target", TARGET])
    assert code in (0, 2)
    after = _contents(folder)
    assert {p: after[p] for p in before if p != str(hostile)} == {p: b for p, b in before.items() if p != str(hostile)}


CARD_TEXT = st.one_of(
    st.text(alphabet=st.sampled_from(list("[]{}:-&*!|>'\"\n ,#0123456789e.abxyz\t?%@`")), max_size=200),
    JSON_VALUES.map(lambda v: yaml.safe_dump({"lensllm": v}) if not isinstance(v, float) else str(v)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(front_matter=CARD_TEXT, variant=st.sampled_from(["as is", "deep", "digits"]))
def test_fuzz_cards_no_traceback_exit_0_or_2(tmp_path_factory, front_matter, variant):
    if variant == "deep":
        front_matter = "x: " + "[" * 2000 + "]" * 2000 + "\n" + front_matter
    elif variant == "digits":
        front_matter = f"{front_matter}\nn: {'7' * 5001}"
    folder = _card(tmp_path_factory.mktemp("fuzz-card"), front_matter)
    with _quiet_streams():
        assert main(["card", "show", str(folder)]) in (0, 2)
        assert main(["predict", str(folder), "--model", "model", "--at", "1000"]) in (0, 2)


class _quiet_streams:
    """stdout and stderr to nowhere while the CLI runs many times (hypothesis examples)."""

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout, sys.stderr = self.saved


def test_a_card_key_that_is_not_text_is_one_line(tmp_path, capsys):
    """YAML reads '?' as a key that is no string; huggingface_hub then raises TypeError (found by the fuzz)."""
    from lensllm_hf.cli import main as cli_main

    card = tmp_path / "README.md"
    card.write_text("---\n?\n---\nhi\n", encoding="utf-8")
    assert cli_main(["card", "show", str(card)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "malformed" in err and "Traceback" not in err
