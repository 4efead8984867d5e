"""Numerical adversary against the CONCLUSION of Theorem C.1 (independent of its proof).

Construction of one instance (all numpy/scipy, seeded):

* Φ (m, d), d ∈ {2, 3}, m ≤ 10, rows oriented so that u0 = e_1 has ⟨u0, φ_i⟩ ∈ [1, 1 + spread];
  its well-behavedness constant C_wb is computed exactly (lls_theory.wellbehaved, exact enumeration).
* y_u = Φu0; the teacher margins are z_s = y_u + e_s with |e_s(i)| ≤ 4ε (ε-accurate log-probs).
  ε, α, C are chosen at the edge of the hypotheses: C ≥ max(C_wb, band of z_s), α = min y_u − 4ε,
  α > 20C²ε, and β, Δ with 8βε = Δ = 1/(2000 C³) (so Δ + 8βε = 1/(10C)³).
* A model M has z_M = Φv + e_M with |e_M(i)| ≤ 4ε. Since ⟨u0, φ_i⟩ > 0, L(t·u0) → 0 whatever the
  errors, so inf_S L = 0 and M is a Δ-approximate minimiser iff mean −log σ(β z_M) ≤ Δ.

The adversary minimises cos(z_s, z_M) over the direction of v (dense sampling of the sphere), the
scale of v (smallest scale meeting the loss constraint, by bisection), and the error vectors e_s, e_M
(sign attacks along the cosine gradient, kept only if the constraint still holds), then polishes the
best candidates with SLSQP over (v, e_M, e_s) jointly. Each reported minimum is re-verified: the
hypotheses with lls_theory.theorem.check_hypotheses, the constraint with lls_theory.theorem.proxy_loss
style evaluation, and the cosine with lls_theory.stats.cosine.

``unconstrained=True`` drops the Δ-minimiser constraint (any v): then the conclusion must fail —
a check that the search is able to find violations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from lls_theory.margins import log_sigmoid
from lls_theory.stats import cosine
from lls_theory.theorem import check_hypotheses, guaranteed_correlation
from lls_theory.wellbehaved import band_constant, well_behaved_bounds

__all__ = ["AdversaryConfig", "make_instance", "attack_instance", "run_adversary"]


@dataclass(frozen=True)
class AdversaryConfig:
    n_instances: int = 40
    n_directions: int = 1500
    n_polish: int = 2          # SLSQP polishes of the best sampled candidates ...
    n_polish_instances: int = 2  # ... on this many instances with the lowest sampled ratio
    m_max: int = 10
    unconstrained: bool = False


def _loss(z, beta):
    """DPO loss of margins z: mean −log σ(β z) (z: (..., m))."""
    return -log_sigmoid(beta * z).mean(axis=-1)


def make_instance(rng: np.random.Generator, m_max: int = 10) -> dict:
    """One hypothesis-satisfying instance (see module doc). Returns a dict of arrays and constants."""
    d = int(rng.choice([2, 3]))
    m = int(rng.integers(d + 2, m_max + 1))
    spread = float(rng.choice([0.0, 0.5, 1.0, 3.0]))
    Phi = rng.standard_normal((m, d)) * rng.choice([0.5, 1.0, 3.0])
    Phi[:, 0] = 1.0 + spread * rng.random(m)
    yu = Phi[:, 0].copy()  # u0 = e_1
    C_wb = well_behaved_bounds(Phi, seed=int(rng.integers(1 << 30))).upper
    eps = yu.min() / (20 * max(C_wb, band_constant(yu)) ** 2 + 4) / 2
    for _ in range(60):
        alpha = yu.min() - 4 * eps
        C = max(C_wb, (yu.max() + 4 * eps) / alpha)
        if alpha > 20 * C**2 * eps:
            break
        eps /= 2
    budget = 1.0 / (10 * C) ** 3
    beta = budget / 2 / (8 * eps) * (1 - 1e-9)  # stay strictly inside Δ + 8βε ≤ 1/(10C)³ in floating point
    delta = budget / 2 * (1 - 1e-9)
    return {"Phi": Phi, "yu": yu, "u0": np.eye(d)[0], "C": float(C), "C_wb": float(C_wb), "alpha": float(alpha),
            "eps": float(eps), "beta": float(beta), "delta": float(delta), "d": d, "m": m}


def _sphere(rng, n, d):
    w = rng.standard_normal((n, d))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def _min_scales(Y, e_M, beta, delta):
    """Per row y of Y (n, m): smallest t ≥ 0 with loss(t·y + e_M) ≤ Δ, by vectorised bisection (inf if none)."""
    n = Y.shape[0]
    f = lambda t: _loss(t[:, None] * Y + e_M, beta) - delta
    hi = np.full(n, 1.0 / beta)
    for _ in range(80):
        bad = f(hi) > 0
        if not bad.any():
            break
        hi[bad] *= 2
    hi[f(hi) > 0] = np.inf
    lo = np.zeros(n)
    fin = np.isfinite(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        ok = np.zeros(n, bool)
        ok[fin] = f(np.where(fin, mid, 1.0))[fin] <= 0
        hi = np.where(fin & ok, mid, hi)
        lo = np.where(fin & ~ok, mid, lo)
    return hi


def _cos_rows(A, B):
    return np.sum(A * B, axis=-1) / (np.linalg.norm(A, axis=-1) * np.linalg.norm(B, axis=-1))


def _cos_grad(A, B):
    """∂cos(a,b)/∂a, row-wise."""
    na = np.linalg.norm(A, axis=-1, keepdims=True)
    nb = np.linalg.norm(B, axis=-1, keepdims=True)
    return B / (na * nb) - np.sum(A * B, axis=-1, keepdims=True) * A / (na**3 * nb)


def attack_instance(inst: dict, rng: np.random.Generator, cfg: AdversaryConfig, polish: bool = False) -> dict:
    """Minimise cos(z_s, z_M) for one instance; returns the best (verified) point."""
    Phi, yu, beta, delta, eps = inst["Phi"], inst["yu"], inst["beta"], inst["delta"], inst["eps"]
    m, d = Phi.shape
    e_max = 4 * eps
    W = _sphere(rng, cfg.n_directions, d)
    Y = W @ Phi.T
    if cfg.unconstrained:
        t = np.ones(len(W))
    else:
        t = _min_scales(Y, -e_max, beta, delta)  # feasible whatever e_M is
    keep = np.isfinite(t)
    W, Y, t = W[keep], Y[keep], t[keep]
    ZM = t[:, None] * Y
    # sign attack on z_s (the band stays inside [α, Cα] by construction), then on z_M
    ZS = yu + (-e_max) * np.sign(_cos_grad(np.broadcast_to(yu, ZM.shape), ZM))
    ZM2 = ZM - e_max * np.sign(_cos_grad(ZM, ZS))
    ok = np.ones(len(W), bool) if cfg.unconstrained else _loss(ZM2, beta) <= delta
    ZM = np.where(ok[:, None], ZM2, ZM)
    cs = _cos_rows(ZS, ZM)
    order = np.argsort(cs)
    cands = [(float(cs[i]), t[i] * W[i], ZS[i], ZM[i]) for i in order[: max(cfg.n_polish, 1)]]
    cands.sort(key=lambda c: c[0])
    best = cands[0]
    for c0, v0, zs0, zM0 in cands[: cfg.n_polish if polish else 0]:
        vs = 1.0 / beta  # scale variables so SLSQP sees O(1) numbers

        def unpack(x):
            return x[:d] * vs, x[d:d + m], x[d + m:]

        def obj(x):
            v, eM, es = unpack(x)
            return cosine(yu + es, Phi @ v + eM)

        def obj_grad(x):
            v, eM, es = unpack(x)
            zs, zM = yu + es, Phi @ v + eM
            gM, gs = _cos_grad(zM, zs), _cos_grad(zs, zM)
            return np.concatenate([vs * (Phi.T @ gM), gM, gs])

        def con(x):
            v, eM, _ = unpack(x)
            return delta - _loss(Phi @ v + eM, beta)

        def con_grad(x):
            v, eM, _ = unpack(x)
            g = (beta / m) * np.exp(log_sigmoid(-beta * (Phi @ v + eM)))
            return np.concatenate([vs * (Phi.T @ g), g, np.zeros(m)])

        cons = [] if cfg.unconstrained else [{"type": "ineq", "fun": con, "jac": con_grad}]
        x0s = np.concatenate([v0 / vs, zM0 - Phi @ v0, zs0 - yu])
        bounds = [(None, None)] * d + [(-e_max, e_max)] * (2 * m)
        try:
            r = minimize(obj, x0s, jac=obj_grad, method="SLSQP", bounds=bounds, constraints=cons, options={"maxiter": 100, "ftol": 1e-12})
        except Exception:  # pragma: no cover - polishing is best effort
            continue
        v, eM, es = unpack(np.clip(r.x, [-np.inf] * d + [-e_max] * (2 * m), [np.inf] * d + [e_max] * (2 * m)))
        zs, zM = yu + es, Phi @ v + eM
        feasible = cfg.unconstrained or _loss(zM, beta) <= delta
        if feasible and cosine(zs, zM) < best[0]:
            best = (cosine(zs, zM), v, zs, zM)
    cos_min, v, zs, zM = best
    hyp = check_hypotheses(inst["C"], inst["alpha"], inst["eps"], beta, delta, z_s=zs)
    bound = guaranteed_correlation(inst["C"])
    return {
        "d": inst["d"], "m": inst["m"], "C": inst["C"], "C_wb": inst["C_wb"], "alpha": inst["alpha"], "eps": inst["eps"],
        "beta": beta, "delta": delta, "hypotheses_hold": hyp.holds, "loss": float(_loss(zM, beta)),
        "min_cos": float(cos_min), "bound": float(bound), "ratio": float(cos_min / bound),
        "violated": bool(hyp.holds and cos_min < bound),
    }


def run_adversary(seed: int = 0, cfg: AdversaryConfig | None = None) -> dict:
    """Run the adversary on ``cfg.n_instances`` seeded instances. Returns a JSON-able summary."""
    cfg = cfg or AdversaryConfig()
    rng = np.random.default_rng(seed)
    insts = [make_instance(rng, cfg.m_max) for _ in range(cfg.n_instances)]
    rows = [attack_instance(inst, rng, cfg) for inst in insts]
    order = np.argsort([r["ratio"] for r in rows])
    for i in order[: cfg.n_polish_instances]:
        polished = attack_instance(insts[i], np.random.default_rng([seed, int(i)]), cfg, polish=True)
        if polished["ratio"] <= rows[i]["ratio"]:
            rows[i] = {**polished, "polished": True}
    valid = [r for r in rows if r["hypotheses_hold"]]
    worst = min(valid, key=lambda r: r["ratio"]) if valid else None
    n_viol = sum(r["violated"] for r in rows)
    return {
        "seed": seed,
        "unconstrained": cfg.unconstrained,
        "n_instances": len(rows),
        "n_valid": len(valid),
        "n_violations": n_viol,
        "min_ratio": None if worst is None else worst["ratio"],
        "worst": worst,
        "conclusion_in_doubt": bool(n_viol > 0) and not cfg.unconstrained,
        "instances": rows,
    }
