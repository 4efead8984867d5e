"""Algorithm 1 step 3 with a fixed subset size: the top min(N, |I|) positive weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lls_theory.selection import lls_select, lls_select_best_pair_per_row, n_selected, select_top

weights = arrays(float, st.integers(1, 30), elements=st.floats(-5, 5, allow_nan=False, allow_infinity=False))


def test_fixed_size_exact_case():
    w = [0.5, -1.0, 2.0, 0.0, 1.0]
    assert select_top(w, 0.1, size=2).tolist() == [2, 4]
    assert select_top(w, 0.1, size=10).tolist() == [2, 4, 0]  # only three are positive
    assert select_top(w, 0.1).tolist() == [2]  # ceil(0.1 * 3) = 1


@given(weights, st.integers(1, 40))
def test_fixed_size_is_a_prefix_of_the_full_ranking(w, size):
    full = select_top(w, 1.0)
    got = select_top(w, 0.5, size=size)
    assert got.tolist() == full[:size].tolist() and got.size == min(size, int((w > 0).sum()))


@given(weights, st.sampled_from([0.05, 0.1, 0.5, 1.0]))
def test_size_equal_to_the_quantile_count_is_the_quantile_rule(w, gamma):
    k = n_selected(int((w > 0).sum()), gamma)
    if k:
        assert select_top(w, gamma, size=k).tolist() == select_top(w, gamma).tolist()


@given(weights, st.integers(1, 10))
def test_size_reaches_lls_select_and_the_per_row_rule(w, size):
    n = w.size
    ones, zero = np.ones(n), np.zeros(n)
    sel = lls_select(2 * w, zero, zero, zero, ones, ones, 0.1, size=size)  # w / N = w with N = 2
    assert sel.indices.tolist() == select_top(w, 0.1, size=size).tolist()
    row = lls_select_best_pair_per_row(2 * w, zero, zero, zero, ones, ones, [str(i) for i in range(n)], 0.1,
                                       size=size)
    assert row.indices.tolist() == sel.indices.tolist()  # one pair per row: the same rule


@pytest.mark.parametrize("size", [0, -1, 2.5, True])
def test_bad_size_refused(size):
    with pytest.raises(ValueError, match="size must be an integer >= 1"):
        select_top([1.0], 0.1, size=size)
