"""Contrastive selection (Algorithm 1 on w_A − mean of reference weights) and the overlap of selected subsets."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lls_theory.selection import (
    contrast_others,
    contrastive_weights,
    lls_select,
    lls_weights,
    select_top,
    subset_overlap,
)

finite = st.floats(-20, 20, allow_nan=False, allow_infinity=False)
counts = st.integers(1, 40)


def mat(k, n):
    return arrays(float, (k, n), elements=finite)


@st.composite
def scored(draw, max_traits=5):
    """K traits' system-prompted log-probs on n pairs with one shared reference condition and token counts."""
    n = draw(st.integers(1, 25))
    k = draw(st.integers(2, max_traits))
    sys_c, sys_r = draw(mat(k, n)), draw(mat(k, n))
    ref = draw(mat(2, n))
    tok = np.array(draw(st.lists(st.tuples(counts, counts), min_size=n, max_size=n)), dtype=float).T
    return sys_c, sys_r, ref[0], ref[1], tok[0], tok[1]


# ------------------------------------------------------------------------------- exact small cases

def test_contrastive_weights_exact_case():
    w = [0.5, -1.0, 2.0]
    refs = [[0.1, 0.0, 3.0], [0.3, -2.0, 1.0]]
    assert np.allclose(contrastive_weights(w, refs), [0.5 - 0.2, -1.0 + 1.0, 2.0 - 2.0])
    assert np.allclose(contrastive_weights(w, refs[0]), [0.4, -1.0, -1.0])  # one baseline: w − w_base


def test_contrast_others_exact_case():
    w = np.array([[3.0, 0.0], [1.0, 2.0], [2.0, 4.0]])
    expected = [[3.0 - 1.5, 0.0 - 3.0], [1.0 - 2.5, 2.0 - 2.0], [2.0 - 2.0, 4.0 - 1.0]]
    assert np.allclose(contrast_others(w), expected)


def test_contrastive_selection_exact_case():
    # trait weights (w / N with N = 2): [1, 0.5, 0.25, -0.5]; reference weights: [1, 0, 0.5, -1]
    # contrast: [0, 0.5, -0.25, 0.5] -> positive {1, 3}, tie broken by index; gamma 1 keeps both
    n = np.ones(4)
    lc = np.array([2.0, 1.0, 0.5, -1.0])
    zero = np.zeros(4)
    refs = np.array([[1.0, 0.0, 0.5, -1.0]])
    sel = lls_select(lc, zero, zero, zero, n, n, 1.0, reference_weights=refs)
    assert sel.indices.tolist() == [1, 3] and sel.n_positive == 2
    assert np.allclose(sel.weights, [0.0, 0.5, -0.25, 0.5])
    plain = lls_select(lc, zero, zero, zero, n, n, 1.0)
    assert plain.indices.tolist() == [0, 1, 2]


def test_subset_overlap_exact_case():
    o = subset_overlap({"owl": ["a", "b", "c", "d"], "cat": ["b", "c", "e"], "dog": ["c", "x"]})
    assert o["names"] == ["owl", "cat", "dog"] and o["sizes"] == [4, 3, 2]
    assert o["intersection"] == [[4, 2, 1], [2, 3, 1], [1, 1, 2]]
    assert o["overlap"][0][1] == pytest.approx(2 / 3) and o["overlap"][1][2] == pytest.approx(1 / 2)
    assert o["jaccard"][0][1] == pytest.approx(2 / 5)
    assert o["common_to_all"] == 1 and o["union"] == 6
    assert o["mean_offdiag_overlap"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) * 2 / 6)
    one = subset_overlap({"owl": []})
    assert one["overlap"] == [[0.0]] and one["mean_offdiag_overlap"] is None and one["union"] == 0


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="reference_weights: 2 pairs, weights has 3"):
        contrastive_weights([1.0, 2.0, 3.0], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="m >= 1"):
        contrastive_weights([1.0], np.zeros((0, 1)))
    with pytest.raises(ValueError, match="non-finite value at row 1, index 0"):
        contrastive_weights([1.0], [[0.0], [np.nan]])
    with pytest.raises(ValueError, match="K >= 2"):
        contrast_others([[1.0, 2.0]])
    with pytest.raises(ValueError, match="at least one subset"):
        subset_overlap({})


# ------------------------------------------------------------------------------------ properties

@given(scored())
@settings(max_examples=60, deadline=None)
def test_contrast_of_identical_traits_selects_nothing(data):
    sys_c, sys_r, lc, lr, nc, nr = data
    w = lls_weights(sys_c[0], sys_r[0], lc, lr, nc, nr)
    same = np.stack([w, w, w])
    sel = lls_select(sys_c[0], sys_r[0], lc, lr, nc, nr, 1.0, reference_weights=same[1:])
    assert sel.indices.size == 0 and sel.n_positive == 0
    assert all(select_top(c, 1.0).size == 0 for c in contrast_others(same))


@given(scored(), st.data())
@settings(max_examples=60, deadline=None)
def test_contrast_invariant_to_a_common_term(data, draw):
    """Adding the same d_i to every trait's system-prompted margin (a shared trait-independent shift: e.g. what
    any 'You really love X' prompt does) leaves every contrast, and so every contrastive selection, unchanged."""
    sys_c, sys_r, lc, lr, nc, nr = data
    k, n = sys_c.shape
    d = draw.draw(arrays(float, n, elements=finite))
    gamma = draw.draw(st.sampled_from([0.1, 0.5, 1.0]))
    w = np.stack([lls_weights(sys_c[a], sys_r[a], lc, lr, nc, nr) for a in range(k)])
    w2 = np.stack([lls_weights(sys_c[a] + d, sys_r[a], lc, lr, nc, nr) for a in range(k)])
    assert np.allclose(contrast_others(w), contrast_others(w2), atol=1e-9)
    # the selections agree (checked where no contrast is within rounding of zero or of another)
    for a, c in enumerate(contrast_others(w)):
        if not (np.all(np.abs(c) > 1e-6) and np.all(np.abs(c[:, None] - c[None, :]) + np.eye(n) > 1e-6)):
            continue
        s1 = lls_select(sys_c[a], sys_r[a], lc, lr, nc, nr, gamma, reference_weights=np.delete(w, a, 0))
        s2 = lls_select(sys_c[a] + d, sys_r[a], lc, lr, nc, nr, gamma, reference_weights=np.delete(w2, a, 0))
        assert s1.indices.tolist() == s2.indices.tolist()


@given(mat(1, 12).map(lambda m: m[0]), mat(3, 12), arrays(float, 12, elements=finite))
def test_common_term_cancels_in_contrastive_weights(w, refs, d):
    assert np.allclose(contrastive_weights(w + d, refs + d), contrastive_weights(w, refs), atol=1e-9)


@given(scored(max_traits=2), st.sampled_from([0.05, 0.3, 1.0]))
@settings(max_examples=60, deadline=None)
def test_plain_selection_unchanged_without_references(data, gamma):
    sys_c, sys_r, lc, lr, nc, nr = data
    a = lls_select(sys_c[0], sys_r[0], lc, lr, nc, nr, gamma)
    b = lls_select(sys_c[0], sys_r[0], lc, lr, nc, nr, gamma, reference_weights=None)
    w = lls_weights(sys_c[0], sys_r[0], lc, lr, nc, nr)
    assert a.indices.tolist() == b.indices.tolist() == select_top(w, gamma).tolist()
    assert np.array_equal(a.weights, w)


@given(mat(4, 10))
def test_contrast_against_a_zero_baseline_is_plain(w):
    for a in range(w.shape[0]):
        assert np.array_equal(contrastive_weights(w[a], np.zeros(w.shape[1])), w[a])


@given(mat(5, 9))
def test_contrasts_of_a_run_sum_to_zero(w):
    """Σ_A c_A = Σ_A w_A − Σ_A mean_{B≠A} w_B = 0: the contrasts of a run are centred across its traits."""
    assert np.allclose(contrast_others(w).sum(axis=0), 0.0, atol=1e-8)


ids = st.lists(st.integers(0, 30), max_size=15)


@given(st.dictionaries(st.sampled_from(list("abcdef")), ids, min_size=1))
def test_subset_overlap_properties(subs):
    o = subset_overlap(subs)
    k = len(subs)
    sets = [set(v) for v in subs.values()]
    ov, jac, inter = np.array(o["overlap"]), np.array(o["jaccard"]), np.array(o["intersection"])
    assert np.array_equal(ov, ov.T) and np.array_equal(inter, inter.T)
    assert np.all((0 <= ov) & (ov <= 1)) and np.all((0 <= jac) & (jac <= 1))
    assert np.all(jac <= ov + 1e-12)  # |A∩B| / |A∪B| <= |A∩B| / min(|A|, |B|)
    for i in range(k):
        assert ov[i, i] == (1.0 if sets[i] else 0.0) and inter[i, i] == len(sets[i])
    assert o["common_to_all"] <= min(o["sizes"]) <= max(o["sizes"]) <= o["union"] <= sum(o["sizes"])
    assert o["union"] == len(set().union(*sets))
