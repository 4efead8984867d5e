"""Pre-training transfer check for a teacher/student pair (no fine-tuning needed).

Two measurements, both from log-probability matrices:

1. **Margin-shift agreement.** For held-out preference pairs ``i`` and a system prompt ``s``, the
   system-prompt margin shift of model ``M`` (reference = the same model without ``s``, paper §1)::

       rho_{M,s}(i) = (log Pr_M[r+|s,p] - log Pr_M[r-|s,p]) - (log Pr_M[r+|p] - log Pr_M[r-|p])

   computed with :func:`lls_theory.margins.margin`. Under log-linearity (notes §3) ``rho_{M,s}(i) ~
   <psi_M(s) - psi_M(empty), phi_i>``; LLS trains the student along the teacher's ``rho_{T,s}``, and the
   student can only move toward *its own* ``s``-shift if ``rho_{S,s}`` agrees with ``rho_{T,s}``.
   Reported: Pearson / Spearman / uncentred cosine with bootstrap CIs (:func:`lls_theory.stats.correlation_report`),
   and the *selection agreement*: the share of the teacher's Algorithm-1 selection (top ``gamma`` of the
   positive length-normalised weights, :func:`lls_theory.selection.select_top`) on which the student's own
   shift is also positive, against the share over all pairs. With several system prompts, also the
   Pearson correlation of the *prompt-specific* parts (each shift minus the mean shift over the prompts:
   does the student separate owl from dog the way the teacher does?).

2. **Subspace overlap.** Cosines of the principal angles between the two models' top-``r`` row
   subspaces of X (:func:`lls_theory.lowrank.principal_angle_cosines`) against the random-Gaussian baseline
   (:func:`lls_theory.lowrank.random_baseline_cosines`); ``overlap = (mean cos - mean baseline) /
   (1 - mean baseline)`` (0 = no better than random, 1 = identical subspaces).

Verdict thresholds (heuristic, stated in the output): on the Pearson correlation of the margin shifts,
>= 0.5 "strong", >= 0.2 "moderate", >= 0.05 "weak", else "none"; a CI that contains 0 caps the verdict at
"none". They are calibrated loosely on the paper's Table 1, where post-training teacher/student margin
correlations of ~0.5 went with 29.9% trait transfer and ~0.1 with 3.2%.

What it estimates, and what it does not: the *pre-training* agreement corr(rho_T, rho_S) = corr(z_T, z_s) of
the two models' own system-prompt shifts. The end-to-end run measures a different quantity after training,
corr(z_T, z_M) (teacher shift vs the fine-tuned student's shift). The verdict is a heuristic, not a
calibrated prediction of transfer.

Sample size (:func:`sample_size_warnings`, ``PairCheck.warnings``): each row also reports
``verdict_range``, the verdict bands its 95% CI spans. When a CI spans more than one band, or there are fewer
than ``MIN_PAIRS`` pairs, the sample is too small for the verdict and a warning says so (with the number of
pairs, about ``PAIRS_FOR_BAND``, at which a correlation near 0 has a CI half-width of half the narrowest band).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["MIN_PAIRS", "MarginShifts", "PAIRS_FOR_BAND", "PairCheck", "margin_projection", "margin_shifts",
           "pair_check", "sample_size_warnings", "subspace_overlap", "verdict", "verdict_band"]

THRESHOLDS = ((0.5, "strong"), (0.2, "moderate"), (0.05, "weak"))
MIN_PAIRS = 100
"""Fewer held-out pairs than this: always warned (64 pairs gave "moderate" where 256 gave "none")."""
PAIRS_FOR_BAND = 686
"""Pairs at which a Pearson near 0 has a 95% CI half-width 1.96/sqrt(n - 3) <= 0.075 (half of 0.2 - 0.05)."""


def verdict_band(pearson: float) -> str:
    """The verdict band of a correlation value, ignoring its CI (thresholds of :data:`THRESHOLDS`)."""
    for thr, name in THRESHOLDS:
        if pearson >= thr:
            return name
    return "none"


def sample_size_warnings(rows: Sequence[dict], n: int) -> list[str]:
    """Warnings when ``n`` pairs are too few for the verdicts of ``rows`` (pair_check rows with ``pearson_ci``)."""
    out = []
    if n < MIN_PAIRS:
        out.append(f"only {n} held-out pairs (< {MIN_PAIRS}): correlations this noisy can look 'moderate' by chance; "
                   f"use a few hundred")
    wide = [r for r in rows if r.get("pearson_ci") is not None
            and verdict_band(r["pearson_ci"][0]) != verdict_band(r["pearson_ci"][1])]
    if wide:
        r = wide[0]
        out.append(f"{len(wide)} of {len(rows)} prompts have a 95% CI spanning more than one verdict band "
                   f"(e.g. {r['system_prompt'][:30]!r}: [{r['pearson_ci'][0]:.2f}, {r['pearson_ci'][1]:.2f}] = "
                   f"{r['verdict_range']}): {n} pairs are too few to tell those verdicts apart; about "
                   f"{PAIRS_FOR_BAND} pairs would be needed")
    return out


@dataclass
class MarginShifts:
    """``rho`` (K, n): margin shift of each of K system prompts on n pairs; ``weights`` (K, n): w_i/N_i."""

    rho: np.ndarray
    weights: np.ndarray
    n_tokens: np.ndarray  # (n, 2) scored tokens of (chosen, rejected) under this model


def margin_shifts(X: np.ndarray, n_tokens: np.ndarray) -> MarginShifts:
    """Margin shifts from a pair matrix.

    ``X`` (1 + K, 2n): row 0 = no system prompt, rows 1..K = system prompts; columns alternate
    (chosen_0, rejected_0, chosen_1, ...) as built by :func:`empirical.lowrank.logprob_matrix.pair_columns`.
    ``n_tokens`` same shape (row 0 used). Returns rho_{M,s} (lls_theory.margins.margin) and Algorithm 1's
    w_i / N_i (lls_theory.selection.lls_weights).
    """
    from lls_theory.margins import margin
    from lls_theory.selection import lls_weights

    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] % 2 or X.shape[1] == 0:
        raise ValueError(f"expected X of shape (1 + K, 2n) with K >= 1, got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("X has non-finite entries (unfinished rows?)")
    c0, r0 = X[0, 0::2], X[0, 1::2]
    nc, nr = np.asarray(n_tokens)[0, 0::2], np.asarray(n_tokens)[0, 1::2]
    rho = np.stack([margin(X[k, 0::2], X[k, 1::2], c0, r0) for k in range(1, X.shape[0])])
    w = np.stack([lls_weights(X[k, 0::2], X[k, 1::2], c0, r0, nc, nr) for k in range(1, X.shape[0])])
    return MarginShifts(rho, w, np.stack([nc, nr], axis=1))


def verdict(pearson: float, ci: tuple[float, float] | None = None) -> str:
    """Heuristic verdict from the Pearson correlation of margin shifts (see module doc)."""
    if ci is not None and ci[0] <= 0.0:
        return "none"
    return verdict_band(pearson)


def subspace_overlap(XA: np.ndarray, XB: np.ndarray, r: int, seed: int = 0, center: bool = False) -> dict:
    """Principal-angle cosines of the top-``r`` row subspaces of ``XA`` and ``XB`` vs the random baseline.

    ``center``: subtract each column's mean over rows first (removes the system-prompt-independent part).
    """
    from lls_theory.lowrank import principal_angle_cosines, random_baseline_cosines

    XA, XB = np.asarray(XA, float), np.asarray(XB, float)
    if XA.shape[1] != XB.shape[1]:
        raise ValueError(f"matrices need the same columns: {XA.shape} vs {XB.shape}")
    if center:
        XA, XB = XA - XA.mean(0), XB - XB.mean(0)
    cos = np.asarray(principal_angle_cosines(XA, XB, r))
    base = np.asarray(random_baseline_cosines(XA.shape, XB.shape, r, seed=seed, n_draws=20))
    mc, mb = float(cos.mean()), float(base.mean())
    return {"r": r, "center": center, "cosines": cos, "baseline": base, "mean_cos": mc, "mean_baseline": mb,
            "overlap": (mc - mb) / (1 - mb) if mb < 1 else float("nan")}


@dataclass
class PairCheck:
    """Per system prompt: correlation report of (rho_T, rho_S), selection agreement and verdict."""

    rows: list[dict] = field(default_factory=list)
    subspace: dict | None = None
    warnings: list[str] = field(default_factory=list)  # sample_size_warnings


def pair_check(teacher: MarginShifts, student: MarginShifts, names: Sequence[str], *, gamma: float = 0.25,
               n_boot: int = 2000, seed: int = 0) -> PairCheck:
    """Compare teacher and student margin shifts for each system prompt (same pairs, same order)."""
    from lls_theory.stats import correlation_report

    if teacher.rho.shape != student.rho.shape:
        raise ValueError(f"teacher and student shifts differ in shape: {teacher.rho.shape} vs {student.rho.shape}")
    if len(names) != teacher.rho.shape[0]:
        raise ValueError(f"{len(names)} names for {teacher.rho.shape[0]} system prompts")
    if not (isinstance(gamma, (int, float)) and 0 < gamma <= 1):  # select.gamma's rule: (0, 1]
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    out = PairCheck()
    K = len(names)
    # prompt-specific part: each shift minus the mean shift over the K prompts (needs K >= 2)
    spec_t = teacher.rho - teacher.rho.mean(axis=0) if K >= 2 else None
    spec_s = student.rho - student.rho.mean(axis=0) if K >= 2 else None
    for k, name in enumerate(names):
        rt, rs = teacher.rho[k], student.rho[k]
        rep = correlation_report(rt, rs, n_boot=n_boot, n_perm=n_boot, seed=seed)
        sel = np.asarray(_select_indices(teacher.weights[k], gamma), dtype=int)
        agree_sel = float(np.mean(rs[sel] > 0)) if sel.size else float("nan")
        row = {
            "system_prompt": name,
            "n_pairs": int(rt.size),
            **{k2: rep[k2] for k2 in rep},
            "n_selected": int(sel.size),
            "student_positive_on_selected": agree_sel,
            "student_positive_overall": float(np.mean(rs > 0)),
            "student_mean_rho_selected": float(rs[sel].mean()) if sel.size else float("nan"),
            "student_mean_rho_overall": float(rs.mean()),
        }
        if spec_t is not None:
            from lls_theory.stats import bootstrap_ci, pearson

            row["pearson_specific"] = float(pearson(spec_t[k], spec_s[k]))
            row["pearson_specific_ci"] = list(bootstrap_ci("pearson", spec_t[k], spec_s[k], n_boot=n_boot, seed=seed))
        ci = rep.get("pearson_ci")
        row["verdict"] = verdict(float(rep["pearson"]), None if ci is None else (float(ci[0]), float(ci[1])))
        if ci is not None:
            lo, hi = verdict_band(float(ci[0])), verdict_band(float(ci[1]))
            row["verdict_range"] = lo if lo == hi else f"{lo}..{hi}"
        out.rows.append(row)
    out.warnings = sample_size_warnings(out.rows, int(teacher.rho.shape[1]))
    return out


def same_model_warning(teacher: str, student: str) -> str | None:
    """The warning for a pair check of a model with itself (the same spec, or two paths to one folder or file):
    the shifts are then identical, so r = 1 and the verdict "strong" hold by construction and say nothing."""
    from pathlib import Path

    t, s = Path(str(teacher)).expanduser(), Path(str(student)).expanduser()
    same = str(teacher) == str(student) or (t.exists() and s.exists() and t.resolve() == s.resolve())
    if not same:
        return None
    return (f"teacher and student are the same model ({teacher}): their shifts are identical, so r = 1 and the "
            "verdict are trivial; give the student you intend to train as --student")


def _select_indices(weights: np.ndarray, gamma: float) -> np.ndarray:
    from lls_theory.selection import select_top

    return np.asarray(select_top(np.asarray(weights, float), gamma), dtype=int)


def margin_projection(vectors: np.ndarray) -> np.ndarray:
    """Paper's Fig. 19 view: (k, n) margin vectors -> (k, 2) coordinates on their top-2 singular vectors."""
    from lls_theory.lowrank import top2_projection

    V = np.asarray(vectors, float)
    if V.ndim != 2 or V.shape[0] < 2:
        raise ValueError(f"need at least two margin vectors as a (k, n) array, got shape {V.shape}")
    return np.asarray(top2_projection(V))
