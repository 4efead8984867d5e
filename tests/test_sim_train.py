"""Student solvers of the simulator: certified Δ-minimisers, trajectories, the moving-feature mode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lls_theory.theorem import proxy_loss
from simulations.train import gradient_trajectory, pad_batch, solve_to_delta, train_with_moving_features


def separable(seed, m, d):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(d)
    Phi = rng.standard_normal((m, d))
    return Phi * np.sign(Phi @ u)[:, None]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 60), st.integers(1, 6), st.floats(1e-6, 1e-2))
def test_solver_certificate_is_true(seed, m, d, delta):
    Phis = [separable(seed, m, d), separable(seed + 1, max(2, m // 2), d)]
    Phi, mask = pad_batch(Phis)
    sol = solve_to_delta(Phi, mask, beta=0.1, delta=delta)
    for t, P in enumerate(Phis):
        assert sol.certified[t]
        # the loss the solver reports is the lls_theory proxy loss, and it is ≤ Δ ≤ inf + Δ
        assert proxy_loss(sol.v[t], P, 0.1) == pytest.approx(sol.loss[t], rel=1e-9)
        assert sol.loss[t] <= delta


def test_non_separable_problem_is_certified_by_the_duality_gap():
    Phi = np.array([[1.0], [-1.0], [1.0]])  # labels disagree: finite minimiser, inf > 0
    P, mask = pad_batch([Phi])
    sol = solve_to_delta(P, mask, beta=1.0, delta=1e-6)
    # minimiser of (2 log(1+e^{-v}) + log(1+e^{v}))/3 is v = log 2; inf L = (2 log 1.5 + log 3)/3
    assert sol.v[0, 0] == pytest.approx(np.log(2), abs=1e-6)
    inf_L = (2 * np.log(1.5) + np.log(3)) / 3
    assert sol.loss[0] - inf_L <= sol.gap[0] + 1e-15
    assert sol.certified[0] and sol.certificate[0] == "duality-gap" and sol.gap[0] <= 1e-6
    # loss ≤ Δ is impossible here (inf L ≈ 0.64): only the dual certificate can prove it
    assert sol.loss[0] == pytest.approx(inf_L, abs=1e-12) and sol.loss[0] > 0.6


def test_gradient_trajectory_starts_at_zero_and_descends():
    Phi, mask = pad_batch([separable(0, 40, 4)])
    steps = np.array([0, 1, 5, 20, 100])
    V = gradient_trajectory(Phi, mask, beta=0.5, steps=steps, lr=1.0)
    assert np.all(V[0] == 0)
    losses = [proxy_loss(v[0], Phi[0], 0.5) for v in V]
    assert all(a > b for a, b in zip(losses, losses[1:]))
    with pytest.raises(ValueError):
        gradient_trajectory(Phi, mask, 0.5, steps=np.array([3, 1]))


def test_moving_features_reduces_to_fixed_mode_and_moves_features():
    rng = np.random.default_rng(0)
    Phi, psi0 = separable(1, 50, 4), rng.standard_normal(4)
    v_fixed, A_fixed = train_with_moving_features(Phi, psi0, beta=0.5, steps=50, lr_features=0.0)
    assert np.all(A_fixed == 0)
    # with A frozen this is plain GD on the proxy loss, the same path as gradient_trajectory
    P, mask = pad_batch([Phi])
    v_gd = gradient_trajectory(P, mask, beta=0.5, steps=np.array([50]), lr=1.0)[0, 0]
    np.testing.assert_allclose(v_fixed, v_gd, rtol=1e-10, atol=1e-12)
    v, A = train_with_moving_features(Phi, psi0, beta=0.5, steps=50, lr_features=0.1)
    assert np.linalg.norm(A) > 0
    eff = (np.eye(4) + A).T @ (psi0 + v) - psi0
    assert proxy_loss(eff, Phi, 0.5) < proxy_loss(np.zeros(4), Phi, 0.5)


# ---------------------------------------------------------------------------------- certificates
def non_separable(seed, m, d):
    """Rows ±e_k for every k (so no v separates them: the minimiser exists) plus m random rows."""
    rng = np.random.default_rng(seed)
    eye = np.eye(d) * rng.uniform(0.5, 2.0, size=(d, 1))
    return np.vstack([eye, -eye, rng.standard_normal((m, d))])


def _inf_loss(Phi, beta):
    """Independent oracle: scipy's trust-region Newton on the proxy loss to gtol 1e-13."""
    from scipy.optimize import minimize

    from lls_theory.theorem import proxy_loss_grad

    def hess(v):
        t = beta * Phi @ v
        c = np.exp(-np.logaddexp(0, t) - np.logaddexp(0, -t))  # σ(t)σ(−t)
        return (beta**2) * (Phi.T * c) @ Phi / Phi.shape[0]

    res = minimize(lambda v: proxy_loss(v, Phi, beta), np.zeros(Phi.shape[1]), jac=lambda v: proxy_loss_grad(v, Phi, beta),
                   hess=hess, method="trust-exact", options={"gtol": 1e-13})
    return float(res.fun)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 40), st.integers(1, 5), st.floats(0.05, 3.0), st.floats(0.0, 2.0))
def test_duality_gap_is_an_upper_bound_on_suboptimality(seed, m, d, beta, shift):
    """At the solver's v and at perturbed (suboptimal) points, gap ≥ L(v) − inf L (or inf: no claim)."""
    from simulations.train import duality_gap

    Phi = non_separable(seed, m, d)
    inf_L = _inf_loss(Phi, beta)
    P, mask = pad_batch([Phi])
    sol = solve_to_delta(P, mask, beta=beta, delta=1e-9)
    assert sol.certificate[0] == "duality-gap" and sol.certified[0]
    assert sol.loss[0] - inf_L <= sol.gap[0] + 1e-13 and sol.gap[0] <= 1e-9
    rng = np.random.default_rng(seed)
    V = sol.v + shift * rng.standard_normal((4, d)) / np.sqrt(d)
    gaps = duality_gap(V, np.repeat(P, 4, axis=0), np.repeat(mask, 4, axis=0), beta)
    for v, gap in zip(V, gaps):
        true_gap = proxy_loss(v, Phi, beta) - inf_L
        assert gap == np.inf or gap >= true_gap - 1e-13, (gap, true_gap)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 60), st.integers(1, 5), st.floats(0.0, 50.0))
def test_duality_gap_makes_no_false_claim_on_separable_data(seed, m, d, scale):
    """Separable data have inf L = 0 and no minimiser: any finite gap must be ≥ L(v) itself."""
    from simulations.train import duality_gap

    Phi = separable(seed, m, d)
    rng = np.random.default_rng(seed)
    V = scale * rng.standard_normal((3, d))
    P, mask = pad_batch([Phi])
    gaps = duality_gap(V, np.repeat(P, 3, axis=0), np.repeat(mask, 3, axis=0), 0.1)
    for v, gap in zip(V, gaps):
        assert gap == np.inf or gap >= proxy_loss(v, Phi, 0.1) - 1e-15


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 10_000), st.integers(20, 300), st.integers(2, 12))
def test_float32_features_and_options_keep_the_exact_certificate(seed, m, d):
    """float32 Φ, the float64 Hessian and the no-extrapolation path all certify in float64."""
    Phi64 = separable(seed, m, d) / np.sqrt(d)
    P, mask = pad_batch([Phi64, Phi64[: m // 2 + 2]])
    for kw in ({}, {"hessian_dtype": np.float64}, {"extrapolate": False}):
        for arr in (P, P.astype(np.float32)):
            sol = solve_to_delta(arr, mask, beta=0.1, delta=1e-4, **kw)
            assert np.all(sol.certified) and np.all(sol.certificate == "loss")
            for t in range(2):
                # the certificate is the float64 loss of exactly these (possibly float32) values
                exact = proxy_loss(sol.v[t], arr[t][mask[t]].astype(np.float64), 0.1)
                assert exact <= 1e-4 and exact == pytest.approx(sol.loss[t], rel=1e-12)


def test_solver_rejects_bad_parameters():
    P, mask = pad_batch([separable(0, 10, 2)])
    for beta, delta in ((0.0, 1e-3), (0.1, 0.0), (np.nan, 1e-3), (0.1, np.inf)):
        with pytest.raises(ValueError):
            solve_to_delta(P, mask, beta, delta)
