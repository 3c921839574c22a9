"""The store: one run identity, claims, never losing a complete record, and nothing silently skipped."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from conftest import make_record

from lensllm_hf import records
from lensllm_hf.errors import ConfigError, LensLLMError
from lensllm_hf.records import (Claim, RecordError, RecordWarning, RunKey, RunRecord, Store, load_table,
                                read_record, write_record)


def messages(caught) -> str:
    return " | ".join(str(w.message) for w in caught)


# -- one run identity ---------------------------------------------------------------------------


def test_names_that_used_to_collide_are_distinct():
    models = ["модель/A", "模型/A", "org/A", "A ", "A", "a", "A\t", "org--A", "org/A/", ".A", "A.", "a/b", "a:b"]
    names = {RunKey(m, 200, 0, "h").name for m in models}
    assert len(names) == len(models)
    # Still distinct on a case-insensitive file system.
    assert len({n.lower() for n in names}) == len(models)
    for name in names:
        assert name.endswith(".lensllm.json") and len(name) <= 200 and not name.startswith(".")
        assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in name)


_text = st.text(min_size=1, max_size=300)
_keys = st.builds(RunKey, model=_text, train_size=st.none() | st.integers(0, 10**30),
                  seed=st.none() | st.integers(-(10**30), 10**30), config_hash=st.none() | st.text(max_size=40),
                  revision=st.none() | st.text(max_size=40), adapter=st.none() | st.text(max_size=20))


@settings(max_examples=200, deadline=None)
@given(_keys, _keys)
def test_run_key_names_are_injective_and_safe(a, b):
    for key in (a, b):
        name = key.name
        assert len(name) <= 200 and name.endswith(".lensllm.json") and not name.startswith(".")
        assert all(ch.isascii() and (ch.isalnum() or ch in "._-") for ch in name)
        assert RunKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    assert (a.name == b.name) == (a == b)
    assert (a.name.lower() == b.name.lower()) == (a == b)


def test_every_part_of_the_key_counts():
    base = RunKey("m", 200, 0, "h")
    others = [RunKey("m", 400, 0, "h"), RunKey("m", 200, 1, "h"), RunKey("m", 200, 0, "g"), RunKey("m", 200, 0, None),
              RunKey("m", 200, 0, "h", revision="v2"), RunKey("m", 200, 0, "h", adapter="ab12"),
              RunKey("m", None, 0, "h"), RunKey("m", 200, None, "h")]
    assert len({base.name, *(k.name for k in others)}) == len(others) + 1


def test_numpy_integers_make_the_same_key():
    import numpy as np

    key = RunKey("m", np.int64(200), np.int32(0), "h")
    assert key == RunKey("m", 200, 0, "h") and type(key.train_size) is int and key.name == RunKey("m", 200, 0, "h").name


@pytest.mark.parametrize("bad", [dict(model=""), dict(model=3), dict(train_size=-1), dict(train_size=True),
                                 dict(seed=1.5), dict(config_hash=5), dict(revision=1)])
def test_bad_keys_are_one_line_errors(bad):
    args = dict(model="m", train_size=8, seed=0, config_hash="h") | bad
    with pytest.raises(RecordError) as error:
        RunKey(**args)
    assert "\n" not in str(error.value) and isinstance(error.value, LensLLMError)


def test_the_record_carries_its_key_and_old_records_still_read(tmp_path):
    rec = make_record("модель/A", revision="v1", adapter="ab12")
    assert rec.key == RunKey("модель/A", 200, 0, "cfg1", revision="v1", adapter="ab12")
    path = write_record(rec, tmp_path)
    data = json.loads(open(path, encoding="utf-8").read())
    assert data["schema_version"] == 2 and data["key"] == rec.key.to_dict() and "adapter_hash" not in data
    assert read_record(path) == rec
    # A version-1 record (no key) is read; its key comes from its fields.
    old = make_record("org/old").to_dict()
    del old["key"]
    old["schema_version"] = 1
    old_key = RunKey("org/old", 200, 0, "cfg1")
    (tmp_path / records.legacy_record_name(old_key)).write_text(json.dumps(old))
    store = Store(tmp_path)
    assert store.read(old_key).key == old_key  # found under its version-1 name
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert {r.model_id for r in store.records()} == {"модель/A", "org/old"}


# -- writing: never losing a complete record ----------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_complete_record_is_never_replaced_by_an_unfinished_one(tmp_path, memory_store, where):
    store = Store(tmp_path / "runs" if where == "local" else memory_store)
    key = make_record().key
    store.write(make_record(status="interrupted"))
    path = store.write(make_record(loss=2.5))
    for status in ("interrupted", "failed"):
        with pytest.warns(RecordWarning, match="already complete"):
            assert store.write(make_record(status=status)) == path
        assert store.read(key).status == "complete" and store.read(key).final_eval_loss == 2.5
    # write_record into a store goes the same way; a newer complete record may replace it.
    with pytest.warns(RecordWarning, match="already complete"):
        write_record(make_record(status="interrupted"), store)
    write_record(make_record(loss=2.0), store.url)
    assert store.read(key).final_eval_loss == 2.0


def test_a_store_folder_named_like_a_json_file_works(tmp_path):
    store_dir = tmp_path / "runs.json"
    store = Store(store_dir)
    store.write(make_record("a"))
    assert store_dir.is_dir()
    path = write_record(make_record("b"), store_dir)  # an existing folder is a store, whatever its name
    assert os.path.dirname(path) == str(store_dir)
    assert [r.model_id for r in records.load_records(store_dir)] == ["a", "b"]
    assert load_table(str(store_dir)).models == ["a", "b"]
    # A new path ending in .json is a file (the callback's output_dir/lensllm_record.json).
    single = write_record(make_record("c"), tmp_path / "out" / "lensllm_record.json")
    assert read_record(single).model_id == "c"


def test_require_persistent_refuses_memory_stores(tmp_path):
    with pytest.raises(RecordError, match="memory:// store lives only inside this process") as error:
        records.require_persistent("memory://runs")
    assert "\n" not in str(error.value)
    records.require_persistent(tmp_path)
    records.require_persistent(str(tmp_path / "new"))


def test_bad_store_urls_are_one_line_errors():
    with pytest.raises(RecordError, match="fsspec"):
        Store("nosuchprotocol://bucket/runs")
    with pytest.raises(RecordError, match="not a folder or URL"):
        Store("")
    with pytest.raises(RecordError, match="expected a RunKey"):
        Store("runs").path_of("gpt2")


# -- claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_one_claim_at_a_time_and_released_on_exit(tmp_path, memory_store, where):
    store = Store(tmp_path if where == "local" else memory_store)
    key = RunKey("m", 8, 0, "h")
    with store.claim(key) as claim:
        assert isinstance(claim, Claim) and claim.held and claim.key == key
        assert store.claim(key) is None  # a live owner holds it
        info = store.claim_of(key)
        assert info["owner"] == claim.owner and info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert time.time() - info["heartbeat_at"] < 5
    assert not claim.held and store.claim_of(key) is None
    again = store.claim(key)
    assert again is not None and again.owner != claim.owner
    again.release()
    # A complete run is never claimed.
    store.write(RunRecord(model={"id": "m"}, train_size=8, seed=0, config_hash="h", status="complete",
                          final_eval_loss=1.0))
    assert store.claim(key) is None


def _python(script: str, **kwargs):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.Popen([sys.executable, "-c", script], env=env, text=True, **kwargs)


def test_heartbeats_keep_a_claim_alive_and_a_paused_owner_is_taken_over(tmp_path):
    import signal
    import subprocess

    TTL = 0.8  # short for a fast test, long enough for a loaded machine
    store = Store(tmp_path)
    key = RunKey("m", 8, 0, "h")
    child = _python(f"""
import sys, time
from lensllm_hf.records import Store, RunKey
claim = Store({str(tmp_path)!r}).claim(RunKey("m", 8, 0, "h"), ttl_s={TTL})
print(claim.path, flush=True)
sys.stdin.readline()
time.sleep({TTL})  # several heartbeat periods after it wakes up
print("held" if claim.held else "lost", flush=True)
claim.release()
""", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        first_path = child.stdout.readline().strip()
        time.sleep(1.5 * TTL)  # longer than the ttl: only the heartbeat thread keeps it
        assert store.claim(key, ttl_s=TTL) is None
        assert time.time() - store.claim_of(key)["heartbeat_at"] < TTL
        old_owner = store.claim_of(key)["owner"]
        child.send_signal(signal.SIGSTOP)  # a paused process: alive, no heartbeats
        time.sleep(1.5 * TTL)
        assert store.claim_of(key) is None
        second = store.claim(key, ttl_s=TTL)
        assert second is not None and second.generation == 1 and second.held
        assert not os.path.exists(first_path)  # the claim it replaced is gone
        # Its last heartbeat lands late and brings the old claim file back: the newer claim still rules.
        with open(first_path, "w") as handle:
            json.dump({"owner": old_owner, "heartbeat_at": time.time(), "ttl_s": TTL}, handle)
        child.send_signal(signal.SIGCONT)
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "lost"  # the old owner learns it lost the run
        assert child.wait(timeout=30) == 0
        assert not os.path.exists(first_path)
        assert store.claim_of(key)["owner"] == second.owner and second.held
        second.release()
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait()


def test_a_claim_of_a_dead_process_on_this_machine_is_taken_over_at_once(tmp_path):
    store = Store(tmp_path)
    key = RunKey("m", 8, 0, "h")
    child = _python("import os; from lensllm_hf.records import Store, RunKey; "
                    f"c = Store({str(tmp_path)!r}).claim(RunKey('m', 8, 0, 'h'), ttl_s=600); "
                    "os._exit(0 if c else 1)")  # dies holding it: no release, no atexit
    assert child.wait(timeout=60) == 0
    assert len(os.listdir(tmp_path / records.CLAIMS_FOLDER)) == 1
    claim = store.claim(key, ttl_s=600)  # its heartbeat is fresh, but its process is gone
    assert claim is not None
    claim.release()


def test_only_one_of_many_threads_gets_the_claim(tmp_path):
    store = Store(tmp_path)
    key = RunKey("m", 8, 0, "h")
    got, barrier = [], threading.Barrier(8)

    def grab():
        barrier.wait()
        claim = Store(tmp_path).claim(key)
        if claim is not None:
            got.append(claim)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 1
    got[0].release()
    assert store.claim_of(key) is None


def test_damaged_claim_files_do_not_block_a_run_forever(tmp_path):
    store = Store(tmp_path)
    key = RunKey("m", 8, 0, "h")
    folder = tmp_path / records.CLAIMS_FOLDER
    folder.mkdir()
    damaged = folder / f"{key.name.removesuffix('.lensllm.json')}.0.claim"
    damaged.write_text("{half")
    assert store.claim(key, ttl_s=60) is None  # just written: maybe a claim being written
    old = time.time() - 120
    os.utime(damaged, (old, old))
    claim = store.claim(key, ttl_s=60)
    assert claim is not None and not damaged.exists()
    claim.release()


def test_bad_ttl_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="ttl_s") as error:
        Store(tmp_path).claim(RunKey("m", 8, 0, "h"), ttl_s=0)
    assert (error.value.key, error.value.value) == ("ttl_s", 0)


# -- nothing silently changes a ranking ---------------------------------------------------------


def test_fifos_devices_sockets_and_link_loops_are_skipped_never_read(tmp_path, no_hang):
    store = Store(tmp_path)
    store.write(make_record("good"))
    os.mkfifo(tmp_path / "fifo.lensllm.json")
    os.symlink("/dev/zero", tmp_path / "zero.lensllm.json")
    os.symlink("loop.lensllm.json", tmp_path / "loop.lensllm.json")
    os.symlink("nowhere", tmp_path / "dangling.lensllm.json")
    os.symlink(".", tmp_path / "folder-loop")  # a folder loop is never walked into
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.lensllm.json"))
    try:
        with pytest.warns(RecordWarning) as caught:
            paths = records.list_records(tmp_path)
        assert [os.path.basename(p) for p in paths] == [make_record("good").name]
        said = messages(caught)
        for what in ("fifo.lensllm.json: is a FIFO", "zero.lensllm.json: is a character device",
                     "loop.lensllm.json: is a link loop", "sock.lensllm.json: is a socket"):
            assert what in said
        with pytest.warns(RecordWarning):
            assert [r.model_id for r in store.records()] == ["good"]
            assert load_table(tmp_path).models == ["good"]
        for name in ("fifo", "zero", "loop", "sock"):
            with pytest.raises(RecordError, match="(FIFO|character device|socket), not a regular file|link loop"):
                read_record(tmp_path / f"{name}.lensllm.json")
    finally:
        sock.close()


def test_a_fifo_or_device_link_at_a_runs_name_is_skipped_and_then_replaced(tmp_path, no_hang):
    store = Store(tmp_path)
    fifo_key, dev_key = RunKey("a", 200, 0, "cfg1"), RunKey("b", 200, 0, "cfg1")
    os.mkfifo(tmp_path / fifo_key.name)
    os.symlink("/dev/null", tmp_path / dev_key.name)
    with pytest.warns(RecordWarning, match="FIFO"):
        assert store.read(fifo_key) is None
    with pytest.warns(RecordWarning, match="character device"):
        assert store.read(dev_key) is None
    with pytest.warns(RecordWarning, match="replaced by the record"):
        store.write(make_record("a"))
    with pytest.warns(RecordWarning, match="replaced by the record"):
        store.write(make_record("b"))
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")  # the link, not the device, was replaced
    assert store.read(fifo_key).status == store.read(dev_key).status == "complete"


def _as_unprivileged(function):
    """``function()``'s result, run without root's right to read every file (a forked child as nobody)."""
    if os.geteuid() != 0:
        return function()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, answer through the pipe, never return into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            answer = json.dumps(function())
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            answer = json.dumps({"error": repr(error)})
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        answer = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return answer


def test_unreadable_records_and_folders_are_named_and_skipped():
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="lensllm-unreadable-")  # not under pytest's private tmp: nobody must enter it
    hidden = os.path.join(root, "locked")
    try:
        os.chmod(root, 0o755)
        store = Store(root)
        store.write(make_record("good"))
        os.chmod(store.write(make_record("secret")), 0o600 if os.geteuid() == 0 else 0)
        write_record(make_record("inside"), os.path.join(hidden, "lensllm_record.json"))
        os.chmod(hidden, 0o700 if os.geteuid() == 0 else 0)
        if os.geteuid() == 0:
            os.chown(root, 0, 0)

        def read():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                models = [r.model_id for r in Store(root).records()]
            return {"models": models, "warnings": [str(w.message) for w in caught]}

        answer = _as_unprivileged(read)
        assert answer.get("models") == ["good"], answer
        said = " | ".join(answer["warnings"])
        assert "secret" in said and "permission denied" in said and "locked: cannot list" in said
    finally:
        os.chmod(hidden, 0o755)
        shutil.rmtree(root, ignore_errors=True)


def test_a_damaged_record_is_named_and_its_run_counts_as_not_done(tmp_path):
    store = Store(tmp_path)
    path = store.write(make_record("a", 200))
    store.write(make_record("a", 400, loss=2.5))
    key = make_record("a", 200).key
    with open(path, "r+", encoding="utf-8") as handle:
        handle.truncate(40)
    with pytest.warns(RecordWarning, match=f"{os.path.basename(path)}.*not valid JSON.*runs again"):
        assert store.read(key) is None  # so select runs it again
    with pytest.warns(RecordWarning, match=os.path.basename(path)):
        assert not records.has_record(tmp_path, key)
    with pytest.warns(RecordWarning, match=os.path.basename(path)):
        assert load_table(tmp_path).sizes.tolist() == [400]
    with pytest.warns(RecordWarning, match=os.path.basename(path)):
        claim = store.claim(key)  # and can be claimed to run again
    assert claim is not None
    claim.release()


def test_a_second_record_of_a_run_is_reported_and_counted_once(tmp_path):
    store = Store(tmp_path)
    store.write(make_record("a", 200, seed=0, loss=3.0))
    store.write(make_record("a", 200, seed=1, loss=4.0))  # another seed: averaged
    write_record(make_record("a", 200, seed=0, loss=1.0), tmp_path / "run-copy" / "lensllm_record.json")
    with pytest.warns(RecordWarning, match="recorded twice; counted once") as caught:
        table = load_table(tmp_path)
    assert len(caught) == 1
    assert table.losses[0].tolist() == [3.5]  # not (3 + 4 + 1) / 3: a copy is not a seed
    # Given as loaded records, a repeat is also counted once.
    with pytest.warns(RecordWarning, match="given twice"):
        again = load_table([make_record("a", 200, loss=3.0), make_record("a", 200, loss=1.0)])
    assert again.losses[0].tolist() == [3.0]


def test_a_record_under_another_runs_name_is_reported_and_not_counted(tmp_path):
    store = Store(tmp_path)
    a_path = store.write(make_record("a", 200))
    b_key = make_record("b", 200).key
    # A copy of a's record saved under b's name (or any other name) is a's run, not b's.
    (tmp_path / b_key.name).write_text(open(a_path, encoding="utf-8").read())
    (tmp_path / "backup.lensllm.json").write_text(open(a_path, encoding="utf-8").read())
    with pytest.warns(RecordWarning, match="holds the record of another run"):
        assert store.read(b_key) is None
    with pytest.warns(RecordWarning, match="not counted") as caught:
        assert [r.model_id for r in store.records()] == ["a"]
    said = messages(caught)
    assert b_key.name in said and "backup.lensllm.json" in said


def test_the_old_path_style_write_still_lands_on_the_runs_name(tmp_path):
    rec = make_record("a", 200, revision="v2")
    legacy_style = records.record_path(tmp_path, RunKey("a", 200, 0, "cfg1"))  # no revision: another key's name
    with pytest.warns(RecordWarning, match="written as"):
        written = write_record(rec, legacy_style)
    assert os.path.basename(written) == rec.name and records.has_record(tmp_path, rec.key)
    assert records.has_record(tmp_path, rec.key) and not records.has_record(tmp_path, RunKey("a", 200, 0, "cfg1"))
