"""The selection plot: test loss against training-subset size D, log-log, one style per candidate.

Everything drawn for a candidate comes from the one :class:`~lensllm_hf.engine.fit.Fit` its ranking row
carries: the line is ``fit.predict``, the band ``fit.predict_interval`` at the ranking's level,
both on a grid that ends exactly at the target, so the band's two ends at the target are the
ranking's interval (the bar beside it), number for number. The points are the fit's own:
filled where the fit used them, hollow where it did not (before the power phase, zero-shot).
D = 0 cannot sit on a log axis: zero-shot points stand at a marked left edge labelled ``0``.
The title is the ranking's pick statement (the pick, its P(best), the near-ties).

Example:
    >>> from lensllm_hf.plotting import plot_selection
    >>> plot_selection(result, "selection.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._utils import display

__all__ = ["Curve", "curve_of", "plot_ranking", "plot_selection"]

#: How far left of the smallest subset the zero-shot column stands, in doublings.
_ZERO_GAP_DOUBLINGS = 2.5
#: Points of each drawn curve (log-spaced; the last one is the target itself).
_GRID_POINTS = 240
#: Ratio between neighbouring prediction bars right of the target line.
_BAR_STEP = 1.06
#: Longest candidate name in the legend (the table and JSON keep the full name).
_NAME_LIMIT = 38
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">", "p", "*")
_LINESTYLES = ("-", (0, (5, 2)), (0, (1, 1.5)), (0, (5, 1.5, 1, 1.5)))
_HATCHES = ("", "////", "\\\\\\\\", "....", "xxxx", "||||", "----", "++++", "oooo", "****")


@dataclass(frozen=True)
class Curve:
    """What the plot draws for one fit: the law and its band on a grid ending exactly at the target.

    Attributes:
        sizes: the grid, log-spaced from just before the first size the fit used; ``sizes[-1]``
            is the target.
        loss: ``fit.predict(sizes)``.
        low, high: ``fit.predict_interval(sizes, level)``.
    """

    sizes: np.ndarray
    loss: np.ndarray
    low: np.ndarray
    high: np.ndarray


def curve_of(fit: Any, target: float, level: float, points: int = _GRID_POINTS) -> Curve:
    """The curve and band of ``fit`` up to ``target``, from the fit itself (nothing re-derived).

    The grid starts a little before the smallest positive size the fit used (a line fitted to
    the power phase is not drawn through the points it left out) and ends at ``target``, so
    ``(curve.low[-1], curve.high[-1])`` is the ranking's interval at the target.

    Example:
        >>> from lensllm_hf.engine.laws import PowerLaw
        >>> fit = PowerLaw().fit([100, 200, 400, 800], [2.0, 1.8, 1.65, 1.55]).to_fit()
        >>> curve = curve_of(fit, 10_000, 0.9)
        >>> curve.sizes[-1] == 10_000 and (curve.low[-1], curve.high[-1]) == tuple(
        ...     float(x[0]) for x in fit.predict_interval([10_000], 0.9))
        True
    """
    used = [s for s, u in zip(fit.sizes, fit.used, strict=True) if u and s > 0]
    first = min(used) if used else min((s for s in fit.sizes if s > 0), default=target / 100)
    start = min(first / 1.25, target)
    sizes = np.geomspace(start, target, points)
    sizes[-1] = target  # exactly: geomspace's last point may differ from it in the last bit
    low, high = fit.predict_interval(sizes, level)
    return Curve(sizes=sizes, loss=fit.predict(sizes), low=low, high=high)


def plot_selection(result: Any, path: str | Path | None = None, *, title: str | None = None,
                   max_candidates: int = 20, dpi: int = 150):
    """Draw a :class:`~lensllm_hf.selector.SelectionResult`; save it as PNG when ``path`` is given.

    Returns the matplotlib Figure (a bare ``Figure``: no pyplot state, works headless).
    """
    saved = result.fraction_saved
    subtitle = (f"method {result.fits.method}, strategy {result.strategy}, {100 * result.level:g}% intervals; "
                f"FLOPs spent {result.flops:.3g}"
                + (f" ({saved:.0%} saved vs. fine-tuning all on the target)" if saved is not None else ""))
    return plot_ranking(result.fits, path, table=result.table, metric=result.metric, title=title,
                        subtitle=subtitle, max_candidates=max_candidates, dpi=dpi)


def plot_ranking(ranking: Any, path: str | Path | None = None, *, table: Any = None, metric: str = "eval_loss",
                 title: str | None = None, subtitle: str | None = None, max_candidates: int = 20, dpi: int = 150):
    """Draw a :class:`~lensllm_hf.engine.ranking.Ranking` (what ``lensllm fit --json`` writes); save it when ``path`` is given.

    Args:
        ranking: the ranking; each complete row with a Fit gets its points, line, band and bar.
        table: the curve table, for the points of rows without a fit (baselines, failed fits).
        metric: what the losses are, for the y label.
        title: replaces the pick statement as the title.
        subtitle: a line under the title (default: method and interval level).
        max_candidates: draw at most this many rows, best first; the legend says how many more.

    Returns:
        The matplotlib Figure.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    target, level = float(ranking.target), float(ranking.level)
    shown = ranking.candidates[:max_candidates]
    styles = _styles(len(shown))
    points = {c.model: _points(c, table) for c in shown}
    positive = [s for sizes, _, _ in points.values() for s in sizes if s > 0]
    smallest = min(positive) if positive else target / 100
    x_zero = smallest / 2**_ZERO_GAP_DOUBLINGS
    has_zero = any(np.any(sizes == 0) for sizes, _, _ in points.values())

    fig = Figure(figsize=(12.5, 6.8), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Few candidates: tinted bands. Many: faint tints that do not pile up into mud, each band
    # told apart by its edges (the candidate's colour and line style) and its hatch pattern.
    many = len(shown) > 6
    band_alpha = 0.16 if len(shown) <= 4 else 0.1 if not many else 0.04
    handles, ys = [], []
    for i, c in enumerate(shown):
        colour, linestyle, marker, hatch = styles[i]
        complete = c.status == "complete"
        if not complete:
            colour = "0.55"
        sizes, losses, used = points[c.model]
        ys.extend(losses.tolist())
        xs = np.where(sizes == 0, x_zero, sizes)
        for mask, filled, kind in ((used, True, "used"), (~used, False, "unused")):
            if mask.any():
                ax.plot(xs[mask], losses[mask], linestyle="none", marker=marker if complete else "x", color=colour,
                        ms=6, mew=1.4, mfc=colour if filled else "none", zorder=4, gid=f"{kind}:{c.model}")
        if complete and c.fit is not None:
            curve = curve_of(c.fit, target, level)
            ax.plot(curve.sizes, curve.loss, linestyle=linestyle, color=colour, lw=1.9, zorder=3, gid=f"law:{c.model}")
            ax.fill_between(curve.sizes, curve.low, curve.high, color=colour, alpha=band_alpha, lw=0, zorder=1,
                            gid=f"band:{c.model}")
            if hatch:
                ax.fill_between(curve.sizes, curve.low, curve.high, facecolor="none", edgecolor=colour, alpha=0.2,
                                hatch=hatch, lw=0, zorder=1.1)
            for edge in (curve.low, curve.high):
                ax.plot(curve.sizes, edge, linestyle=linestyle, color=colour, lw=1.0 if many else 0.7,
                        alpha=0.8 if many else 0.55, zorder=2)
            low, high = c.interval
            # Beside the target line, one slot per candidate, so overlapping intervals stay readable.
            x = target * _BAR_STEP ** (i + 1)
            ax.errorbar([x], [c.predicted_loss], yerr=[[c.predicted_loss - low], [high - c.predicted_loss]],
                        fmt=marker, color=colour, ms=6, capsize=4, lw=1.6, zorder=5, label=f"bar:{c.model}")
            ax.plot([target, x], [low, low], color=colour, lw=0.6, alpha=0.5, zorder=2)
            ax.plot([target, x], [high, high], color=colour, lw=0.6, alpha=0.5, zorder=2)
            ys.extend([low, high])
        line = Line2D([], [], color=colour, marker=marker if complete else "x", linestyle=linestyle,
                      lw=1.9 if complete and c.fit is not None else 0, mfc=colour)
        if complete and c.fit is not None:  # the legend swatch shows the band too: tint, hatch and line
            swatch = Patch(facecolor=colour, alpha=0.35, hatch=hatch or None, edgecolor=colour,
                           lw=0)
            handles.append(((swatch, line), _label(i, c)))
        else:
            handles.append((line, _label(i, c)))

    ax.axvline(target, color="0.2", ls="--", lw=1.1, zorder=0)
    ax.annotate(f"target\nD = {target:,.0f}", xy=(target, 1), xycoords=("data", "axes fraction"),
                xytext=(-6, -6), textcoords="offset points", ha="right", va="top", fontsize=9, color="0.2")
    finite = [y for y in ys if y is not None and math.isfinite(y) and y > 0]
    if finite:
        ax.set_ylim(min(finite) / 1.1, max(finite) * 1.1)
    ax.set_xlim(x_zero / 1.7 if has_zero else smallest / 1.7, target * _BAR_STEP ** (len(shown) + 2))
    if has_zero:
        _zero_edge(ax, x_zero, smallest)
    ax.set_xlabel("training examples D (log scale)")
    ax.set_ylabel(f"{display(metric)} (log scale): lower is better")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    headline = title or ranking.pick_statement()
    fig.suptitle("\n".join(textwrap.wrap(headline, 110, break_on_hyphens=False)), x=0.01, ha="left", fontsize=12.5,
                 fontweight="bold")
    ax.set_title(subtitle or f"method {display(ranking.method)}, {100 * level:g}% intervals", loc="left",
                 fontsize=9, color="0.3")
    _plain_y(ax)

    more = len(ranking.candidates) - len(shown)
    legend_title = f"rank  model: predicted [{100 * level:g}% interval]  P(best)"
    if more > 0:
        legend_title += f"\n(and {more} more, not drawn: see the table)"

    keys = [Line2D([], [], color="0.3", marker="o", lw=0, label="measured, used by the fit"),
            Line2D([], [], color="0.3", marker="o", mfc="none", lw=0, label="measured, not used by the fit"),
            Line2D([], [], color="0.3", lw=1.9, label="fitted law, up to the target"),
            Patch(facecolor="0.3", alpha=0.25, label=f"{100 * level:g}% interval (same fit)"),
            Line2D([], [], color="0.3", marker="D", lw=0, label="prediction at the target")]
    if has_zero:
        keys.insert(2, Line2D([], [], lw=0, label="(D = 0: zero-shot, at the left edge)"))
    # Both legends outside the axes, right. The constrained layout makes room for the axes' own
    # legend (the last one made), so that is the wider one, the candidates'; the key is added beside.
    key = ax.legend(handles=keys, loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8, frameon=False)
    ax.add_artist(key)
    ax.legend([h for h, _ in handles], [label for _, label in handles], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8.5, title=legend_title, title_fontsize=8.5, frameon=False, alignment="left",
              handlelength=2.6)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig


def _styles(n: int) -> list[tuple[Any, Any, str, str]]:
    """(colour, line style, marker, hatch) per candidate, all different up to 40 candidates.

    Up to 10 candidates: tab10 colours and solid lines; more: tab20 colours, a line style per
    block of 20, a marker per candidate and hatched bands.
    """
    from matplotlib import colormaps

    palette = colormaps["tab10" if n <= 10 else "tab20"].colors
    out = []
    for i in range(n):
        colour = palette[i % len(palette)]
        linestyle = _LINESTYLES[(i // len(palette)) % len(_LINESTYLES)]
        hatch = _HATCHES[i % len(_HATCHES)] if n > 6 else ""
        out.append((colour, linestyle, _MARKERS[i % len(_MARKERS)], hatch))
    return out


def _points(c: Any, table: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sizes, losses, used): the fit's own points, else the table's row (nothing marked used)."""
    if c.fit is not None:
        return (np.asarray(c.fit.sizes, dtype=float), np.asarray(c.fit.losses, dtype=float),
                np.asarray(c.fit.used, dtype=bool))
    if table is not None and c.model in table.models:
        row = table.models.index(c.model)
        ok = np.isfinite(table.losses[row])
        sizes, losses = table.sizes[ok].astype(float), table.losses[row][ok].astype(float)
        return sizes, losses, np.zeros(sizes.size, dtype=bool)
    return np.array([]), np.array([]), np.array([], dtype=bool)


def _label(i: int, c: Any) -> str:
    name = display(c.model)
    name = name if len(name) <= _NAME_LIMIT else name[: _NAME_LIMIT - 1] + "…"
    if c.status != "complete":
        return f" -   {name}: failed"
    interval = f" [{c.interval[0]:.3g}, {c.interval[1]:.3g}]" if c.interval else ""
    p_best = f"  {c.p_best:.2f}" if c.p_best is not None else ""
    source = " (published fit)" if c.source else ""
    return f"{i + 1:>2}.  {name}: {c.estimate:.3g}{interval}{p_best}{source}"


def _zero_edge(ax: Any, x_zero: float, smallest: float) -> None:
    """Label the zero-shot column ``0`` and draw a break between it and the log scale."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = list(_decades(smallest, ax.get_xlim()[1]))
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
