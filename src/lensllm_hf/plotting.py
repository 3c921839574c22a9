"""The selection plot: test loss against training-subset size D, log-log, one colour per candidate.

Each candidate shows its measured points, the fitted law, the law's interval band, the phase
transition (a triangle on the curve) and its prediction at the target (a bar at the dashed
target line). D = 0 cannot sit on a log axis: the zero-shot points stand at a marked left
edge labelled ``0``, cut off from the log scale by a break mark.

Example:
    >>> from lensllm_hf.plotting import plot_selection
    >>> plot_selection(result, "selection.png")
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_selection"]

#: How far left of the smallest subset the zero-shot column stands, in doublings.
_ZERO_GAP_DOUBLINGS = 2.5


def plot_selection(result: Any, path: str | Path | None = None, *, title: str | None = None,
                   max_candidates: int = 10, dpi: int = 150):
    """Draw a :class:`~lensllm_hf.selector.SelectionResult`; save it as PNG when ``path`` is given.

    Uses a bare ``matplotlib.figure.Figure`` (no pyplot state), so it works headless and
    leaves no figure open. Returns the Figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .laws import ScalingLaw

    fits = result.fits
    target = float(result.target_size)
    table = result.table
    candidates = fits.candidates[:max_candidates]

    observed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for c in candidates:
        if table is not None and c.model in table.models:
            row = table.models.index(c.model)
            ok = np.isfinite(table.losses[row])
            observed[c.model] = (table.sizes[ok].astype(float), table.losses[row][ok])
        else:
            observed[c.model] = (np.asarray(c.sizes, dtype=float), np.asarray(c.losses, dtype=float))
    positive = [s for sizes, _ in observed.values() for s in sizes if s > 0]
    smallest = min(positive) if positive else 1.0
    x_zero = smallest / 2**_ZERO_GAP_DOUBLINGS
    has_zero = any(np.any(sizes == 0) for sizes, _ in observed.values())

    fig = Figure(figsize=(11, 6.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    colours = [f"C{i}" for i in range(10)]
    grid = np.geomspace(smallest / 1.4, target * 1.6, 200)
    handles, ys = [], []
    for i, c in enumerate(candidates):
        colour = colours[i % len(colours)] if c.status == "complete" else "0.55"
        sizes, losses = observed[c.model]
        ys.extend(losses.tolist())
        zero = sizes == 0
        ax.plot(sizes[~zero], losses[~zero], "o", color=colour, ms=5.5, zorder=3,
                mfc=colour if c.status == "complete" else "none")
        if zero.any():
            ax.plot([x_zero] * int(zero.sum()), losses[zero], "s", color=colour, ms=6, zorder=3,
                    mfc="white", mew=1.6)
        label = _label(i, c)
        law = _law(c, ScalingLaw)
        if law is not None:
            curve = law.predict(grid)
            lo, hi = law.predict_interval(grid, level=result.level)
            # AtS fits a line to the power phase only: draw it from the transition on.
            first = law.params_.get("transition_size") or (np.min(law.sizes_[law.sizes_ > 0])
                                                           if np.any(law.sizes_ > 0) else grid[0])
            start = float(first) / 1.4
            keep = (grid >= start) & np.isfinite(curve) & (curve > 0)
            ax.plot(grid[keep], curve[keep], "-", color=colour, lw=1.8, zorder=2)
            ax.fill_between(grid[keep], lo[keep], hi[keep], color=colour, alpha=0.12, lw=0, zorder=1)
            if c.transition_size:
                t = float(c.transition_size)
                ax.plot([t], law.predict([t]), "v", color=colour, ms=9, mec="black", mew=0.6, zorder=4)
            if c.predicted_loss is not None and c.interval:
                # Side by side around the target line, so overlapping intervals stay readable.
                x = target * 1.07 ** (i - (len(candidates) - 1) / 2)
                ax.errorbar([x], [c.predicted_loss], yerr=[[c.predicted_loss - c.interval[0]],
                                                                [c.interval[1] - c.predicted_loss]],
                            fmt="D", color=colour, ms=6, capsize=4, lw=1.6, zorder=5)
                ys.extend([c.interval[0], c.interval[1]])
        handles.append(Line2D([], [], color=colour, marker="o", lw=1.8 if law is not None else 0,
                              mfc=colour if c.status == "complete" else "none", label=label))

    ax.axvline(target, color="0.2", ls="--", lw=1.1, zorder=0)
    ax.annotate(f"target\nD = {target:,.0f}", xy=(target, 1), xycoords=("data", "axes fraction"),
                xytext=(-6, -6), textcoords="offset points", ha="right", va="top", fontsize=9, color="0.2")
    finite = [y for y in ys if y is not None and math.isfinite(y) and y > 0]
    if finite:
        low, high = min(finite), max(finite)
        ax.set_ylim(low / 1.08, high * 1.08)
    left = x_zero / 1.7 if has_zero else smallest / 1.7
    ax.set_xlim(left, target * 2.2)
    if has_zero:
        _zero_edge(ax, x_zero, smallest)

    ax.set_xlabel("training examples D (log scale)")
    ax.set_ylabel(f"{result.metric} (log scale)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    best = fits.best
    headline = f"LensLLM selection: fine-tune {best}" if best else "LensLLM selection: no candidate ranked"
    fig.suptitle(title or headline, x=0.01, ha="left", fontsize=13, fontweight="bold")
    saved = result.fraction_saved
    subtitle = (f"method {fits.method}, strategy {result.strategy}, {result.level:.0%} intervals; "
                f"FLOPs spent {result.flops:.3g}" + (f" ({saved:.0%} saved vs. fine-tuning all on the target)"
                                                     if saved is not None else ""))
    ax.set_title(subtitle, loc="left", fontsize=9, color="0.3")
    _plain_y(ax)
    keys = [Line2D([], [], color="0.3", marker="o", lw=0, label="measured"),
            Line2D([], [], color="0.3", marker="s", mfc="white", lw=0, label="zero-shot (D = 0)"),
            Line2D([], [], color="0.3", lw=1.8, label="fitted law"),
            Line2D([], [], color="0.3", lw=6, alpha=0.2, label=f"{result.level:.0%} interval"),
            Line2D([], [], color="0.3", marker="v", mec="black", lw=0, ms=8, label="phase transition"),
            Line2D([], [], color="0.3", marker="D", lw=0, label="prediction at target")]
    first = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9,
                      title="rank  model: predicted loss [interval]", title_fontsize=9, frameon=False)
    ax.add_artist(first)
    ax.legend(handles=keys, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8.5, frameon=False)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def _law(c: Any, ScalingLaw: Any):
    if c.status != "complete" or not c.law or not c.params:
        return None
    try:
        return ScalingLaw.from_dict({"law": c.law, "params": c.params, "sizes": c.sizes, "losses": c.losses,
                                     "transition_size": c.transition_size})
    except Exception:  # a baseline or an unknown law: points only
        return None


def _label(i: int, c: Any) -> str:
    if c.status != "complete":
        return f" -   {c.model}: failed"
    value = c.predicted_loss if c.predicted_loss is not None else c.score
    interval = f" [{c.interval[0]:.3g}, {c.interval[1]:.3g}]" if c.interval else ""
    source = " (published fit)" if c.source else ""
    return f"{i + 1:>2}.  {c.model}: {value:.3g}{interval}{source}"


def _zero_edge(ax: Any, x_zero: float, smallest: float) -> None:
    """Label the zero-shot column ``0`` and draw a break between it and the log scale."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = [t for t in _decades(smallest, ax.get_xlim()[1])]
    ax.xaxis.set_major_locator(FixedLocator([x_zero, *ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: "0" if math.isclose(x, x_zero) else _fmt(x)))
    brk = math.sqrt(x_zero * smallest)
    ax.axvspan(brk / 1.12, brk * 1.12, color="white", zorder=0.5)
    for dx in (1 / 1.12, 1.12):
        ax.plot([brk * dx / 1.06, brk * dx * 1.06], [-0.015, 0.015], transform=ax.get_xaxis_transform(),
                color="black", lw=1, clip_on=False, zorder=6)
    ax.axvline(brk / 1.12, color="0.75", lw=0.6, ls=":", zorder=0.6)


def _plain_y(ax: Any) -> None:
    """Loss ticks as plain numbers (2, 3, 5 ...) rather than 3x10^0."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = ax.get_ylim()
    subs = (1.0, 2.0, 5.0) if high / low > 30 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _decades(low: float, high: float) -> list[float]:
    start, stop = math.floor(math.log10(max(low, 1e-12))), math.ceil(math.log10(high))
    return [10.0**k for k in range(start, stop + 1) if low / 1.5 <= 10.0**k <= high]


def _fmt(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:g}M"
    if x >= 1e3:
        return f"{x / 1e3:g}k"
    return f"{x:g}"
