"""Inverse LLS: does a preference dataset carry a hidden system-prompt trait, and which one?

Inputs, for K candidate system prompts ``c`` and the pairs ``i`` the model scores: Algorithm 1's
length-normalised weights (:func:`lls_theory.selection.lls_weights`)::

    w_c(i) = [(log Pr[r+|c,p] - log Pr[r-|c,p]) - (log Pr[r+|p] - log Pr[r-|p])] / N_i

``suspect`` S has shape (K, n) (the dataset D under test), ``reference`` R has shape (K, N), n <= N (the
null population). Two statistics are computed per candidate, both against the *same* ``n_draws`` uniformly
random size-n subsets ``B_1 .. B_B`` of the reference (without replacement, seeded).

1. Raw statistic -- "is a trait planted at all?" (significance). An LLS dataset for ``c`` is by
   construction a set of pairs with large ``w_c``::

       T_c = mean_{i in D} w_c(i)                     null_c[b] = mean_{i in B_b} w_c(i)

2. Candidate-specific statistic -- "which one?" (ranking). Related prompts (ten "you love <animal>"
   prompts) move the margins almost identically: the weights share a common factor, and the raw
   statistic of *every* candidate is high on an LLS subset of *any* of them. The specific statistic
   removes that factor. With the per-pair candidate mean ``m(i) = (1/K) sum_c w_c(i)`` and each
   candidate's loading on it, fitted by least squares on the reference (bars: reference means)::

       beta_c = sum_{i in R} (w_c(i) - wbar_c)(m(i) - mbar) / sum_{i in R} (m(i) - mbar)^2
       r_c(i) = w_c(i) - beta_c m(i)                  (reference and suspect pairs alike)
       T'_c   = mean_{i in D} r_c(i)                  null'_c[b] = mean_{i in B_b} r_c(i)

   ``sum_c beta_c = K``, so ``sum_c r_c(i) = 0``: the residuals are contrasts between candidates. Adding
   any multiple ``lambda_c m`` of the common factor to any candidate leaves ``r_c`` unchanged (as long as
   ``mean_c lambda_c != -1``, which would cancel the factor). Under a one-factor model
   ``w_c = beta_c a + u_c`` (independent specific parts ``u_c``, mean loading 1), selecting pairs on ``w_t``
   shifts ``r_c`` in proportion to ``cov(r_c, w_t)``, about ``var(u_t) (1 - beta_t / K) > 0`` for
   ``c = t`` and ``-beta_c var(u_t) / K < 0`` for every other candidate, whatever the loadings; the plain
   contrast ``w_c - m`` would add ``(beta_c - 1) var(a)`` and favour the candidates that load most on the
   common factor. The target's specific z is about ``corr(r_t, w_t)`` times its raw z, so with strongly
   correlated candidates and few pairs it can stay within the noise. If ``m`` is constant on the
   reference, ``beta_c = 1``. With K = 1 there is nothing to contrast and the specific columns are
   ``None``.

For either statistic (``X`` = T or T', one-sided: a planted trait raises the weights)::

    z_c = (X_c - mean(null_c)) / sd(null_c)          p_c = (1 + #{b : null_c[b] >= X_c}) / (1 + n_draws)

``p_normal`` = 1 - Phi(z) (resolves tails beyond 1/(1+n_draws)). Multiple comparisons over the K
candidates: Holm's step-down adjustment of the Monte-Carlo p-values, separately for each statistic. A
candidate is ``significant`` when its raw adjusted p is below ``alpha`` ("a trait is planted"), and
``significant_specific`` when its specific adjusted p is below ``alpha`` *and* some candidate is raw-
significant: "which one" is only asked once "is there one" is answered, so on a dataset without a planted
trait the chance of any specific claim is at most that of a raw one (<= alpha); ``p_specific_holm`` itself
is reported ungated. Rows are ranked by the specific z (``rank``; ties and K = 1: raw z); ``rank_raw`` is
the rank by raw z.

Small samples (:func:`sample_size_warnings`, ``Detection.warnings``). The Monte-Carlo p is valid for the
random-subset null at any size, but a handful of suspect pairs says little: a flag only says that these few
pairs have larger weights than typical reference pairs, which any difference in where they came from (topic,
length) also produces, and the candidate ranking is then noise. Warned, and recorded in the result, when the
suspect set has fewer than ``MIN_SUSPECT`` pairs, the reference fewer than ``MIN_REFERENCE`` pairs or fewer
than ``REFERENCE_RATIO`` times the suspect size, or the reference has fewer distinct same-size subsets
``C(N, n)`` than ``n_draws`` (the null is then discrete: no p below about ``1 / C(N, n)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["Detection", "MIN_DRAWS", "MIN_REFERENCE", "MIN_SUSPECT", "REFERENCE_RATIO", "common_factor_residuals",
           "detect_trait", "holm", "sample_size_warnings"]

MIN_DRAWS = 100
"""Fewest random reference subsets ``detect_trait`` accepts (a p-value resolves 1 / (1 + n_draws))."""
MIN_SUSPECT = 20
"""Fewer suspect pairs than this: a flag is a lead, not a finding (module doc, "Small samples")."""
MIN_REFERENCE = 100
"""Fewer reference pairs than this: the null population is too small to stand for the data source."""
REFERENCE_RATIO = 4
"""The reference should hold at least this many times the suspect's pairs (else the random subsets overlap a lot)."""


def sample_size_warnings(n: int, N: int, n_draws: int) -> list[str]:
    """Plain-language warnings when ``n`` suspect pairs against ``N`` reference pairs (``n_draws`` random
    subsets) are too few for the significance claim ``detect_trait`` prints; empty when the sizes are adequate."""
    import math

    out = []
    if n < MIN_SUSPECT:
        out.append(f"small suspect set: {n} pairs (< {MIN_SUSPECT}); a flag only says these {n} pairs have larger "
                   "weights than typical reference pairs (any difference in where they came from does that too) and "
                   "the candidate ranking is mostly noise")
    if N < MIN_REFERENCE or N < REFERENCE_RATIO * n:
        out.append(f"small reference: {N} pairs (want >= {max(MIN_REFERENCE, REFERENCE_RATIO * n)}: at least "
                   f"{MIN_REFERENCE} and {REFERENCE_RATIO}x the suspect's {n})")
    n_subsets = math.comb(N, n) if 0 <= n <= N else 0
    if n_subsets < n_draws:
        out.append(f"discrete null: only C({N}, {n}) = {n_subsets} distinct reference subsets for {n_draws} draws; "
                   f"no p-value can go much below 1/{n_subsets}")
    return out


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


def common_factor_residuals(reference: np.ndarray, suspect: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate-specific residuals ``r_c = w_c - beta_c m`` (module doc, statistic 2).

    ``reference`` (K, N) fits the loadings ``beta`` (K,); returns ``(beta, reference residuals (K, N),
    suspect residuals (K, n))``. ``m`` is the per-pair mean over the K candidates.
    """
    R, S = np.asarray(reference, float), np.asarray(suspect, float)
    if R.ndim != 2 or S.ndim != 2 or R.shape[0] != S.shape[0]:
        raise ValueError(f"reference (K, N) and suspect (K, n) must share K; got {R.shape} and {S.shape}")
    m_ref, m_sus = R.mean(axis=0), S.mean(axis=0)
    g = m_ref - m_ref.mean()
    gg = float(g @ g)
    if gg > 0:
        beta = (R - R.mean(axis=1, keepdims=True)) @ g / gg
    else:
        beta = np.ones(R.shape[0])
    return beta, R - beta[:, None] * m_ref, S - beta[:, None] * m_sus


@dataclass
class Detection:
    """Candidates ranked by the specific z. ``table`` rows: candidate, beta, raw (T, null_mean, null_sd, z,
    p_mc, p_normal, p_holm, significant) and specific (T_specific, null_specific_mean, null_specific_sd,
    z_specific, p_specific_mc, p_specific_normal, p_specific_holm, significant_specific), rank, rank_raw."""

    table: list[dict] = field(default_factory=list)
    n_suspect: int = 0
    n_reference: int = 0
    n_draws: int = 0
    alpha: float = 0.05
    warnings: list[str] = field(default_factory=list)  # sample_size_warnings: sizes too small for the claim

    @property
    def top(self) -> str:
        """First by the candidate-specific statistic (raw z when K = 1)."""
        return self.table[0]["candidate"]

    @property
    def top_raw(self) -> str:
        return next(r["candidate"] for r in self.table if r["rank_raw"] == 1)

    @property
    def significant(self) -> list[str]:
        """Holm-significant by the raw statistic ("a trait is planted"), in ranking order."""
        return [r["candidate"] for r in self.table if r["significant"]]

    @property
    def significant_specific(self) -> list[str]:
        """Holm-significant by the specific statistic, only when some candidate is raw-significant."""
        return [r["candidate"] for r in self.table if r["significant_specific"]]


def _one_sided(x: np.ndarray, nulls: np.ndarray, alpha: float, n_subsets: int | None = None) -> list[dict]:
    """z, Monte-Carlo and normal p, Holm for observed ``x`` (K,) against ``nulls`` (K, B).

    p_mc = (1 + #{b: null_b >= x}) / (1 + B), and never below 1 / (1 + ``n_subsets``): with only
    ``n_subsets`` distinct reference subsets (fewer than the B draws) the null has that many values, so the
    observed statistic can be rarer than at most all of them -- more draws cannot make it rarer."""
    from scipy.stats import norm

    floor = 1.0 / (1 + n_subsets) if n_subsets is not None and n_subsets < nulls.shape[1] else 0.0
    out = []
    for k in range(x.size):
        null = nulls[k]
        mu, sd = float(null.mean()), float(null.std(ddof=1))
        z = (x[k] - mu) / sd if sd > 0 else (np.inf if x[k] > mu else 0.0)
        p_mc = max(float((1 + np.sum(null >= x[k])) / (1 + null.size)), floor)
        out.append({"T": float(x[k]), "null_mean": mu, "null_sd": sd, "z": float(z),
                    "p_mc": p_mc, "p_normal": float(norm.sf(z))})
    for r, a in zip(out, holm([r["p_mc"] for r in out])):
        r["p_holm"] = float(a)
        r["significant"] = bool(a < alpha)
    return out


def detect_trait(suspect: np.ndarray, reference: np.ndarray, names: Sequence[str], *, n_draws: int = 20000,
                 alpha: float = 0.05, seed: int = 0) -> Detection:
    """Test and rank candidates: raw mean weight (any trait?) and common-factor residual (which one?).

    ``suspect`` (K, n) and ``reference`` (K, N): w_c(i)/N_i of each candidate c on each pair (same
    candidate order); requires 1 <= n <= N. See the module doc for the statistics and the test.
    """
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
    if n_draws < MIN_DRAWS:
        raise ValueError(f"n_draws must be >= {MIN_DRAWS}, got {n_draws}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    beta, R_res, S_res = common_factor_residuals(R, S)
    both = np.vstack([R, R_res])  # rows 0..K-1 raw, K..2K-1 specific: one set of draws for all
    rng = np.random.default_rng(seed)
    nulls = np.empty((2 * K, n_draws))
    chunk = max(1, 2_000_000 // N)
    for a in range(0, n_draws, chunk):
        b = min(n_draws, a + chunk)
        idx = np.argsort(rng.random((b - a, N)), axis=1)[:, :n]  # first n of a random permutation
        nulls[:, a:b] = both[:, idx].mean(axis=2)
    n_subsets = math.comb(N, n)
    raw = _one_sided(S.mean(axis=1), nulls[:K], alpha, n_subsets)
    spec = _one_sided(S_res.mean(axis=1), nulls[K:], alpha, n_subsets) if K >= 2 else None
    gate = any(r["significant"] for r in raw)
    keys = ("T", "null_mean", "null_sd", "z", "p_mc", "p_normal", "p_holm", "significant")
    new = ("T_specific", "null_specific_mean", "null_specific_sd", "z_specific", "p_specific_mc",
           "p_specific_normal", "p_specific_holm", "significant_specific")
    rows = []
    for k in range(K):
        row = {"candidate": names[k], "beta": float(beta[k]), **raw[k]}
        row.update({nk: (spec[k][ok] if spec else (False if nk == "significant_specific" else None))
                    for ok, nk in zip(keys, new)})
        row["significant_specific"] = bool(row["significant_specific"] and gate)
        rows.append(row)
    for rank, k in enumerate(sorted(range(K), key=lambda k: -rows[k]["z"]), 1):
        rows[k]["rank_raw"] = rank
    rows.sort(key=lambda r: (-r["z_specific"] if spec else 0.0, -r["z"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return Detection(rows, n, N, n_draws, alpha, sample_size_warnings(n, N, n_draws))
