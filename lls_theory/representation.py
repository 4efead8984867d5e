"""Linear representations of log-probabilities (Definition 2.1, Fact 2.1).

A model is ε-approximately linearly represented by ψ, φ if |log Pr[r|s,p] − ⟨ψ(s), φ(p,r)⟩| ≤ ε for
all s, p, r. With X the matrix of log Pr[r|s,p] (rows s, columns (p, r)), an exact (ε = 0)
representation in R^d exists iff rank X ≤ d (Fact 2.1).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

__all__ = ["logprob_matrix", "representation_error", "exact_rank", "difference_vectors"]


def logprob_matrix(psi, phi, groups=None) -> np.ndarray:
    """X[s, j] = ⟨ψ_s, φ_j⟩, shape (S, P), from psi (S, d) and phi (P, d).

    With ``groups`` (shape (P,), the prompt of each column), each row is log-softmax-normalised within
    every group, so exp(X[s, group]) is a probability distribution over that prompt's responses:
    X[s, j] = ⟨ψ_s, φ_j⟩ − log Σ_{k in group(j)} exp⟨ψ_s, φ_k⟩. The normaliser depends only on (s, p),
    so margins ρ computed from X do not change.
    """
    Psi = np.asarray(psi, dtype=float)
    Phi = np.asarray(phi, dtype=float)
    if Psi.ndim != 2 or Phi.ndim != 2 or Psi.shape[1] != Phi.shape[1]:
        raise ValueError(f"psi (S, d) and phi (P, d) must share d; got {Psi.shape} and {Phi.shape}")
    X = Psi @ Phi.T
    if groups is None:
        return X
    g = np.asarray(groups)
    if g.shape != (Phi.shape[0],):
        raise ValueError(f"groups must have shape ({Phi.shape[0]},), got {g.shape}")
    out = np.empty_like(X)
    for key in np.unique(g):
        cols = np.flatnonzero(g == key)
        out[:, cols] = X[:, cols] - logsumexp(X[:, cols], axis=1, keepdims=True)
    return out


def representation_error(X, psi, phi) -> float:
    """ε of Definition 2.1 for the given ψ (S, d), φ (P, d): max_{s,j} |X[s,j] − ⟨ψ_s, φ_j⟩|."""
    X = np.asarray(X, dtype=float)
    approx = logprob_matrix(psi, phi)
    if approx.shape != X.shape:
        raise ValueError(f"X has shape {X.shape} but psi @ phi.T has shape {approx.shape}")
    return float(np.max(np.abs(X - approx))) if X.size else 0.0


def exact_rank(X, tol: float | None = None) -> int:
    """Fact 2.1: the smallest d admitting an exact linear representation = numerical rank of X.

    Singular values above ``tol`` count; the default is numpy's max(S, P)·eps·σ_max.
    """
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    if X.size == 0:
        return 0
    s = np.linalg.svd(X, compute_uv=False)
    if tol is None:
        tol = max(X.shape) * np.finfo(float).eps * s[0]
    return int(np.sum(s > tol))


def difference_vectors(phi_chosen, phi_rejected) -> np.ndarray:
    """φ_i = φ(p_i, r_i+) − φ(p_i, r_i−), shape (m, d)."""
    a = np.asarray(phi_chosen, dtype=float)
    b = np.asarray(phi_rejected, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"phi_chosen and phi_rejected must be (m, d) of equal shape, got {a.shape}, {b.shape}")
    return a - b
