"""Speed and determinism of the scaling-law engine: the whole `lensllm bench` on both tables.

    python benchmarks/bench_engine.py [--repeat 3]

Target (issues 2 and 17): 2 tables x 7 budgets x every method (plus adaptive and halving) in at
most 5 s on 2 idle cores. Besides the wall times it prints the CPU seconds of the command (its
processes together): on a loaded machine the wall time says little, and comparing the CPU
seconds of two checkouts measured together (``PYTHONPATH=other/src``) says which is faster.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CURVES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "finetune-curves"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    command = [sys.executable, "-m", "lensllm_hf.cli", "bench", "--curves", str(CURVES / "flan.csv"),
               "--curves", str(CURVES / "gigaword.csv")]
    walls, cpus, inner, outputs = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"bench{i}.json"
            start, used = time.perf_counter(), _children_cpu()
            subprocess.run([*command, "--json", str(out)], check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
            cpus.append(_children_cpu() - used)
            data = json.loads(out.read_text())
            inner.append(data["seconds"])
            outputs.append(data["rows"])
    print(f"rows per run: {len(outputs[0])}")
    print(f"bench time (inside the command): best {min(inner):.2f} s, worst {max(inner):.2f} s")
    print(f"whole command incl. interpreter start: best {min(walls):.2f} s, worst {max(walls):.2f} s")
    print(f"CPU of the whole command (all its processes): best {min(cpus):.2f} s, worst {max(cpus):.2f} s")
    print(f"bit-for-bit identical across runs: {all(rows == outputs[0] for rows in outputs)}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
