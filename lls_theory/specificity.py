"""Trait specificity: does a student trained for trait A move along A's *own* shift, or only along the shift
that every trait of the row shares?

Table 1's statistic, Pearson(r(A), z_M(A)), is just as large for a student that learned only the common
"you love X" direction as for one that learned trait A itself. This module measures the difference. Inputs
are K students and K reference shifts over the same n held-out pairs:

* ``Z``: (K, n), row a = z_M(A_a), the shift of the student trained on trait a's subset;
* ``R``: (K, n), row b = r(A_b), the reference shift of trait b (z_s, or z_T for a student of another family).

Definitions (every function below states the one it implements):

* cross-correlation matrix  C[a, b] = Pearson(Z[a], R[b])                        (K, K)
* trait centring            X̃[a] = X[a] − (1/K) Σ_b X[b], applied to both Z and R; C̃ = C(Z̃, R̃)
* diagonal statistic        T(C, π) = (1/K) Σ_a C[a, π(a)];  T(C) = T(C, id) = mean diagonal
* gap                       mean diagonal − mean off-diagonal
* permutation test          H0: trait labels are exchangeable between students and references;
                            p = #{π : T(C, π) ≥ T(C)} / K!  over every relabelling (exact), or
                            p = (1 + #{i : T(C, π_i) ≥ T(C)}) / (1 + n_perm) for n_perm uniform random π_i
* specific-to-common gain   y_a = Z[a] / sd(Z) (one scale for every student); m = (1/K) Σ_b R[b]; s_a = R[a] − m;
                            y_a,i = α_a + β_c m_i + β_s s_a,i + ε (pooled OLS, one intercept per student);
                            κ = β_s / β_c  (1: the specific part moves the student as much as the common part;
                            0: only the common part does)
* effective number of cells N_eff = K² / Σ_ab ρ_ab, ρ the correlation across traits of the cells' bootstrap
                            replicates (K independent cells: K; K copies of one cell: 1)
* control comparison        students Z_c (M, n) trained on traits outside the row (controls): target level
                            L_T = (1/K) Σ_a Pearson(Z[a], R[a]); control level L_C = (1/(KM)) Σ_a Σ_c
                            Pearson(Z_c[c], R[a]); the row's Table-1 statistic is not specific to its family when
                            L_C > L_T / 2 (a bootstrap CI of L_C − L_T / 2 says how clearly)
* minimum detectable effect MDE = (z_{1−α} + z_{power}) · SE_boot(gap), the gap a one-sided level-α test
                            detects with the given power (normal approximation)

Bootstrap CIs resample the n pairs jointly for all K traits (the cells share pairs, so they are resampled
together). numpy/scipy only.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

from lls_theory.stats import _pearson_rows, _percentile_interval, _resamples

__all__ = ["cross_correlation", "trait_centre", "diagonal_stats", "permutation_test", "gap_bootstrap",
           "specific_gain", "effective_cells", "cell_replicates", "minimum_detectable_effect",
           "specificity_test", "behaviour_specificity", "control_comparison", "PermutationResult",
           "MAX_EXACT_PERMUTATIONS"]

MAX_EXACT_PERMUTATIONS = 40_320
"""Relabellings enumerated exactly up to this count (K ≤ 8); beyond it, seeded Monte Carlo."""


def _rows(X: Any, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 3:
        raise ValueError(f"{name}: expected a (K, n) array with K >= 2 traits and n >= 3 pairs, got shape {X.shape}")
    bad = np.argwhere(~np.isfinite(X))
    if bad.size:
        raise ValueError(f"{name}: non-finite value at trait {int(bad[0][0])}, pair {int(bad[0][1])}")
    return X


def _pair(Z: Any, R: Any) -> tuple[np.ndarray, np.ndarray]:
    Z, R = _rows(Z, "Z"), _rows(R, "R")
    if Z.shape != R.shape:
        raise ValueError(f"Z and R must have the same (K, n) shape, got {Z.shape} and {R.shape}")
    return Z, R


def _standardise(X: np.ndarray) -> np.ndarray:
    """Each row (last axis) centred and scaled to unit norm; an all-constant row becomes NaN. (..., n)."""
    Xc = X - X.mean(axis=-1, keepdims=True)
    norm = np.sqrt(np.sum(Xc * Xc, axis=-1, keepdims=True))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, Xc / np.where(norm > 0, norm, 1.0), np.nan)


def trait_centre(X: Any) -> np.ndarray:
    """X̃[a] = X[a] − (1/K) Σ_b X[b]: the mean over the K traits removed, pair by pair. (..., K, n) -> same."""
    X = np.asarray(X, dtype=float)
    return X - X.mean(axis=-2, keepdims=True)


def _corr(Z: np.ndarray, R: np.ndarray) -> np.ndarray:
    """C[..., a, b] = Pearson(Z[..., a, :], R[..., b, :]) for (..., K, n) inputs."""
    return np.einsum("...an,...bn->...ab", _standardise(Z), _standardise(R))


def cross_correlation(Z: Any, R: Any, centred: bool = False) -> np.ndarray:
    """C[a, b] = Pearson(Z[a], R[b]), shape (K, K); with ``centred`` both sides are trait-centred first
    (:func:`trait_centre`). Rows are students (trained on trait a), columns reference shifts (trait b)."""
    Z, R = _pair(Z, R)
    if centred:
        Z, R = trait_centre(Z), trait_centre(R)
    return _corr(Z, R)


def diagonal_stats(C: Any) -> dict[str, float]:
    """``{"diagonal": mean_a C[a,a], "off_diagonal": mean_{a≠b} C[a,b], "gap": their difference,
    "own_best": #{a : C[a,a] = max_b C[a,b]}}`` of a square (K, K) matrix."""
    C = np.asarray(C, dtype=float)
    K = C.shape[0]
    diag = float(np.trace(C) / K)
    off = float((C.sum() - np.trace(C)) / (K * K - K))
    own_best = int(np.sum(np.argmax(C, axis=1) == np.arange(K)))
    return {"diagonal": diag, "off_diagonal": off, "gap": diag - off, "own_best": own_best}


@dataclass(frozen=True)
class PermutationResult:
    """One-sided permutation test of the mean diagonal (see the module doc)."""

    statistic: float
    p: float
    method: str          # "exact" (all K! relabellings) or "monte-carlo"
    n_permutations: int  # K! for exact, n_perm for Monte Carlo
    null_mean: float     # mean of T over the relabellings (= mean of all C entries for exact)
    seed: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def permutation_test(C: Any, n_perm: int = 9_999, seed: int = 0,
                     max_exact: int = MAX_EXACT_PERMUTATIONS) -> PermutationResult:
    """Test "own trait fits better than a relabelled one" on a square (K, K) matrix C.

    T(π) = (1/K) Σ_a C[a, π(a)]. When K! ≤ ``max_exact``: p = #{π : T(π) ≥ T(id)} / K! over all
    relabellings (identity included, so p ≥ 1/K!); otherwise ``n_perm`` uniform random relabellings from
    ``default_rng(seed)`` and p = (1 + #{T(π_i) ≥ T(id)}) / (1 + n_perm). Under exchangeable labels both are
    valid: P(p ≤ α) ≤ α. Ties count as "as extreme" (a 1e-12 relative tolerance absorbs float rounding).
    """
    C = np.asarray(C, dtype=float)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] < 2:
        raise ValueError(f"expected a square (K, K) matrix with K >= 2, got shape {C.shape}")
    if not np.all(np.isfinite(C)):
        raise ValueError("C has a non-finite entry (a constant vector?)")
    if int(n_perm) < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    K = C.shape[0]
    rows = np.arange(K)
    observed = float(np.trace(C) / K)
    tol = 1e-12 * max(1.0, float(np.abs(C).max()))
    if math.factorial(K) <= max_exact:
        perms = np.array(list(itertools.permutations(range(K))), dtype=np.intp)
        T = C[rows, perms].mean(axis=1)
        return PermutationResult(observed, float(np.mean(T >= observed - tol)), "exact", len(perms),
                                 float(T.mean()), None)
    rng = np.random.default_rng(seed)
    hits, total, sums = 0, 0, 0.0
    for start in range(0, int(n_perm), 4096):
        m = min(4096, int(n_perm) - start)
        perms = np.argsort(rng.random((m, K)), axis=1)
        T = C[rows, perms].mean(axis=1)
        hits += int(np.sum(T >= observed - tol))
        total += m
        sums += float(T.sum())
    return PermutationResult(observed, (1 + hits) / (1 + total), "monte-carlo", total, sums / total, int(seed))


def _resample_idx(n: int, n_boot: int, seed: int):
    """Bootstrap index arrays over the n pairs (:func:`lls_theory.stats._resamples`, chunks of 256)."""
    return _resamples(n, n_boot, seed, 256)


def _percentile(v: np.ndarray, level: float) -> list[float]:
    """Central percentile interval of the finite values of ``v`` (:func:`lls_theory.stats._percentile_interval`)."""
    return list(_percentile_interval(v[np.isfinite(v)], level))


def _gap_of(C: np.ndarray) -> np.ndarray:
    """gap = mean diagonal − mean off-diagonal of (..., K, K) matrices."""
    K = C.shape[-1]
    tr = np.trace(C, axis1=-2, axis2=-1)
    return tr / K - (C.sum(axis=(-2, -1)) - tr) / (K * K - K)


def gap_bootstrap(Z: Any, R: Any, centred: bool = True, n_boot: int = 2000, level: float = 0.95,
                  seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap over the n pairs of gap(C) (C trait-centred by default).

    Returns ``{"gap", "ci": [lo, hi], "se": bootstrap standard deviation, "n_boot", "level", "seed"}``.
    Centring is pair-wise, so it commutes with resampling pairs and is done once.
    """
    Z, R = _pair(Z, R)
    if centred:
        Z, R = trait_centre(Z), trait_centre(R)
    reps = np.concatenate([_gap_of(_corr(Z[:, idx].transpose(1, 0, 2), R[:, idx].transpose(1, 0, 2)))
                           for idx in _resample_idx(Z.shape[1], int(n_boot), seed)])
    finite = reps[np.isfinite(reps)]
    return {"gap": float(_gap_of(_corr(Z, R))), "ci": _percentile(reps, level),
            "se": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
            "n_boot": int(n_boot), "level": level, "seed": int(seed)}


def _gain_parts(Z: np.ndarray, R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(β_c, β_s) of the pooled regression in the module doc for (..., K, n) inputs.

    With one intercept per student every variable is demeaned within its student (Frisch–Waugh). Because
    Σ_a s_a = 0 pair by pair, the two regressors are orthogonal in the pooled design, so
    β_c = Σ_a ⟨m̃, ỹ_a⟩ / (K ‖m̃‖²) and β_s = Σ_a ⟨s̃_a, ỹ_a⟩ / Σ_a ‖s̃_a‖².
    """
    K = Z.shape[-2]
    y = Z - Z.mean(axis=-1, keepdims=True)
    y = y / np.sqrt(np.mean(y * y, axis=(-2, -1), keepdims=True))  # one scale for all students: β in sd(z_M)
    m = R.mean(axis=-2)
    s = R - m[..., None, :]
    m = m - m.mean(axis=-1, keepdims=True)
    s = s - s.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta_c = np.einsum("...n,...an->...", m, y) / (K * np.sum(m * m, axis=-1))
        beta_s = np.sum(s * y, axis=(-2, -1)) / np.sum(s * s, axis=(-2, -1))
    return beta_c, beta_s


def specific_gain(Z: Any, R: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The specific-to-common gain: ``{"beta_common", "beta_specific", "kappa"}``, each with a percentile
    bootstrap CI over pairs (``*_ci``), plus ``n_boot``, ``level``, ``seed``. κ = β_s / β_c (module doc)."""
    Z, R = _pair(Z, R)
    bc, bs = _gain_parts(Z, R)
    reps_c, reps_s = [], []
    for idx in _resample_idx(Z.shape[1], int(n_boot), seed):
        c, s = _gain_parts(Z[:, idx].transpose(1, 0, 2), R[:, idx].transpose(1, 0, 2))
        reps_c.append(c)
        reps_s.append(s)
    rc, rs = np.concatenate(reps_c), np.concatenate(reps_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        rk = rs / rc
        kappa = float(bs / bc)
    return {"beta_common": float(bc), "beta_common_ci": _percentile(rc, level),
            "beta_specific": float(bs), "beta_specific_ci": _percentile(rs, level),
            "kappa": kappa, "kappa_ci": _percentile(rk, level),
            "n_boot": int(n_boot), "level": level, "seed": int(seed)}


def cell_replicates(Z: Any, R: Any, control: Any = None, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Bootstrap replicates (n_boot, K) of each trait's Table-1 cell: Pearson(Z[a], R[a]), minus
    Pearson(control[a], R[a]) when a control is given (the paired LLS − random difference). ``control`` is
    (K, n), or (n,) for one control student shared by every trait. All cells share each resample of pairs."""
    Z, R = _pair(Z, R)
    if control is not None:
        control = np.asarray(control, dtype=float)
        control = np.broadcast_to(control, Z.shape) if control.ndim == 1 else control
        control, _ = _pair(control, R)
    out = []
    for idx in _resample_idx(Z.shape[1], int(n_boot), seed):
        r = R[:, idx].transpose(1, 0, 2)
        cell = _pearson_rows(Z[:, idx].transpose(1, 0, 2), r)
        if control is not None:
            cell = cell - _pearson_rows(control[:, idx].transpose(1, 0, 2), r)
        out.append(cell)
    return np.concatenate(out)


def effective_cells(replicates: Any) -> dict[str, Any]:
    """N_eff = K² / Σ_ab ρ_ab from (B, K) replicates of K cells (ρ: their K×K correlation), clipped to [1, K].

    Returns ``{"n_eff", "K", "mean_correlation"}`` (mean off-diagonal ρ). K equicorrelated cells with
    correlation ρ̄ give N_eff = K / (1 + (K − 1) ρ̄): the number of independent cells with the same variance
    of their mean."""
    X = np.asarray(replicates, dtype=float)
    if X.ndim != 2 or X.shape[1] < 2 or X.shape[0] < 3:
        raise ValueError(f"expected (B, K) replicates with B >= 3 and K >= 2, got shape {X.shape}")
    X = X[np.all(np.isfinite(X), axis=1)]
    K = X.shape[1]
    rho = np.corrcoef(X, rowvar=False)
    rho = np.where(np.isfinite(rho), rho, 0.0)
    np.fill_diagonal(rho, 1.0)
    total = float(rho.sum())
    n_eff = K if total <= K else K * K / total
    return {"n_eff": float(min(max(n_eff, 1.0), K)), "K": K,
            "mean_correlation": float((rho.sum() - K) / (K * K - K))}


def minimum_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE = (z_{1−α} + z_{power}) · se: the true effect a one-sided level-α z-test detects with ``power``."""
    return float((_st.norm.ppf(1 - alpha) + _st.norm.ppf(power)) * se)


def specificity_test(Z: Any, R: Any, n_perm: int = 9_999, n_boot: int = 2000, seed: int = 0,
                     alpha: float = 0.05, power: float = 0.8, max_exact: int = MAX_EXACT_PERMUTATIONS
                     ) -> dict[str, Any]:
    """Everything above for one row of K students against K references (``Z``, ``R``: (K, n)).

    Returns ``{"K", "n", "raw": {...}, "centred": {...}, "gap_ci": {...}, "gain": {...}, "mde", "settings"}``
    where raw/centred hold ``C`` (K×K, nested lists), :func:`diagonal_stats` and the ``permutation``
    test; ``gap_ci`` is :func:`gap_bootstrap` of the centred gap; ``gain`` is :func:`specific_gain`; ``mde``
    the centred gap this test detects at level ``alpha`` with ``power``.
    """
    Z, R = _pair(Z, R)
    out: dict[str, Any] = {"K": int(Z.shape[0]), "n": int(Z.shape[1])}
    for name, centred in (("raw", False), ("centred", True)):
        C = cross_correlation(Z, R, centred=centred)
        out[name] = {"C": C.tolist(), **diagonal_stats(C),
                     "permutation": permutation_test(C, n_perm=n_perm, seed=seed, max_exact=max_exact).to_dict()}
    out["gap_ci"] = gap_bootstrap(Z, R, centred=True, n_boot=n_boot, seed=seed)
    out["gain"] = specific_gain(Z, R, n_boot=n_boot, seed=seed)
    out["mde"] = {"gap": minimum_detectable_effect(out["gap_ci"]["se"], alpha, power), "alpha": alpha,
                  "power": power}
    out["settings"] = {"n_perm": int(n_perm), "n_boot": int(n_boot), "seed": int(seed),
                       "max_exact": int(max_exact)}
    return out


def behaviour_specificity(P: Any, n_perm: int = 9_999, seed: int = 0,
                          max_exact: int = MAX_EXACT_PERMUTATIONS) -> dict[str, Any]:
    """The permutation test on behaviour: P[a, b] = the probe's probability of trait b's answer for the
    student trained on trait a, (K, K). Raw: T on P. Centred: each column's mean over students removed
    (P̃[a, b] = P[a, b] − (1/K) Σ_c P[c, b]: how much more student a names b than the other students do)."""
    P = np.asarray(P, dtype=float)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or P.shape[0] < 2 or not np.all(np.isfinite(P)):
        raise ValueError(f"expected a finite square (K, K) matrix with K >= 2, got shape {P.shape}")
    out: dict[str, Any] = {"K": int(P.shape[0])}
    for name, M in (("raw", P), ("centred", P - P.mean(axis=0, keepdims=True))):
        out[name] = {"C": M.tolist(), **diagonal_stats(M),
                     "permutation": permutation_test(M, n_perm=n_perm, seed=seed, max_exact=max_exact).to_dict()}
    return out


def control_comparison(Z: Any, R: Any, Zc: Any, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                       ) -> dict[str, Any]:
    """Do students of other traits (controls) follow the row's reference shifts as much as its own students do?

    ``Z``, ``R``: (K, n) as everywhere in this module; ``Zc``: (M, n), the final z_M of M control students on the
    same n pairs. Implements the module doc's control comparison: ``target_level`` L_T, ``control_level`` L_C,
    ``ratio`` L_C / L_T, ``half_rule`` (L_C > L_T / 2) and a percentile bootstrap CI of L_C − L_T / 2 over the
    n pairs (resampled jointly for every vector). ``C_control``: (M, K), C_control[c, a] = Pearson(Zc[c], R[a]).
    """
    Z, R = _pair(Z, R)
    Zc = np.atleast_2d(np.asarray(Zc, dtype=float))
    if Zc.ndim != 2 or Zc.shape[1] != Z.shape[1] or not np.all(np.isfinite(Zc)):
        raise ValueError(f"Zc: expected a finite (M, n) array with n = {Z.shape[1]}, got shape {Zc.shape}")
    Cc = _corr(Zc, R)  # (M, K)
    lt, lc = float(np.mean(np.diag(_corr(Z, R)))), float(np.mean(Cc))

    def diff(idx: np.ndarray) -> np.ndarray:  # (B,) for resamples idx (B, n)
        zc, z, r = (X[:, idx].transpose(1, 0, 2) for X in (Zc, Z, R))
        own = _pearson_rows(z, r).mean(axis=-1)
        ctrl = _corr(zc, r).mean(axis=(-2, -1))
        return ctrl - own / 2

    reps = np.concatenate([diff(idx) for idx in _resample_idx(Z.shape[1], int(n_boot), seed)])
    return {"K": int(Z.shape[0]), "M": int(Zc.shape[0]), "n": int(Z.shape[1]), "target_level": lt,
            "control_level": lc, "ratio": lc / lt if lt != 0 else float("nan"), "half_rule": bool(lc > lt / 2),
            "diff_vs_half": lc - lt / 2, "ci": _percentile(reps, level), "C_control": Cc.tolist(),
            "n_boot": int(n_boot), "level": level, "seed": int(seed)}
