"""Every method on every family of curve tables: the figures issue 17 judges the engine by.

    python benchmarks/families.py [--methods default,ats] [--families LLM,LCDB] [--out benchmarks/figures]
                                  [--json families.json] [--lcdb-budgets own|to128|top5] [--split]

Families (each judged on its own, never pooled):

- ``LLM``: FLAN and Gigaword (``../shared/data/finetune-curves``), target 1,638,400, the papers'
  7 budgets 3,200 .. 204,800; the budgets these tables give themselves (``lensllm bench``'s
  default, sizes from target/8 down to target/512) are checked to be the same 7.
- ``LCDB``: the 70 tables of ``../shared/data/learning-curves-lcdb``, each with its own target
  (largest size) and budgets (``--lcdb-budgets``: its own, those down to target/128 only, or its
  five largest sizes up to target/8).

``--split`` scores FLAN, Gigaword and the LCDB tables at even and odd positions (LCDB-A, LCDB-B)
apart: a setting chosen on one LLM table and one half is read on the others.

Per family and method it prints the mean over tables (of the means over budgets) of PearCorr,
RelAcc, the 90 % interval's coverage at the target (with its lowest and highest over the
distances from budget to target), P(best)'s Brier score against the uniform forecast's
(1 - 1/n per ranking), the calibration of the pick (its mean P(best) against how often it is
truly best) and the compute spent (a fraction of fine-tuning every candidate on the target),
and every method's PearCorr / RelAcc at most 2 % of that compute (the policies run at that cap,
the grid methods at their largest budget within it). It draws, per family, a reliability diagram
of P(best) and a cost-quality chart (RelAcc and PearCorr against compute, for the grid at each
budget and each policy at each cap of ``POLICY_CAPS``) into ``--out``.
Every table runs in the protocol's process pool (one worker per core).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from lensllm_hf._utils import json_safe
from lensllm_hf.cli.bench import format_family
from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.engine.protocol import (DEFAULT_BUDGETS, DEFAULT_TARGET, BenchTable, at_compute,
                                        coverage_by_distance, plan_table, run_bench, summarize_families)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
METHODS = ["default", "ats", "subtuning", "power", "rectified", "lensllm", "halving", "adaptive"]
#: Methods with a P(best) forecast drawn in the reliability diagrams, and the strategies of the cost chart.
FORECASTS = ["default", "ats", "halving", "adaptive"]
STRATEGIES = {"default": ("grid, default", "tab:blue", "o"), "ats": ("grid, AtS", "tab:gray", "s"),
              "subtuning": ("grid, SubTuning", "tab:olive", "v"), "halving": ("halving", "tab:red", "^"),
              "adaptive": ("adaptive", "tab:green", "D")}
AIM_FRACTION, AIM_RELACC = 0.02, 0.97


def llm_plans(split: bool = False) -> list[BenchTable]:
    """FLAN and Gigaword on the papers' target and budgets (checked equal to their own); with
    ``split``, each table a family of its own."""
    plans = []
    for name in ("flan.csv", "gigaword.csv"):
        table = CurveTable.read_csv(DATA / "finetune-curves" / name)
        family = table.name if split else "LLM"
        plan = plan_table(table, DEFAULT_TARGET, DEFAULT_BUDGETS, family=family)
        own = plan_table(table, family=family)
        if (own.target, own.budgets) != (plan.target, plan.budgets):
            sys.exit(f"{name}: its own target and budgets {own.target}, {own.budgets} differ from the papers'; "
                     "score both")
        plans.append(plan)
    return plans


#: Budgets of an LCDB table (its sizes; target = its largest): its own (lensllm bench's: target/8
#: down to target/512 with 3 sizes to fit), down to target/128 only, or the five largest <= target/8.
LCDB_BUDGETS = {
    "own": lambda sizes, target: None,
    "to128": lambda sizes, target: [s for i, s in enumerate(sizes) if target / 128 <= s <= target / 8 and i >= 2],
    "top5": lambda sizes, target: [s for s in sizes if s <= target / 8][-5:],
}


def lcdb_plans(budgets: str = "own", split: bool = False) -> list[BenchTable]:
    """The LCDB tables, each on its own target and the ``budgets`` of :data:`LCDB_BUDGETS`; with
    ``split``, the tables at even and odd positions are two families (LCDB-A, LCDB-B), to choose
    a setting on one half and read it on the other."""
    plans = []
    for i, path in enumerate(sorted((DATA / "learning-curves-lcdb").glob("lcdb-*.csv"))):
        table = CurveTable.read_csv(path)
        sizes = [int(s) for s in np.sort(table.sizes[table.sizes > 0])]
        family = f"LCDB-{'AB'[i % 2]}" if split else "LCDB"
        plans.append(plan_table(table, sizes[-1], LCDB_BUDGETS[budgets](sizes, sizes[-1]), family=family))
    return plans


def reliability(rows: list[dict], family: str, out: Path) -> Path:
    """P(best) forecast against how often it came true, every candidate of every ranking pooled,
    in 10 bins of the forecast; the marker's area grows with the bin's count, written beside it
    for ``default``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, linestyle=":", label="calibrated")
    edges = np.linspace(0, 1, 11)
    for method in FORECASTS:
        p, hit = [], []
        for r in rows:
            if r["method"] == method and r["p_best_by_model"] is not None:
                p.extend(r["p_best_by_model"])
                hit.extend(1.0 if i == r["truly_best"] else 0.0 for i in range(len(r["p_best_by_model"])))
        if not p:
            continue
        p, hit = np.array(p), np.array(hit)
        which = np.clip(np.digitize(p, edges) - 1, 0, 9)
        bins = [b for b in range(10) if np.any(which == b)]
        x = [p[which == b].mean() for b in bins]
        y = [hit[which == b].mean() for b in bins]
        n = np.array([np.sum(which == b) for b in bins])
        colour = STRATEGIES.get(method, (None, None))[1]
        ax.plot(x, y, color=colour, label=method, linewidth=1)
        ax.scatter(x, y, s=8 + 60 * np.sqrt(n / n.max()), color=colour)
        if method == "default":
            for xi, yi, ni in zip(x, y, n):
                ax.annotate(str(ni), (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=7, color=colour)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="P(best) forecast", ylabel="how often the candidate was best",
           title=f"{family}: reliability of P(best)")
    ax.legend(loc="upper left", fontsize=8)
    path = out / f"reliability-{family.lower()}.png"
    fig.savefig(path, dpi=110)
    return path


def cost_quality(rows: list[dict], family: str, out: Path) -> Path:
    """Mean RelAcc and PearCorr against mean compute, per strategy and distance from budget to target."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for method, (label, colour, marker) in STRATEGIES.items():
        points = sorted(_by_distance(rows, method).values())
        if not points:
            continue
        x, rel, corr = zip(*points)
        style = dict(color=colour, marker=marker, label=label, linestyle="-" if len(x) > 1 else "none")
        axes[0].plot(x, rel, **style)
        axes[1].plot(x, corr, **style)
    for ax, name in zip(axes, ("RelAcc", "PearCorr")):
        ax.set_xscale("log")
        ax.set(xlabel="compute (fraction of fine-tuning every candidate on the target)", ylabel=name,
               title=f"{family}: {name} against compute (mean over tables)")
        ax.axvline(AIM_FRACTION, color="black", linewidth=0.6, linestyle=":")
        ax.grid(alpha=0.3)
    axes[0].axhline(AIM_RELACC, color="black", linewidth=0.6, linestyle=":")
    axes[0].legend(fontsize=8)
    path = out / f"cost-quality-{family.lower()}.png"
    fig.savefig(path, dpi=110)
    return path


def _by_distance(rows: list[dict], method: str) -> dict[float, tuple[float, float, float]]:
    """Distance (doublings from budget to target, to the half; a policy: its compute cap) -> mean
    (compute fraction, RelAcc, PearCorr) over the tables."""
    groups: dict[float, list[dict]] = {}
    for r in rows:
        if r["method"] == method:
            key = r["compute_cap"] if r["budget"] is None else round(2 * math.log2(r["target"] / r["budget"])) / 2
            groups.setdefault(key, []).append(r)
    return {k: tuple(float(np.nanmean([r[m] if r[m] is not None else np.nan for r in g]))
                     for m in ("compute_fraction", "relacc", "pearson")) for k, g in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--families", default="LLM,LCDB", help="comma-separated (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "figures",
                        help="folder for the PNGs (default: benchmarks/figures)")
    parser.add_argument("--json", type=Path, default=None, help="write every row and the summary")
    parser.add_argument("--lcdb-budgets", choices=sorted(LCDB_BUDGETS), default="own",
                        help="the LCDB tables' budgets (default: their own, as lensllm bench sets them)")
    parser.add_argument("--split", action="store_true",
                        help="FLAN, Gigaword and two halves of LCDB (tables at even and odd positions) apart")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    makers = {"LLM": lambda: llm_plans(args.split), "LCDB": lambda: lcdb_plans(args.lcdb_budgets, args.split)}
    start = time.perf_counter()
    plans = [plan for family in args.families.split(",") if family.strip() for plan in makers[family.strip()]()]
    rows = run_bench(plans, methods)
    seconds = time.perf_counter() - start
    summary, cheap = summarize_families(rows), at_compute(rows, AIM_FRACTION)
    args.out.mkdir(parents=True, exist_ok=True)
    for family in dict.fromkeys(p.family for p in plans):
        group = [r for r in rows if r["family"] == family]
        print(format_family(family, [p for p in plans if p.family == family], summary[family]))
        if family in ("LLM", "flan", "gigaword"):
            print("\n(the tables' own target and budgets, lensllm bench's default, are these: the same rows)")
        for method in ("default", "ats"):
            if method in methods:
                cov = coverage_by_distance([r for r in group if r["method"] == method])
                print(f"\n{method} coverage at the target by doublings ahead: "
                      + ", ".join(f"{k:g}: {100 * v:.0f} %" for k, v in cov.items()))
        print(f"\nat most {AIM_FRACTION:.0%} of the compute (a policy run at that cap; a grid method at its largest "
              "budget within it): " + "; ".join(f"{m} {c['pearson']:.1f} / {c['relacc']:.1f} at {100 * c['compute_fraction']:.2f} % "
                                                f"({c['tables']} tables)" for m, c in cheap[family].items()))
        figures = [reliability(group, family, args.out), cost_quality(group, family, args.out)]
        print("\nwrote " + ", ".join(str(f) for f in figures) + "\n")
    print(f"{len(rows)} rows from {len(plans)} tables in {seconds:.1f} s")
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": json_safe(rows), "families": json_safe(summary),
                                         "seconds": seconds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
