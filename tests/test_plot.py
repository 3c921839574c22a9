"""The selection plot tells the truth at a glance: everything drawn comes from the ranking's own Fits.

The real shared FLAN table and the real methods make the rankings; the checks read the drawn
matplotlib artists (found by their ``gid``), not a re-computation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba

from lensllm_hf.engine.curves import CurveTable
from lensllm_hf.engine.methods import rank
from lensllm_hf.plotting import curve_of, plot_ranking, plot_selection
from lensllm_hf.selector.result import SelectionResult

TARGET = 1_638_400
SIZES = [0, 200, 400, 800, 1600, 3200]


def _table(curves_dir, rows: int) -> CurveTable:
    frame = pd.read_csv(curves_dir / "flan.csv").head(rows)
    return CurveTable(models=frame.iloc[:, 0].tolist(), sizes=np.array(SIZES, dtype=float),
                      losses=frame[[str(s) for s in SIZES]].to_numpy(dtype=float))


def _result(curves_dir, rows=4, method="default", level=0.9) -> SelectionResult:
    table = _table(curves_dir, rows)
    ranking = rank(table, TARGET, method, level=level)
    return SelectionResult(fits=ranking, table=table, flops=1e15, full_flops=1e17)


def _artists(fig, gid: str) -> list:
    ax = fig.axes[0]
    return [a for a in [*ax.lines, *ax.collections, *ax.containers] if getattr(a, "get_gid", lambda: None)() == gid]


def _band_at(band: PolyCollection, x: float) -> list[float]:
    vertices = band.get_paths()[0].vertices
    return sorted({float(y) for vx, y in vertices if vx == x})


@pytest.mark.parametrize("method, level", [("default", 0.9), ("rectified", 0.8), ("ats", 0.95)])
def test_band_and_line_at_the_target_are_the_ranking_interval_and_prediction_exactly(curves_dir, method, level):
    """The drawn band's ends at the target equal the ranking's interval, the line its prediction: ==, not approx."""
    result = _result(curves_dir, method=method, level=level)
    fig = plot_selection(result)
    assert result.fits.ranked
    for c in result.fits.ranked:
        (band,) = _artists(fig, f"band:{c.model}")
        assert _band_at(band, TARGET) == sorted(c.interval)
        (line,) = _artists(fig, f"law:{c.model}")
        xs, ys = line.get_data()
        assert xs[-1] == TARGET and ys[-1] == c.predicted_loss
        assert xs.max() == TARGET  # the line ends at the target, it does not run past it
        (bar,) = [b for b in fig.axes[0].containers if b.get_label() == f"bar:{c.model}"]
        (segments,) = bar.lines[2]
        (low, high), = [sorted(seg[:, 1]) for seg in segments.get_segments()]
        assert (low, high) == pytest.approx(tuple(c.interval), rel=1e-12)  # the bar is the same interval


def test_curve_of_is_the_fit_itself(curves_dir):
    """curve_of: the grid ends exactly at the target; the values are the fit's predict / predict_interval."""
    ranking = rank(_table(curves_dir, 3), TARGET, "default", level=0.9)
    for c in ranking.ranked:
        curve = curve_of(c.fit, TARGET, 0.9)
        assert curve.sizes[-1] == TARGET and np.all(np.diff(curve.sizes) > 0)
        np.testing.assert_array_equal(curve.loss, c.fit.predict(curve.sizes))
        np.testing.assert_array_equal(np.vstack([curve.low, curve.high]), c.fit.predict_interval(curve.sizes, 0.9))
        assert (curve.low[-1], curve.high[-1]) == tuple(c.interval)
        assert curve.sizes[0] < c.fit.transition_size  # drawn from just before the first point it used


def test_points_the_fit_did_not_use_are_hollow(curves_dir):
    """Filled markers for the points the fit used, hollow ones (no face) for those it did not."""
    result = _result(curves_dir)
    fig = plot_selection(result)
    some_unused = False
    for c in result.fits.ranked:
        used = np.array(c.fit.used)
        sizes = np.array(c.fit.sizes)
        (filled,) = _artists(fig, f"used:{c.model}")
        assert sorted(filled.get_xdata()) == sorted(sizes[used & (sizes > 0)].tolist())
        assert filled.get_markerfacecolor() != "none"
        if (~used).any():
            some_unused = True
            (hollow,) = _artists(fig, f"unused:{c.model}")
            assert hollow.get_markerfacecolor() == "none"
            assert len(hollow.get_xdata()) == int((~used).sum())
    assert some_unused  # the default method leaves D = 0 and pre-power points out on FLAN


def test_title_states_the_pick_and_the_axis_says_lower_is_better(curves_dir, tmp_path):
    """The title is the ranking's pick statement (pick, P(best), near-ties); the y label says lower is better."""
    result = _result(curves_dir)
    path = tmp_path / "plots" / "selection.png"
    fig = result.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    title = " ".join(fig.get_suptitle().split())
    assert title == result.pick_statement() and "P(best)" in title
    assert "lower is better" in fig.axes[0].get_ylabel()
    best = result.fits.ranked[0]
    legend_texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend_texts[0].startswith(f" 1.  {best.model}: {best.predicted_loss:.3g}")
    assert legend_texts[0].endswith(f"{best.p_best:.2f}")


def test_many_candidates_stay_distinguishable(curves_dir):
    """14 candidates: each has its own (colour, marker, hatch), faint bands, and the legend sits outside the axes."""
    result = _result(curves_dir, rows=14, method="rectified")
    fig = plot_selection(result)
    ax = fig.axes[0]
    styles = set()
    for c in result.fits.ranked:
        (line,) = _artists(fig, f"law:{c.model}")
        (band,) = _artists(fig, f"band:{c.model}")
        (points,) = _artists(fig, f"used:{c.model}")
        styles.add((to_rgba(line.get_color()), points.get_marker()))
        assert band.get_alpha() <= 0.1
    assert len(styles) == len(result.fits.ranked) == 14
    hatches = {patch.get_hatch() for patch in ax.collections if patch.get_hatch()}
    assert len(hatches) >= 9
    fig.draw_without_rendering()  # runs the constrained layout
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1  # outside, right of the axes
    assert legend_box.x1 <= fig.bbox.x1 + 1  # and not cut off by the figure's edge


def test_more_candidates_than_drawn_says_so_and_long_names_are_cut(curves_dir):
    """max_candidates: the legend says how many were left out; a 300-character name does not widen the figure."""
    table = _table(curves_dir, 5)
    table = CurveTable(models=["x" * 300, *table.models[1:]], sizes=table.sizes, losses=table.losses)
    ranking = rank(table, TARGET, "default")
    fig = plot_ranking(ranking, table=table, max_candidates=3)
    legend = fig.axes[0].get_legend()
    assert "and 2 more, not drawn" in legend.get_title().get_text()
    assert all(len(t.get_text()) < 100 for t in legend.get_texts())


@pytest.mark.parametrize("case", ["baseline", "empty", "failed"])
def test_rankings_without_fits_still_plot_their_points(curves_dir, case):
    """A baseline (ZeroShot: no fits), no candidates, or only failed fits: points from the table, no crash."""
    from lensllm_hf.engine.ranking import CandidateFit, Ranking

    table = _table(curves_dir, 3)
    if case == "baseline":
        ranking = rank(table, TARGET, "zeroshot")
    elif case == "empty":
        ranking = Ranking(TARGET, "default", [])
    else:
        ranking = Ranking(TARGET, "default", [CandidateFit.failed(m, "too few points") for m in table.models])
    fig = plot_ranking(ranking, table=table)
    assert " ".join(fig.get_suptitle().split()) == ranking.pick_statement()
    for c in ranking.candidates:
        assert not _artists(fig, f"band:{c.model}") and _artists(fig, f"unused:{c.model}")
