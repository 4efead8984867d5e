"""Well-behavedness of the difference vectors φ_1..φ_m (Definition C.3) and the band constant.

φ_1..φ_m (rows of Φ, shape (m, d)) are C-well-behaved iff for every v

    (C/m) (Σ_i |⟨v, φ_i⟩|)² ≥ Σ_i ⟨v, φ_i⟩²,

so the smallest such C is

    C*(Φ) = max_{y ∈ col(Φ), y ≠ 0} m ‖y‖₂² / ‖y‖₁²            (y = Φv).

C* depends only on the column span of Φ (so it is invariant under φ_i ↦ Aφ_i for invertible A),
and 1 ≤ C* ≤ m (Cauchy–Schwarz; a 1-sparse y would give m). Computing it is a maximisation of a
convex function over a polytope, hard in general; this module gives certified bounds:

Upper bounds (each a proof that C* ≤ value):
  * ``leverage``: ‖y‖_∞ ≤ √h_max ‖y‖₂ (h_i = leverage scores of col(Φ)) and ‖y‖₂² ≤ ‖y‖_∞‖y‖₁
    give C* ≤ m·h_max.
  * ``sign-sdp``: for any symmetric U with |U_ij| ≤ 1, yᵀUy ≤ ‖y‖₁², so with y = Qa (Q an
    orthonormal basis of col(Φ)), ‖y‖₁² ≥ λ_min(QᵀUQ)‖y‖₂² and C* ≤ m / λ_min(QᵀUQ). We use the
    dual-feasible U_ij = (2/π) arcsin(⟨q_i, q_j⟩ / (‖q_i‖‖q_j‖)) = E_g[sign⟨q_i,g⟩ sign⟨q_j,g⟩]
    (q_i = rows of Q), the covariance of random sign patterns sign(Qg).
  * ``exact``: the maximum of the convex ratio over {y ∈ col(Φ): ‖y‖₁ ≤ 1} is attained at a
    vertex, and every vertex of this section of the ℓ1 ball by an r-dimensional subspace has at least
    r−1 zero coordinates, on a set S with rank(Q_S) = r−1 (then {y: y_S = 0} is a line). Enumerating
    all (r−1)-subsets is exact; it is done when C(m, r−1) ≤ ``max_subsets``.

Lower bound: any y in the span gives C* ≥ m‖y‖₂²/‖y‖₁². We search vertices: from random starts
(and from the highest-leverage rows), repeatedly zero the r−1 smallest coordinates of y and move to
the resulting vertex until it is stable. The best one is returned with its witness v (Φv = y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

__all__ = ["wb_ratio", "WellBehavedBounds", "well_behaved_bounds", "leverage_scores", "band_constant"]


def _check_phi(Phi) -> np.ndarray:
    P = np.asarray(Phi, dtype=float)
    if P.ndim != 2 or P.shape[0] < 1 or P.shape[1] < 1:
        raise ValueError(f"Phi must be a non-empty (m, d) matrix, got shape {P.shape}")
    bad = np.argwhere(~np.isfinite(P))
    if bad.size:
        raise ValueError(f"Phi: non-finite value at row {int(bad[0][0])}")
    return P


def wb_ratio(Phi, v):
    """m Σ⟨v,φ_i⟩² / (Σ|⟨v,φ_i⟩|)² for v of shape (d,) (a float) or (k, d) (an array (k,)).

    C-well-behavedness means C ≥ wb_ratio(Phi, v) for every v; the value is always ≥ 1.
    NaN where Φv = 0.
    """
    P = _check_phi(Phi)
    V = np.asarray(v, dtype=float)
    y = V @ P.T  # (k, m) or (m,)
    num = P.shape[0] * np.sum(y * y, axis=-1)
    den = np.sum(np.abs(y), axis=-1) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def _orthonormal_basis(P: np.ndarray, rtol: float | None = None):
    """Q (m, r) orthonormal basis of col(P), and B (d, r) with P @ B = Q."""
    U, s, Vt = np.linalg.svd(P, full_matrices=False)
    tol = (rtol if rtol is not None else max(P.shape) * np.finfo(float).eps) * (s[0] if s.size else 0.0)
    r = int(np.sum(s > tol))
    if r == 0:
        raise ValueError("Phi is zero: no well-behavedness constant is defined")
    return U[:, :r], Vt[:r].T / s[:r]


def leverage_scores(Phi) -> np.ndarray:
    """Leverage scores h_i = ‖e_iᵀQ‖² of the column span of Φ (shape (m,), sum = rank)."""
    Q, _ = _orthonormal_basis(_check_phi(Phi))
    return np.sum(Q * Q, axis=1)


@dataclass(frozen=True)
class WellBehavedBounds:
    """lower ≤ C*(Φ) ≤ upper.

    witness:      v with wb_ratio(Φ, v) == lower (shape (d,))
    upper_method: which certificate gave ``upper`` ("exact", "sign-sdp", "leverage" or "trivial")
    exact:        True when lower == upper is the exact value (complete vertex enumeration)
    certificates: every certified upper bound computed, by method ("trivial" = m, "leverage",
                  "sign-sdp" when m ≤ sdp_max_m, "exact" when enumerated); ``upper`` is the smallest
    """

    lower: float
    upper: float
    witness: np.ndarray
    upper_method: str
    exact: bool
    certificates: dict = field(default_factory=dict)


def _ratio_rows(Y: np.ndarray) -> np.ndarray:
    m = Y.shape[-1]
    num = m * np.sum(Y * Y, axis=-1)
    den = np.sum(np.abs(Y), axis=-1) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _vertex_through(Q: np.ndarray, zero_idx: np.ndarray) -> np.ndarray | None:
    """a (r,) spanning {a : Q[zero_idx] a = 0} when that space is a line, else None."""
    r = Q.shape[1]
    if r == 1:
        return np.ones(1)
    A = Q[zero_idx]
    _, s, Vt = np.linalg.svd(A, full_matrices=True)
    if s.size < r - 1 or s[r - 2] <= 1e-10 * max(1.0, s[0]):
        return None
    return Vt[-1]


def _vertex_search(Q: np.ndarray, starts: np.ndarray, max_iter: int = 30) -> tuple[float, np.ndarray]:
    r = Q.shape[1]
    best, best_a = 0.0, None
    for a in starts:
        seen = None
        for _ in range(max_iter):
            y = Q @ a
            ratio = _ratio_rows(y[None, :])[0]
            if ratio > best:
                best, best_a = float(ratio), a.copy()
            if r == 1:
                break
            S = np.sort(np.argsort(np.abs(y), kind="stable")[: r - 1])
            if seen is not None and np.array_equal(S, seen):
                break
            seen = S
            a_new = _vertex_through(Q, S)
            if a_new is None:
                break
            a = a_new
    return best, best_a


def _exact_enumeration(Q: np.ndarray, chunk: int = 20000) -> tuple[float, np.ndarray]:
    m, r = Q.shape
    if r == 1:
        return float(_ratio_rows(Q[:, 0][None, :])[0]), np.ones(1)
    best, best_a = 0.0, None
    it = combinations(range(m), r - 1)
    while True:
        block = np.array([c for _, c in zip(range(chunk), it)], dtype=int)
        if block.size == 0:
            break
        A = Q[block]  # (k, r-1, r)
        _, s, Vt = np.linalg.svd(A, full_matrices=True)
        ok = s[:, r - 2] > 1e-10 * np.maximum(1.0, s[:, 0])
        a = Vt[:, -1, :]  # (k, r) null vectors
        ratios = np.where(ok, _ratio_rows(a @ Q.T), 0.0)
        j = int(np.argmax(ratios))
        if ratios[j] > best:
            best, best_a = float(ratios[j]), a[j]
    return best, best_a


def _sign_sdp_upper(Q: np.ndarray) -> float:
    m = Q.shape[0]
    norms = np.linalg.norm(Q, axis=1)
    keep = norms > 0  # zero rows contribute nothing to ‖y‖₁ or ‖y‖₂
    Qk = Q[keep] / norms[keep, None]
    G = np.clip(Qk @ Qk.T, -1.0, 1.0)
    U = (2.0 / np.pi) * np.arcsin(G)
    M = Q[keep].T @ U @ Q[keep]
    lam = float(np.linalg.eigvalsh((M + M.T) / 2)[0])
    # guard against round-off in the eigenvalue: shrink λ by a relative 1e-9
    lam -= 1e-9 * abs(lam) + 1e-12
    return m / lam if lam > 0 else math.inf


def well_behaved_bounds(
    Phi, seed: int = 0, n_starts: int = 64, max_subsets: int = 200_000, sdp_max_m: int = 4000
) -> WellBehavedBounds:
    """Certified upper bound and search-based lower bound (with witness) on C*(Φ); see module doc.

    Parameters
    ----------
    Phi : (m, d) array, rows φ_i.
    seed : seeds the random starts of the lower-bound search.
    n_starts : random starts of the vertex search (plus one from each of the 8 highest-leverage rows).
    max_subsets : run the exact enumeration when C(m, r−1) is at most this.
    sdp_max_m : compute the sign-sdp certificate when m is at most this (it costs O(m² r)).
    """
    P = _check_phi(Phi)
    m = P.shape[0]
    Q, B = _orthonormal_basis(P)
    r = Q.shape[1]
    h = np.sum(Q * Q, axis=1)

    uppers = {"trivial": float(m), "leverage": float(m * h.max())}
    if m <= sdp_max_m:
        uppers["sign-sdp"] = _sign_sdp_upper(Q)

    exact = r == 1 or math.comb(m, r - 1) <= max_subsets
    if exact:
        lower, a = _exact_enumeration(Q)
        upper, method = lower, "exact"
    else:
        rng = np.random.default_rng(seed)
        starts = rng.standard_normal((n_starts, r))
        top_rows = np.argsort(-h, kind="stable")[:8]
        starts = np.vstack([starts, Q[top_rows]])
        lower, a = _vertex_search(Q, starts)
        method = min(uppers, key=uppers.get)
        upper = uppers[method]
    lower = max(lower, 1.0) if a is not None else 1.0
    witness = B @ a if a is not None else np.zeros(P.shape[1])
    if exact:
        # report the exact value as computed from the witness so lower == upper exactly
        lower = upper = float(wb_ratio(P, witness))
    upper = max(upper, lower)  # lower is a realised ratio; round-off cannot make a certificate smaller
    if exact:
        uppers["exact"] = float(upper)
    return WellBehavedBounds(
        lower=float(lower), upper=float(upper), witness=witness, upper_method=method, exact=exact,
        certificates={k: float(v) for k, v in uppers.items()},
    )


def band_constant(z) -> float:
    """The band constant of Theorem C.1: max(z)/min(z) of the selected z_s (all must be > 0).

    With α = min(z), every z_i lies in [α, Cα] for C = band_constant(z).
    """
    z = np.asarray(z, dtype=float)
    if z.ndim != 1 or z.size == 0:
        raise ValueError(f"z must be a non-empty 1-D array, got shape {z.shape}")
    bad = np.flatnonzero(~np.isfinite(z) | (z <= 0))
    if bad.size:
        raise ValueError(f"z: value {z[bad[0]]} at index {int(bad[0])} is not positive and finite")
    return float(z.max() / z.min())
