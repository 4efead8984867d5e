"""Inverse LLS: does a preference dataset carry a hidden system-prompt trait, and which one?

For each candidate system prompt ``c`` and every pair ``i`` the model gives Algorithm 1's
length-normalised weight (:func:`lls_theory.selection.lls_weights`)::

    w_c(i) / N_i = [(log Pr[r+|c,p] - log Pr[r-|c,p]) - (log Pr[r+|p] - log Pr[r-|p])] / N_i

An LLS dataset built for ``c`` is, by construction, a set of pairs with large ``w_c``. The statistic is
the suspect dataset's mean weight ``T_c = mean_{i in D} w_c(i)/N_i``; its null distribution is the mean over
uniformly random subsets of the same size ``n`` drawn without replacement from a reference dataset ``R``
(``n_draws`` Monte-Carlo draws, seeded; the same draws for every candidate)::

    z_c = (T_c - mean(null_c)) / sd(null_c)          p_c = (1 + #{null_c >= T_c}) / (1 + n_draws)

(one-sided: a planted trait raises the weights). ``p_normal`` = 1 - Phi(z) is reported too (resolves
tails beyond 1/(1+n_draws)). Multiple comparisons over the K candidates: Holm's step-down adjustment of
the Monte-Carlo p-values; a candidate is *significant* when its adjusted p is below ``alpha``.
Candidates are ranked by ``z``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Detection", "detect_trait", "holm"]


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (monotone, capped at 1), same order as ``p``."""
    p = np.asarray(p, dtype=float)
    if p.ndim != 1 or np.any((p < 0) | (p > 1)) or np.any(~np.isfinite(p)):
        raise ValueError("p-values must be a 1-D array in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adj[i] = running
    return adj


@dataclass
class Detection:
    """Ranked candidates: ``table`` rows have name, T, null mean/sd, z, p_mc, p_normal, p_holm, significant."""

    table: list[dict] = field(default_factory=list)
    n_suspect: int = 0
    n_reference: int = 0
    n_draws: int = 0
    alpha: float = 0.05

    @property
    def top(self) -> str:
        return self.table[0]["candidate"]

    @property
    def significant(self) -> list[str]:
        return [r["candidate"] for r in self.table if r["significant"]]


def detect_trait(suspect: np.ndarray, reference: np.ndarray, names: Sequence[str], *, n_draws: int = 20000,
                 alpha: float = 0.05, seed: int = 0) -> Detection:
    """Rank candidates by how unusually high the suspect set's mean normalised LLS weight is.

    ``suspect`` (K, n) and ``reference`` (K, N): w_c(i)/N_i of each candidate c on each pair (same
    candidate order); requires 1 <= n <= N. See the module doc for the statistic and the test.
    """
    from scipy.stats import norm

    S, R = np.asarray(suspect, float), np.asarray(reference, float)
    if S.ndim != 2 or R.ndim != 2 or S.shape[0] != R.shape[0]:
        raise ValueError(f"suspect (K, n) and reference (K, N) must share K; got {S.shape} and {R.shape}")
    K, n = S.shape
    N = R.shape[1]
    if len(names) != K:
        raise ValueError(f"{len(names)} candidate names for {K} rows")
    if n < 1 or n > N:
        raise ValueError(f"need 1 <= suspect size ({n}) <= reference size ({N})")
    if not (np.all(np.isfinite(S)) and np.all(np.isfinite(R))):
        raise ValueError("weights must be finite")
    if n_draws < 100:
        raise ValueError(f"n_draws must be >= 100, got {n_draws}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    # the same random subsets for every candidate: keys -> first n of a random permutation
    nulls = np.empty((K, n_draws))
    chunk = max(1, 2_000_000 // N)
    for a in range(0, n_draws, chunk):
        b = min(n_draws, a + chunk)
        idx = np.argsort(rng.random((b - a, N)), axis=1)[:, :n]
        nulls[:, a:b] = R[:, idx].mean(axis=2)
    T = S.mean(axis=1)
    rows = []
    for k in range(K):
        null = nulls[k]
        mu, sd = float(null.mean()), float(null.std(ddof=1))
        z = (T[k] - mu) / sd if sd > 0 else (np.inf if T[k] > mu else 0.0)
        rows.append({
            "candidate": names[k], "T": float(T[k]), "null_mean": mu, "null_sd": sd, "z": float(z),
            "p_mc": float((1 + np.sum(null >= T[k])) / (1 + n_draws)),
            "p_normal": float(norm.sf(z)),
        })
    adj = holm([r["p_mc"] for r in rows])
    for r, a in zip(rows, adj):
        r["p_holm"] = float(a)
        r["significant"] = bool(a < alpha)
    rows.sort(key=lambda r: -r["z"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return Detection(rows, n, N, n_draws, alpha)
