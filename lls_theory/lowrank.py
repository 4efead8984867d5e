"""Low-rank tools for log-probability matrices (paper Appendix C.1, Figs. 18–19).

* singular spectrum and a power-law fit log σ_k ≈ slope·log k + intercept over a rank window;
* cosines of principal angles between the top-r row subspaces of two matrices (same columns),
  with the baseline of two random Gaussian matrices of the same shapes;
* projection of a set of vectors on their top-2 singular directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "singular_spectrum",
    "PowerLawFit",
    "power_law_slope",
    "top_row_subspace",
    "principal_angle_cosines",
    "random_baseline_cosines",
    "top2_projection",
]


def _matrix(X, name="X") -> np.ndarray:
    A = np.asarray(X, dtype=float)
    if A.ndim != 2 or A.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix, got shape {A.shape}")
    bad = np.argwhere(~np.isfinite(A))
    if bad.size:
        raise ValueError(f"{name}: non-finite value at [{int(bad[0][0])}, {int(bad[0][1])}]")
    return A


def singular_spectrum(X, center: bool = False) -> np.ndarray:
    """Singular values of X (S, P) in decreasing order, shape (min(S, P),).

    With ``center=True`` the column means are removed first (the common per-(p, r) offset).
    """
    A = _matrix(X)
    if center:
        A = A - A.mean(axis=0, keepdims=True)
    return np.linalg.svd(A, compute_uv=False)


@dataclass(frozen=True)
class PowerLawFit:
    """log σ_k = slope · log k + intercept over ranks k in [lo, hi] (1-based, inclusive); r2 of the fit."""

    slope: float
    intercept: float
    r2: float
    rank_window: tuple[int, int]


def power_law_slope(s, rank_window: tuple[int, int] | None = None) -> PowerLawFit:
    """Least-squares fit of log σ_k against log k over the 1-based inclusive window (lo, hi).

    Default window: ranks 2 .. n (the top singular value usually carries the mean offset).
    Only positive singular values may be in the window.
    """
    s = np.asarray(s, dtype=float)
    if s.ndim != 1 or s.size < 2:
        raise ValueError("need at least two singular values")
    lo, hi = rank_window if rank_window is not None else (2 if s.size >= 3 else 1, s.size)
    if not (1 <= lo < hi <= s.size):
        raise ValueError(f"rank_window {rank_window} must satisfy 1 ≤ lo < hi ≤ {s.size}")
    k = np.arange(lo, hi + 1)
    vals = s[lo - 1 : hi]
    bad = np.flatnonzero(~(vals > 0))
    if bad.size:
        raise ValueError(f"singular value at rank {int(k[bad[0]])} is not positive")
    x, y = np.log(k), np.log(vals)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(float(slope), float(intercept), r2, (int(lo), int(hi)))


def top_row_subspace(X, r: int) -> np.ndarray:
    """Orthonormal basis (P, r) of the top-r right singular subspace (row space) of X (S, P)."""
    A = _matrix(X)
    if not 1 <= r <= min(A.shape):
        raise ValueError(f"r must be in [1, {min(A.shape)}], got {r}")
    _, _, Vt = np.linalg.svd(A, full_matrices=False)
    return Vt[:r].T


def principal_angle_cosines(A, B, r: int) -> np.ndarray:
    """Cosines of the principal angles between the top-r row subspaces of A (S_a, P) and B (S_b, P).

    Equal to the singular values of V_Aᵀ V_B, shape (r,), in [0, 1], decreasing.
    """
    A = _matrix(A, "A")
    B = _matrix(B, "B")
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must have the same columns, got {A.shape[1]} and {B.shape[1]}")
    Va, Vb = top_row_subspace(A, r), top_row_subspace(B, r)
    return np.clip(np.linalg.svd(Va.T @ Vb, compute_uv=False), 0.0, 1.0)


def random_baseline_cosines(shape_a, shape_b, r: int, seed: int = 0, n_draws: int = 1) -> np.ndarray:
    """Principal-angle cosines between two independent Gaussian matrices of the given shapes.

    Returns shape (r,) (averaged over ``n_draws``): the chance level for :func:`principal_angle_cosines`.
    """
    rng = np.random.default_rng(seed)
    draws = [
        principal_angle_cosines(rng.standard_normal(shape_a), rng.standard_normal(shape_b), r) for _ in range(n_draws)
    ]
    return np.mean(draws, axis=0)


def top2_projection(V) -> np.ndarray:
    """Coordinates (k, 2) of the rows of V (k, n) on V's top-2 right singular vectors (Fig. 19 view)."""
    A = _matrix(V, "V")
    if min(A.shape) < 2:
        raise ValueError(f"need at least 2 rows and 2 columns, got shape {A.shape}")
    _, _, Vt = np.linalg.svd(A, full_matrices=False)
    return A @ Vt[:2].T
