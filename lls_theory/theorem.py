"""Theorem 2.2 / C.1: hypotheses as a checkable predicate, the guaranteed correlation, and the
proxy objective of its proof.

Hypotheses (for a selected dataset with difference vectors φ_1..φ_m and teacher margins z_s):
    C ≥ 1;  α ≤ z_s(i) ≤ Cα for all i;  α > 20 C² ε;  Δ + 8βε ≤ 1/(10C)³;
    φ_1..φ_m C-well-behaved (checked separately: lls_theory.wellbehaved).
Conclusion: every Δ-approximate minimiser M of the DPO loss has Corr(z_s, z_M) ≥ 1/(10 C^1.5),
with Corr the uncentred cosine (lls_theory.stats.cosine).

Proxy objective (eq. 4): L̂_v = −(1/m) Σ_i log σ(β⟨v, φ_i⟩), convex in v.
Lemma C.4: if ⟨u, φ_i⟩ ≥ α > 0 for all i and ⟨v, φ_i⟩ ≤ 1/(2β) for more than 5Δm indices, then
L̂_{v + u/(βα)} ≤ L̂_v − Δ.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lls_theory.margins import log_sigmoid

__all__ = [
    "guaranteed_correlation",
    "Hypotheses",
    "check_hypotheses",
    "proxy_loss",
    "proxy_loss_grad",
    "lemma_c4_step",
    "lemma_c4_premise",
]


def guaranteed_correlation(C) -> float | np.ndarray:
    """The theorem's lower bound on Corr(z_s, z_M): 1 / (10 C^1.5), for C ≥ 1."""
    c = np.asarray(C, dtype=float)
    if np.any(~(c >= 1)):
        raise ValueError(f"C must be ≥ 1, got {C}")
    out = 1.0 / (10.0 * c**1.5)
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class Hypotheses:
    """Each hypothesis of Theorem C.1 and whether all hold (well-behavedness is checked separately).

    alpha_ok: α > 20 C² ε        delta_ok: Δ + 8βε ≤ 1/(10C)³
    band_ok:  α ≤ z_s(i) ≤ Cα for every i (None when z_s was not given)
    c_ok:     C ≥ 1
    """

    C: float
    alpha: float
    eps: float
    beta: float
    delta: float
    alpha_ok: bool
    delta_ok: bool
    band_ok: bool | None
    c_ok: bool

    @property
    def holds(self) -> bool:
        return self.c_ok and self.alpha_ok and self.delta_ok and self.band_ok is not False

    def as_dict(self) -> dict:
        return {
            "C": self.C, "alpha": self.alpha, "eps": self.eps, "beta": self.beta, "delta": self.delta,
            "alpha_ok": self.alpha_ok, "delta_ok": self.delta_ok, "band_ok": self.band_ok, "c_ok": self.c_ok,
            "holds": self.holds,
        }


def check_hypotheses(C: float, alpha: float, eps: float, beta: float, delta: float, z_s=None, rtol: float = 1e-12) -> Hypotheses:
    """Check the hypotheses of Theorem C.1 (except well-behavedness) for the given constants.

    ``z_s`` (shape (m,)) are the teacher margins of the selected pairs; the band check allows a
    relative slack ``rtol`` for round-off. ε ≥ 0, β > 0 and Δ > 0 are required.
    """
    for name, val in (("C", C), ("alpha", alpha), ("eps", eps), ("beta", beta), ("delta", delta)):
        if not np.isfinite(val):
            raise ValueError(f"{name} must be finite, got {val}")
    if eps < 0:
        raise ValueError(f"eps must be ≥ 0, got {eps}")
    if beta <= 0 or delta <= 0:
        raise ValueError(f"beta and delta must be > 0, got beta={beta}, delta={delta}")
    band_ok = None
    if z_s is not None:
        z = np.asarray(z_s, dtype=float)
        band_ok = bool(np.all(z >= alpha * (1 - rtol)) and np.all(z <= C * alpha * (1 + rtol)))
    return Hypotheses(
        C=float(C), alpha=float(alpha), eps=float(eps), beta=float(beta), delta=float(delta),
        alpha_ok=bool(alpha > 20 * C**2 * eps),
        delta_ok=bool(delta + 8 * beta * eps <= 1.0 / (10.0 * C) ** 3),
        band_ok=band_ok,
        c_ok=bool(C >= 1),
    )


def _check_v_phi(v, Phi, beta: float) -> tuple[np.ndarray, np.ndarray]:
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    P = np.asarray(Phi, dtype=float)
    V = np.asarray(v, dtype=float)
    if P.ndim != 2 or P.shape[0] == 0 or V.ndim not in (1, 2) or V.shape[-1] != P.shape[1]:
        raise ValueError(f"need Phi (m, d) with m ≥ 1 and v (d,) or (k, d); got {P.shape} and {V.shape}")
    for name, a in (("Phi", P), ("v", V)):
        bad = np.argwhere(~np.isfinite(np.atleast_2d(a)))
        if bad.size:
            raise ValueError(f"{name}: non-finite value at row {int(bad[0][0])}")
    return P, V


def proxy_loss(v, Phi, beta: float):
    """L̂_v = −(1/m) Σ_i log σ(β⟨v, φ_i⟩). v: (d,) → float, or (k, d) → (k,). Phi: (m, d).

    ``ValueError`` on β ≤ 0, mismatched shapes, or a non-finite entry (naming its row of Φ / of v).
    """
    P, V = _check_v_phi(v, Phi, beta)
    out = -log_sigmoid(beta * (V @ P.T)).mean(axis=-1)
    return float(out) if np.ndim(out) == 0 else out


def proxy_loss_grad(v, Phi, beta: float) -> np.ndarray:
    """∇_v L̂_v = −(β/m) Σ_i σ(−β⟨v, φ_i⟩) φ_i, shape like v."""
    P = np.asarray(Phi, dtype=float)
    V = np.asarray(v, dtype=float)
    t = beta * (V @ P.T)
    w = np.exp(log_sigmoid(-t))  # σ(−t)
    return -(beta / P.shape[0]) * (w @ P)


def lemma_c4_premise(v, u, Phi, alpha: float, beta: float, delta: float) -> bool:
    """True when Lemma C.4's premise holds: ⟨u,φ_i⟩ ≥ α > 0 ∀i and #{i: ⟨v,φ_i⟩ ≤ 1/(2β)} > 5Δm."""
    P = np.asarray(Phi, dtype=float)
    yu = P @ np.asarray(u, dtype=float)
    yv = P @ np.asarray(v, dtype=float)
    return bool(alpha > 0 and np.all(yu >= alpha) and np.sum(yv <= 1 / (2 * beta)) > 5 * delta * P.shape[0])


def lemma_c4_step(v, u, alpha: float, beta: float) -> np.ndarray:
    """The improving step of Lemma C.4: v + u / (βα)."""
    if alpha <= 0 or beta <= 0:
        raise ValueError("alpha and beta must be positive")
    return np.asarray(v, dtype=float) + np.asarray(u, dtype=float) / (beta * alpha)
