"""P(best) in time and memory linear in the candidates, as accurate as the quadrature it replaces."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import special

from lensllm_hf.engine.fit import Fit
from lensllm_hf.engine.ranking import CandidateFit, Ranking, p_best


def quadrature(mu, below, above, points=60_001):
    """P(i is lowest) by brute force on one dense grid: the exact mass of i in each cell times
    the others' survival at its middle (the old n x 161n algorithm's integral, without its grid)."""
    mu, below, above = (np.asarray(v, dtype=float) for v in (mu, below, above))
    x = np.linspace((mu - 9 * below).min(), (mu + 9 * above).max(), points)

    def standard(v):
        d = v[None, :] - mu[:, None]
        return d / np.where(d < 0, below[:, None], above[:, None])

    mass = np.diff(special.ndtr(standard(x)), axis=1)
    log_sf = special.log_ndtr(-standard(0.5 * (x[1:] + x[:-1])))
    p = np.sum(mass * np.exp(log_sf.sum(axis=0) - log_sf), axis=1)
    return p / p.sum()


@pytest.mark.parametrize("seed", range(12))
def test_p_best_matches_quadrature_on_random_cases_with_unequal_sides(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 9))
    mu = rng.normal(0.0, rng.choice([0.02, 0.1, 0.5]), n)
    below = np.exp(rng.uniform(np.log(0.005), np.log(0.5), n))
    above = below * np.exp(rng.normal(0.0, 0.8, n)) if seed % 3 else below
    assert p_best(mu, below, above).tolist() == pytest.approx(quadrature(mu, below, above).tolist(), abs=1e-4)


def test_p_best_of_many_candidates_thins_its_grid_and_stays_accurate():
    """80 candidates hold 12,880 grid points, more than the integral keeps."""
    rng = np.random.default_rng(7)
    mu, below = rng.uniform(0.0, 0.3, 80), rng.uniform(0.02, 0.1, 80)
    above = below * rng.uniform(0.5, 2.0, 80)
    p = p_best(mu, below, above)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert p.tolist() == pytest.approx(quadrature(mu, below, above, 80_001).tolist(), abs=1e-4)


def test_p_best_memory_is_linear_in_the_candidates():
    """600 candidates: the old algorithm held 600 x 96,600 cells (464 MB per array)."""
    rng = np.random.default_rng(1)
    mu, sd = rng.uniform(0.0, 1.0, 600), rng.uniform(0.05, 0.3, 600)
    tracemalloc.start()
    try:
        p = p_best(mu, sd, 1.5 * sd)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 * 2**20 and p.sum() == pytest.approx(1.0)


def test_p_best_keeps_absurd_and_tiny_spreads_apart():
    # A spread of 1e100 means "anything": it is below everyone half the time.
    p = p_best([0.0, 0.5, 0.2], [0.1, 0.1, 1e300])
    assert p[2] == pytest.approx(0.5, abs=1e-3) and p[0] == pytest.approx(0.5, abs=1e-3) and p[1] < 1e-3
    # Point masses (spreads clipped at 1e-9): the lower one wins, equal ones share.
    assert p_best([0.0, 1e-6], [0.0, 0.0]).tolist() == pytest.approx([1.0, 0.0], abs=1e-9)
    assert p_best([0.0, 0.0, 1.0], [1e-12, 1e-12, 1e-12]).tolist() == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)


def test_a_ranking_of_thousands_has_p_best_for_every_row():
    terms = {"noise_var": 1e-4, "largest_size": 3200.0, "extrapolation_sd_per_doubling": 0.02}
    fits = [Fit("ats", {"a": 1.0 + a, "b": -0.05}, (800.0, 1600.0, 3200.0), (1.0, 0.97, 0.94), (True,) * 3, terms)
            for a in np.linspace(0.0, 1.0, 1000)]
    ranking = Ranking(1e6, "ats", [CandidateFit(f"m{i}", fit=f, score=float(f.predict([1e6])[0]))
                                   for i, f in enumerate(fits)])
    p = np.array([c.p_best for c in ranking.ranked])
    assert ranking.best == "m0" and p.sum() == pytest.approx(1.0) and np.all(np.diff(p) <= 1e-12)
