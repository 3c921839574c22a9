"""Ray against serial on the demo's selection, and where Ray's extra time goes. Run by hand.

    python benchmarks/bench_ray.py                    # 2 pairs, serial and Ray alternating
    python benchmarks/bench_ray.py --pairs 4 --cpus 2 --json ray.json

Each selection is the demo's (``lensllm demo`` builds it once: models, data, ``config.yaml``), run
as a subprocess into a fresh output folder, imports included, exactly as a user runs it::

    lensllm select DEMO/config.yaml --output-dir NEW --no-progress                  # serial
    lensllm select DEMO/config.yaml --output-dir NEW --no-progress --backend ray --ray-num-cpus 2

Both pin one torch thread per process (``OMP_NUM_THREADS=1``, as the demo does; Ray's actors get
one CPU each), so the comparison is two processes against one, not threads. The pairs alternate
the order (serial first, then Ray first) so a change of load on a shared machine weighs on both.
Each pair reports the ratio Ray / serial, the CPU seconds each spent (all its processes: the
figure a busy machine does not change much), and whether the two rankings agree (same order,
same predicted losses to 1e-6).

The breakdown, in this process: ``import ray``, ``ray.init`` of a local cluster, the actors up
(each imports torch and transformers), and the runs themselves (the records' ``wall_time_s``,
summed, serial against Ray). Figures on a 2-core machine shared with other jobs vary with the
load: the ratio of a pair, not a single time, is the figure to read.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def select(config: Path, out: Path, *extra: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``lensllm select`` subprocess; the CPU time counts every process
    it started and waited for (Ray's own processes and its actors included)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    command = [sys.executable, "-m", "lensllm_hf.cli", "select", str(config), "--output-dir", str(out),
               "--no-progress", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ranking(out: Path) -> list[tuple[str, float]]:
    rows = json.loads((out / "selection.json").read_text())["ranking"]
    return [(r["model"], r["predicted_loss"]) for r in rows]


def same_ranking(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    return [m for m, _ in a] == [m for m, _ in b] and all(
        abs(x - y) <= 1e-6 * max(1.0, abs(x)) for (_, x), (_, y) in zip(a, b) if x is not None and y is not None)


def run_seconds(out: Path) -> float:
    """The runs' own time: their records' wall_time_s, summed."""
    from lensllm_hf.records import Store

    return sum(r.wall_time_s or 0.0 for r in Store(out / "store").records())


def breakdown(cpus: int) -> dict[str, float]:
    """Seconds to import Ray, start a local cluster, and have ``cpus`` warm actors (their imports)."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    t0 = time.perf_counter()
    import ray

    t1 = time.perf_counter()
    from lensllm_hf.selector.ray_backend import RayBackend

    backend = RayBackend(cluster_cpus=cpus)
    backend.start(runs=cpus)
    ray_module = backend._wait_started()
    t2 = time.perf_counter()
    ray_module.get([actor.__ray_ready__.remote() for actor in backend._actors])  # each has imported the run stack
    t3 = time.perf_counter()
    backend.close()
    t4 = time.perf_counter()
    assert not ray.is_initialized()
    return {"import_ray_s": t1 - t0, "ray_init_s": backend.timings["cluster_s"], "cluster_and_pool_s": t2 - t1,
            "actors_ready_s": t3 - t2, "close_s": t4 - t3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--pairs", type=int, default=2, help="serial/Ray pairs, alternating which goes first")
    parser.add_argument("--cpus", type=int, default=2, help="--ray-num-cpus of the Ray runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="bench-ray-"))

    from lensllm_hf.demo import build_demo

    config = build_demo(folder / "demo", log=lambda line: print(line, file=sys.stderr))
    report: dict = {"cpu_count": os.cpu_count(), "pairs": []}
    for i in range(args.pairs):
        order = ["serial", "ray"] if i % 2 == 0 else ["ray", "serial"]
        pair: dict = {"load_before": os.getloadavg()[0]}
        for kind in order:
            out = folder / f"{kind}-{i}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh store: every run is made
            extra = ("--backend", "ray", "--ray-num-cpus", str(args.cpus)) if kind == "ray" else ()
            pair[f"{kind}_s"], pair[f"{kind}_cpu_s"] = select(config, out, *extra)
            pair[f"{kind}_runs_s"] = run_seconds(out)
        pair["ratio"] = pair["ray_s"] / pair["serial_s"]
        pair["same_ranking"] = same_ranking(ranking(folder / f"serial-{i}"), ranking(folder / f"ray-{i}"))
        report["pairs"].append(pair)
        print(json.dumps(pair), flush=True)
    report["breakdown"] = breakdown(args.cpus)
    print("breakdown:", json.dumps(report["breakdown"]), flush=True)
    report["median_ratio"] = statistics.median(p["ratio"] for p in report["pairs"])
    print(json.dumps({k: v for k, v in report.items() if k != "pairs"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
