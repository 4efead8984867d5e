"""The simulator solver's fast kernels: they only steer Newton, and every certificate the
float32 path claims still holds when recomputed independently in float64."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, log_expit

from simulations.train import _LIVE_CURVATURE, _hessian_live, _loss_from_margins, _sigmoids, pad_batch, solve_to_delta


def _independent_loss(v: np.ndarray, phi: np.ndarray, beta: float) -> float:
    """−(1/m) Σ log σ(β⟨v, φ_i⟩) in float64 with numpy's logaddexp (not the solver's nor lls_theory's code)."""
    return float(np.mean(np.logaddexp(0.0, -beta * (phi.astype(np.float64) @ v))))


def _instance(rng, m, d, scale, noise):
    u = rng.standard_normal(d)
    X = rng.standard_normal((m, d)) * scale
    s = np.sign(X @ u)
    s[s == 0] = 1
    s[rng.random(m) < noise] *= -1  # noise > 0: labels disagree, inf L > 0
    return (X * s[:, None]).astype(np.float32)


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.integers(8, 400), st.integers(1, 12), st.sampled_from([1e-2, 1e-4, 1e-8]),
       st.sampled_from([0.05, 1.0, 30.0]), st.sampled_from([0.1, 1.0]))
def test_float32_claims_hold_in_float64(seed, m, d, delta, scale, beta):
    """float32 Φ and the float32 Hessian (the defaults): a "loss" certificate means the float64 loss of
    exactly those float32 values is ≤ Δ; a "duality-gap" one that the gap is ≤ Δ. The batch mixes
    sizes (padding), separable and noisy trials, and large scales whose margins reach the thousands
    (the range where the steering kernels floor e^{−t})."""
    rng = np.random.default_rng(seed)
    Phis = [_instance(rng, m, d, scale, 0.0), _instance(rng, max(2, m // 3), d, scale, 0.0),
            _instance(rng, m, d, scale, 0.15)]
    P, mask = pad_batch(Phis)
    P = P.astype(np.float32)  # pad_batch stacks in float64; the values are float32 ones, so this is exact
    sol = solve_to_delta(P, mask, beta=beta, delta=delta)
    assert sol.certified[0] and sol.certified[1]  # separable: L ≤ Δ is reachable, so the test has claims to check
    for t, phi in enumerate(Phis):
        if sol.certificate[t] == "loss":
            exact = _independent_loss(sol.v[t], phi, beta)
            assert exact <= delta * (1 + 1e-12), (t, exact, delta)  # float64 rounding of the sum only
            assert exact == pytest.approx(sol.loss[t], rel=1e-12, abs=1e-300)
        elif sol.certificate[t] == "duality-gap":
            assert sol.certified[t] and sol.gap[t] <= delta
            assert sol.loss[t] == pytest.approx(_independent_loss(sol.v[t], phi, beta), rel=1e-12)
        else:
            assert not sol.certified[t]


def test_float32_certificates_on_the_benchmark_instance_family():
    """The benchmark's own instances (float32 Box–Muller Gaussians, m = 2,000, d = 32, Δ = 1e-4): every
    trial certified, each claim true in float64, Newton steps as before the speed work (≈ 5.6)."""
    spec = importlib.util.spec_from_file_location(
        "bench_simulator", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_simulator.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    Phi = bench.instances(np.random.default_rng(3), 8, 2000, 32, np.float32)
    assert Phi.dtype == np.float32
    sol = solve_to_delta(Phi, np.ones(Phi.shape[:2], dtype=bool), beta=0.1, delta=1e-4)
    assert np.all(sol.certified) and np.all(sol.certificate == "loss")
    for t in range(Phi.shape[0]):
        assert _independent_loss(sol.v[t], Phi[t], 0.1) <= 1e-4 * (1 + 1e-12)
    assert 3 <= sol.iterations.mean() <= 9


def test_box_muller_gaussians_have_gaussian_moments():
    spec = importlib.util.spec_from_file_location(
        "bench_simulator", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_simulator.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    z = bench.standard_normal_f32(np.random.default_rng(0), (500, 1001), scale=2.0).astype(np.float64).ravel() / 2
    n = z.size
    assert z.shape == (500 * 1001,)
    # 5 standard errors: mean 1/√n, variance √(2/n), fourth moment √(96/n)
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(z**4) - 3) < 5 * np.sqrt(96 / n)
    from scipy.stats import kstest

    assert kstest(z[:200_000], "norm").pvalue > 1e-3


_EXTREMES = np.array([0.0, 1e-300, -1e-300, 1.0, -1.0, 36.0, -36.0, 700.0, 707.9, 708.5, 720.0, 745.2, 800.0,
                      5000.0, -700.0, -708.5, -709.5, -745.0, -800.0, -5000.0])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 3000.0))
def test_steering_loss_and_sigmoids_match_scipy(seed, spread):
    rng = np.random.default_rng(seed)
    t = np.concatenate([rng.standard_normal(200) * spread, _EXTREMES])[None, :].repeat(2, axis=0)
    t[1] = -t[1]
    w = rng.random(t.shape)
    w[:, ::7] = 0.0  # padded rows
    ref = -log_expit(t)
    # each term exact to a few ulp, except that a term below e^{−708} counts as e^{−708} (< 3.3e-308)
    loss = _loss_from_margins(t, w)
    want = np.einsum("tm,tm->t", ref, w)
    assert np.allclose(loss, want, rtol=1e-13, atol=np.exp(-708) * w.sum(axis=1).max())
    s_neg, curv = _sigmoids(t)
    tiny = np.exp(-708)
    assert np.allclose(s_neg, expit(-t), rtol=1e-13, atol=tiny)
    assert np.allclose(curv, expit(t) * expit(-t), rtol=1e-13, atol=tiny)
    assert np.all((s_neg >= 0) & (s_neg <= 1) & (curv > 0) & (curv <= 0.25))


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 6), st.integers(2, 300), st.integers(1, 12), st.floats(0.0, 60.0))
def test_live_row_hessian_matches_the_dense_sum(seed, A, m, d, spread):
    """Σ over live rows of rel·φφᵀ (float32, per-trial syrk) = the dense float64 sum over all rows up to
    float32 round-off plus what the dropped rows (rel ≤ 1e-10 each) add."""
    rng = np.random.default_rng(seed)
    P = rng.standard_normal((A, m, d)).astype(np.float32)
    rel = np.exp(-rng.random((A, m)) * spread)  # spread 60: rel down to 1e-26, many rows dead
    rel[:, 0] = 1.0
    if m > 3:
        rel[0, 3:] = 0.0  # padded rows of trial 0
    H = _hessian_live(P, rel, all_rows=False).astype(np.float64)
    P64 = P.astype(np.float64)
    dense = np.einsum("amd,am,ame->ade", P64, rel, P64)
    norm_sq = np.einsum("amd,amd->am", P64, P64)
    bound = (2e-6 * np.einsum("am,am->a", rel, norm_sq)  # float32 accumulation
             + np.einsum("am,am->a", np.where(rel > _LIVE_CURVATURE, 0.0, rel), norm_sq))  # dropped rows
    assert np.all(np.abs(H - dense).max(axis=(1, 2)) <= bound + 1e-30)
    assert np.allclose(H, H.transpose(0, 2, 1))
    # all_rows: plain ΦᵀΦ
    full = _hessian_live(P, np.ones((A, m)), all_rows=True).astype(np.float64)
    assert np.allclose(full, np.einsum("amd,ame->ade", P64, P64), rtol=1e-5, atol=1e-5 * m)
