"""Inverse LLS detection: a planted trait ranks first; random subsets give nothing significant (Holm).

The candidate-specific statistic (common-factor residual, ``empirical.lowrank.detect`` module doc) is checked for
its defining invariance, equivariance under relabelling, a planted specific shift, a shared-factor-only
selection (nothing specific), an independent re-implementation of its equations, and valid p-values.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from empirical.lowrank.detect import common_factor_residuals, detect_trait, holm

NAMES = [f"trait{k}" for k in range(10)]


def _reference(K=10, N=400, seed=0, shared=0.6):
    """Correlated candidate weights: a common 'any system prompt' factor plus candidate-specific parts."""
    rng = np.random.default_rng(seed)
    common = rng.standard_normal(N)
    return shared * common + np.sqrt(1 - shared**2) * rng.standard_normal((K, N))


def _loaded(K=10, N=400, seed=0, loadings=(0.7, 1.3), specific=0.2):
    """One-factor weights w_c = beta_c a + u_c with unequal loadings beta_c (the case a plain contrast misses)."""
    rng = np.random.default_rng(seed)
    beta = np.linspace(*loadings, K)
    return beta[:, None] * rng.standard_normal(N) + specific * rng.standard_normal((K, N))


def _by_name(det):
    return {r["candidate"]: r for r in det.table}


def _lls_subset(w, gamma):
    pos = np.flatnonzero(w > 0)
    order = pos[np.argsort(-w[pos], kind="stable")]
    return order[: int(np.ceil(gamma * pos.size))]


@pytest.mark.parametrize("target", [0, 3, 9])
def test_planted_trait_ranks_first_and_is_significant(target):
    R = _reference(seed=target)
    sel = _lls_subset(R[target], 0.1)
    det = detect_trait(R[:, sel], R, NAMES, n_draws=2000, seed=1)
    assert det.top == NAMES[target] and det.top_raw == NAMES[target]
    assert NAMES[target] in det.significant and NAMES[target] in det.significant_specific
    assert [r["rank"] for r in det.table] == list(range(1, 11))
    assert all(det.table[i]["z_specific"] >= det.table[i + 1]["z_specific"] for i in range(9))


def test_random_subsets_are_rarely_significant():
    R = _reference(seed=5)
    rng = np.random.default_rng(7)
    hits = hits_specific = 0
    for t in range(40):
        sel = rng.choice(R.shape[1], 30, replace=False)
        det = detect_trait(R[:, sel], R, NAMES, n_draws=1000, seed=t)
        hits += bool(det.significant)
        hits_specific += any(r["p_specific_holm"] < 0.05 for r in det.table)  # ungated
        assert det.significant or not det.significant_specific  # the gate
    assert hits <= 6  # family-wise error <= 0.05 per subset (expected <= 2 of 40)
    assert hits_specific <= 6


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


# ------------------------------------------------------------------------ candidate-specific statistic

_SPECIFIC = ("beta", "T_specific", "null_specific_mean", "null_specific_sd", "z_specific", "p_specific_mc",
             "p_specific_holm")


@given(st.integers(0, 10_000), st.lists(st.floats(-3, 3), min_size=6, max_size=6))
@settings(max_examples=25, deadline=None)
def test_specific_invariant_to_adding_multiples_of_the_common_factor(seed, lam):
    """r_c = w_c - beta_c m does not change when any lambda_c m is added to candidate c (a plain contrast
    w_c - mean_c' w_c' would, for unequal lambda_c); the raw statistic is not asked to be invariant.
    Precondition: the map keeps a common factor, m -> (1 + mean(lambda)) m with 1 + mean(lambda) != 0."""
    assume(abs(1 + np.mean(lam)) >= 0.1)
    K, N = 6, 120
    R = _loaded(K, N, seed)
    sel = np.random.default_rng(seed + 1).choice(N, 15, replace=False)
    m = R.mean(axis=0)
    R2 = R + np.asarray(lam)[:, None] * m
    names = NAMES[:K]
    a = _by_name(detect_trait(R[:, sel], R, names, n_draws=300, seed=seed))
    b = _by_name(detect_trait(R2[:, sel], R2, names, n_draws=300, seed=seed))
    for c in names:
        for key in ("T_specific", "null_specific_mean", "null_specific_sd", "z_specific"):
            np.testing.assert_allclose(b[c][key], a[c][key], rtol=1e-7, atol=1e-9, err_msg=f"{c} {key}")
        assert b[c]["p_specific_mc"] == a[c]["p_specific_mc"]
        assert b[c]["rank"] == a[c]["rank"]


@given(st.integers(0, 10_000), st.floats(-5, 5), st.floats(0.1, 10))
@settings(max_examples=25, deadline=None)
def test_both_statistics_invariant_to_a_common_affine_map(seed, shift, scale):
    R = _loaded(5, 80, seed)
    sel = np.random.default_rng(seed).choice(80, 10, replace=False)
    names = NAMES[:5]
    a = _by_name(detect_trait(R[:, sel], R, names, n_draws=300, seed=seed))
    R2 = scale * R + shift
    b = _by_name(detect_trait(R2[:, sel], R2, names, n_draws=300, seed=seed))
    for c in names:
        np.testing.assert_allclose([b[c]["z"], b[c]["z_specific"], b[c]["beta"]],
                                   [a[c]["z"], a[c]["z_specific"], a[c]["beta"]], rtol=1e-6, atol=1e-8)
        assert (b[c]["p_mc"], b[c]["p_specific_mc"]) == (a[c]["p_mc"], a[c]["p_specific_mc"])


@given(st.integers(0, 10_000), st.permutations(range(7)))
@settings(max_examples=25, deadline=None)
def test_permuting_candidates_permutes_results(seed, perm):
    K, N = 7, 100
    R = _loaded(K, N, seed)
    sel = np.random.default_rng(seed).choice(N, 12, replace=False)
    names = NAMES[:K]
    perm = list(perm)
    a = _by_name(detect_trait(R[:, sel], R, names, n_draws=300, seed=3))
    b = _by_name(detect_trait(R[perm][:, sel], R[perm], [names[k] for k in perm], n_draws=300, seed=3))
    for c in names:
        for key in ("T", "z", "p_mc", "p_holm") + _SPECIFIC:
            np.testing.assert_allclose(b[c][key], a[c][key], rtol=1e-9, atol=1e-12, err_msg=f"{c} {key}")
    assert [r["candidate"] for r in sorted(a.values(), key=lambda r: r["rank"])] == \
        [r["candidate"] for r in sorted(b.values(), key=lambda r: r["rank"])]


@given(st.integers(0, 10_000), st.integers(0, 9))
@settings(max_examples=20, deadline=None)
def test_planted_specific_shift_ranks_first(seed, target):
    """A random subset plus a shift of 1.5 specific-sd on one candidate only: that candidate is first by the
    specific statistic and has Holm p < 0.05 (ungated), even though loadings differ by almost 2x."""
    R = _loaded(seed=seed)
    sel = np.random.default_rng(seed).choice(R.shape[1], 40, replace=False)
    S = R[:, sel].copy()
    S[target] += 1.5 * 0.2
    det = detect_trait(S, R, NAMES, n_draws=1000, seed=seed)
    assert det.top == NAMES[target]
    assert _by_name(det)[NAMES[target]]["p_specific_holm"] < 0.05


def test_shared_factor_selection_is_significant_but_not_specific():
    """Pairs selected on the common factor m alone ("loves some animal", no animal in particular): the raw
    test flags every candidate; the specific statistic flags (Holm) at most the nominal error rate, whereas
    the plain contrast w_c - m would single out the most-loaded candidate (checked, so the test has teeth)."""
    hits = 0
    for seed in range(20):
        R = _loaded(seed=seed)
        m = R.mean(axis=0)
        sel = np.argsort(-m)[:40]
        det = detect_trait(R[:, sel], R, NAMES, n_draws=2000, seed=seed)
        assert len(det.significant) == 10
        hits += any(r["p_specific_holm"] < 0.05 for r in det.table)
        v = R - m  # plain contrast, same null theory as test_null_matches_sampling_theory
        n, N = sel.size, R.shape[1]
        z_plain = (v[:, sel].mean(1) - v.mean(1)) / (v.std(1, ddof=1) / np.sqrt(n) * np.sqrt((N - n) / (N - 1)))
        assert z_plain[-1] > 3
    assert hits <= 4  # Holm FWER 0.05 per selection: expected <= 1 of 20; P(>= 5) ~ 0.003


def test_specific_statistic_matches_its_equations():
    R = _loaded(K=4, N=60, seed=11)
    S = R[:, :9] + np.array([[0.3], [0.0], [-0.1], [0.2]])
    det = detect_trait(S, R, NAMES[:4], n_draws=4000, seed=0)
    row = _by_name(det)
    m_R, m_S = R.mean(axis=0), S.mean(axis=0)
    beta = np.array([np.polyfit(m_R, R[k], 1)[0] for k in range(4)])
    assert abs(beta.sum() - 4) < 1e-9
    r_R = R - beta[:, None] * m_R
    np.testing.assert_allclose([row[c]["beta"] for c in NAMES[:4]], beta, rtol=1e-9)
    T = (S - beta[:, None] * m_S).mean(axis=1)
    np.testing.assert_allclose([row[c]["T_specific"] for c in NAMES[:4]], T, rtol=1e-9, atol=1e-12)
    assert abs(T.sum()) < 1e-9  # residuals are contrasts
    n, N = 9, 60
    for k, c in enumerate(NAMES[:4]):
        sd = r_R[k].std(ddof=1) / np.sqrt(n) * np.sqrt((N - n) / (N - 1))
        assert abs(row[c]["null_specific_mean"] - r_R[k].mean()) < 5 * sd / np.sqrt(4000)
        assert abs(row[c]["null_specific_sd"] / sd - 1) < 0.1
        z = (T[k] - row[c]["null_specific_mean"]) / row[c]["null_specific_sd"]
        assert row[c]["z_specific"] == pytest.approx(z)
    b2, rR2, rS2 = common_factor_residuals(R, S)
    np.testing.assert_allclose(b2, beta, rtol=1e-9)
    np.testing.assert_allclose(rR2, r_R, atol=1e-12)


@given(st.integers(1, 4).flatmap(lambda K: st.integers(2, 12).flatmap(lambda N: st.tuples(
    hnp.arrays(float, (K, N), elements=st.floats(-10, 10)), st.integers(1, N)))))
@settings(max_examples=60, deadline=None)
def test_p_values_and_ranks_are_valid(args):
    R, n = args
    K = R.shape[0]
    det = detect_trait(R[:, -n:], R, NAMES[:K], n_draws=100, seed=0)
    assert sorted(r["rank"] for r in det.table) == list(range(1, K + 1))
    assert sorted(r["rank_raw"] for r in det.table) == list(range(1, K + 1))
    assert [r["rank"] for r in det.table] == list(range(1, K + 1))
    for r in det.table:
        keys = [("p_mc", "p_normal", "p_holm")] + ([("p_specific_mc", "p_specific_normal", "p_specific_holm")]
                                                   if K >= 2 else [])
        for mc, nrm, hm in keys:
            assert 0 < r[mc] <= 1 and 0 <= r[nrm] <= 1 and r[mc] <= r[hm] <= 1
    assert det.significant or not det.significant_specific  # "which one" only after "is there one"
    assert set(det.significant_specific) <= {r["candidate"] for r in det.table if K > 1 and r["p_specific_holm"] < 0.05}
    if K == 1:
        assert det.table[0]["z_specific"] is None and not det.significant_specific
    else:
        zs = [r["z_specific"] for r in det.table]
        assert all(zs[i] >= zs[i + 1] for i in range(K - 1))
    by_raw = sorted(det.table, key=lambda r: r["rank_raw"])
    assert all(by_raw[i]["z"] >= by_raw[i + 1]["z"] for i in range(K - 1))
    assert det.top_raw == by_raw[0]["candidate"]


# ------------------------------------------------------------------------ small-sample guard
def test_tiny_suspect_against_tiny_reference_warns():
    """A 2-pair suspect set against an 8-pair reference: whatever the test says, the result carries warnings
    naming the suspect size, the reference size and the discrete null (C(8, 2) = 28 subsets)."""
    from empirical.lowrank.detect import sample_size_warnings

    R = _reference(K=3, N=8, seed=1)
    det = detect_trait(R[:, :2] + 5.0, R, ["a", "b", "c"], n_draws=2000, seed=0)
    text = " ".join(det.warnings)
    assert "small suspect set: 2 pairs" in text and "small reference: 8 pairs" in text and "C(8, 2) = 28" in text
    assert det.warnings == sample_size_warnings(2, 8, 2000)


def test_adequate_sizes_do_not_warn():
    R = _reference(N=400, seed=3)
    det = detect_trait(R[:, :40], R, NAMES, n_draws=500, seed=0)
    assert det.warnings == []


@given(st.integers(1, 60), st.integers(1, 600), st.integers(100, 50_000))
@settings(max_examples=80, deadline=None)
def test_warning_rules(n, N, n_draws):
    """Each warning fires exactly when its stated condition holds."""
    import math

    from empirical.lowrank.detect import MIN_REFERENCE, MIN_SUSPECT, REFERENCE_RATIO, sample_size_warnings

    assume(n <= N)
    w = " | ".join(sample_size_warnings(n, N, n_draws))
    assert ("small suspect set" in w) == (n < MIN_SUSPECT)
    assert ("small reference" in w) == (N < MIN_REFERENCE or N < REFERENCE_RATIO * n)
    assert ("discrete null" in w) == (math.comb(N, n) < n_draws)


# ------------------------------------------------------------------------ validation protocol (lls detect-validate)
def test_p_target_first_oracles():
    """K = 2: P(mu + Z0 > Z1) = Phi(mu / sqrt 2) exactly; mu = 0: 1/K by symmetry; the Monte-Carlo version
    agrees within its error; z_for_top1 inverts the quadrature."""
    from scipy.stats import norm

    from empirical.lowrank.detect_validation import p_target_first_mc, p_target_first_quadrature, z_for_top1

    for mu in (-1.0, 0.0, 0.7, 2.5):
        assert p_target_first_quadrature(mu, 2) == pytest.approx(norm.cdf(mu / np.sqrt(2)), abs=1e-6)
    for K in (3, 10):
        assert p_target_first_quadrature(0.0, K) == pytest.approx(1 / K, abs=1e-6)
    rng = np.random.default_rng(0)
    assert p_target_first_mc(1.3, 10, rng, m=200_000) == pytest.approx(p_target_first_quadrature(1.3, 10), abs=0.005)
    z = z_for_top1(0.9, 10)
    assert p_target_first_quadrature(z, 10) == pytest.approx(0.9, abs=1e-6)


def test_z_exact_matches_enumeration():
    """z_exact's mean and sd are those of the mean over all same-size subsets (enumerated)."""
    from itertools import combinations

    from empirical.lowrank.detect_validation import z_exact

    x = np.array([0.3, -1.2, 2.0, 0.1, 0.7, -0.4])
    idx = np.array([2, 4])
    means = np.array([x[list(c)].mean() for c in combinations(range(6), 2)])
    assert z_exact(x, idx) == pytest.approx((x[idx].mean() - means.mean()) / means.std(ddof=0))


def test_validation_protocols_on_a_synthetic_pool():
    """Same-pool and disjoint-reference protocols on one-factor weights where the teacher is the detector:
    LLS subsets are flagged (by construction, whichever reference), random subsets of the source rarely are, and a
    strong candidate-specific signal is identified."""
    from empirical.lowrank.detect_validation import DetectorRun, validate_detector

    K, N = 5, 400
    w = _loaded(K, N, seed=3, specific=0.5)
    names = NAMES[:K]
    src, ref = np.arange(0, N, 2), np.arange(1, N, 2)
    for w_ref in (None, w[:, ref]):
        rows, rand = validate_detector(w[:, src], w[:, src], w_ref, names, gamma=0.25, seed0=1, n_random=10,
                                       n_draws=500)
        run = DetectorRun.from_rows(rows, rand, K)
        assert run.n_targets == K and run.n_random == 10
        assert run.n_targets_raw_significant == K
        assert run.random_any_significant <= 3
        assert run.top1_correct_specific >= 3
        assert DetectorRun.from_json(run.to_json()) == run


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 4), st.integers(3, 9), st.integers(1, 3), st.integers(0, 2**16), st.floats(0.0, 5.0))
def test_p_values_never_below_the_discrete_null_floor(K, N, n, seed, shift):
    """With only C(N, n) distinct reference subsets (fewer than the draws), no p-value -- Monte-Carlo or Holm,
    raw or specific -- goes below 1 / (1 + C(N, n)), the floor the small-sample warning states; so a planted
    shift, however large, is never flagged below it."""
    import math

    assume(n <= N)
    rng = np.random.default_rng(seed)
    R = rng.normal(size=(K, N))
    S = rng.normal(size=(K, n)) + shift
    det = detect_trait(S, R, [f"c{k}" for k in range(K)], n_draws=2000, seed=seed)
    floor = 1.0 / (1 + math.comb(N, n))
    assert math.comb(N, n) < 2000
    for r in det.table:
        for key in ("p_mc", "p_holm") + (("p_specific_mc", "p_specific_holm") if K >= 2 else ()):
            assert r[key] >= floor - 1e-15, (key, r[key], floor)
    assert any("discrete null" in w for w in det.warnings)


def test_small_reference_flag_respects_the_floor():
    """N = 8 reference pairs, n = 2 suspect: 28 subsets, floor 1/29 > alpha / K for K = 2: never significant."""
    rng = np.random.default_rng(0)
    det = detect_trait(rng.normal(size=(2, 2)) + 10, rng.normal(size=(2, 8)), ["a", "b"], n_draws=20000)
    assert min(r["p_holm"] for r in det.table) >= 1 / 29 and not det.significant
