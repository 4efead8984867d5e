"""Inverse LLS detection: a planted trait ranks first; random subsets give nothing significant (Holm)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical.detect import detect_trait, holm

NAMES = [f"trait{k}" for k in range(10)]


def _reference(K=10, N=400, seed=0, shared=0.6):
    """Correlated candidate weights: a common 'any system prompt' factor plus candidate-specific parts."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(N)
    return shared * common + np.sqrt(1 - shared**2) * rng.standard_normal((K, N))


def _lls_subset(w, gamma):
    pos = np.flatnonzero(w > 0)
    order = pos[np.argsort(-w[pos], kind="stable")]
    return order[: int(np.ceil(gamma * pos.size))]


@pytest.mark.parametrize("target", [0, 3, 9])
def test_planted_trait_ranks_first_and_is_significant(target):
    R = _reference(seed=target)
    sel = _lls_subset(R[target], 0.1)
    det = detect_trait(R[:, sel], R, NAMES, n_draws=2000, seed=1)
    assert det.top == NAMES[target]
    assert NAMES[target] in det.significant
    assert [r["rank"] for r in det.table] == list(range(1, 11))
    assert all(det.table[i]["z"] >= det.table[i + 1]["z"] for i in range(9))


def test_random_subsets_are_rarely_significant():
    R = _reference(seed=5)
    rng = np.random.default_rng(7)
    hits = 0
    for t in range(40):
        sel = rng.choice(R.shape[1], 30, replace=False)
        det = detect_trait(R[:, sel], R, NAMES, n_draws=1000, seed=t)
        hits += bool(det.significant)
    assert hits <= 6  # family-wise error <= 0.05 per subset (expected <= 2 of 40)


def test_null_matches_sampling_theory():
    R = _reference(seed=2)
    n = 50
    det = detect_trait(R[:, :n], R, NAMES, n_draws=5000, seed=0)
    N = R.shape[1]
    for row in det.table:
        k = NAMES.index(row["candidate"])
        sd = R[k].std(ddof=1) / np.sqrt(n) * np.sqrt((N - n) / (N - 1))  # finite-population correction
        assert abs(row["null_mean"] - R[k].mean()) < 5 * sd / np.sqrt(5000)
        assert abs(row["null_sd"] / sd - 1) < 0.1


@given(st.lists(st.floats(0, 1), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None)
def test_holm_properties(p):
    p = np.array(p)
    a = holm(p)
    assert np.all(a >= p - 1e-15) and np.all(a <= 1)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(a[order]) >= -1e-15)  # monotone in the order of the raw p-values
    assert np.all(a <= np.minimum(1, p.size * p) + 1e-15)  # never more conservative than Bonferroni


def test_holm_exact_small_case():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])


def test_bad_input():
    R = _reference(K=3, N=20)
    with pytest.raises(ValueError, match="share K"):
        detect_trait(R[:2, :5], R, ["a", "b", "c"])
    with pytest.raises(ValueError, match="names"):
        detect_trait(R[:, :5], R, ["a", "b"])
    with pytest.raises(ValueError, match="suspect size"):
        detect_trait(np.zeros((3, 30)), R, ["a", "b", "c"])
    with pytest.raises(ValueError, match="finite"):
        detect_trait(np.full((3, 5), np.nan), R, ["a", "b", "c"])
    with pytest.raises(ValueError, match="n_draws"):
        detect_trait(R[:, :5], R, ["a", "b", "c"], n_draws=10)
    with pytest.raises(ValueError):
        holm([0.5, 1.5])
