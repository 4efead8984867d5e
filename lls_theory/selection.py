"""Algorithm 1 (Logit-Linear Selection) and its variants (paper §2, Appendix A).

Given teacher log-probs with and without the system prompt s, for each pair i:

    w_i = (log Pr_T[r_i+|s,p_i] − log Pr_T[r_i−|s,p_i]) − (log Pr_T[r_i+|p_i] − log Pr_T[r_i−|p_i])
    w_i ← w_i / N_i,   N_i = len_T(r_i+) + len_T(r_i−)
    I   = {i : w_i > 0}, sorted by w_i descending (ties: original index, i.e. a stable sort)
    keep the first ⌈γ |I|⌉ of I.

Contrastive selection runs the same step 3 on a trait-specific weight: for trait A against reference
weights w^(1..m) (the other traits of a run, or one baseline system prompt),

    c_i = w_i^A − (1/m) Σ_j w_i^(j)      (:func:`contrastive_weights`)

so a term common to every trait's weight cancels and only what s_A adds beyond the references is ranked.

Inputs are arrays of shape (n,); outputs are index arrays into those arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lls_theory.margins import margin

__all__ = [
    "lls_weights",
    "select_top",
    "n_selected",
    "Selection",
    "lls_select",
    "sft_weights",
    "sft_preference_weights",
    "best_pair_per_prompt",
    "normalise_by_max",
    "contrastive_weights",
    "contrast_others",
    "subset_overlap",
]


def _check_arrays(named: dict[str, object]) -> list[np.ndarray]:
    arrs = [np.asarray(v, dtype=float) for v in named.values()]
    names = list(named)
    n = arrs[0].shape
    for name, a in zip(names, arrs):
        if a.ndim != 1:
            raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
        if a.shape != n:
            raise ValueError(f"{name}: length {a.shape[0]} differs from {names[0]} length {n[0]}")
    for name, a in zip(names, arrs):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ValueError(f"{name}: non-finite value at index {int(bad[0])}")
    return arrs


def _check_gamma(gamma: float) -> float:
    g = float(gamma)
    if not (0.0 < g <= 1.0) or math.isnan(g):
        raise ValueError(f"gamma must be in (0, 1], got {gamma}")
    return g


def lls_weights(
    logp_chosen_sys, logp_rejected_sys, logp_chosen, logp_rejected, n_tokens_chosen, n_tokens_rejected
) -> np.ndarray:
    """Length-normalised LLS weights w_i / N_i (Algorithm 1, steps 1–2), shape (n,).

    The four log-prob arrays are the teacher's summed response log-probs with (``*_sys``) and
    without the system prompt; ``n_tokens_*`` are response token counts under the teacher's
    tokenizer (must be positive). ``ValueError`` names the first offending index.
    """
    lcs, lrs, lc, lr, nc, nr = _check_arrays(
        {
            "logp_chosen_sys": logp_chosen_sys,
            "logp_rejected_sys": logp_rejected_sys,
            "logp_chosen": logp_chosen,
            "logp_rejected": logp_rejected,
            "n_tokens_chosen": n_tokens_chosen,
            "n_tokens_rejected": n_tokens_rejected,
        }
    )
    for name, a in (("n_tokens_chosen", nc), ("n_tokens_rejected", nr)):
        bad = np.flatnonzero(a <= 0)
        if bad.size:
            raise ValueError(f"{name}: non-positive token count at index {int(bad[0])}")
    # w_i is the teacher's own margin with s relative to itself without s.
    w = margin(lcs, lrs, lc, lr)
    return w / (nc + nr)


def contrastive_weights(weights, reference_weights) -> np.ndarray:
    """Trait-specific weights c = w − mean_j w^(j), shape (n,).

    ``weights``: the trait's weights w, shape (n,); ``reference_weights``: shape (m, n) with m >= 1 (one row
    per reference: another trait of the run, or a baseline system prompt), or shape (n,) for m = 1. All are
    weights of the same n pairs in the same order (e.g. the length-normalised w_i / N_i of
    :func:`lls_weights`: N_i is the same for every system prompt, so c is the contrast of the raw weights
    divided by N_i). ``ValueError`` on a shape mismatch or a non-finite value.
    """
    (w,) = _check_arrays({"weights": weights})
    refs = np.asarray(reference_weights, dtype=float)
    if refs.ndim == 1:
        refs = refs[None, :]
    if refs.ndim != 2 or refs.shape[0] < 1:
        raise ValueError(f"reference_weights: expected shape (m, n) with m >= 1, got {refs.shape}")
    if refs.shape[1] != w.size:
        raise ValueError(f"reference_weights: {refs.shape[1]} pairs, weights has {w.size}")
    bad = np.argwhere(~np.isfinite(refs))
    if bad.size:
        raise ValueError(f"reference_weights: non-finite value at row {int(bad[0, 0])}, index {int(bad[0, 1])}")
    return w - refs.mean(axis=0)


def contrast_others(weights) -> np.ndarray:
    """Every trait against the others of its run: row A of the result is w_A − mean_{B≠A} w_B.

    ``weights``: shape (K, n), K >= 2 traits' weights on the same n pairs; returns shape (K, n)
    (row A equals :func:`contrastive_weights` (w_A, the other K − 1 rows)).
    """
    w = np.asarray(weights, dtype=float)
    if w.ndim != 2 or w.shape[0] < 2:
        raise ValueError(f"weights: a contrast against the others needs shape (K, n) with K >= 2, got {w.shape}")
    return np.stack([contrastive_weights(w[a], np.delete(w, a, axis=0)) for a in range(w.shape[0])])


def subset_overlap(subsets: dict[str, object]) -> dict[str, object]:
    """Overlap of K selected subsets (pair ids), K >= 1.

    Returns ``{"names": [K names], "sizes": [|S_a|], "intersection": K×K counts |S_a ∩ S_b|,
    "overlap": K×K fractions |S_a ∩ S_b| / min(|S_a|, |S_b|) (1.0 on the diagonal; 0.0 when either is
    empty), "jaccard": K×K |S_a ∩ S_b| / |S_a ∪ S_b| (0.0 when both are empty), "common_to_all":
    |∩_a S_a|, "union": |∪_a S_a|, "mean_offdiag_overlap": mean of the off-diagonal overlap (None for K = 1)}``.
    Ids are compared as given (duplicates within one subset count once).
    """
    names = list(subsets)
    if not names:
        raise ValueError("subset_overlap: needs at least one subset")
    sets = [set(subsets[n]) for n in names]
    k = len(sets)
    inter = [[len(a & b) for b in sets] for a in sets]
    over = [[(inter[i][j] / min(len(sets[i]), len(sets[j])) if min(len(sets[i]), len(sets[j])) else 0.0)
             for j in range(k)] for i in range(k)]
    jac = [[(inter[i][j] / len(sets[i] | sets[j]) if sets[i] | sets[j] else 0.0) for j in range(k)]
           for i in range(k)]
    off = [over[i][j] for i in range(k) for j in range(k) if i != j]
    return {"names": names, "sizes": [len(s) for s in sets], "intersection": inter, "overlap": over,
            "jaccard": jac, "common_to_all": len(set.intersection(*sets)), "union": len(set.union(*sets)),
            "mean_offdiag_overlap": float(np.mean(off)) if off else None}


def n_selected(n_positive: int, gamma: float) -> int:
    """⌈γ · n_positive⌉, robust to float error (γ = 0.1, n = 30 gives 3, not 4)."""
    g = _check_gamma(gamma)
    if n_positive <= 0:
        return 0
    k = math.ceil(round(g * n_positive, 9))
    return min(max(k, 1), n_positive)


def select_top(weights, gamma: float, size: int | None = None) -> np.ndarray:
    """Algorithm 1, step 3: indices of the top ⌈γ|I|⌉ positive weights, largest first.

    ``size`` (an integer >= 1): keep the top min(size, |I|) positive weights instead of ⌈γ|I|⌉ (a subset of
    a fixed size, e.g. to match a control's size and number of optimizer steps). Ties are broken by original
    index (stable sort), so the result is deterministic.
    """
    (w,) = _check_arrays({"weights": weights})
    g = _check_gamma(gamma)
    positive = np.flatnonzero(w > 0)
    order = positive[np.argsort(-w[positive], kind="stable")]
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        return order[: int(size)]
    return order[: n_selected(positive.size, g)]


@dataclass(frozen=True)
class Selection:
    """Result of :func:`lls_select`.

    indices:    selected pair indices into the input arrays, highest weight first, shape (k,)
    weights:    the normalised weights w_i / N_i of *all* input pairs, shape (n,) (the contrastive weights
                when :func:`lls_select` was given ``reference_weights``)
    n_positive: |I|, the number of candidate pairs with w_i > 0 (after the per-prompt rule, if used)
    gamma:      the quantile γ
    """

    indices: np.ndarray
    weights: np.ndarray
    n_positive: int
    gamma: float


def lls_select(
    logp_chosen_sys,
    logp_rejected_sys,
    logp_chosen,
    logp_rejected,
    n_tokens_chosen,
    n_tokens_rejected,
    gamma: float,
    prompt_ids=None,
    best_pair_per_prompt: bool = False,
    reference_weights=None,
    size: int | None = None,
) -> Selection:
    """Algorithm 1 end to end. With ``best_pair_per_prompt=True`` (needs ``prompt_ids``), each prompt
    first keeps only its single pair with the largest positive weight (the authors' public code).

    ``reference_weights`` (shape (m, n), the w_i / N_i of m reference system prompts on the same pairs):
    contrastive selection, Algorithm 1 step 3 on :func:`contrastive_weights` instead of w; ``Selection.weights``
    are then those contrastive weights. None (the default): plain Algorithm 1. ``size``: see :func:`select_top`."""
    w = lls_weights(logp_chosen_sys, logp_rejected_sys, logp_chosen, logp_rejected, n_tokens_chosen, n_tokens_rejected)
    if reference_weights is not None:
        w = contrastive_weights(w, reference_weights)
    if best_pair_per_prompt:
        if prompt_ids is None:
            raise ValueError("best_pair_per_prompt=True needs prompt_ids")
        candidates = _best_pair_indices(prompt_ids, w)
    else:
        candidates = np.flatnonzero(w > 0)
    sub = select_top(w[candidates], gamma, size)
    return Selection(indices=candidates[sub], weights=w, n_positive=int(candidates.size), gamma=float(gamma))


def sft_weights(logp_sys, logp, n_tokens=None) -> np.ndarray:
    """SFT weights of Appendix A: w_i = log Pr_T[r_i|s,p_i] − log Pr_T[r_i|p_i] (optionally / n_tokens)."""
    named = {"logp_sys": logp_sys, "logp": logp}
    if n_tokens is not None:
        named["n_tokens"] = n_tokens
    arrs = _check_arrays(named)
    w = arrs[0] - arrs[1]
    if n_tokens is not None:
        bad = np.flatnonzero(arrs[2] <= 0)
        if bad.size:
            raise ValueError(f"n_tokens: non-positive token count at index {int(bad[0])}")
        w = w / arrs[2]
    return w


def sft_preference_weights(w_chosen, w_rejected) -> np.ndarray:
    """Preference weight from SFT weights: w(p, r+) − w(p, r−) (equals Algorithm 1's unnormalised w_i)."""
    a, b = _check_arrays({"w_chosen": w_chosen, "w_rejected": w_rejected})
    return a - b


def best_pair_per_prompt(prompt_ids, weights) -> np.ndarray:
    """For each prompt, the index of its pair with the largest *positive* weight (ties: lowest index).

    Prompts whose pairs all have w ≤ 0 contribute nothing. Returns indices in increasing order.
    ``prompt_ids`` is any sequence of hashable ids of length n.
    """
    (w,) = _check_arrays({"weights": weights})
    ids = list(prompt_ids)
    if len(ids) != w.size:
        raise ValueError(f"prompt_ids: length {len(ids)} differs from weights length {w.size}")
    best: dict[object, int] = {}
    for i, pid in enumerate(ids):
        if w[i] > 0 and (pid not in best or w[i] > w[best[pid]]):
            best[pid] = i
    return np.array(sorted(best.values()), dtype=int)


def normalise_by_max(weights) -> np.ndarray:
    """w / max(w), as in the authors' code (ranking unchanged); needs max(w) > 0."""
    (w,) = _check_arrays({"weights": weights})
    if w.size == 0 or w.max() <= 0:
        raise ValueError("normalise_by_max: needs at least one positive weight")
    return w / w.max()


# lls_select has a keyword argument of the same name as the function; it calls it through this alias.
_best_pair_indices = best_pair_per_prompt


def lls_select_best_pair_per_row(
    logp_chosen_sys, logp_rejected_sys, logp_chosen, logp_rejected, n_tokens_chosen, n_tokens_rejected,
    row_ids, gamma: float, size: int | None = None,
) -> Selection:
    """The authors' ``logit_linear_selection`` (``logit_linear_selection.py``) on pairs grouped by dataset row.

    Pair i belongs to row ``row_ids[i]`` (a row with several chosen / rejected responses gives one pair per
    (c, r) combination). Per row, the pair with the largest positive *raw* weight
    w_i = (log p(c|s,x) − log p(c|x)) − (log p(r|s,x) − log p(r|x)) is kept (ties: the first, as the
    authors' strict ``w > best_w`` loop); only then is it length-normalised, w_i / (N_c + N_r); the top
    ⌈γ · #rows with a positive pair⌉ normalised weights are selected (stable order on ties). Dividing by
    max(w) as the authors do does not change the ranking. With one pair per row this equals
    :func:`lls_select`. ``Selection.weights`` are w_i / N_i of all pairs; ``n_positive`` counts the rows kept.
    ``size``: see :func:`select_top`.
    """
    w = lls_weights(logp_chosen_sys, logp_rejected_sys, logp_chosen, logp_rejected, n_tokens_chosen,
                    n_tokens_rejected)
    raw = margin(logp_chosen_sys, logp_rejected_sys, logp_chosen, logp_rejected)  # inputs checked by lls_weights
    candidates = best_pair_per_prompt(row_ids, raw)
    sub = select_top(w[candidates], gamma, size)
    return Selection(indices=candidates[sub], weights=w, n_positive=int(candidates.size), gamma=float(gamma))
