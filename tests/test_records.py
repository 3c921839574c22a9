"""Run records: schema, atomic writes, stores (local and fsspec), and the curve table they load into."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import make_record

from lensllm_hf import records
from lensllm_hf.engine.curves import CurveError
from lensllm_hf.errors import LensLLMError
from lensllm_hf.records import (Evaluation, RecordError, RecordWarning, RunKey, RunRecord, SchemaError, check_writable,
                                config_hash, has_record, list_records, load_table, read_record, record_name,
                                write_record)


# -- names and hashes ---------------------------------------------------------------------------


def test_record_name_is_stable_readable_and_safe():
    name = record_name("Qwen/Qwen2-0.5B", 800, 0, "3f2a9c01d4")
    assert name == RunKey("Qwen/Qwen2-0.5B", 800, 0, "3f2a9c01d4").name  # one identity, one name
    assert name.startswith("Qwen--Qwen2-0.5B__D800__seed0__3f2a9c01d4__") and name.endswith(".lensllm.json")
    assert name == record_name("Qwen/Qwen2-0.5B", 800, 0, "3f2a9c01d4")  # stable across calls
    assert record_name("gpt2", None, None, None).startswith("gpt2__Dall__seednone__none__")
    deep = "/very/deep/" + "folder/" * 30 + "model"
    name = record_name(deep, 200, 1, "h")
    assert "/" not in name and len(name) <= 200 and not name.startswith(".")
    # Two long paths that share their beginning still get different names.
    assert record_name(deep + "2", 200, 1, "h") != name
    assert record_name("my model:v2", 200, 1, "h").startswith("my-model-v2__")
    key = RunKey("a/b", 8, 0, "h")
    assert records.record_path("memory://runs/", key) == f"memory://runs/{key.name}"
    assert records.record_path("runs", RunKey("a", 8, 0, "h")) == os.path.join("runs", RunKey("a", 8, 0, "h").name)


def test_config_hash_ignores_key_order_and_float_spelling():
    a = config_hash({"learning_rate": 5e-5, "epochs": 3, "adapter": {"r": 8}})
    b = config_hash({"adapter": {"r": 8}, "epochs": 3, "learning_rate": 0.00005})
    assert a == b and len(a) == 10
    assert config_hash({"learning_rate": 1e-4}) != config_hash({"learning_rate": 5e-5})


# -- round trip and atomic writes --------------------------------------------------------------


def test_write_then_read_round_trips(tmp_path):
    rec = make_record(zero_shot=4.0, F=2.5)
    rec.warnings.append("note")
    path = write_record(rec, tmp_path)
    assert os.path.basename(path) == rec.name
    back = read_record(path)
    assert back == rec
    assert back.zero_shot_loss == 4.0
    # A path ending in .json is the file itself.
    path2 = write_record(rec, tmp_path / "sub" / "lensllm_record.json")
    assert read_record(path2) == rec
    assert oct(os.stat(path2).st_mode & 0o777) == "0o644"


def test_non_finite_numbers_are_written_as_null(tmp_path):
    rec = make_record(loss=float("nan"), status="failed")
    rec.evaluations[-1].metrics["eval_loss"] = float("inf")
    path = write_record(rec, tmp_path)
    data = json.loads(open(path).read())  # strict JSON: no NaN tokens
    assert data["evaluations"][-1]["eval_loss"] is None
    assert data["evaluations"][-1]["metrics"]["eval_loss"] is None


def test_a_crash_during_write_leaves_the_previous_record(tmp_path, monkeypatch):
    path = write_record(make_record(loss=3.0), tmp_path)
    before = open(path).read()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process is stopped between writing and renaming

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        write_record(make_record(loss=2.0), tmp_path)
    monkeypatch.undo()
    assert open(path).read() == before
    assert os.listdir(tmp_path) == [os.path.basename(path)]  # no temporary file left behind


def test_a_killed_writer_never_leaves_half_a_file(tmp_path):
    """SIGKILL a process that rewrites a large record in a loop: every read sees a whole record."""
    target = tmp_path / "lensllm_record.json"
    script = textwrap.dedent(f"""
        import sys
        from lensllm_hf.records import RunRecord, Evaluation, write_record
        big = [Evaluation(step=i, examples_seen=i, eval_loss=1.0, metrics={{"m%d" % j: 1.0 for j in range(50)}})
               for i in range(400)]
        i = 0
        while True:
            i += 1
            write_record(RunRecord(model={{"id": "m"}}, train_size=i, evaluations=big), {str(target)!r})
            if i == 1:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sizes = set()
        for _ in range(20):
            sizes.add(read_record(target).train_size)  # never a partial file, even mid-rewrite
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = read_record(target)
    assert last.train_size >= 1 and len(last.evaluations) == 400
    assert len(sizes) > 1  # the writer really was rewriting while we read


def test_fsspec_store_write_list_load_and_has_record(memory_store):
    write_record(make_record("a", 200, loss=3.0), memory_store)
    write_record(make_record("a", 400, loss=2.5), memory_store)
    write_record(make_record("b", 200, loss=3.5), memory_store)
    paths = list_records(memory_store)
    assert len(paths) == 3 and all(p.startswith("memory://") for p in paths)
    assert read_record(paths[0]).model_id == "a"
    assert has_record(memory_store, RunKey("a", 400, 0, "cfg1"))
    assert not has_record(memory_store, RunKey("a", 800, 0, "cfg1"))
    table = load_table(memory_store)
    assert table.models == ["a", "b"] and table.sizes.tolist() == [200, 400]
    import fsspec

    leftovers = [p for p in fsspec.filesystem("memory").find(memory_store.removeprefix("memory:/")) if ".tmp" in p]
    assert leftovers == []


def test_has_record_checks_completion(tmp_path):
    write_record(make_record("a", 200, status="interrupted"), tmp_path)
    assert not has_record(tmp_path, RunKey("a", 200, 0, "cfg1"))
    assert has_record(tmp_path, RunKey("a", 200, 0, "cfg1"), complete=False)


def test_list_records_finds_store_names_and_output_dirs_but_not_other_json(tmp_path):
    write_record(make_record("a"), tmp_path)
    write_record(make_record("b"), tmp_path / "run-b" / "lensllm_record.json")
    (tmp_path / "run-b" / "trainer_state.json").write_text("{}")
    (tmp_path / "results.json").write_text("[]")
    found = [os.path.relpath(p, tmp_path) for p in list_records(tmp_path)]
    assert found == [make_record("a").name, os.path.join("run-b", "lensllm_record.json")]


# -- bad input ----------------------------------------------------------------------------------


def _assert_one_line_naming(error, path, fix_word):
    text = str(error.value)
    assert "\n" not in text and str(path) in text and fix_word in text
    assert isinstance(error.value, LensLLMError)


@pytest.mark.parametrize("change, fix", [
    ({"schema_version": 99}, "upgrade lensllm_hf"),
    ({"schema_version": "1"}, "unknown schema_version"),
    ({"schema_version": 0}, "unknown schema_version"),
    ({"key": {"model": "other", "train_size": 200, "seed": 0, "config_hash": "cfg1"}}, "does not match"),
    ({"key": [1]}, "'key' must be an object"),
    ({"key": {"model": "org/model-a"}}, "'key' lacks"),
    ({"seed": "0"}, "seed='0': must be a whole number"),
    ({"schema_version": None}, "unknown schema_version"),
    ({"status": "done"}, "one of complete"),
    ({"train_size": -3}, "train_size=-3: must be at least 0"),
    ({"model": {"name": "x"}}, "model.id: is required"),
    ({"final_eval_loss": "low"}, "final_eval_loss='low': must be a number"),
    ({"evaluations": [{"step": 1}]}, "examples_seen"),
    ({"evaluations": {}}, "must be a list"),
    ({"ntk": [1, 2]}, "ntk=[1, 2]: must be a mapping"),
])
def test_schema_errors_name_the_file_and_the_fix(tmp_path, change, fix):
    data = make_record().to_dict()
    data.update(change)
    path = tmp_path / "lensllm_record.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SchemaError) as error:
        read_record(path)
    _assert_one_line_naming(error, path, fix)
    assert error.value.path == str(path) and error.value.field.split(".")[0].split("[")[0] in {*change, "key"}


def test_missing_keys_malformed_json_and_missing_files(tmp_path):
    data = make_record().to_dict()
    del data["evaluations"], data["ntk"]
    bad = tmp_path / "a.lensllm.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(SchemaError) as error:
        read_record(bad)
    _assert_one_line_naming(error, bad, "missing key(s) evaluations, ntk")

    half = tmp_path / "half.lensllm.json"
    half.write_text(json.dumps(make_record().to_dict())[:50])
    with pytest.raises(SchemaError) as error:
        read_record(half)
    _assert_one_line_naming(error, half, "not valid JSON")

    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(SchemaError) as error:
        read_record(listed)
    _assert_one_line_naming(error, listed, "JSON object")

    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SchemaError):
        read_record(binary)

    with pytest.raises(RecordError) as error:
        read_record(tmp_path / "nope.json")
    _assert_one_line_naming(error, tmp_path / "nope.json", "no such record")
    with pytest.raises(RecordError, match="is a folder"):
        read_record(tmp_path)
    # load_table names each bad file of the store in a warning and goes on without it.
    write_record(make_record("good"), tmp_path)
    with pytest.warns(RecordWarning) as caught:
        table = load_table(tmp_path)
    assert table.models == ["good"]
    named = " ".join(str(w.message) for w in caught)
    assert "a.lensllm.json" in named and "half.lensllm.json" in named


def test_store_that_cannot_be_written_or_read(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(RecordError) as error:
        check_writable(blocker / "store")
    _assert_one_line_naming(error, blocker / "store", "writable")
    with pytest.raises(RecordError, match="cannot write the record"):
        write_record(make_record(), blocker / "store")
    with pytest.raises(RecordError, match="no such store"):
        list_records(tmp_path / "missing")
    with pytest.raises(RecordError, match="fsspec"):
        list_records("nosuchprotocol://bucket/runs")
    check_writable(tmp_path / "new" / "store")  # creates it
    assert os.listdir(tmp_path / "new" / "store") == []


# -- the curve table ----------------------------------------------------------------------------


def test_load_table_builds_the_engine_table(tmp_path):
    for size, loss in ((200, 3.0), (400, 2.8), (800, 2.5)):
        write_record(make_record("a", size, seed=0, loss=loss, flos=size * 10.0, zero_shot=4.0, F=size / 100), tmp_path)
        write_record(make_record("a", size, seed=1, loss=loss + 0.2, flos=size * 10.0, F=size / 100), tmp_path)
        write_record(make_record("b", size, loss=loss + 0.5, flos=size * 20.0, params=5000), tmp_path)
    write_record(make_record("b", 1600, loss=1.0, status="interrupted"), tmp_path)
    write_record(make_record("b", 3200, loss=1.0, status="failed"), tmp_path)
    table = load_table(tmp_path)
    assert table.models == ["a", "b"]
    assert table.sizes.tolist() == [0, 200, 400, 800]  # unfinished runs do not count
    np.testing.assert_allclose(table.losses[0], [4.0, 3.1, 2.9, 2.6])  # seeds averaged
    np.testing.assert_allclose(table.flops[0], [0.0, 2000, 4000, 8000])
    assert math.isnan(table.losses[1, 0])  # b has no zero-shot evaluation
    assert table.params.tolist() == [1000, 5000]
    assert "size(s) 0" in table.problems["b"] and "a" not in table.problems
    with pytest.raises(CurveError, match="size"):
        table.points(1)
    sizes, losses = table.points(0)
    assert sizes.tolist() == [0, 200, 400, 800]
    # Without the zero-shot column every model is usable.
    plain = load_table(tmp_path, zero_shot=False)
    assert plain.sizes.tolist() == [200, 400, 800] and plain.problems == {}


def test_load_table_feeds_the_scaling_laws(tmp_path):
    from lensllm_hf.engine.laws import LensLLMLaw, RectifiedLaw

    for size in (200, 400, 800, 1600):
        write_record(make_record("a", size, loss=2.0 + 50 / (10 + size ** 0.6), F=3.0, zero_shot=None), tmp_path)
    table = load_table(tmp_path)
    law = RectifiedLaw().fit(*table.points(0))
    assert law.predict([100_000])[0] < table.losses[0, -1]
    free = LensLLMLaw().fit(*table.points(0))  # no spectrum given: F is fitted, and the fit says so
    assert any("probe" in w for w in free.to_fit().warnings)


def test_load_table_streamed_points_and_precedence(tmp_path):
    write_record(make_record("a", 800, loss=2.5, zero_shot=4.0, stream={200: 3.2, 400: 2.9}), tmp_path)
    write_record(make_record("a", 400, loss=2.7), tmp_path)  # a separate run of 400 wins
    table = load_table(tmp_path)
    assert table.sizes.tolist() == [0, 200, 400, 800]
    np.testing.assert_allclose(table.losses[0], [4.0, 3.2, 2.7, 2.5])
    assert load_table(tmp_path, streamed=False).sizes.tolist() == [0, 400, 800]


def test_load_table_separates_training_configurations(tmp_path):
    write_record(make_record("a", 200, chash="lr1"), tmp_path)
    write_record(make_record("a", 200, chash="lr2", loss=2.0), tmp_path)
    write_record(make_record("b", 200), tmp_path)
    assert load_table(tmp_path).models == ["a#lr1", "a#lr2", "b"]


def test_load_table_without_usable_runs_says_why(tmp_path):
    write_record(make_record("a", 200, status="interrupted"), tmp_path)
    with pytest.raises(RecordError, match="no complete run records .*1 interrupted"):
        load_table(tmp_path)
    rec = make_record("b", 200)
    rec.final_eval_loss, rec.evaluations = None, []
    write_record(rec, tmp_path)
    with pytest.raises(RecordError, match="eval_dataset"):
        load_table(tmp_path)


def test_load_table_accepts_loaded_records():
    table = load_table([make_record("a", 200), make_record("a", 400, loss=2.0)])
    assert table.sizes.tolist() == [200, 400] and table.source == "<records>"
