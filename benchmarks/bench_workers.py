"""Warm workers against one serial selection, on the demo's selection, run by hand.

    python benchmarks/bench_workers.py [--repeats 2] [--workers 2] [--plan-lines]

The demo's models, data and ``config.yaml`` are built once (``lensllm_hf.demo.build_demo``, as
``lensllm demo`` builds them); every measurement then starts from a fresh store (its own
``--output-dir``) and is timed as subprocesses, imports included:

- serial: ``lensllm select CONFIG``;
- workers: N ``lensllm select CONFIG --worker --local-workers N`` started together, then
  ``lensllm select CONFIG --from-store``: the wall time from the first start to the ranking;
- with ``--plan-lines``: the lines of ``lensllm plan`` run N at a time, then ``--from-store``
  (what a job array of one task per run does).

No thread variable is passed on (``OMP_NUM_THREADS`` is removed), so each command uses its own
thread rule: serial the cores, each worker the cores / N; ``--one-thread`` sets
``OMP_NUM_THREADS=1`` for every command instead (the user's setting, which wins). Serial and worker runs alternate; the
load average before and after each is printed, since other processes on the machine change
every figure. Each command's CPU time is recorded too: other processes change it far less than
the wall time, so ``max(worker CPU) + ranking CPU`` against the serial run's CPU time says what
an otherwise idle machine with a core per worker would show. The best candidate of each way must
agree.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lensllm() -> list[str]:
    return [sys.executable, "-m", "lensllm_hf.cli"]


ONE_THREAD = False


def environment() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT / "src")}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    if ONE_THREAD:
        env["OMP_NUM_THREADS"] = "1"
    return env


def call(argv: list[str]) -> float:
    """Run one command; its CPU seconds (user + system), which other processes on the machine change little."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, env=environment(), stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{shlex.join(argv)} failed:\n{err.read()[-3000:]}")
    return usage.ru_utime + usage.ru_stime


def best(out: Path) -> str:
    return json.loads((out / "selection.json").read_text())["best"]


def serial(config: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    cpu = call([*lensllm(), "select", str(config), "--output-dir", str(out), "--no-progress"])
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu, "best": best(out)}


def workers(config: Path, out: Path, n: int) -> dict:
    base = [*lensllm(), "select", str(config), "--output-dir", str(out), "--no-progress"]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        cpus = list(pool.map(lambda _: call([*base, "--worker", "--local-workers", str(n)]), range(n)))
    t1 = time.perf_counter()
    rank_cpu = call([*base, "--from-store"])
    t2 = time.perf_counter()
    # On a machine with a free core per worker, the wall time would be about the slowest worker's
    # CPU time plus the ranking's: the figure to set beside the serial run's CPU time.
    return {"wall_s": t2 - t0, "workers_s": t1 - t0, "from_store_s": t2 - t1, "worker_cpu_s": cpus,
            "from_store_cpu_s": rank_cpu, "idle_estimate_s": max(cpus) + rank_cpu, "best": best(out)}


def plan_lines(config: Path, out: Path, n: int) -> dict:
    base = [*lensllm(), "select", str(config), "--output-dir", str(out), "--no-progress"]
    t0 = time.perf_counter()
    done = subprocess.run([*lensllm(), "plan", str(config), "--output-dir", str(out)], env=environment(),
                          capture_output=True, text=True, check=True)
    lines = [shlex.split(line) for line in done.stdout.splitlines() if line.strip()]
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(call, lines))
    call([*base, "--from-store"])
    return {"wall_s": time.perf_counter() - t0, "runs": len(lines), "best": best(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--plan-lines", action="store_true", help="also time the plan's lines, N at a time")
    parser.add_argument("--one-thread", action="store_true", help="OMP_NUM_THREADS=1 for every command")
    parser.add_argument("--ways", default="serial,workers", help="which ways to time, in order (serial,workers)")
    args = parser.parse_args()
    global ONE_THREAD
    ONE_THREAD = args.one_thread
    sys.path.insert(0, str(ROOT / "src"))
    from lensllm_hf.demo import build_demo

    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-workers-"))
    config = build_demo(folder / "demo", log=lambda _: None)
    rows = []
    for i in range(args.repeats):
        known = {"serial": lambda out: serial(config, out),
                 "workers": lambda out: workers(config, out, args.workers),
                 "plan_lines": lambda out: plan_lines(config, out, args.workers)}
        ways = args.ways.split(",") + (["plan_lines"] if args.plan_lines else [])
        for way, measure in ((way, known[way]) for way in ways):
            tag = f"{way}{'-1thread' if ONE_THREAD else ''}"
            load = os.getloadavg()[0]
            out = folder / f"{tag}-{i}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh store each time
            row = {"way": tag, "repeat": i, **measure(out), "load_before": load,
                   "load_after": os.getloadavg()[0]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {way: min(r["wall_s"] for r in rows if r["way"] == way) for way in {r["way"] for r in rows}}
    serial_wall = next((wall for way, wall in summary.items() if way.startswith("serial")), None)
    ratios = {f"{way}_over_serial": wall / serial_wall for way, wall in summary.items()} if serial_wall else {}
    print(json.dumps({"cpu_count": os.cpu_count(), "best_wall_s": summary, **ratios,
                      "same_best": len({r["best"] for r in rows}) == 1}, indent=1))


if __name__ == "__main__":
    main()
