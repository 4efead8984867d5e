"""Pair-check: margin shifts from a pair matrix, verdicts, subspace overlap, Fig. 19 projection."""

from __future__ import annotations

import numpy as np
import pytest

from empirical.pair_check import margin_projection, margin_shifts, pair_check, subspace_overlap, verdict


def _pair_matrix(K=3, n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = -rng.uniform(5, 50, size=(1 + K, 2 * n))
    N = rng.integers(3, 20, size=(1 + K, 2 * n))
    N[:] = N[0]  # token counts do not depend on the system prompt
    return X, N


def test_margin_shifts_match_definition():
    X, N = _pair_matrix()
    ms = margin_shifts(X, N)
    k, i = 2, 7
    rho = (X[k, 2 * i] - X[k, 2 * i + 1]) - (X[0, 2 * i] - X[0, 2 * i + 1])
    assert ms.rho.shape == (3, 40)
    assert ms.rho[k - 1, i] == pytest.approx(rho)
    assert ms.weights[k - 1, i] == pytest.approx(rho / (N[0, 2 * i] + N[0, 2 * i + 1]))
    # invariance (notes §1): adding any function of (s, p) to the log-probs leaves rho unchanged
    Y = X.copy()
    Y += np.random.default_rng(1).normal(size=(4, 40)).repeat(2, axis=1)
    np.testing.assert_allclose(margin_shifts(Y, N).rho, ms.rho, atol=1e-9)


def test_margin_shifts_errors():
    X, N = _pair_matrix()
    with pytest.raises(ValueError, match="shape"):
        margin_shifts(X[:1], N[:1])
    with pytest.raises(ValueError, match="shape"):
        margin_shifts(X[:, :-1], N[:, :-1])
    X[1, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        margin_shifts(X, N)


def test_pair_check_identical_and_independent_models():
    X, N = _pair_matrix(seed=2)
    T = margin_shifts(X, N)
    same = pair_check(T, T, ["a", "b", "c"], n_boot=200)
    assert all(r["pearson"] == pytest.approx(1.0) and r["verdict"] == "strong" for r in same.rows)
    assert all(r["student_positive_on_selected"] == 1.0 for r in same.rows)
    Y, _ = _pair_matrix(seed=3)
    other = pair_check(T, margin_shifts(Y, N), ["a", "b", "c"], n_boot=200)
    assert all(abs(r["pearson"]) < 0.5 for r in other.rows)
    with pytest.raises(ValueError, match="names"):
        pair_check(T, T, ["a"])
    with pytest.raises(ValueError, match="gamma"):
        pair_check(T, T, ["a", "b", "c"], gamma=1.5)


def test_verdict_thresholds():
    assert verdict(0.6) == "strong" and verdict(0.3) == "moderate" and verdict(0.1) == "weak"
    assert verdict(0.01) == "none" and verdict(0.6, (-0.1, 0.9)) == "none" and verdict(0.25, (0.1, 0.4)) == "moderate"


def test_subspace_overlap_identical_vs_random():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 60))
    same = subspace_overlap(A, 3.0 * A, 5)
    assert same["overlap"] == pytest.approx(1.0, abs=1e-6)
    rand = subspace_overlap(A, rng.normal(size=(30, 60)), 5)
    assert rand["overlap"] < 0.5
    with pytest.raises(ValueError, match="same columns"):
        subspace_overlap(A, A[:, :10], 3)


def test_margin_projection():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 50))
    V = np.concatenate([base, base + 0.01 * rng.normal(size=(2, 50))])
    P = margin_projection(V)
    assert P.shape == (4, 2)
    np.testing.assert_allclose(P[:2], P[2:], atol=0.5)
    with pytest.raises(ValueError):
        margin_projection(np.zeros(5))
