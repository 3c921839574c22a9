"""Cost of P(best) and of a ranking against the number of candidates: both must be linear.

    python benchmarks/scaling.py [--sizes 300,1000,3000] [--repeat 3]

Issue 17 measured the earlier P(best) (an n x 161n matrix) at 167 s and 4.3 GB for 1,000
candidates. Aim: 3,000 candidates at most 1.5x the per-candidate time of 300, peak memory
under 1.5 GB. Each size runs in a fresh interpreter (so one size's memory does not hide
another's) and prints, best of ``--repeat``:

- ``p_best``: :func:`lensllm_hf.engine.ranking.p_best` on random split log-normals (medians
  over 1 nat, spreads 0.05-0.3 below and 0.5-2x that above);
- ``ranking``: a :class:`~lensllm_hf.engine.ranking.Ranking` built from that many fitted lines
  (sorting, every row's prediction and spreads at the target, and P(best));

with CPU seconds, CPU microseconds per candidate and the peak memory traced by tracemalloc
(numpy reports its arrays to it) during the call.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc

import numpy as np


def measure(what: str, n: int, repeat: int) -> dict:
    """Child mode: the best of ``repeat`` CPU times of one call and its peak traced memory."""
    from lensllm_hf.engine.fit import Fit
    from lensllm_hf.engine.ranking import CandidateFit, Ranking, p_best

    rng = np.random.default_rng(n)
    mu = rng.uniform(0.0, 1.0, n)
    below = rng.uniform(0.05, 0.3, n)
    above = below * rng.uniform(0.5, 2.0, n)
    terms = {"noise_var": 1e-4, "largest_size": 3200.0, "extrapolation_sd_per_doubling": 0.02,
             "extrapolation_sd_per_doubling_below": 0.04}
    fits = [Fit("ats", {"a": a, "b": -0.05}, (800.0, 1600.0, 3200.0), (1.0, 0.97, 0.94), (True,) * 3, terms)
            for a in 1.0 + mu]

    def call():
        if what == "p_best":
            return p_best(mu, below, above)
        return Ranking(1_638_400, "ats", [CandidateFit(f"m{i}", fit=f, score=float(f.predict([1_638_400])[0]))
                                          for i, f in enumerate(fits)])

    times = []
    for _ in range(repeat):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"what": what, "n": n, "seconds": min(times), "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="300,1000,3000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("WHAT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.repeat)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{'':<8} {'candidates':>10} {'CPU s':>8} {'us/cand':>8} {'vs first':>8} {'peak MB':>8}")
    for what in ("p_best", "ranking"):
        first = None
        for n in sizes:
            out = subprocess.run([sys.executable, __file__, "--child", what, str(n), "--repeat", str(args.repeat)],
                                 check=True, capture_output=True, text=True)
            r = json.loads(out.stdout)
            per = r["seconds"] / n
            first = first or per
            print(f"{what:<8} {n:>10,} {r['seconds']:>8.3f} {1e6 * per:>8.0f} {per / first:>7.2f}x {r['peak_mb']:>8.1f}")


if __name__ == "__main__":
    main()
