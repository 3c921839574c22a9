"""Two processes racing on one local store, one of them SIGKILLed at a random moment.

Each worker simulates a selection: for every run not yet complete it claims the run, writes an
``interrupted`` record, sleeps (the "training"), writes the ``complete`` record and releases the
claim; now and then it also writes an ``interrupted`` record for a random run without claiming it
(a stray callback started outside any selection). The parent kills one worker at a random time,
watches the store the whole time, and checks afterwards:

- no complete record is ever lost (once seen complete, a run is complete at every later look);
- no run is executed by both workers at once while both are alive (from their logs);
- every run is complete at the end (the survivor took over what the killed one held);
- no reader ever saw a damaged record.

Run:  python benchmarks/store_race.py --kills 20          (prints one line per trial and a summary)
tests/test_store_race.py runs one trial in the default suite and the 20-kill loop as a slow test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve()
SRC = HERE.parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from lensllm_hf.records import Evaluation, RecordWarning, RunKey, RunRecord, Store  # noqa: E402


def keys(n: int) -> list[RunKey]:
    return [RunKey(f"model-{i}", 100, 0, "race") for i in range(n)]


def make_record(key: RunKey, status: str, owner: str) -> RunRecord:
    loss = 2.0 if status == "complete" else None
    return RunRecord(model={"id": key.model}, train_size=key.train_size, seed=key.seed, config_hash=key.config_hash,
                     status=status, training={"owner": owner},
                     evaluations=[Evaluation(step=1, examples_seen=100, eval_loss=loss)] if loss else [],
                     final_eval_loss=loss, total_flos=1.0)


class _NoClaim:
    """Sabotage for checking the checker: a claim that never excludes anyone."""

    held = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _sabotage(store: Store, how: str) -> None:
    if how == "claims":
        store.claim = lambda key, ttl_s=120: _NoClaim()
    elif how == "overwrite":
        from lensllm_hf._utils import atomic_write_text

        store.write = lambda rec: atomic_write_text(store.path_of(rec.key), json.dumps(rec.to_dict()))


def worker(store_dir: str, n_keys: int, log_path: str, ttl_s: float, seed: int, sabotage: str = "none") -> None:
    """One simulated selection; every event goes to ``log_path`` (one JSON line, flushed at once)."""
    rng, store, pid = random.Random(seed), Store(store_dir), os.getpid()
    _sabotage(store, sabotage)
    runs = keys(n_keys)
    with open(log_path, "a", encoding="utf-8") as log:
        def event(kind: str, key: RunKey | None = None) -> None:
            log.write(json.dumps({"event": kind, "key": key.model if key else None, "pid": pid, "t": time.time()}) + "\n")
            log.flush()  # in the kernel now: a SIGKILL cannot lose it

        event("ready")
        while True:
            pending = [k for k in runs if (rec := store.read(k)) is None or rec.status != "complete"]
            if not pending:
                break
            ran = False
            for key in rng.sample(pending, len(pending)):
                claim = store.claim(key, ttl_s=ttl_s)
                if claim is None:
                    continue
                with claim:
                    event("start", key)
                    store.write(make_record(key, "interrupted", str(pid)))
                    time.sleep(rng.uniform(0.005, 0.06))
                    if not claim.held:
                        event("lost", key)
                        continue
                    store.write(make_record(key, "complete", str(pid)))
                    event("done", key)
                ran = True
                if rng.random() < 0.3:  # a stray callback: must never replace a complete record
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RecordWarning)
                        store.write(make_record(rng.choice(runs), "interrupted", f"stray-{pid}"))
            if not ran:
                time.sleep(0.01)  # the rest are held by the other worker: wait for it
        event("exit")


def trial(index: int, *, n_keys: int = 8, ttl_s: float = 5.0, seed: int = 0, timeout_s: float = 60.0,
          sabotage: str = "none") -> dict:
    """One race; returns what happened and the list of violations (empty when all held).

    ``sabotage`` ("claims": claims exclude no one; "overwrite": writes skip the re-read) breaks
    the store in the workers on purpose, to show the checks catch it.
    """
    rng = random.Random(seed * 1000 + index)
    with tempfile.TemporaryDirectory(prefix="lensllm-race-") as tmp:
        store_dir, logs = os.path.join(tmp, "store"), [os.path.join(tmp, f"w{i}.log") for i in range(2)]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
        procs = [subprocess.Popen([sys.executable, str(HERE), "worker", store_dir, str(n_keys), logs[i], str(ttl_s),
                                   str(rng.randrange(10**9)), sabotage], env=env) for i in range(2)]
        store, runs = Store(store_dir), keys(n_keys)
        violations: list[str] = []
        seen_complete: set[str] = set()
        lost: set[str] = set()

        def look() -> None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for key in runs:
                    rec = store.read(key)
                    if rec is not None and rec.status == "complete":
                        seen_complete.add(key.model)
                    elif key.model in seen_complete and key.model not in lost:
                        lost.add(key.model)
                        violations.append(f"{key.model}: complete record lost (now {rec and rec.status})")
            violations.extend(f"reader warning: {w.message}" for w in caught)

        try:
            deadline = time.time() + 30
            while not all(os.path.exists(p) and os.path.getsize(p) for p in logs) and time.time() < deadline:
                time.sleep(0.005)  # both imported and started
            kill_after = rng.uniform(0.0, 0.35)  # the whole race takes ~0.2-0.5 s: early, mid-run and late kills
            victim_index = rng.randrange(2)
            victim = procs[victim_index]
            t0 = time.time()
            while time.time() - t0 < kill_after:
                look()
                time.sleep(0.002)
            victim_was_running = victim.poll() is None
            victim.send_signal(signal.SIGKILL)
            killed_at = time.time()
            end = time.time() + timeout_s
            while any(p.poll() is None for p in procs) and time.time() < end:
                look()
                time.sleep(0.002)
            if any(p.poll() is None for p in procs):
                violations.append("a worker did not finish in time")
            look()
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                p.wait()
        incomplete = [k.model for k in runs if (r := store.read(k)) is None or r.status != "complete"]
        if incomplete:
            violations.append(f"runs not complete at the end: {incomplete}")
        events = [json.loads(line) for path in logs for line in open(path, encoding="utf-8") if line.endswith("\n")]
        victim_pid = victim.pid
        death = {victim_pid: killed_at}
        executions: dict[str, list[tuple[int, float, float]]] = {}
        open_runs: dict[tuple[int, str], float] = {}
        for e in sorted(events, key=lambda e: e["t"]):
            if e["event"] == "start":
                open_runs[(e["pid"], e["key"])] = e["t"]
            elif e["event"] in ("done", "lost"):
                start = open_runs.pop((e["pid"], e["key"]))
                executions.setdefault(e["key"], []).append((e["pid"], start, e["t"]))
        for (pid, key), start in open_runs.items():  # cut short by the kill
            executions.setdefault(key, []).append((pid, start, death.get(pid, float("inf"))))
        taken_over = 0
        for key, runs_of_key in executions.items():
            for i, (pid_a, s_a, e_a) in enumerate(runs_of_key):
                for pid_b, s_b, e_b in runs_of_key[i + 1:]:
                    if pid_a == pid_b:
                        continue
                    both_live_until = min(e_a, e_b, death.get(pid_a, float("inf")), death.get(pid_b, float("inf")))
                    if max(s_a, s_b) < both_live_until:
                        violations.append(f"{key}: run by {pid_a} and {pid_b} at once while both lived")
                    else:
                        taken_over += 1
        ran = sum(len(v) for v in executions.values())
        return {"trial": index, "kill_after_s": round(kill_after, 3), "victim_was_running": victim_was_running,
                "executions": ran, "taken_over": taken_over, "violations": violations}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "worker":
        store_dir, n_keys, log_path, ttl_s, seed, sabotage = argv[1:]
        worker(store_dir, int(n_keys), log_path, float(ttl_s), int(seed), sabotage)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="trials, one SIGKILL each (default 20)")
    parser.add_argument("--keys", type=int, default=8, help="runs in the store (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sabotage", choices=("none", "claims", "overwrite"), default="none",
                        help="break the store on purpose to see the checks fail")
    args = parser.parse_args(argv)
    t0, failed, mid_run, taken = time.time(), 0, 0, 0
    for i in range(args.kills):
        result = trial(i, n_keys=args.keys, seed=args.seed, sabotage=args.sabotage)
        failed += bool(result["violations"])
        mid_run += result["victim_was_running"]
        taken += result["taken_over"]
        print(json.dumps(result), flush=True)
    print(f"{args.kills} kill times ({mid_run} while the victim was running), {taken} runs taken over from the killed "
          f"worker, {failed} trials with a violation; {time.time() - t0:.1f} s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
