"""Correlation statistics used everywhere: the theorem's uncentred cosine, Pearson, Spearman,
bootstrap confidence intervals and permutation p-values (all seedable).

Corr(x, y) in Theorem C.1 is the *uncentred* cosine ⟨x, y⟩ / (‖x‖ ‖y‖); the experiments report a
Pearson correlation of the same vectors. Both are offered; :func:`correlation_report` gives all.
Inputs are 1-D arrays of equal length n. Statistics of degenerate input (a zero or constant vector)
are NaN, never an exception, so that a trajectory with one degenerate point still reports.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import stats as _st

__all__ = ["cosine", "pearson", "spearman", "bootstrap_ci", "permutation_pvalue", "correlation_report", "STATISTICS",
           "wilson_interval", "difference_pvalue", "paired_difference", "bootstrap_mean_ci", "seeded_correlation",
           "seeded_difference"]


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"expected two 1-D arrays of equal length, got shapes {x.shape} and {y.shape}")
    for name, a in (("x", x), ("y", y)):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ValueError(f"{name}: non-finite value at index {int(bad[0])}")
    return x, y


def _cos_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (..., n) arrays; NaN where a row has zero norm."""
    num = np.sum(x * y, axis=-1)
    den = np.sqrt(np.sum(x * x, axis=-1) * np.sum(y * y, axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _cos_rows(x - x.mean(axis=-1, keepdims=True), y - y.mean(axis=-1, keepdims=True))


def _spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _pearson_rows(_st.rankdata(x, axis=-1), _st.rankdata(y, axis=-1))


#: Vectorised statistics by name: each maps (..., n), (..., n) arrays to (...) values.
STATISTICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "cosine": _cos_rows,
    "pearson": _pearson_rows,
    "spearman": _spearman_rows,
}


def cosine(x, y) -> float:
    """Uncentred cosine ⟨x, y⟩ / (‖x‖‖y‖) — the theorem's Corr(z_s, z_M). NaN if either is zero."""
    x, y = _pair(x, y)
    return float(_cos_rows(x, y))


def pearson(x, y) -> float:
    """Pearson correlation (cosine of the centred vectors). NaN if either is constant."""
    x, y = _pair(x, y)
    return float(_pearson_rows(x, y))


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of average ranks). NaN if either is constant."""
    x, y = _pair(x, y)
    return float(_spearman_rows(x, y))


def _resample_ranks(groups: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (as scipy.stats.rankdata) of each resample ``values[idx[b]]``, shape (B, n).

    ``groups`` is the dense rank of the original values (0..K−1, equal values share a group). In a
    resample, group g occurs c_g times and its members all get rank (Σ_{h<g} c_h) + (c_g + 1)/2.
    O(B·(n + K)) instead of sorting every resample.
    """
    B, n = idx.shape
    K = int(groups.max()) + 1
    g = groups[idx]  # (B, n)
    counts = np.bincount((g + K * np.arange(B)[:, None]).ravel(), minlength=B * K).reshape(B, K)
    avg = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2.0
    return np.take_along_axis(avg, g, axis=1)


def _stat_fn(stat) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if isinstance(stat, str):
        try:
            return STATISTICS[stat]
        except KeyError:
            raise ValueError(f"unknown statistic {stat!r}; choose from {sorted(STATISTICS)}") from None
    return lambda a, b: np.array([stat(ai, bi) for ai, bi in zip(np.atleast_2d(a), np.atleast_2d(b))])


def bootstrap_ci(stat, x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0, chunk: int = 500):
    """Percentile bootstrap CI of ``stat`` (a name in :data:`STATISTICS` or a callable f(x, y) -> float),
    resampling the n pairs (x_i, y_i) jointly with replacement. Returns (lo, hi); NaN-valued resamples
    are dropped. Vectorised over resamples in chunks of ``chunk``."""
    x, y = _pair(x, y)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x.size < 2:
        raise ValueError("bootstrap_ci needs at least 2 pairs")
    fn = _stat_fn(stat)
    fast_spearman = isinstance(stat, str) and stat == "spearman"
    if fast_spearman:
        gx, gy = np.unique(x, return_inverse=True)[1], np.unique(y, return_inverse=True)[1]
    vals = []
    for idx in _resamples(x.size, n_boot, seed, chunk):
        if fast_spearman:
            vals.append(_pearson_rows(_resample_ranks(gx, idx), _resample_ranks(gy, idx)))
        else:
            vals.append(fn(x[idx], y[idx]))
    v = np.concatenate(vals)
    v = v[np.isfinite(v)]
    return _percentile_interval(v, level)


def _resamples(n: int, n_boot: int, seed: int, chunk: int):
    """Bootstrap index arrays, (<= chunk, n) each and n_boot rows in all, from one seeded generator."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def _percentile_interval(v: np.ndarray, level: float) -> tuple[float, float]:
    """Central ``level`` percentile interval of the finite bootstrap values ``v``; NaNs when there are none."""
    if v.size == 0:
        return (float("nan"), float("nan"))
    a = (1 - level) / 2
    return (float(np.quantile(v, a)), float(np.quantile(v, 1 - a)))


def permutation_pvalue(stat, x, y, n_perm: int = 2000, seed: int = 0, alternative: str = "greater", chunk: int = 500):
    """Permutation p-value of ``stat`` under H0: x independent of y (y shuffled).

    ``alternative``: "greater" (stat larger than by chance), "less", or "two-sided" (|stat|).
    Uses the (1 + #{as extreme}) / (1 + n_perm) estimator, so p is never 0.
    """
    x, y = _pair(x, y)
    if alternative not in ("greater", "less", "two-sided"):
        raise ValueError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    fn = _stat_fn(stat)
    observed = float(fn(x[None, :], y[None, :])[0])
    if not np.isfinite(observed):
        return float("nan")
    rng = np.random.default_rng(seed)
    count = 0
    for start in range(0, n_perm, chunk):
        k = min(chunk, n_perm - start)
        perm = rng.permuted(np.broadcast_to(y, (k, y.size)), axis=1)
        null = fn(np.broadcast_to(x, (k, x.size)), perm)
        if alternative == "greater":
            count += int(np.sum(null >= observed - 1e-12))
        elif alternative == "less":
            count += int(np.sum(null <= observed + 1e-12))
        else:
            count += int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    return (1 + count) / (1 + n_perm)


def correlation_report(x, y, n_boot: int = 2000, n_perm: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """All correlation statistics of (x, y) with bootstrap CIs and a one-sided permutation p-value.

    Returns {n, cosine, cosine_ci, pearson, pearson_ci, spearman, spearman_ci, pearson_p, cosine_p}.
    """
    x, y = _pair(x, y)
    out: dict = {"n": int(x.size)}
    for name in ("cosine", "pearson", "spearman"):
        out[name] = float(STATISTICS[name](x, y))
        out[f"{name}_ci"] = list(bootstrap_ci(name, x, y, n_boot=n_boot, level=level, seed=seed))
    out["pearson_p"] = permutation_pvalue("pearson", x, y, n_perm=n_perm, seed=seed + 1)
    out["cosine_p"] = permutation_pvalue("cosine", x, y, n_perm=n_perm, seed=seed + 2)
    return out


def wilson_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (e.g. a mention rate).

    Computed by scipy: ``scipy.stats.binomtest(k, n).proportion_ci(level, method="wilson")``. With z the
    two-sided normal quantile and p = k/n it is::

        centre = (p + z^2/(2n)) / (1 + z^2/n),  half = z sqrt(p(1-p)/n + z^2/(4n^2)) / (1 + z^2/n).

    Always inside [0, 1] and always contains k/n (unlike the Wald interval); the endpoints are exactly 0
    when k = 0 and exactly 1 when k = n. ``ValueError`` unless k, n are integers with 0 <= k <= n, n >= 1
    and 0 < level < 1.
    """
    if isinstance(n, bool) or isinstance(k, bool) or not (isinstance(n, (int, np.integer))
                                                          and isinstance(k, (int, np.integer))):
        raise ValueError(f"k and n must be integers, got k={k!r}, n={n!r}")
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ci = _st.binomtest(int(k), int(n)).proportion_ci(confidence_level=float(level), method="wilson")
    lo, hi = min(max(float(ci.low), 0.0), 1.0), min(max(float(ci.high), 0.0), 1.0)
    # exact endpoints at the boundary (rounding can leave 1e-17 instead of 0)
    return (0.0 if k == 0 else lo, 1.0 if k == n else hi)


def bootstrap_mean_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                      chunk: int = 500) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (shape (n,), finite), vectorised over resamples.

    Resample b draws n indices with replacement (the same seeded index stream as :func:`bootstrap_ci`,
    so ``bootstrap_ci(lambda x, _y: mean(x), v, v, ...)`` gives the same interval) and takes
    mean_b = (1/n) Σ_j v[idx_bj]; the interval is the central ``level`` quantile range of the mean_b.
    Returns (nan, nan) for a single value (no spread to resample); ``ValueError`` for an empty or
    non-1-D input, a non-finite value (naming its index), n_boot < 1 or level outside (0, 1).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D array, got shape {v.shape}")
    bad = np.flatnonzero(~np.isfinite(v))
    if bad.size:
        raise ValueError(f"values: non-finite value at index {int(bad[0])}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if v.size == 1:
        return (float("nan"), float("nan"))
    means = np.concatenate([v[idx].mean(axis=1) for idx in _resamples(v.size, int(n_boot), seed, chunk)])
    return _percentile_interval(means, level)


def difference_pvalue(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value that rate 1 exceeds rate 2 (Fisher's exact test on the 2x2 table)."""
    for k, n in ((k1, n1), (k2, n2)):
        if n < 1 or not 0 <= k <= n:
            raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    return float(_st.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]], alternative="greater").pvalue)


def paired_difference(stat, x, y1, y2, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                      chunk: int = 500) -> dict:
    """Is ``stat(x, y1)`` larger than ``stat(x, y2)`` on the same n items? (LLS arm vs random-control arm.)

    ``d = stat(x, y1) - stat(x, y2)`` with a percentile bootstrap CI that resamples the items i jointly
    (the triple (x_i, y1_i, y2_i)), so the dependence through the shared x is kept, and the one-sided
    bootstrap p-value ``p = (1 + #{d_b <= 0}) / (1 + B)`` for H1: d > 0. Returns ``{"diff", "ci", "p"}``.
    ``stat``: a name in :data:`STATISTICS` (vectorised) or a callable f(x, y) -> float.
    """
    x, y1 = _pair(x, y1)
    _, y2 = _pair(x, y2)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if x.size < 2:
        raise ValueError("paired_difference needs at least 2 items")
    fn = _stat_fn(stat)
    d = float(fn(x[None], y1[None])[0] - fn(x[None], y2[None])[0])
    v = np.concatenate([fn(x[idx], y1[idx]) - fn(x[idx], y2[idx]) for idx in _resamples(x.size, n_boot, seed, chunk)])
    v = v[np.isfinite(v)]
    if v.size == 0 or not np.isfinite(d):
        return {"diff": d, "ci": [float("nan"), float("nan")], "p": float("nan")}
    return {"diff": d, "ci": list(_percentile_interval(v, level)), "p": float((1 + np.sum(v <= 0)) / (1 + v.size))}


def _seed_pair_resamples(fn, x: np.ndarray, ys: np.ndarray, n_boot: int, seed: int, chunk: int) -> np.ndarray:
    """``stat(x[idx_b], ys[s][idx_b])`` for every seed row s and pair resample b: shape (S, n_boot). The pair
    resamples are :func:`_resamples`' (the same draws as :func:`bootstrap_ci` with this ``seed``)."""
    return np.stack([np.concatenate([fn(x[idx], y[idx]) for idx in _resamples(x.size, n_boot, seed, chunk)])
                     for y in ys])


def _seed_means(m: np.ndarray, entropy: list[int]) -> np.ndarray:
    """Second bootstrap stage: for each pair resample b (columns of ``m``, shape (S, B)), the mean of ``m`` over S
    seeds drawn with replacement by ``default_rng(entropy)`` (a generator separate from the pairs' draws);
    ``m[0]`` when S = 1. Shape (B,)."""
    n_seeds, n_boot = m.shape
    if n_seeds == 1:
        return m[0]
    draws = np.random.default_rng(entropy).integers(0, n_seeds, size=(n_boot, n_seeds))
    return m[draws, np.arange(n_boot)[:, None]].mean(axis=1)


def _seed_rows(x, ys, name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    ys = np.atleast_2d(np.asarray(ys, dtype=float))
    if x.ndim != 1 or ys.ndim != 2 or ys.shape[1] != x.size or ys.shape[0] < 1:
        raise ValueError(f"{name}: x must have shape (n,) and ys (S, n) with S >= 1, got {x.shape} and {ys.shape}")
    if x.size < 2:
        raise ValueError(f"{name} needs at least 2 pairs")
    return x, ys


def seeded_correlation(stat, x, ys, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                       chunk: int = 500) -> dict:
    """Correlation of ``x`` (shape (n,)) with S training seeds' vectors ``ys`` (shape (S, n)), averaged over the
    seeds: ``mean_s stat(x, ys[s])``, with a two-stage percentile bootstrap CI that includes both sources of
    variance: each resample draws S seeds with replacement and the n pairs with replacement (the same pair draw
    for every seed), and averages ``stat`` over the drawn seeds. With S = 1 the CI is :func:`bootstrap_ci`'s
    (pairs only). Returns ``{"mean", "per_seed", "sd" (over seeds, ddof 1; None for S = 1), "ci", "n_seeds",
    "ci_includes"}``."""
    x, ys = _seed_rows(x, ys, "seeded_correlation")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    fn = _stat_fn(stat)
    per = fn(np.broadcast_to(x, ys.shape), ys)
    v = _seed_means(_seed_pair_resamples(fn, x, ys, n_boot, seed, chunk), [seed, 1])
    return {"mean": float(np.mean(per)), "per_seed": [float(p) for p in per],
            "sd": float(np.std(per, ddof=1)) if per.size > 1 else None,
            "ci": list(_percentile_interval(v[np.isfinite(v)], level)), "n_seeds": int(ys.shape[0]),
            "ci_includes": "pairs and training seeds" if ys.shape[0] > 1 else "pairs"}


def seeded_difference(stat, x, ys1, ys2, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                      chunk: int = 500) -> dict:
    """Does arm 1 beat arm 2 over their training seeds? ``d = mean_s stat(x, ys1[s]) - mean_t stat(x, ys2[t])``
    (``ys1``: (S1, n), ``ys2``: (S2, n), the same n pairs as ``x``), with a two-stage bootstrap CI (the pairs
    jointly for both arms; each arm's seeds with replacement, independently) and the one-sided bootstrap p-value
    ``(1 + #{d_b <= 0}) / (1 + B)``. With S1 = S2 = 1 it equals :func:`paired_difference`.
    Returns ``{"diff", "ci", "p", "n_seeds": [S1, S2], "ci_includes"}``."""
    x, ys1 = _seed_rows(x, ys1, "seeded_difference")
    _, ys2 = _seed_rows(x, ys2, "seeded_difference")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    fn = _stat_fn(stat)
    means = [_seed_means(_seed_pair_resamples(fn, x, ys, n_boot, seed, chunk), [seed, 1, k])
             for k, ys in enumerate((ys1, ys2))]
    d = float(np.mean(fn(np.broadcast_to(x, ys1.shape), ys1)) - np.mean(fn(np.broadcast_to(x, ys2.shape), ys2)))
    v = means[0] - means[1]
    v = v[np.isfinite(v)]
    seeds = [int(ys1.shape[0]), int(ys2.shape[0])]
    inc = "pairs and training seeds" if max(seeds) > 1 else "pairs"
    if v.size == 0 or not np.isfinite(d):
        return {"diff": d, "ci": [float("nan"), float("nan")], "p": float("nan"), "n_seeds": seeds,
                "ci_includes": inc}
    return {"diff": d, "ci": list(_percentile_interval(v, level)), "p": float((1 + np.sum(v <= 0)) / (1 + v.size)),
            "n_seeds": seeds, "ci_includes": inc}
