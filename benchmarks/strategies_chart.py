"""Cost against quality of every selection strategy on the curve tables: one PNG.

Grid methods (``default``, ``ats``) give one point per budget (every candidate on every size up
to it); the policies (``adaptive``, ``halving``) one point per compute cap of
``POLICY_CAPS``. x is the compute spent as a fraction of fine-tuning every candidate on the target (log
scale); y is RelAcc (left) and PearCorr (right); one row per table. The dotted lines mark issue 17's
aim: 2 % of the compute, RelAcc 0.97.

    python benchmarks/strategies_chart.py [--curves flan.csv --curves gigaword.csv] [--out strategies.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lensllm_hf._utils import check_output_file
from lensllm_hf.engine.protocol import DEFAULT_TARGET, run_bench
from lensllm_hf.engine.curves import CurveTable

CURVES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "finetune-curves"
STRATEGIES = {  # method -> (label, colour, marker)
    "default": ("grid, default", "tab:blue", "o"),
    "ats": ("grid, AtS", "tab:gray", "s"),
    "adaptive": ("adaptive", "tab:green", "D"),
    "halving": ("halving", "tab:red", "^"),
}
AIM_FRACTION, AIM_RELACC = 0.02, 0.97


def chart(tables: list[CurveTable], out: Path, target: int = DEFAULT_TARGET) -> list[dict]:
    """Score every strategy on ``tables`` and draw the chart to ``out``; returns the rows."""
    from matplotlib.figure import Figure

    rows = run_bench(tables, list(STRATEGIES), target=target)
    fig = Figure(figsize=(11, 4.2 * len(tables)), layout="constrained")
    axes = fig.subplots(len(tables), 2, squeeze=False)
    for (ax_rel, ax_corr), table in zip(axes, tables):
        for method, (label, colour, marker) in STRATEGIES.items():
            points = sorted((r["compute_fraction"], r["relacc"], r["pearson"]) for r in rows
                            if r["dataset"] == table.name and r["method"] == method)
            if not points:
                continue
            x, rel, corr = zip(*points)
            style = dict(color=colour, marker=marker, label=label, linestyle="-" if len(x) > 1 else "none")
            ax_rel.plot(x, rel, **style)
            ax_corr.plot(x, corr, **style)
        for ax, name in ((ax_rel, "RelAcc"), (ax_corr, "PearCorr")):
            ax.set_xscale("log")
            ax.set_xlabel("compute (fraction of fine-tuning every candidate on the target)")
            ax.set_ylabel(name)
            ax.set_title(f"{table.name}: {name} against compute")
            ax.axvline(AIM_FRACTION, color="black", linestyle=":", linewidth=1)
            ax.grid(True, which="both", alpha=0.3)
        ax_rel.axhline(AIM_RELACC, color="black", linestyle=":", linewidth=1)
        ax_rel.legend(loc="lower right")
    fig.suptitle(f"Selection strategies on {', '.join(t.name for t in tables)} (target {target:,})")
    fig.savefig(out, dpi=110)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--curves", action="append", type=Path, metavar="CSV",
                        help="a curve table; repeat for more (default: the shared flan and gigaword tables)")
    parser.add_argument("--target", type=int, default=DEFAULT_TARGET)
    parser.add_argument("--out", type=Path, default=Path("strategies.png"), metavar="PNG")
    args = parser.parse_args()
    check_output_file(args.out)
    paths = args.curves or [CURVES / "flan.csv", CURVES / "gigaword.csv"]
    rows = chart([CurveTable.read_csv(p) for p in paths], args.out, args.target)
    for row in rows:
        print(f"{row['dataset']:<10} {row['method']:<9} budget={row['budget'] or '-':>7} "
              f"compute={100 * row['compute_fraction']:6.2f}%  RelAcc={row['relacc']:.3f}  "
              f"PearCorr={row['pearson']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
