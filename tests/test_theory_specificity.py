"""Trait-specificity statistics (lls_theory.specificity): the K×K matrix, the permutation test's calibration,
planted effects, the specific-to-common gain κ, the effective number of cells and subset overlap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sst

from lls_theory.specificity import (behaviour_specificity, cell_replicates, cross_correlation, diagonal_stats,
                                    effective_cells, gap_bootstrap, minimum_detectable_effect, permutation_test, specific_gain, specificity_test, trait_centre)
from lls_theory.stats import pearson

seeds = st.integers(0, 2**32 - 1)


def _world(seed: int, K: int = 5, n: int = 120, common: float = 1.0, specific: float = 0.0, noise: float = 1.0,
           ref_specific: float = 1.0):
    """References R[b] = c + ref_specific·s_b; students Z[a] = common·c + specific·s_a + noise (Gaussian)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=n)
    s = rng.normal(size=(K, n))
    R = c + ref_specific * s
    Z = common * c + specific * s + noise * rng.normal(size=(K, n))
    return Z, R


@settings(max_examples=40, deadline=None)
@given(seeds, st.integers(2, 6), st.booleans())
def test_relabelling_traits_permutes_C(seed, K, centred):
    Z, R = _world(seed, K=K, n=30, specific=0.5)
    rng = np.random.default_rng(seed + 1)
    pi, sigma = rng.permutation(K), rng.permutation(K)
    C = cross_correlation(Z, R, centred=centred)
    np.testing.assert_allclose(cross_correlation(Z[pi], R[sigma], centred=centred), C[np.ix_(pi, sigma)],
                               atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(2, 5))
def test_C_entries_are_pearson_of_the_stated_vectors(seed, K):
    Z, R = _world(seed, K=K, n=25, specific=0.3)
    C = cross_correlation(Z, R)
    Cc = cross_correlation(Z, R, centred=True)
    Zc, Rc = Z - Z.mean(axis=0), R - R.mean(axis=0)
    for a in range(K):
        for b in range(K):
            assert C[a, b] == pytest.approx(pearson(Z[a], R[b]), abs=1e-12)
            assert Cc[a, b] == pytest.approx(pearson(Zc[a], Rc[b]), abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seeds, st.integers(2, 5))
def test_centred_C_ignores_any_term_common_to_every_trait(seed, K):
    Z, R = _world(seed, K=K, n=40, specific=0.4)
    rng = np.random.default_rng(seed)
    shift_z, shift_r = 5 * rng.normal(size=40), 5 * rng.normal(size=40)
    np.testing.assert_allclose(cross_correlation(Z + shift_z, R + shift_r, centred=True),
                               cross_correlation(Z, R, centred=True), atol=1e-10)


def test_K2_exact_case():
    Z, R = _world(3, K=2, n=50, specific=0.8)
    C = cross_correlation(Z, R)
    res = permutation_test(C)
    assert res.method == "exact" and res.n_permutations == 2
    assert res.p == (0.5 if C[0, 0] + C[1, 1] > C[0, 1] + C[1, 0] else 1.0)
    # centred with K = 2: each row is ± half the difference, so C̃ = [[c, −c], [−c, c]]
    Cc = cross_correlation(Z, R, centred=True)
    assert Cc[0, 0] == pytest.approx(Cc[1, 1]) and Cc[0, 1] == pytest.approx(-Cc[0, 0])
    assert Cc[0, 0] == pytest.approx(pearson(Z[0] - Z[1], R[0] - R[1]))


@settings(max_examples=30, deadline=None)
@given(seeds)
def test_K3_exact_p_is_the_rank_among_six_relabellings(seed):
    Z, R = _world(seed, K=3, n=30, specific=0.3)
    C = cross_correlation(Z, R)
    T = sorted(np.mean([C[a, p[a]] for a in range(3)]) for p in itertools.permutations(range(3)))
    obs = np.trace(C) / 3
    res = permutation_test(C)
    assert res.method == "exact" and res.n_permutations == 6
    assert res.p == pytest.approx(sum(t >= obs - 1e-12 for t in T) / 6)
    assert res.null_mean == pytest.approx(C.mean())


def test_monte_carlo_is_seeded_and_recorded():
    Z, R = _world(0, K=9, n=60)
    C = cross_correlation(Z, R)
    a, b = permutation_test(C, n_perm=500, seed=4), permutation_test(C, n_perm=500, seed=4)
    assert a == b and a.method == "monte-carlo" and a.n_permutations == 500 and a.seed == 4
    assert 1 / 501 <= a.p <= 1


@pytest.mark.parametrize("K, exact", [(4, True), (9, False)])
def test_p_is_calibrated_under_exchangeable_labels(K, exact):
    """With no specific transfer (students share only the common direction) the labels are exchangeable,
    so P(p ≤ α) ≤ α: checked on 300 independent worlds (binomial 3-sigma band) and by a KS test."""
    ps_raw, ps_cen = [], []
    for seed in range(300):
        Z, R = _world(seed, K=K, n=40, common=1.0, specific=0.0)
        for centred, ps in ((False, ps_raw), (True, ps_cen)):
            res = permutation_test(cross_correlation(Z, R, centred=centred), n_perm=199, seed=seed)
            assert res.method == ("exact" if exact else "monte-carlo")
            ps.append(res.p)
    for ps in (ps_raw, ps_cen):
        ps = np.array(ps)
        for alpha in (0.1, 0.25, 0.5):
            assert np.mean(ps <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / ps.size)
        if not exact:  # Monte Carlo p on 199 draws is close to continuous: uniform by KS
            assert sst.kstest(ps, "uniform").pvalue > 0.001


@settings(max_examples=10, deadline=None)
@given(seeds)
def test_a_planted_specific_component_is_found(seed):
    Z, R = _world(seed, K=10, n=200, common=1.0, specific=0.4, noise=1.0)
    out = specificity_test(Z, R, n_perm=999, n_boot=300, seed=seed)
    assert out["centred"]["permutation"]["p"] < 0.01
    assert out["gap_ci"]["ci"][0] > 0
    assert out["gain"]["kappa_ci"][0] > 0
    assert out["centred"]["diagonal"] > out["centred"]["off_diagonal"]


def test_no_specific_component_gives_kappa_near_zero():
    Z, R = _world(1, K=10, n=400, common=1.0, specific=0.0, noise=0.5)
    g = specific_gain(Z, R, n_boot=300)
    assert g["kappa_ci"][0] < 0 < g["kappa_ci"][1]
    assert g["beta_common_ci"][0] > 0


@settings(max_examples=30, deadline=None)
@given(seeds, st.floats(0.2, 3.0), st.floats(-2.0, 2.0), st.integers(2, 6))
def test_gain_recovers_exact_coefficients(seed, b_c, b_s, K):
    """z_M(A) = α_A + b_c·m + b_s·s_A exactly: κ = b_s / b_c, whatever the intercepts and scale."""
    rng = np.random.default_rng(seed)
    R = rng.normal(size=(K, 50)) + rng.normal(size=50)
    m = R.mean(axis=0)
    Z = rng.normal(size=(K, 1)) * 10 + 7.0 * (b_c * m + b_s * (R - m))
    g = specific_gain(Z, R, n_boot=20)
    assert g["kappa"] == pytest.approx(b_s / b_c, rel=1e-8, abs=1e-8)


def test_gap_bootstrap_is_seeded_and_brackets_the_estimate():
    Z, R = _world(2, K=6, n=150, specific=0.5)
    a, b = gap_bootstrap(Z, R, n_boot=400, seed=9), gap_bootstrap(Z, R, n_boot=400, seed=9)
    assert a == b
    assert a["ci"][0] < a["gap"] < a["ci"][1]
    assert a["gap"] == pytest.approx(diagonal_stats(cross_correlation(Z, R, centred=True))["gap"])


def test_effective_cells_limits():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 1))
    assert effective_cells(np.repeat(x, 10, axis=1))["n_eff"] == pytest.approx(1.0)
    assert effective_cells(rng.normal(size=(5000, 10)))["n_eff"] == pytest.approx(10.0, rel=0.05)
    # equicorrelated with ρ = 0.5: K / (1 + (K − 1) ρ) = 10 / 5.5
    shared = rng.normal(size=(20000, 1))
    eq = np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=(20000, 10))
    assert effective_cells(eq)["n_eff"] == pytest.approx(10 / 5.5, rel=0.05)


def test_shared_control_makes_cells_dependent():
    """Ten references that are nearly one direction (pairwise r ≈ 0.96, as the ten animal prompts' z_s) and one
    shared control student: the ten cells are far from ten replications; distinct references are not."""
    Z, R = _world(5, K=10, n=200, common=1.0, specific=0.1, ref_specific=0.2)
    control = np.random.default_rng(5).normal(size=200) + R.mean(axis=0)
    reps = cell_replicates(Z, R, control=control, n_boot=500)
    assert reps.shape == (500, 10)
    assert effective_cells(reps)["n_eff"] < 3
    Z, R = _world(5, K=10, n=200, common=0.0, specific=1.0, ref_specific=3.0)
    assert effective_cells(cell_replicates(Z, R, n_boot=500))["n_eff"] > 7


def test_minimum_detectable_effect():
    assert minimum_detectable_effect(0.1) == pytest.approx((1.6448536 + 0.8416212) * 0.1, rel=1e-6)


def test_behaviour_specificity_finds_a_planted_diagonal():
    rng = np.random.default_rng(0)
    popular = rng.dirichlet(np.ones(8))
    P = np.tile(popular, (8, 1)) + 0.05 * np.eye(8)  # every student also names its own trait more
    out = behaviour_specificity(P)
    assert out["centred"]["permutation"]["p"] == pytest.approx(1 / 40320)
    flat = behaviour_specificity(np.tile(popular, (8, 1)))
    assert flat["centred"]["permutation"]["p"] == 1.0  # every relabelling ties


@pytest.mark.parametrize("bad, match", [
    (np.zeros((1, 10)), "K >= 2"),
    (np.full((3, 10), np.nan), "non-finite value at trait 0, pair 0"),
])
def test_bad_shapes_and_values_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        cross_correlation(bad, bad)


def test_trait_centre_sums_to_zero():
    X = np.random.default_rng(0).normal(size=(4, 7))
    np.testing.assert_allclose(trait_centre(X).sum(axis=0), 0, atol=1e-12)


# ------------------------------------------------------------------------------------- control comparison
def _shared_world(seed: int, K: int, n: int, own: float, common: float, shared: float = 0.3):
    """R[a] = shared * m + e_a (m common to every trait); Z[a] = common * m + own * e_a + noise."""
    rng = np.random.default_rng(seed)
    m = rng.normal(size=n)
    e = rng.normal(size=(K, n))
    return common * m + own * e + rng.normal(size=(K, n)), shared * m + e, m, rng


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(2, 6), st.integers(1, 4))
def test_control_levels_are_the_stated_means(seed, K, M):
    from lls_theory.specificity import control_comparison
    from lls_theory.stats import pearson

    Z, R, m, rng = _shared_world(seed, K, 40, 1.0, 1.0)
    Zc = rng.normal(size=(M, 40)) + m
    res = control_comparison(Z, R, Zc, n_boot=50, seed=1)
    assert res["target_level"] == pytest.approx(np.mean([pearson(Z[a], R[a]) for a in range(K)]))
    assert res["control_level"] == pytest.approx(np.mean([pearson(c, r) for c in Zc for r in R]))
    assert res["half_rule"] == (res["control_level"] > res["target_level"] / 2)
    assert np.array(res["C_control"]).shape == (M, K)
    # relabelling the controls changes nothing; scaling a control changes nothing (Pearson)
    again = control_comparison(Z, R, 3.0 * Zc[::-1], n_boot=50, seed=1)
    assert again["control_level"] == pytest.approx(res["control_level"])
    assert again["ci"] == pytest.approx(res["ci"])


def test_control_students_of_the_row_itself_give_the_whole_matrix_mean():
    from lls_theory.specificity import control_comparison, cross_correlation

    Z, R, _, _ = _shared_world(3, 5, 60, 1.0, 1.0)
    res = control_comparison(Z, R, Z, n_boot=20)
    assert res["control_level"] == pytest.approx(cross_correlation(Z, R).mean())


def test_control_comparison_separates_common_from_specific_worlds():
    """Controls that learned only the common shift: in a world where the row's students learned only the common
    shift too, the controls reach the row's level (half rule met); where the students learned their own part,
    the controls stay far below."""
    from lls_theory.specificity import control_comparison

    for own, met in ((0.0, True), (3.0, False)):
        Z, R, m, rng = _shared_world(11, 8, 400, own, 1.0)
        Zc = m + rng.normal(size=(3, 400))
        res = control_comparison(Z, R, Zc, n_boot=300, seed=0)
        assert res["half_rule"] is met
        assert (res["ci"][0] > 0) if met else (res["ci"][1] < 0)
