"""Theorem C.1 on constructed instances where every hypothesis provably holds (never a vacuous pass).

Construction (d, block sizes k_1..k_d, m = Σ k_j, an invertible A):

* φ's: row i of Φ is A e_{j(i)}, block j repeated k_j times. For Φ₀ (rows e_j) and any v,
  y = Φ₀v equals v_j on block j, and (Σ_j k_j|v_j|)² ≥ Σ_j k_j² v_j² ≥ (min k)·Σ_j k_j v_j², so
  m‖y‖²/‖y‖₁² ≤ m / min_j k_j with equality at v = e_{argmin k}. Hence C*(Φ₀) = m / min_j k_j exactly,
  and Φ = Φ₀Aᵀ has the same column span, so the same C* (Definition C.3 depends only on the span).
* Teacher: u = A^{-T}u₀ gives ⟨u, φ_i⟩ = u₀_{j(i)}; the actual margins are z_s(i) = ⟨u, φ_i⟩ + e_i with
  |e_i| ≤ 4ε (an ε-approximate representation moves each of the four log-probs by ≤ ε), u₀ inside
  [α + 4ε, C α − 4ε], so α ≤ z_s ≤ Cα.
* Constants: C = C*, α = min z_s, ε < α/(20C²) (ε = 0 when C = 1), Δ + 8βε ≤ 1/(10C)³ — each checked by
  check_hypotheses.
* Student: any v with DPO loss of its actual margins z_M(i) = ⟨v, φ_i⟩ + η_i (|η_i| ≤ 4ε) at most Δ is a
  certified Δ-approximate minimiser, because the loss is ≥ 0 = its infimum. Tested: adversarial v (all
  block values at the smallest level T that keeps the loss ≤ Δ, one block pushed to 10⁶, η against the
  correlation), and a v trained from a random (even anti-aligned) start by BFGS and scaling.

The conclusion Corr(z_s, z_M) ≥ 1/(10C^1.5) (uncentred cosine) is asserted on every instance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lls_theory.margins import dpo_loss
from lls_theory.stats import cosine
from lls_theory.theorem import check_hypotheses, guaranteed_correlation, proxy_loss, proxy_loss_grad
from lls_theory.wellbehaved import wb_ratio, well_behaved_bounds


def _instance(rng, d, sizes, beta):
    sizes = np.asarray(sizes)
    m = int(sizes.sum())
    C = m / sizes.min()
    A = rng.standard_normal((d, d)) + 2 * np.sqrt(d) * np.eye(d)  # invertible (diagonally dominated)
    block = np.repeat(np.arange(d), sizes)
    Phi = A[:, block].T  # row i = A e_{j(i)}
    alpha0 = float(rng.uniform(0.5, 5.0))
    delta = 0.5 / (10 * C) ** 3
    # C = 1 leaves no band to absorb errors: then the representation is exact (ε = 0)
    eps = 0.0 if C == 1 else min(0.5 / (10 * C) ** 3 / (8 * beta), alpha0 / (20 * C**2) / 2)
    u0 = rng.uniform(alpha0 + 4 * eps, C * alpha0 - 4 * eps, d)
    u0[rng.integers(d)] = alpha0 + 4 * eps  # the band's lower end is attained
    u = np.linalg.solve(A.T, u0)
    e = rng.uniform(-4 * eps, 4 * eps, m)
    z_s = Phi @ u + e
    return dict(Phi=Phi, A=A, block=block, sizes=sizes, C=C, u=u, z_s=z_s, eps=eps, delta=delta, beta=beta,
                alpha=float(z_s.min()))


def _certified(inst, z_m):
    return dpo_loss(z_m, inst["beta"]) <= inst["delta"]  # loss ≥ 0 = inf, so this certifies Δ-optimality


def _check_conclusion(inst, z_m):
    assert _certified(inst, z_m)
    bound = guaranteed_correlation(inst["C"])
    assert cosine(inst["z_s"], z_m) >= bound, (cosine(inst["z_s"], z_m), bound)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.data(), st.sampled_from([0.05, 0.1, 1.0]), st.integers(0, 2**32 - 1))
def test_constructed_instances_satisfy_the_hypotheses_and_the_conclusion(d, data, beta, seed):
    sizes = data.draw(st.lists(st.integers(1, 6), min_size=d, max_size=d), label="block sizes")
    rng = np.random.default_rng(seed)
    inst = _instance(rng, d, sizes, beta)
    Phi, C, eps, delta = inst["Phi"], inst["C"], inst["eps"], inst["delta"]
    # the hypotheses hold (asserted, never assumed) ...
    h = check_hypotheses(C, inst["alpha"], eps, beta, delta, z_s=inst["z_s"])
    assert h.holds and h.alpha_ok and h.delta_ok and h.band_ok and h.c_ok, h.as_dict()
    # ... with C the exact well-behavedness constant: realised by v = A^{-T} e_argmin, and certified
    j_min = int(np.argmin(inst["sizes"]))
    witness = np.linalg.solve(inst["A"].T, np.eye(d)[j_min])
    assert wb_ratio(Phi, witness) == pytest.approx(C, rel=1e-9)
    V = rng.standard_normal((300, d))
    assert np.nanmax(wb_ratio(Phi, V)) <= C * (1 + 1e-9)
    b = well_behaved_bounds(Phi)
    assert b.exact and b.upper == pytest.approx(C, rel=1e-6)

    # (nearly) the smallest block level T with −log σ(β(T − 4ε)) ≤ Δ
    T = 4 * eps - math.log(math.expm1(0.99 * delta)) / beta  # loss 0.99Δ (round-off margin)
    eta = -4 * eps * np.sign(inst["z_s"] - inst["z_s"].mean())  # student errors against the correlation
    levels = [np.full(d, T)]
    for j in range(d):  # one block pushed far out: z_M concentrates on block j
        w = np.full(d, T)
        w[j] = 1e6
        levels.append(w)
    levels.append(T + rng.exponential(10 * T, d))
    for w in levels:
        z_m = w[inst["block"]] + eta
        _check_conclusion(inst, z_m)


def _train(Phi, beta, delta, eta, v0):
    """BFGS on the proxy loss from v0, then scale v up until the actual loss is ≤ Δ (margins positive)."""
    from scipy.optimize import minimize

    res = minimize(proxy_loss, v0, args=(Phi, beta), jac=proxy_loss_grad, method="BFGS")
    v = res.x
    assert np.all(Phi @ v + eta > 0), "the optimiser did not separate the selection"
    scale = 1.0
    while dpo_loss(Phi @ (scale * v) + eta, beta) > delta:
        scale *= 2
    return scale * v


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.data(), st.integers(0, 2**32 - 1))
def test_trained_minimisers_satisfy_the_conclusion(d, data, seed):
    sizes = data.draw(st.lists(st.integers(1, 5), min_size=d, max_size=d), label="block sizes")
    rng = np.random.default_rng(seed)
    inst = _instance(rng, d, sizes, beta=0.1)
    assert check_hypotheses(inst["C"], inst["alpha"], inst["eps"], 0.1, inst["delta"], z_s=inst["z_s"]).holds
    eta = rng.uniform(-4 * inst["eps"], 4 * inst["eps"], inst["Phi"].shape[0])
    for v0 in (np.zeros(d), -100 * inst["u"], rng.standard_normal(d) * 50):
        v = _train(inst["Phi"], 0.1, inst["delta"], eta, v0)
        _check_conclusion(inst, inst["Phi"] @ v + eta)


def test_construction_is_not_vacuous_for_a_non_minimiser():
    """The same instance with a student that is NOT a Δ-minimiser (one block negative) can violate the
    conclusion — so the test above depends on the certificate, not on an easy instance."""
    rng = np.random.default_rng(0)
    inst = _instance(rng, 2, [1, 5], beta=0.1)
    z_m = np.where(inst["block"] == 0, -1e6, 1e3)  # right sign on block 1, far wrong on block 0
    assert not _certified(inst, z_m)
    assert cosine(inst["z_s"], z_m) < guaranteed_correlation(inst["C"])
