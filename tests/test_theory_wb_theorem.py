"""Well-behavedness bounds (Definition C.3), Theorem C.1 hypotheses, Lemma C.4."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lls_theory.theorem import (
    check_hypotheses,
    guaranteed_correlation,
    lemma_c4_premise,
    lemma_c4_step,
    proxy_loss,
    proxy_loss_grad,
)
from lls_theory.wellbehaved import band_constant, leverage_scores, wb_ratio, well_behaved_bounds

seeds = st.integers(0, 2**32 - 1)


def gaussian(seed, m, d):
    return np.random.default_rng(seed).standard_normal((m, d))


def grid_value_d2(Phi, n=200_001, refine=8):
    """Dense-grid estimate of C* for d = 2 (a lower bound converging to the exact value). The maximum sits at a
    kink of ‖Φv‖₁, which can be sharp when rows of Φ are nearly parallel, so the ``refine`` best grid angles are
    searched again on a grid as fine over their two neighbouring steps."""
    def ratios(t):
        return wb_ratio(Phi, np.stack([np.cos(t), np.sin(t)], axis=1))

    t = np.linspace(0, np.pi, n)
    r = np.nan_to_num(ratios(t), nan=-np.inf)
    best = float(r.max())
    for k in np.argsort(r)[-refine:]:
        fine = ratios(np.linspace(t[max(k - 1, 0)], t[min(k + 1, n - 1)], 20_001))
        best = max(best, float(np.nanmax(fine)))
    return best


def test_wb_ratio_exact_small_case():
    # y = Φv = (1, 1, 0, 0): m‖y‖² / ‖y‖₁² = 4·2/4 = 2
    Phi = np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    assert wb_ratio(Phi, [1.0, 0.0]) == pytest.approx(2.0)
    assert wb_ratio(Phi, [1.0, 1.0]) == pytest.approx(1.0)
    b = well_behaved_bounds(Phi)
    assert b.exact and b.lower == pytest.approx(2.0) and b.upper == pytest.approx(2.0)


def test_one_sparse_span_gives_m():
    Phi = np.zeros((7, 1))
    Phi[3, 0] = 2.0
    b = well_behaved_bounds(Phi)
    assert b.lower == pytest.approx(7.0) and b.upper == pytest.approx(7.0)


@settings(max_examples=25, deadline=None)
@given(seeds, st.integers(3, 40))
@example(992213, 3)  # nearly parallel rows: a sharp kink a plain grid steps over
def test_exact_enumeration_matches_grid_in_2d(seed, m):
    Phi = gaussian(seed, m, 2)
    b = well_behaved_bounds(Phi)
    assert b.exact
    grid = grid_value_d2(Phi)
    assert grid <= b.upper * (1 + 1e-9)
    assert b.upper == pytest.approx(grid, rel=1e-4)


@settings(max_examples=20, deadline=None)
@given(seeds, st.integers(4, 60), st.integers(1, 6))
def test_bounds_ordered_and_witness_realises_lower(seed, m, d):
    Phi = gaussian(seed, m, d)
    b = well_behaved_bounds(Phi, max_subsets=500)
    assert 1.0 - 1e-9 <= b.lower <= b.upper * (1 + 1e-9) <= m * (1 + 1e-9)
    assert wb_ratio(Phi, b.witness) == pytest.approx(b.lower, rel=1e-8)
    # every certificate is an upper bound on a sample of ratios
    V = np.random.default_rng(seed).standard_normal((500, d))
    assert np.nanmax(wb_ratio(Phi, V)) <= b.upper * (1 + 1e-9)
    assert b.upper <= m * leverage_scores(Phi).max() * (1 + 1e-9)


@settings(max_examples=20, deadline=None)
@given(seeds, st.integers(4, 30), st.integers(1, 3))
def test_bounds_invariant_under_invertible_map(seed, m, d):
    rng = np.random.default_rng(seed)
    Phi = rng.standard_normal((m, d))
    A = rng.standard_normal((d, d)) + 3 * np.eye(d)  # well conditioned, invertible
    b1, b2 = well_behaved_bounds(Phi), well_behaved_bounds(Phi @ A.T)
    assert b1.exact and b2.exact
    assert b2.upper == pytest.approx(b1.upper, rel=1e-6)


@settings(max_examples=20, deadline=None)
@given(seeds, st.integers(3, 14), st.integers(1, 4), st.booleans())
def test_every_certificate_bounds_the_exact_value(seed, m, d, sparse):
    """Each certified upper bound (leverage, sign-sdp, trivial) is ≥ the exact enumerated C*, and the
    random-start vertex search never exceeds it (it only reports realised ratios)."""
    rng = np.random.default_rng(seed)
    Phi = rng.standard_normal((m, d))
    if sparse:  # put a near-sparse vector into the span so C* is large and the certificates are tested hard
        Phi[:, 0] = 0.01 * rng.standard_normal(m)
        Phi[0, 0] = 1.0
    b = well_behaved_bounds(Phi)
    assert b.exact and b.upper_method == "exact"
    for name in ("trivial", "leverage", "sign-sdp"):
        assert b.certificates[name] >= b.upper * (1 - 1e-9), name
    search = well_behaved_bounds(Phi, max_subsets=0, n_starts=8, seed=seed)
    assert search.exact == (d == 1)  # rank 1 is always enumerated exactly
    assert 1.0 - 1e-9 <= search.lower <= b.upper * (1 + 1e-9)
    assert search.upper == pytest.approx(min(search.certificates.values()))
    assert search.upper >= b.upper * (1 - 1e-9)


def test_sparse_direction_in_span_is_detected():
    rng = np.random.default_rng(0)
    Phi = rng.standard_normal((200, 8))
    Phi[:, 0] = 0.0
    Phi[:3, 0] = 1.0  # the span contains a 3-sparse vector → C* ≥ 200·3/9
    b = well_behaved_bounds(Phi)
    assert b.lower >= 200 * 3 / 9 * (1 - 1e-9)


def test_band_constant():
    assert band_constant([2.0, 3.0, 8.0]) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="index 1"):
        band_constant([1.0, -1.0])


def test_guaranteed_correlation_and_hypotheses():
    assert guaranteed_correlation(1.0) == pytest.approx(0.1)
    assert guaranteed_correlation(4.0) == pytest.approx(1 / 80)
    with pytest.raises(ValueError):
        guaranteed_correlation(0.5)
    h = check_hypotheses(C=1.0, alpha=1.0, eps=0.001, beta=0.1, delta=1e-4, z_s=[1.0, 1.0])
    assert h.alpha_ok and h.delta_ok and h.band_ok and h.holds
    # α = 20C²ε exactly is not enough (strict inequality)
    assert not check_hypotheses(C=1.0, alpha=1.0, eps=0.05, beta=0.1, delta=1e-4).alpha_ok
    # Δ + 8βε ≤ 1/(10C)³ = 1e-3 at C = 1
    assert check_hypotheses(C=1.0, alpha=1.0, eps=0.0, beta=0.1, delta=1e-3).delta_ok
    assert not check_hypotheses(C=1.0, alpha=1.0, eps=0.0, beta=0.1, delta=1.01e-3).delta_ok
    assert not check_hypotheses(C=2.0, alpha=1.0, eps=0.0, beta=1, delta=1e-6, z_s=[1.0, 2.5]).holds


@settings(max_examples=60, deadline=None)
@given(seeds, st.integers(5, 80), st.integers(1, 5), st.floats(0.01, 2.0), st.floats(1e-3, 0.19))
def test_lemma_c4_numerically(seed, m, d, beta, delta):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d)
    Phi = rng.standard_normal((m, d))
    Phi *= np.sign(Phi @ u)[:, None]  # every ⟨u, φ_i⟩ > 0
    alpha = float(np.min(Phi @ u))
    if alpha <= 0:
        return
    v = rng.standard_normal(d) * rng.uniform(0, 3 / beta)
    if not lemma_c4_premise(v, u, Phi, alpha, beta, delta):
        return
    step = lemma_c4_step(v, u, alpha, beta)
    assert proxy_loss(step, Phi, beta) <= proxy_loss(v, Phi, beta) - delta + 1e-12


def test_proxy_loss_batched_and_gradient():
    rng = np.random.default_rng(1)
    Phi, V = rng.standard_normal((30, 4)), rng.standard_normal((3, 4))
    batched = proxy_loss(V, Phi, 0.5)
    assert batched.shape == (3,)
    assert batched[1] == pytest.approx(proxy_loss(V[1], Phi, 0.5))
    g = proxy_loss_grad(V[0], Phi, 0.5)
    h = 1e-6
    fd = [(proxy_loss(V[0] + h * e, Phi, 0.5) - proxy_loss(V[0] - h * e, Phi, 0.5)) / (2 * h) for e in np.eye(4)]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    assert proxy_loss(np.zeros(4), Phi, 0.5) == pytest.approx(math.log(2))


def test_proxy_loss_validates_input():
    Phi = np.ones((4, 2))
    assert proxy_loss(np.zeros(2), Phi, 1.0) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="beta"):
        proxy_loss(np.zeros(2), Phi, 0.0)
    with pytest.raises(ValueError, match="shape|got"):
        proxy_loss(np.zeros(3), Phi, 1.0)
    Phi[2, 1] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        proxy_loss(np.zeros(2), Phi, 1.0)
