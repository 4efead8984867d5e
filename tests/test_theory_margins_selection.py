"""Margins, DPO loss and Algorithm 1: exact small cases and invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lls_theory.margins import dpo_loss, dpo_loss_grad, log_sigmoid, margin
from lls_theory.selection import (
    best_pair_per_prompt,
    lls_select,
    lls_weights,
    n_selected,
    normalise_by_max,
    select_top,
    sft_preference_weights,
    sft_weights,
)

finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


def vec(n):
    return arrays(float, n, elements=finite)


# ---------------------------------------------------------------- margins and DPO loss

def test_margin_exact_case():
    assert margin([-1.0], [-3.0], [-2.0], [-2.5]).tolist() == [1.5]


@given(st.integers(1, 20).flatmap(lambda n: st.tuples(vec(n), vec(n), vec(n), vec(n), vec(n), vec(n))))
def test_margin_invariant_to_prompt_normalisers(data):
    lc, lr, rc, rr, c_pol, c_ref = data
    # adding any function of the prompt to both responses' log-probs on either side cancels
    base = margin(lc, lr, rc, rr)
    shifted = margin(lc + c_pol, lr + c_pol, rc + c_ref, rr + c_ref)
    np.testing.assert_allclose(shifted, base, atol=1e-9)


@given(arrays(float, st.integers(1, 30), elements=st.floats(-800, 800)))
def test_log_sigmoid_stable_and_matches_definition(x):
    ls = log_sigmoid(x)
    assert np.all(np.isfinite(ls)) and np.all(ls <= 0)
    small = np.abs(x) < 30
    np.testing.assert_allclose(ls[small], -np.log1p(np.exp(-x[small])), rtol=1e-10, atol=1e-12)
    # log σ(x) − log σ(−x) = x
    assert np.all(np.abs((ls - log_sigmoid(-x)) - x) <= 1e-9 * (1 + np.abs(x)))


def test_dpo_loss_values():
    assert dpo_loss([0.0], beta=0.1) == pytest.approx(math.log(2))
    np.testing.assert_allclose(dpo_loss([0.0, 10.0], beta=1.0, reduction="none"), [math.log(2), math.log1p(math.exp(-10))])
    with pytest.raises(ValueError, match="beta"):
        dpo_loss([1.0], beta=0)
    with pytest.raises(ValueError, match="index 1"):
        dpo_loss([1.0, np.nan], beta=1)


@given(arrays(float, st.integers(1, 20), elements=st.floats(-30, 30)), st.floats(0.01, 5))
def test_dpo_grad_matches_finite_difference(rho, beta):
    h = 1e-6
    fd = (dpo_loss(rho + h, beta, "none") - dpo_loss(rho - h, beta, "none")) / (2 * h)
    np.testing.assert_allclose(dpo_loss_grad(rho, beta), fd, rtol=1e-5, atol=1e-8)
    assert np.all(dpo_loss_grad(rho, beta) < 0)  # the loss always decreases as the margin grows


# ---------------------------------------------------------------- Algorithm 1

def weights_of(w, n=None):
    """Teacher log-probs whose Algorithm-1 weight is exactly w (with n tokens per pair)."""
    w = np.asarray(w, float)
    n = np.full(w.size, 2.0) if n is None else np.asarray(n, float)
    z = np.zeros_like(w)
    return (w * n, z, z, z, n / 2, n / 2)


def test_lls_weights_exact_case():
    w = lls_weights([-1.0], [-5.0], [-2.0], [-3.0], [2], [3])
    # ((−1 + 5) − (−2 + 3)) / 5 = 3/5
    np.testing.assert_allclose(w, [0.6])


def test_select_top_hand_case_with_ties():
    w = [0.5, -1.0, 0.2, 0.5, 0.0, 0.9, 0.2]
    # positives: 0 (0.5), 2 (0.2), 3 (0.5), 5 (0.9), 6 (0.2) -> order 5, 0, 3, 2, 6 (ties by index)
    assert select_top(w, 1.0).tolist() == [5, 0, 3, 2, 6]
    assert select_top(w, 0.5).tolist() == [5, 0, 3]  # ceil(2.5) = 3
    assert select_top(w, 0.2).tolist() == [5]
    assert select_top([-1.0, 0.0], 0.5).tolist() == []


def test_ceil_is_robust_to_float_error():
    assert n_selected(30, 0.1) == 3
    assert n_selected(10, 0.3) == 3
    assert n_selected(7, 0.3) == 3  # ceil(2.1)
    assert n_selected(1, 1e-6) == 1


@pytest.mark.parametrize("gamma", [0.0, -0.1, 1.5, float("nan")])
def test_bad_gamma(gamma):
    with pytest.raises(ValueError, match="gamma"):
        select_top([1.0, 2.0], gamma)


def test_errors_name_first_offending_index():
    ok = [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="logp_rejected_sys: non-finite value at index 2"):
        lls_weights(ok, [0.0, 0.0, np.inf], ok, ok, [1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="n_tokens_rejected: non-positive token count at index 1"):
        lls_weights(ok, ok, ok, ok, [1, 1, 1], [1, 0, -1])
    with pytest.raises(ValueError, match="length 2 differs"):
        lls_weights(ok, ok, ok, [0.0, 0.0], [1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="index 0"):
        select_top([np.nan, 1.0], 0.5)


@given(
    arrays(float, st.integers(1, 40), elements=st.floats(-5, 5).map(lambda x: round(x, 1))),
    st.floats(0.01, 1.0),
    st.floats(0.01, 100),
)
def test_selection_invariant_to_positive_rescaling(w, gamma, scale):
    assert select_top(w, gamma).tolist() == select_top(w * scale, gamma).tolist()


@given(
    arrays(float, st.integers(1, 40), elements=st.floats(-5, 5).map(lambda x: round(x, 1))),
    st.floats(0.01, 1.0),
    st.randoms(use_true_random=False),
)
def test_selection_equivariant_under_permutation(w, gamma, rnd):
    perm = list(range(w.size))
    rnd.shuffle(perm)
    perm = np.array(perm)
    sel = select_top(w, gamma)
    sel_p = select_top(w[perm], gamma)
    # same multiset of weights; with distinct weights, exactly the same pairs
    np.testing.assert_array_equal(np.sort(w[sel]), np.sort(w[perm][sel_p]))
    if np.unique(w).size == w.size:
        assert sorted(perm[sel_p].tolist()) == sorted(sel.tolist())


@given(arrays(float, st.integers(1, 50), elements=finite), st.floats(0.01, 1.0))
def test_selection_properties(w, gamma):
    sel = select_top(w, gamma)
    pos = int(np.sum(w > 0))
    assert sel.size == (math.ceil(round(gamma * pos, 9)) if pos else 0)
    assert np.all(w[sel] > 0)
    assert np.all(np.diff(w[sel]) <= 0)  # largest first
    if sel.size:  # everything not selected is no larger than the last selected
        rest = np.setdiff1d(np.arange(w.size), sel)
        assert np.all(w[rest] <= w[sel[-1]])


def test_lls_select_and_length_normalisation_changes_ranking():
    # pair 0 has the larger raw w but many more tokens
    sel = lls_select([10.0, 3.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [50, 1], [50, 1], gamma=0.5)
    assert sel.indices.tolist() == [1]
    assert sel.n_positive == 2


def test_best_pair_per_prompt_rule():
    w = [0.1, 0.4, -0.2, 0.3, -1.0, 0.4]
    pid = ["a", "a", "b", "c", "d", "a"]
    # a -> index 1 (0.4, first of the tie), b has no positive pair, c -> 3, d none
    assert best_pair_per_prompt(pid, w).tolist() == [1, 3]
    sel = lls_select(*weights_of(w), gamma=1.0, prompt_ids=pid, best_pair_per_prompt=True)
    assert sel.indices.tolist() == [1, 3]
    with pytest.raises(ValueError, match="prompt_ids"):
        lls_select(*weights_of(w), gamma=1.0, best_pair_per_prompt=True)


@settings(deadline=None)
@given(st.integers(1, 20).flatmap(lambda n: st.tuples(vec(n), vec(n), vec(n), vec(n))))
def test_sft_weights_difference_equals_preference_weight(data):
    lcs, lrs, lc, lr = data
    pref = sft_preference_weights(sft_weights(lcs, lc), sft_weights(lrs, lr))
    ones = np.ones_like(lcs)
    np.testing.assert_allclose(pref, 2 * lls_weights(lcs, lrs, lc, lr, ones, ones), atol=1e-9)


def test_normalise_by_max():
    np.testing.assert_allclose(normalise_by_max([1.0, -2.0, 4.0]), [0.25, -0.5, 1.0])
    with pytest.raises(ValueError):
        normalise_by_max([-1.0, 0.0])
