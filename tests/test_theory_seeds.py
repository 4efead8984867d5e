"""Correlations over training seeds: the two-stage (seeds and pairs) bootstrap of lls_theory.stats."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lls_theory.stats import bootstrap_ci, paired_difference, pearson, seeded_correlation, seeded_difference

seeds = st.integers(0, 2**31 - 1)


def _world(seed: int, n: int, n_seeds: int, spread: float = 0.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    rho = 0.3 + spread * rng.normal(size=n_seeds)
    ys = rho[:, None] * x + rng.normal(size=(n_seeds, n))
    return x, ys


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(5, 60))
def test_one_seed_is_the_pair_bootstrap(seed, n):
    x, ys = _world(seed, n, 1)
    r = seeded_correlation("pearson", x, ys, n_boot=200, seed=seed % 1000)
    assert r["mean"] == pytest.approx(pearson(x, ys[0]))
    assert r["ci"] == pytest.approx(list(bootstrap_ci("pearson", x, ys[0], n_boot=200, seed=seed % 1000)))
    assert r["sd"] is None and r["ci_includes"] == "pairs"


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(5, 60), st.integers(2, 5))
def test_identical_seeds_add_no_variance(seed, n, n_seeds):
    x, ys = _world(seed, n, 1)
    one = seeded_correlation("pearson", x, ys, n_boot=200, seed=3)
    many = seeded_correlation("pearson", x, np.repeat(ys, n_seeds, axis=0), n_boot=200, seed=3)
    assert many["ci"] == pytest.approx(one["ci"])
    assert many["sd"] == pytest.approx(0.0, abs=1e-12)
    assert many["ci_includes"] == "pairs and training seeds"


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(2, 6))
def test_mean_and_sd_are_over_seeds(seed, n_seeds):
    x, ys = _world(seed, 40, n_seeds)
    r = seeded_correlation("pearson", x, ys, n_boot=100, seed=0)
    per = [pearson(x, y) for y in ys]
    assert r["per_seed"] == pytest.approx(per)
    assert r["mean"] == pytest.approx(np.mean(per))
    assert r["sd"] == pytest.approx(np.std(per, ddof=1))


def test_seed_spread_widens_the_interval():
    """Seeds whose correlations differ a lot: the two-stage CI is wider than every seed's pair-only CI."""
    x, ys = _world(7, 300, 4, spread=0.0)
    ys = np.stack([r * x + 0.3 * y for r, y in zip((-1.0, 0.0, 1.0, 2.0), ys)])
    r = seeded_correlation("pearson", x, ys, n_boot=500, seed=0)
    width = r["ci"][1] - r["ci"][0]
    for y in ys:
        lo, hi = bootstrap_ci("pearson", x, y, n_boot=500, seed=0)
        assert width > hi - lo


@settings(max_examples=20, deadline=None)
@given(seeds, st.integers(5, 60))
def test_difference_of_single_seeds_is_the_paired_difference(seed, n):
    x, ys = _world(seed, n, 2)
    d = seeded_difference("pearson", x, ys[:1], ys[1:], n_boot=200, seed=5)
    p = paired_difference("pearson", x, ys[0], ys[1], n_boot=200, seed=5)
    assert d["diff"] == pytest.approx(p["diff"])
    assert d["ci"] == pytest.approx(p["ci"], nan_ok=True)
    assert d["p"] == pytest.approx(p["p"], nan_ok=True)


@settings(max_examples=20, deadline=None)
@given(seeds, st.integers(1, 4), st.integers(1, 4))
def test_difference_is_antisymmetric_in_its_point_estimate(seed, s1, s2):
    x, ys = _world(seed, 30, s1 + s2)
    a = seeded_difference("pearson", x, ys[:s1], ys[s1:], n_boot=50, seed=0)
    b = seeded_difference("pearson", x, ys[s1:], ys[:s1], n_boot=50, seed=0)
    assert a["diff"] == pytest.approx(-b["diff"])
    assert a["n_seeds"] == [s1, s2] and b["n_seeds"] == [s2, s1]


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="shape"):
        seeded_correlation("pearson", np.zeros(5), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        seeded_difference("pearson", np.zeros(1), np.zeros((1, 1)), np.zeros((1, 1)))
