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


def test_non_separable_problem_converges_without_certificate():
    Phi = np.array([[1.0], [-1.0], [1.0]])  # labels disagree: finite minimiser, inf > 0
    P, mask = pad_batch([Phi])
    sol = solve_to_delta(P, mask, beta=1.0, delta=1e-6)
    assert not sol.certified[0] and sol.converged[0]
    # minimiser of (2 log(1+e^{-v}) + log(1+e^{v}))/3 is v = log 2
    assert sol.v[0, 0] == pytest.approx(np.log(2), abs=1e-3)


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
