"""Correlation statistics, linear representations and low-rank tools."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lls_theory.lowrank import (
    power_law_slope,
    principal_angle_cosines,
    random_baseline_cosines,
    singular_spectrum,
    top2_projection,
)
from lls_theory.representation import difference_vectors, exact_rank, logprob_matrix, representation_error
from lls_theory.stats import bootstrap_ci, correlation_report, cosine, pearson, permutation_pvalue, spearman

seeds = st.integers(0, 2**32 - 1)


def test_known_values():
    assert cosine([1, 0], [1, 1]) == pytest.approx(1 / np.sqrt(2))
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(0.9933992677987828)
    assert spearman([1, 2, 3, 4], [10, 20, 15, 40]) == pytest.approx(0.8)
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3]))
    # uncentred cosine differs from Pearson when the means are not zero
    assert cosine([1, 2, 3], [3, 2, 1]) == pytest.approx(10 / 14)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


@settings(max_examples=30, deadline=None)
@given(seeds, st.floats(0.01, 100), st.floats(-5, 5))
def test_invariances(seed, scale, shift):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(40), rng.standard_normal(40)
    assert cosine(scale * x, y) == pytest.approx(cosine(x, y), abs=1e-9)
    assert pearson(scale * x + shift, y) == pytest.approx(pearson(x, y), abs=1e-9)
    assert spearman(np.exp(x), y) == pytest.approx(spearman(x, y), abs=1e-9)


@settings(max_examples=10, deadline=None)
@given(seeds)
def test_bootstrap_ci_contains_estimate_and_is_seeded(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(200)
    y = 0.5 * x + rng.standard_normal(200)
    lo, hi = bootstrap_ci("pearson", x, y, n_boot=500, seed=3)
    assert lo < pearson(x, y) < hi
    assert (lo, hi) == bootstrap_ci("pearson", x, y, n_boot=500, seed=3)
    # a callable statistic gives the same answer as the named one
    assert bootstrap_ci(pearson, x, y, n_boot=50, seed=1) == pytest.approx(bootstrap_ci("pearson", x, y, n_boot=50, seed=1))


def test_permutation_pvalue_separates_signal_from_noise():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(300)
    assert permutation_pvalue("pearson", x, x + 0.5 * rng.standard_normal(300), n_perm=500) < 0.01
    # under independence the p-values are roughly uniform: mean near 1/2 over many datasets
    ps = [permutation_pvalue("pearson", rng.standard_normal(50), rng.standard_normal(50), n_perm=200, seed=i) for i in range(60)]
    assert 0.35 < np.mean(ps) < 0.65
    assert min(ps) >= 1 / 201


def test_correlation_report_keys():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(50)
    rep = correlation_report(x, x + rng.standard_normal(50), n_boot=100, n_perm=100)
    assert {"n", "cosine", "pearson", "spearman", "cosine_ci", "pearson_ci", "spearman_ci", "pearson_p"} <= set(rep)
    with pytest.raises(ValueError, match="index 2"):
        correlation_report([1, 2, np.nan], [1, 2, 3])


# ---------------------------------------------------------------- representations

@settings(max_examples=20, deadline=None)
@given(seeds, st.integers(1, 6))
def test_exact_rank_and_representation(seed, d):
    rng = np.random.default_rng(seed)
    psi, phi = rng.standard_normal((12, d)), rng.standard_normal((15, d))
    X = logprob_matrix(psi, phi)
    assert exact_rank(X) == d
    assert representation_error(X, psi, phi) == pytest.approx(0.0, abs=1e-12)
    noise = rng.uniform(-0.01, 0.01, X.shape)
    assert representation_error(X + noise, psi, phi) == pytest.approx(np.abs(noise).max())


def test_grouped_logprob_matrix_is_a_distribution_and_keeps_margins():
    rng = np.random.default_rng(0)
    psi, phi = rng.standard_normal((3, 4)), rng.standard_normal((6, 4))
    groups = np.array([0, 0, 1, 1, 1, 2])
    X = logprob_matrix(psi, phi, groups)
    for g in np.unique(groups):
        np.testing.assert_allclose(np.exp(X[:, groups == g]).sum(axis=1), 1.0)
    raw = logprob_matrix(psi, phi)
    # differences within a prompt (what margins use) are unchanged by the normaliser
    np.testing.assert_allclose(X[:, 2] - X[:, 4], raw[:, 2] - raw[:, 4])
    np.testing.assert_allclose(difference_vectors(phi[:2], phi[2:4]), phi[:2] - phi[2:4])


# ---------------------------------------------------------------- low rank

@settings(max_examples=15, deadline=None)
@given(seeds, st.integers(1, 5))
def test_principal_angles_self_and_range(seed, r):
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((20, 30)), rng.standard_normal((25, 30))
    np.testing.assert_allclose(principal_angle_cosines(A, A, r), 1.0, atol=1e-9)
    # a row-space-preserving transform (left multiplication) keeps the subspace
    np.testing.assert_allclose(principal_angle_cosines(A, rng.standard_normal((20, 20)) @ A, 20), 1.0, atol=1e-7)
    c = principal_angle_cosines(A, B, r)
    assert np.all((c >= 0) & (c <= 1)) and np.all(np.diff(c) <= 1e-12)


def test_random_baseline_is_below_shared_subspace():
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((5, 200))
    A = rng.standard_normal((50, 5)) @ basis + 0.01 * rng.standard_normal((50, 200))
    B = rng.standard_normal((60, 5)) @ basis + 0.01 * rng.standard_normal((60, 200))
    shared = principal_angle_cosines(A, B, 5)
    base = random_baseline_cosines(A.shape, B.shape, 5)
    assert shared.min() > 0.99 and base.max() < 0.8


@settings(max_examples=15, deadline=None)
@given(st.floats(-2.0, -0.1), st.integers(20, 200))
def test_power_law_slope_recovers_planted_exponent(alpha, n):
    k = np.arange(1, n + 1)
    s = 3.0 * k**alpha
    fit = power_law_slope(s, (1, n))
    assert fit.slope == pytest.approx(alpha, abs=1e-9) and fit.r2 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        power_law_slope(s, (5, n + 1))


def test_spectrum_and_projection():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 4)) @ rng.standard_normal((4, 30))
    s = singular_spectrum(X)
    assert s.shape == (10,) and np.all(np.diff(s) <= 1e-9) and s[4] < 1e-9 * s[0]
    P = top2_projection(X)
    assert P.shape == (10, 2)
    # projection onto the top-2 directions keeps exactly σ1² + σ2² of the energy
    assert np.sum(P**2) == pytest.approx(s[0] ** 2 + s[1] ** 2)


@settings(max_examples=10, deadline=None)
@given(seeds, st.booleans())
def test_fast_spearman_bootstrap_matches_generic_path(seed, ties):
    """The vectorised rank path of bootstrap_ci("spearman") equals ranking every resample with scipy."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(60)
    y = x + rng.standard_normal(60)
    if ties:
        x, y = np.round(x), np.round(2 * y) / 2
    fast = bootstrap_ci("spearman", x, y, n_boot=200, seed=seed % 1000)
    slow = bootstrap_ci(spearman, x, y, n_boot=200, seed=seed % 1000)
    assert fast == pytest.approx(slow, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------ binomial intervals (mention rates)
from lls_theory.stats import difference_pvalue, wilson_interval  # noqa: E402


@given(st.integers(1, 2000), st.data(), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_interval_contains_rate_and_stays_in_unit_interval(n, data, level):
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n, level)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)
    # symmetry: the interval of the failures is the mirror image
    lo2, hi2 = wilson_interval(n - k, n, level)
    assert lo2 == pytest.approx(1 - hi, abs=1e-12) and hi2 == pytest.approx(1 - lo, abs=1e-12)
    # wider at a higher level, narrower with more data at the same rate
    assert wilson_interval(k, n, 0.999)[1] - wilson_interval(k, n, 0.999)[0] >= hi - lo - 1e-12
    lo4, hi4 = wilson_interval(4 * k, 4 * n, level)
    assert hi4 - lo4 <= hi - lo + 1e-12


def test_wilson_interval_known_value_and_coverage():
    # textbook value: 0 successes of 10 at 95% -> upper bound z^2/(n+z^2) = 0.2775
    assert wilson_interval(0, 10)[1] == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    # empirical coverage of the 95% interval is close to 95% (Wilson is near nominal for p = 0.3, n = 50)
    rng = np.random.default_rng(0)
    ks = rng.binomial(50, 0.3, size=4000)
    ci = {int(k): wilson_interval(int(k), 50) for k in np.unique(ks)}  # scipy: ~1 ms a call
    cover = np.mean([ci[int(k)][0] <= 0.3 <= ci[int(k)][1] for k in ks])
    assert 0.93 <= cover <= 0.97
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


@given(st.integers(1, 200), st.integers(1, 200), st.data())
def test_difference_pvalue_is_a_probability_and_monotone(n1, n2, data):
    k1 = data.draw(st.integers(0, n1))
    k2 = data.draw(st.integers(0, n2))
    p = difference_pvalue(k1, n1, k2, n2)
    assert 0.0 <= p <= 1.0 + 1e-12
    if k1 < n1:  # one more success in group 1 can only make "rate 1 > rate 2" more significant
        assert difference_pvalue(k1 + 1, n1, k2, n2) <= p + 1e-12


# ------------------------------------------------------------------ paired LLS-vs-random contrast
from lls_theory.stats import STATISTICS, paired_difference  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(5, 60), st.sampled_from(["cosine", "pearson", "spearman"]))
def test_paired_difference_is_the_difference_and_antisymmetric(seed, n, stat):
    rng = np.random.default_rng(seed)
    x, y1, y2 = rng.normal(size=(3, n))
    a = paired_difference(stat, x, y1, y2, n_boot=200, seed=seed % 1000)
    b = paired_difference(stat, x, y2, y1, n_boot=200, seed=seed % 1000)
    fn = STATISTICS[stat]
    assert a["diff"] == pytest.approx(float(fn(x, y1) - fn(x, y2)), abs=1e-12)
    assert b["diff"] == pytest.approx(-a["diff"], abs=1e-12)
    # the same resamples, negated: the interval is mirrored
    assert b["ci"][0] == pytest.approx(-a["ci"][1], abs=1e-9) and b["ci"][1] == pytest.approx(-a["ci"][0], abs=1e-9)
    assert 0 < a["p"] <= 1 and a["ci"][0] <= a["ci"][1]


def test_paired_difference_identical_arms_and_a_real_difference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=400)
    y = x + rng.normal(size=400)
    tie = paired_difference("pearson", x, y, y.copy(), n_boot=300)
    assert tie["diff"] == 0 and tie["ci"] == [0.0, 0.0] and tie["p"] == 1.0
    # y1 tracks x (corr ~0.7), y2 is noise: LLS > random must be detected; swapped, it must not
    good = paired_difference("pearson", x, y, rng.normal(size=400), n_boot=1000)
    assert good["diff"] > 0.5 and good["ci"][0] > 0 and good["p"] < 0.01
    bad = paired_difference("pearson", x, rng.normal(size=400), y, n_boot=1000)
    assert bad["p"] > 0.99
    with pytest.raises(ValueError):
        paired_difference("pearson", x, y, y[:-1])
