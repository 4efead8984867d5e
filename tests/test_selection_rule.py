"""``--best-pair-per-prompt``: the authors' rule (``logit_linear_selection.py``, function
``logit_linear_selection``), checked against a hand-computed case and against a transcription of their loop.

Their rule, per dataset ROW with several chosen / rejected responses: keep the pair (c, r) with the largest
positive RAW weight w = score(c) - score(r) (score = log p(.|s, x) - log p(.|x)), then divide that pair's w
by its token count N_c + N_r, then keep the top ceil(gamma * #rows kept). Our previous rule (kept as
``best_pair_per_prompt_text``) grouped by identical prompt text across rows and picked by w / N.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lls_theory.selection import lls_select, lls_select_best_pair_per_row

# (row, raw w, N_c, N_r): by hand
#   row A: (6, 6+6) -> w/N = 0.5 ; (3, 1+1) -> 1.5 ; (-1, 2+2) -> negative.  Authors: raw 6 wins -> 0.5.
#   row B: (2, 4+4) -> 0.25
#   row C: (-3, 1+1), (-0.5, 1+1): no positive pair -> the row contributes nothing
#   row D: (1, 1+1) -> 0.5 (ties row A's 0.5; row A comes first)
CASE = [("A", 6.0, 6, 6), ("A", 3.0, 1, 1), ("A", -1.0, 2, 2), ("B", 2.0, 4, 4),
        ("C", -3.0, 1, 1), ("C", -0.5, 1, 1), ("D", 1.0, 1, 1)]


def _arrays(case):
    w = np.array([c[1] for c in case])
    lc = np.full(len(case), -20.0)
    return (lc + w, lc.copy(), lc.copy(), lc.copy(), np.array([c[2] for c in case]),
            np.array([c[3] for c in case]))


def test_hand_computed_case():
    rows = [c[0] for c in CASE]
    sel = lls_select_best_pair_per_row(*_arrays(CASE), rows, 0.5)
    # rows kept: A (pair 0, 0.5), B (pair 3, 0.25), D (pair 6, 0.5) -> ceil(0.5 * 3) = 2: pair 0 then pair 6
    assert sel.n_positive == 3
    assert sel.indices.tolist() == [0, 6]
    assert sel.weights.tolist() == [0.5, 1.5, -0.25, 0.25, -1.5, -0.25, 0.5]
    sel1 = lls_select_best_pair_per_row(*_arrays(CASE), rows, 1.0)
    assert sel1.indices.tolist() == [0, 6, 3]
    # the old rule (w / N per group) would have kept pair 1 of row A (1.5), not pair 0
    old = lls_select(*_arrays(CASE), 1.0, prompt_ids=rows, best_pair_per_prompt=True)
    assert old.indices.tolist() == [1, 6, 3]


@pytest.mark.parametrize("k, name", [(0, "logp_chosen_sys"), (1, "logp_rejected_sys"), (2, "logp_chosen"),
                                     (3, "logp_rejected")])
def test_bad_input_names_the_argument_and_gamma_is_recorded(k, name):
    a = list(_arrays(CASE))
    rows = [c[0] for c in CASE]
    assert lls_select_best_pair_per_row(*a, rows, 0.5).gamma == 0.5
    a[k] = a[k].copy()
    a[k][4] = np.nan
    with pytest.raises(ValueError, match=f"^{name}: non-finite value at index 4$"):
        lls_select_best_pair_per_row(*a, rows, 0.5)


def test_one_pair_per_row_equals_plain_selection():
    a = _arrays(CASE)
    ids = list(range(len(CASE)))
    for g in (0.1, 0.34, 0.5, 1.0):
        assert lls_select_best_pair_per_row(*a, ids, g).indices.tolist() == lls_select(*a, g).indices.tolist()


def authors_logit_linear_selection(rows: list[dict], quantile: float) -> list[tuple[str, int, int]]:
    """Transcription of the authors' function (their variable names; prints and max-normalisation removed:
    dividing every weight by the same positive max changes no ranking)."""
    all_pairs = []
    for row in rows:
        best_w, best_pair, best_pair_len = 0.0, None, None
        for i_c in range(len(row["chosen_scores"])):
            for i_r in range(len(row["rejected_scores"])):
                w = row["chosen_scores"][i_c] - row["rejected_scores"][i_r]
                if w > best_w:
                    best_w, best_pair = w, (i_c, i_r)
                    best_pair_len = (row["chosen_lengths"][i_c], row["rejected_lengths"][i_r])
        if best_pair is not None:
            all_pairs.append(({"prompt": row["prompt"], "pair": best_pair}, best_w / max(sum(best_pair_len), 1)))
    all_pairs.sort(key=lambda x: x[1], reverse=True)
    k = math.ceil(quantile * len(all_pairs))
    return [(r["prompt"], *r["pair"]) for r, _ in all_pairs[:k]]


_score = st.integers(-40, 40).map(lambda v: v / 8)  # exact binary fractions: no rounding ties differ
_row = st.tuples(st.lists(st.tuples(_score, st.integers(1, 9)), min_size=1, max_size=3),
                 st.lists(st.tuples(_score, st.integers(1, 9)), min_size=1, max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.lists(_row, min_size=1, max_size=8), st.sampled_from([0.1, 0.25, 0.5, 0.75, 1.0]))
def test_matches_the_authors_loop(rows, gamma):
    # flatten each row into its (c, r) pairs, as separate scored records sharing the row id
    theirs_in, ids, a = [], [], {k: [] for k in ("lcs", "lrs", "lc", "lr", "nc", "nr")}
    where = []
    for j, (cs, rs) in enumerate(rows):
        theirs_in.append({"prompt": f"row{j}", "chosen_scores": [c[0] for c in cs], "rejected_scores": [r[0] for r in rs],
                          "chosen_lengths": [c[1] for c in cs], "rejected_lengths": [r[1] for r in rs]})
        for i_c, (sc, nc) in enumerate(cs):
            for i_r, (sr, nr) in enumerate(rs):
                a["lcs"].append(-50 + sc), a["lc"].append(-50.0), a["lrs"].append(-50 + sr), a["lr"].append(-50.0)
                a["nc"].append(nc), a["nr"].append(nr)
                ids.append(f"row{j}")
                where.append((f"row{j}", i_c, i_r))
    theirs = authors_logit_linear_selection(theirs_in, gamma)
    n_rows_positive = sum(1 for r in theirs_in if max(r["chosen_scores"]) - min(r["rejected_scores"]) > 0)
    if not n_rows_positive:
        return  # both select nothing; select_top needs no candidates
    sel = lls_select_best_pair_per_row(a["lcs"], a["lrs"], a["lc"], a["lr"], a["nc"], a["nr"], ids, gamma)
    assert sel.n_positive == n_rows_positive
    ours = [where[i] for i in sel.indices]
    # same set; same order up to ties of the normalised weight (both sorts are stable on row order)
    assert ours == theirs


def _score_file(path: Path, case, rows=True) -> None:
    recs = []
    for k, (row, w, nc, nr) in enumerate(case):
        rec = {"id": f"p{k}", "prompt": [{"role": "user", "content": f"question {row}"}], "chosen": f"c{k}",
               "rejected": f"r{k}", "logp_chosen_sys": -20.0 + w, "logp_rejected_sys": -20.0,
               "logp_chosen": -20.0, "logp_rejected": -20.0, "n_tokens_chosen": nc, "n_tokens_rejected": nr,
               "weight": w / (nc + nr)}
        if rows:
            rec["row"] = row
        recs.append(rec)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_select_file_uses_the_row_field(tmp_path: Path):
    from empirical.stages.build import select_file
    from empirical.config import SelectConfig

    s = tmp_path / "scores.jsonl"
    _score_file(s, CASE)
    out = select_file(s, SelectConfig(gamma=1.0, best_pair_per_prompt=True), tmp_path / "sel")
    kept = [json.loads(x)["id"] for x in (tmp_path / "sel" / "lls.jsonl").read_text().splitlines()]
    assert kept == ["p0", "p6", "p3"] and out["n_positive"] == 3 and out["best_pair_per_prompt"] is True
    # the old rule, by identical prompt text (rows A share "question A")
    select_file(s, SelectConfig(gamma=1.0, best_pair_per_prompt_text=True), tmp_path / "old")
    kept = [json.loads(x)["id"] for x in (tmp_path / "old" / "lls.jsonl").read_text().splitlines()]
    assert kept == ["p1", "p6", "p3"]
    # without a row field every record is its own row: the plain selection of the positive pairs
    _score_file(s, CASE, rows=False)
    select_file(s, SelectConfig(gamma=1.0, best_pair_per_prompt=True), tmp_path / "norow")
    kept = [json.loads(x)["id"] for x in (tmp_path / "norow" / "lls.jsonl").read_text().splitlines()]
    assert kept == ["p1", "p0", "p6", "p3"]


def test_both_rules_refused_together():
    from empirical.config import SelectConfig
    from lls_common.errors import LLSError

    with pytest.raises(LLSError, match="exclude each other"):
        SelectConfig(gamma=0.5, best_pair_per_prompt=True, best_pair_per_prompt_text=True)
