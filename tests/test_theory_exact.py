"""Exact small cases, input types and error messages of lls_theory (margins, selection, stats, theorem,
wellbehaved, representation).

Written against the surviving mutants of `scripts/mutation.sh lls_theory`: each test pins a value
computed by hand (or by an independent formula written out here), a dtype, a boundary of a validation
or the text of an error message, so that a changed operator, constant or name makes it fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lls_theory import margins as M

# ------------------------------------------------------------------------------------------------ margins


def test_log_sigmoid_and_sigmoid_exact_values_and_input_types():
    # log σ(0) = −log 2, log σ(x) = −log(1 + e^{−x}) written out independently
    xs = np.array([-30.0, -2.0, 0.0, 1.5, 40.0])
    expected = np.array([-math.log1p(math.exp(-x)) if x > -20 else x - math.log1p(math.exp(x)) for x in xs])
    np.testing.assert_allclose(M.log_sigmoid(xs), expected, rtol=1e-14, atol=0)
    np.testing.assert_allclose(M.sigmoid(xs), 1 / (1 + np.exp(-xs)), rtol=1e-14, atol=0)
    # booleans and integers are numbers: converted to float (numpy cannot negate a boolean array)
    np.testing.assert_array_equal(M.log_sigmoid(np.array([True, False])), M.log_sigmoid([1.0, 0.0]))
    np.testing.assert_array_equal(M.sigmoid(np.array([True, False])), M.sigmoid([1.0, 0.0]))
    assert M.log_sigmoid(np.array([3], dtype=np.int8)).dtype == np.float64
    # no overflow at the extremes
    assert M.log_sigmoid(-1000.0) == -1000.0 and M.log_sigmoid(1000.0) == 0.0
    assert M.sigmoid(-1000.0) == 0.0 and M.sigmoid(1000.0) == 1.0


def test_margin_exact_value_dtype_and_errors():
    rho = M.margin([3, 0], [1, 0], [2, 5], [2, 1])  # (3−1)−(2−2) = 2, (0−0)−(5−1) = −4
    assert rho.dtype == np.float64
    np.testing.assert_array_equal(rho, [2.0, -4.0])
    np.testing.assert_array_equal(M.margin(np.array([True]), np.array([False]), [0.0], [0.0]), [1.0])
    assert M.margin(1.0, 0.0, 0.0, 0.5) == 1.5  # scalars: (1 − 0) − (0 − 0.5)
    names = ("logp_chosen", "logp_rejected", "ref_logp_chosen", "ref_logp_rejected")
    for j, name in enumerate(names):
        args = [np.zeros(4) for _ in names]
        args[j][2] = np.inf
        with pytest.raises(ValueError, match=rf"^{name}: non-finite value at index 2$"):
            M.margin(*args)
        args = [0.0] * 4
        args[j] = float("nan")
        with pytest.raises(ValueError, match=rf"^{name}: non-finite value$"):
            M.margin(*args)
    with pytest.raises(ValueError, match=r"^margin: arrays have different shapes \[\(2,\), \(3,\), \(2,\), \(2,\)\]$"):
        M.margin(np.zeros(2), np.zeros(3), np.zeros(2), np.zeros(2))


def test_dpo_loss_exact_values_reductions_and_errors():
    rho = np.array([0.0, 2.0, -1.0])
    per = -M.log_sigmoid(0.5 * rho)
    np.testing.assert_allclose(per, [math.log(2), math.log1p(math.exp(-1.0)), math.log1p(math.exp(0.5))], rtol=1e-14)
    np.testing.assert_array_equal(M.dpo_loss(rho, 0.5, reduction="none"), per)
    assert M.dpo_loss(rho, 0.5) == pytest.approx(per.mean(), rel=1e-15)
    assert M.dpo_loss(rho, 0.5, reduction="mean") == M.dpo_loss(rho, 0.5)
    assert M.dpo_loss(rho, 0.5, reduction="sum") == pytest.approx(per.sum(), rel=1e-15)
    assert isinstance(M.dpo_loss(rho, 0.5, reduction="sum"), float)
    assert M.dpo_loss(rho, 1e-300) == pytest.approx(math.log(2))  # any β > 0 is allowed
    for bad in ("SUM", "XXsumXX", "Mean", ""):
        with pytest.raises(ValueError, match=rf"^reduction must be 'mean', 'sum' or 'none', got {bad!r}$"):
            M.dpo_loss(rho, 0.5, reduction=bad)
    for beta in (0.0, -1.0):
        with pytest.raises(ValueError, match=rf"^beta must be positive, got {beta}$"):
            M.dpo_loss(rho, beta)
    with pytest.raises(ValueError, match=r"^dpo_loss: empty margins$"):
        M.dpo_loss([], 1.0)
    assert M.dpo_loss([], 1.0, reduction="sum") == 0.0
    with pytest.raises(ValueError, match=r"^margins: non-finite value at index 1$"):
        M.dpo_loss([0.0, np.nan], 1.0)
    with pytest.raises(ValueError, match=r"^margins: non-finite value$"):
        M.dpo_loss(np.inf, 1.0)


def test_dpo_loss_grad_exact_and_errors():
    rho = np.array([0.0, 2.0, -1.0])
    np.testing.assert_allclose(M.dpo_loss_grad(rho, 0.5), -0.5 / (1 + np.exp(0.5 * rho)), rtol=1e-14)
    assert M.dpo_loss_grad(0.0, 2.0) == -1.0  # −β σ(0) = −β/2
    for beta in (0.0, -0.5):
        with pytest.raises(ValueError, match=rf"^beta must be positive, got {beta}$"):
            M.dpo_loss_grad(rho, beta)
    with pytest.raises(ValueError, match=r"^margins: non-finite value at index 0$"):
        M.dpo_loss_grad([np.nan], 1.0)


@settings(max_examples=50, deadline=None)
@given(st.floats(-50, 50), st.floats(0.01, 5))
def test_dpo_loss_grad_is_the_derivative(rho, beta):
    h = 1e-5
    fd = (M.dpo_loss([rho + h], beta) - M.dpo_loss([rho - h], beta)) / (2 * h)
    assert M.dpo_loss_grad([rho], beta)[0] == pytest.approx(fd, rel=1e-5, abs=1e-9)


# -------------------------------------------------------------------------------------------------- stats
from lls_theory import stats as S  # noqa: E402


def _wilson_closed_form(k, n, level):
    z = float(__import__("scipy").stats.norm.ppf(0.5 + level / 2))
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 100_000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99, 0.999]))
def test_wilson_interval_equals_the_closed_form(kn, level):
    k, n = kn
    lo, hi = S.wilson_interval(k, n, level)
    elo, ehi = _wilson_closed_form(k, n, level)
    assert abs(lo - elo) <= 1e-12 and abs(hi - ehi) <= 1e-12
    assert (lo == 0.0) == (k == 0) and (hi == 1.0) == (k == n)
    assert lo <= k / n <= hi


def test_wilson_interval_exact_values_and_errors():
    # k = 0, n = 10, z = 1.959964: upper = z²/(n + z²)
    z2 = 1.959963984540054**2
    assert S.wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2), rel=1e-12))
    assert S.wilson_interval(10, 10) == (pytest.approx(10 / (10 + z2), rel=1e-12), 1.0)
    lo, hi = S.wilson_interval(np.int64(3), np.int64(7), 0.9)
    assert (lo, hi) == pytest.approx(_wilson_closed_form(3, 7, 0.9), abs=1e-12)
    for k, n in ((5, 4), (-1, 4), (0, 0), (1, 0)):
        with pytest.raises(ValueError, match=rf"^need 0 <= k <= n and n >= 1, got k={k}, n={n}$"):
            S.wilson_interval(k, n)
    for k, n in ((1.0, 4), (1, 4.0), (True, 4), (1, True)):
        with pytest.raises(ValueError, match="^k and n must be integers"):
            S.wilson_interval(k, n)
    for level in (0.0, 1.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=rf"^level must be in \(0, 1\), got {level}$"):
            S.wilson_interval(1, 4, level)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 60), st.integers(0, 2**32 - 1), st.integers(1, 300), st.sampled_from([0.5, 0.9, 0.95]))
def test_bootstrap_mean_ci_equals_the_generic_bootstrap(n, seed, n_boot, level):
    v = np.random.default_rng(seed).standard_normal(n)
    fast = S.bootstrap_mean_ci(v, n_boot=n_boot, level=level, seed=seed % 97, chunk=7)
    slow = S.bootstrap_ci(lambda x, _y: float(np.mean(x)), v, v, n_boot=n_boot, level=level, seed=seed % 97)
    assert fast == pytest.approx(slow, abs=1e-12)
    assert fast[0] <= fast[1]


def test_bootstrap_mean_ci_exact_cases_and_errors():
    # n = 2: each resample mean is 0, 0.5 or 1 (prob 1/4, 1/2, 1/4); the central 40% is [0.5, 0.5] up to
    # quantile interpolation (central 40%: the 0.3 and 0.7 quantiles), the central 99% is [0, 1]
    lo, hi = S.bootstrap_mean_ci([0.0, 1.0], n_boot=4000, level=0.99, seed=1)
    assert (lo, hi) == (0.0, 1.0)
    assert S.bootstrap_mean_ci([0.0, 1.0], n_boot=4000, level=0.4, seed=1) == (0.5, 0.5)
    assert S.bootstrap_mean_ci([2.5, 2.5, 2.5]) == (2.5, 2.5)
    assert all(math.isnan(b) for b in S.bootstrap_mean_ci([1.0]))
    v = np.sqrt(np.arange(1.0, 8.0))
    assert S.bootstrap_mean_ci(v, n_boot=200, seed=3) == S.bootstrap_mean_ci(v, n_boot=200, seed=3)
    assert S.bootstrap_mean_ci(v, n_boot=200, seed=3) != S.bootstrap_mean_ci(v, n_boot=200, seed=4)
    with pytest.raises(ValueError, match=r"^values must be a non-empty 1-D array, got shape \(0,\)$"):
        S.bootstrap_mean_ci([])
    with pytest.raises(ValueError, match=r"^values must be a non-empty 1-D array, got shape \(2, 1\)$"):
        S.bootstrap_mean_ci([[1.0], [2.0]])
    with pytest.raises(ValueError, match=r"^values: non-finite value at index 2$"):
        S.bootstrap_mean_ci([1.0, 2.0, np.nan])
    with pytest.raises(ValueError, match=r"^level must be in \(0, 1\), got 1$"):
        S.bootstrap_mean_ci([1.0, 2.0], level=1)
    with pytest.raises(ValueError, match=r"^n_boot must be >= 1, got 0$"):
        S.bootstrap_mean_ci([1.0, 2.0], n_boot=0)
