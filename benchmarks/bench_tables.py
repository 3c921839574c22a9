"""Read time of large curve tables: `CurveTable.read_csv` must be linear in the file size.

    python benchmarks/bench_tables.py [--repeat 3] [--megabytes 100]

Issue 8 measured the csv-module reader at 22 s for 40,000 rows and no answer in 300 s for a
100 MB table (a quadratic duplicate-name check). Target: seconds. Each table is generated into a
temporary folder in the published format (model, 15 subset sizes, size, family) and read in a
fresh interpreter, so the peak memory printed is that of one read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = [0] + [200 * 2**k for k in range(14)]
HEADER = ",".join(["config name", *map(str, SIZES), "size", "family"])


def write_table(path: Path, rows: int, *, stray_quote_at: int | None = None, seed: int = 0) -> None:
    """A table of ``rows`` models with decreasing losses; optionally a stray quote in one row."""
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(HEADER + "\n")
        chunk = 20_000
        for first in range(0, rows, chunk):
            n = min(chunk, rows - first)
            start = rng.uniform(3.0, 5.0, n)[:, None]
            drops = np.cumsum(rng.uniform(0.01, 0.2, (n, len(SIZES))), axis=1)
            losses = start - drops * (start - 1.0) / drops[:, -1:] * 0.9
            params = rng.integers(10**8, 10**10, n)
            lines = []
            for i in range(n):
                name = f"org-{(first + i) % 97}/model-{first + i}"
                if stray_quote_at is not None and first + i + 2 == stray_quote_at:
                    name = '"' + name  # opens a quoted field that swallows the rows after it
                lines.append(",".join([name, *(f"{v:.9f}" for v in losses[i]), str(params[i]), f"family-{i % 13}"]))
            handle.write("\n".join(lines) + "\n")


def read_once(path: str) -> None:
    """Child mode: read one table, print seconds, rows and peak memory as JSON."""
    import resource

    from lensllm_hf.engine.curves import CurveError, CurveTable

    start = time.perf_counter()
    try:
        table = CurveTable.read_csv(path)
        outcome = f"{len(table.models):,} models"
    except CurveError as error:
        outcome = f"CurveError: {error}"
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "outcome": outcome, "peak_mb": peak_mb}))


def measure(path: Path, repeat: int) -> dict:
    runs = []
    for _ in range(repeat):
        result = subprocess.run([sys.executable, __file__, "--read", str(path)], check=True,
                                capture_output=True, text=True)
        runs.append(json.loads(result.stdout))
    return {"best_s": min(r["seconds"] for r in runs), "worst_s": max(r["seconds"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs), "outcome": runs[0]["outcome"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--megabytes", type=float, default=100, help="size of the large table")
    parser.add_argument("--read", metavar="CSV", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read_once(args.read)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        probe = folder / "probe.csv"
        write_table(probe, 1000)
        per_row = probe.stat().st_size / 1000
        cases = {
            "40,000 rows": (40_000, None),
            f"~{args.megabytes:g} MB": (int(args.megabytes * 1e6 / per_row), None),
            f"~{args.megabytes:g} MB, stray quote at row 3": (int(args.megabytes * 1e6 / per_row), 3),
        }
        print(f"{'table':<34} {'rows':>9} {'MB':>6} {'best s':>7} {'worst s':>8} {'peak MB':>8}  outcome")
        for label, (rows, stray) in cases.items():
            path = folder / "table.csv"
            write_table(path, rows, stray_quote_at=stray)
            result = measure(path, args.repeat)
            outcome = result["outcome"]
            outcome = outcome if len(outcome) <= 90 else outcome[:89] + "…"
            print(f"{label:<34} {rows:>9,} {path.stat().st_size / 1e6:>6.1f} {result['best_s']:>7.2f} "
                  f"{result['worst_s']:>8.2f} {result['peak_mb']:>8.0f}  {outcome}")


if __name__ == "__main__":
    main()
