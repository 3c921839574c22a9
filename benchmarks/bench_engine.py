"""Speed and determinism of the scaling-law engine: the whole `lensllm bench` on both tables.

    python benchmarks/bench_engine.py [--repeat 3]

Target (issue 2): 2 tables x 7 budgets x 8 methods (plus adaptive) in under 5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
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
    walls, inner, outputs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"bench{i}.json"
            start = time.perf_counter()
            subprocess.run([*command, "--json", str(out)], check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
            data = json.loads(out.read_text())
            inner.append(data["seconds"])
            outputs.append(data["rows"])
    print(f"rows per run: {len(outputs[0])}")
    print(f"bench time (inside the command): best {min(inner):.2f} s, worst {max(inner):.2f} s")
    print(f"whole command incl. interpreter start: best {min(walls):.2f} s, worst {max(walls):.2f} s")
    print(f"bit-for-bit identical across runs: {all(rows == outputs[0] for rows in outputs)}")


if __name__ == "__main__":
    main()
