"""Unit tests of the score-record and selection code of :mod:`empirical.stages.build` (no model, no torch model).

Independent oracles: weights computed by hand (w = (Δ_sys − Δ_base) / (N_chosen + N_rejected) with
Δ = log p(chosen) − log p(rejected)), the top-⌈γ·n_positive⌉ rule written out here, exact TRL records,
``file:line`` error messages. ``_score_chunk`` (the weight / record writer of ``lls score``) runs with a fake
scorer, so its bookkeeping is checked without weights. Written to kill the mutants of
``scripts/mutation.sh empirical build`` (see that script for which functions of build.py are in scope).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical.stages import build as B
from empirical.engine import scoring
from empirical.config import SelectConfig
from empirical.stages.data import DataError, PrefPair
from lls_common.errors import LLSError
from lls_common.io import fingerprint, json_key

# ----------------------------------------------------------------------------------------------------------
# helpers


def _w(lcs, lrs, lc, lr, nc, nr):
    """The hand formula of Algorithm 1 (steps 1-2), written independently of lls_theory."""
    return ((lcs - lrs) - (lc - lr)) / (nc + nr)


def _rec(i, lcs, lrs, lc, lr, nc=2, nr=3, weight=None, prompt=None, row=None):
    r = {"id": i, "prompt": prompt if prompt is not None else [{"role": "user", "content": f"question {i}?"}],
         "chosen": f"good answer {i}", "rejected": f"bad answer {i}", "logp_chosen_sys": lcs,
         "logp_rejected_sys": lrs, "logp_chosen": lc, "logp_rejected": lr, "n_tokens_chosen": nc,
         "n_tokens_rejected": nr, "weight": _w(lcs, lrs, lc, lr, nc, nr) if weight is None else weight}
    if row is not None:
        r["row"] = row
    return r


def _write(path: Path, recs, blank_first=False) -> Path:
    path.write_text(("\n" if blank_first else "") + "".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def _read(path: Path):
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def _ids(path: Path):
    return [r["id"] for r in _read(path)]


# five pairs with hand-computed weights
#   r0: Δsys = -1 - -4 = 3,    Δbase = -2 - -3 = 1,  N = 5  ->  w = 2/5  = 0.4
#   r1: Δsys = 0,              Δbase = -1 - -5 = 4,  N = 2  ->  w = -4/2 = -2
#   r2: Δsys = -3 - -9 = 6,    Δbase = 1,            N = 6  ->  w = 5/6
#   r3: Δsys = 1,              Δbase = 1,            N = 8  ->  w = 0
#   r4: Δsys = -0.5 - -8.5 = 8, Δbase = 2,           N = 4  ->  w = 6/4  = 1.5
HAND = [("r0", -1.0, -4.0, -2.0, -3.0, 2, 3), ("r1", -2.0, -2.0, -1.0, -5.0, 1, 1),
        ("r2", -3.0, -9.0, -3.0, -4.0, 3, 3), ("r3", -1.0, -2.0, -1.0, -2.0, 4, 4),
        ("r4", -0.5, -8.5, -1.0, -3.0, 2, 2)]
HAND_W = [0.4, -2.0, 5 / 6, 0.0, 1.5]


def _hand_file(tmp_path, **kw) -> Path:
    return _write(tmp_path / "scores.jsonl", [_rec(*h, **kw) for h in HAND])


def _stat(ws):
    return {"mean": pytest.approx(float(np.mean(ws)), rel=1e-12), "min": pytest.approx(min(ws), rel=1e-12),
            "max": pytest.approx(max(ws), rel=1e-12)}


# ----------------------------------------------------------------------------------------------------------
# select_file: weights, top-gamma, bottom, random, summary


def test_hand_weights_and_top_gamma(tmp_path):
    scores = _hand_file(tmp_path)
    for r, w in zip(_read(scores), HAND_W):
        assert r["weight"] == pytest.approx(w, rel=1e-12, abs=1e-15)
    s = B.select_file(scores, 0.5, tmp_path / "sel", seed=3)
    # 3 positive weights (r4 1.5 > r2 0.833 > r0 0.4); ceil(0.5 * 3) = 2
    assert _ids(tmp_path / "sel" / "lls.jsonl") == ["r4", "r2"]
    assert _ids(tmp_path / "sel" / "bottom.jsonl") == ["r1", "r3"]  # lowest first: -2, 0
    rand = _ids(tmp_path / "sel" / "random.jsonl")
    assert len(rand) == 2 and len(set(rand)) == 2
    assert rand == [r for r in ["r0", "r1", "r2", "r3", "r4"] if r in rand]  # file order
    assert s == {
        "scores": str(scores), "n_scored": 5, "n_positive": 3, "gamma": 0.5, "n_selected": 2, "subset_size": None,
        "seed": 3,
        "best_pair_per_prompt": False, "best_pair_per_prompt_text": False, "reference": None,
        "weights_match_scores_file": True,
        "weight_all": _stat(HAND_W), "weight_lls": _stat([1.5, 5 / 6]),
        "weight_random": _stat([HAND_W[["r0", "r1", "r2", "r3", "r4"].index(r)] for r in rand]),
        "weight_bottom": _stat([-2.0, 0.0]),
        "contrast": "none", "baseline": None, "selected_ids": ["r4", "r2"],
        "files": {"lls": "lls.jsonl", "random": "random.jsonl", "bottom": "bottom.jsonl"},
    }
    assert "key" not in s
    assert json.loads((tmp_path / "sel" / "summary.json").read_text()) == s
    assert sorted(p.name for p in (tmp_path / "sel").iterdir()) == sorted(B.SELECT_FILES)


@pytest.mark.parametrize("gamma, ids", [(1.0, ["r4", "r2", "r0"]), (0.34, ["r4", "r2"]), (0.33, ["r4"]),
                                        (0.01, ["r4"]), (2 / 3, ["r4", "r2"]), (0.67, ["r4", "r2", "r0"])])
def test_top_gamma_is_ceil_of_gamma_times_positives(tmp_path, gamma, ids):
    s = B.select_file(_hand_file(tmp_path), gamma, tmp_path / "sel")
    assert _ids(tmp_path / "sel" / "lls.jsonl") == ids
    assert s["n_selected"] == len(ids) == len(_read(tmp_path / "sel" / "bottom.jsonl"))
    assert len(_read(tmp_path / "sel" / "random.jsonl")) == len(ids)
    assert s["gamma"] == gamma


def test_ceil_is_robust_to_float_error(tmp_path):
    # gamma = 0.1 of 30 positive pairs is 3 (0.1 * 30 = 3.0000000000000004 in floats), not 4
    recs = [_rec(f"p{i:02d}", -1.0, -1.0 - (i + 1) / 8, -1.0, -1.0, 2, 2) for i in range(30)]
    s = B.select_file(_write(tmp_path / "s.jsonl", recs), 0.1, tmp_path / "sel")
    assert s["n_positive"] == 30 and s["n_selected"] == 3
    assert _ids(tmp_path / "sel" / "lls.jsonl") == ["p29", "p28", "p27"]


def test_selection_uses_recomputed_weights_not_the_stored_ones(tmp_path):
    # stored weights all 0 (e.g. a hand-edited file): selection follows the log-probs, the flag says so
    scores = _hand_file(tmp_path, weight=0.0)
    s = B.select_file(scores, 1.0, tmp_path / "sel")
    assert _ids(tmp_path / "sel" / "lls.jsonl") == ["r4", "r2", "r0"]
    assert s["weights_match_scores_file"] is False
    assert s["weight_all"] == _stat(HAND_W)
    # the records written keep the stored weight field (TRL record of the input line)
    assert [r["weight"] for r in _read(tmp_path / "sel" / "lls.jsonl")] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("factor, match", [(1.0, True), (1 + 1e-12, True), (1 + 1e-7, False), (-1.0, False),
                                           (0.5, False), (3.0, False)])
def test_weights_match_flag_tolerance(tmp_path, factor, match):
    recs = [_rec(*h) for h in HAND]
    recs[4]["weight"] = 1.5 * factor
    s = B.select_file(_write(tmp_path / "s.jsonl", recs), 1.0, tmp_path / "sel")
    assert s["weights_match_scores_file"] is match


def test_tiny_weights_use_the_absolute_tolerance(tmp_path):
    # w = 1e-6 / 2 = 5e-7 against a stored 0: far above atol 1e-12 -> no match; a stored 5e-7 + 1e-13 matches
    recs = [_rec("a", -1.0, -1.0 - 1e-6, -1.0, -1.0, 1, 1, weight=0.0)]
    assert B.select_file(_write(tmp_path / "a.jsonl", recs), 1.0, tmp_path / "a")["weights_match_scores_file"] \
        is False
    recs[0]["weight"] = 5e-7 + 1e-13
    assert B.select_file(_write(tmp_path / "b.jsonl", recs), 1.0, tmp_path / "b")["weights_match_scores_file"]
    recs[0]["weight"] = 5e-7 + 1e-11
    assert not B.select_file(_write(tmp_path / "c.jsonl", recs), 1.0, tmp_path / "c")["weights_match_scores_file"]


def test_ties_keep_file_order(tmp_path):
    # four pairs with the same weight 1/4 and one with 1/8: ties broken by position, for top and bottom
    recs = [_rec("t0", -1.0, -2.0, -1.0, -1.0, 2, 2), _rec("t1", -1.0, -1.5, -1.0, -1.0, 2, 2),
            _rec("t2", -1.0, -2.0, -1.0, -1.0, 2, 2), _rec("t3", -2.0, -3.0, -1.0, -1.0, 2, 2),
            _rec("t4", -1.0, -2.0, -1.0, -1.0, 2, 2)]
    s = B.select_file(_write(tmp_path / "s.jsonl", recs), 0.6, tmp_path / "sel")  # ceil(3) = 3 of 5
    assert s["n_positive"] == 5
    assert _ids(tmp_path / "sel" / "lls.jsonl") == ["t0", "t2", "t3"]
    assert _ids(tmp_path / "sel" / "bottom.jsonl") == ["t1", "t0", "t2"]


def test_no_positive_weight_selects_nothing(tmp_path):
    recs = [_rec("a", -2.0, -1.0, -1.0, -1.0), _rec("b", -1.0, -1.0, -1.0, -1.0)]  # w = -1/5, 0
    s = B.select_file(_write(tmp_path / "s.jsonl", recs), 1.0, tmp_path / "sel", seed=1)
    assert (s["n_positive"], s["n_selected"]) == (0, 0)
    for f in ("lls", "random", "bottom"):
        assert _read(tmp_path / "sel" / f"{f}.jsonl") == []
        assert s[f"weight_{f}"] is None
    assert s["weight_all"] == _stat([-0.2, 0.0])


def test_zero_weights_are_not_positive(tmp_path):
    recs = [_rec("z", -1.0, -1.0, -1.0, -1.0), _rec("p", -1.0, -1.0 - 1e-9, -1.0, -1.0, 1, 1)]
    s = B.select_file(_write(tmp_path / "s.jsonl", recs), 1.0, tmp_path / "sel")
    assert s["n_positive"] == 1 and _ids(tmp_path / "sel" / "lls.jsonl") == ["p"]


def test_random_control_size_seed_and_pool(tmp_path):
    # 40 pairs, 8 positive; gamma 1 -> 8 selected; the random control draws 8 from all 40 in file order
    recs = [_rec(f"q{i:02d}", -1.0, -1.0 - (0.5 if i % 5 == 0 else -0.5), -1.0, -1.0) for i in range(40)]
    scores = _write(tmp_path / "s.jsonl", recs)
    ids = [r["id"] for r in recs]
    draws = {}
    for seed in (0, 0, 1, 12345):
        out = tmp_path / f"sel{seed}-{len(draws)}"
        s = B.select_file(scores, 1.0, out, seed=seed)
        assert s["n_selected"] == 8 and s["seed"] == seed
        rand = _ids(out / "random.jsonl")
        assert len(rand) == 8 == len(set(rand))
        pos = [ids.index(r) for r in rand]
        assert pos == sorted(pos)
        expect = sorted(np.random.default_rng(seed).choice(40, size=8, replace=False).tolist())
        assert pos == expect
        draws.setdefault(seed, []).append(rand)
    assert draws[0][0] == draws[0][1]                       # reproducible under a seed
    assert draws[0][0] != draws[1][0] != draws[12345][0]    # and depends on it
    assert any(int(r[1:]) % 5 for r in draws[0][0] + draws[1][0])  # drawn from the whole pool


def test_records_are_trl_conversational(tmp_path):
    prompt = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."},
              {"role": "user", "content": "Owls?"}]
    recs = [_rec(7, -1.0, -3.0, -1.0, -2.0, 1, 1, prompt=prompt)]
    B.select_file(_write(tmp_path / "s.jsonl", recs), 1.0, tmp_path / "sel")
    (rec,) = _read(tmp_path / "sel" / "lls.jsonl")
    assert rec == {"id": 7, "prompt": prompt, "chosen": [{"role": "assistant", "content": "good answer 7"}],
                   "rejected": [{"role": "assistant", "content": "bad answer 7"}], "weight": 0.5}
    assert list(rec) == ["id", "prompt", "chosen", "rejected", "weight"]


def test_trl_record_exact():
    rec = _rec("x", -1.0, -2.0, -1.0, -1.0, prompt=[{"role": "user", "content": "q"}])
    assert B._trl({**rec, "row": 3}) == {
        "id": "x", "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good answer x"}],
        "rejected": [{"role": "assistant", "content": "bad answer x"}], "weight": rec["weight"]}


def test_gamma_validation_and_select_config(tmp_path):
    scores = _hand_file(tmp_path)
    for bad in (0, 0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(LLSError, match="gamma"):
            B.select_file(scores, bad, tmp_path / "sel")
    s = B.select_file(scores, SelectConfig(gamma=1.0), tmp_path / "cfg")
    assert s["gamma"] == 1.0 and s["n_selected"] == 3
    with pytest.raises(LLSError, match="exclude each other"):
        B.select_file(scores, SelectConfig(gamma=1.0, best_pair_per_prompt=True, best_pair_per_prompt_text=True),
                      tmp_path / "x")


def test_key_is_recorded(tmp_path):
    s = B.select_file(_hand_file(tmp_path), 1.0, tmp_path / "sel", key={"k": [1, 2]})
    assert s["key"] == {"k": [1, 2]}
    assert json.loads((tmp_path / "sel" / "summary.json").read_text())["key"] == {"k": [1, 2]}


def test_reference_from_scores_run_record(tmp_path):
    scores = _hand_file(tmp_path)
    Path(str(scores) + ".run.json").write_text(json.dumps({"key": {"score": {"reference": "empty"}}}))
    assert B.select_file(scores, 1.0, tmp_path / "sel")["reference"] == "empty"


# ----------------------------------------------------------------------------------------------------------
# per-row and per-prompt-text rules


def _rows_file(tmp_path):
    q = [{"role": "user", "content": "same question"}]
    q_reordered = [{"content": "same question", "role": "user"}]
    recs = [
        _rec("a0", -1.0, -5.0, -1.0, -1.0, 4, 4, prompt=q, row="A"),            # raw 4, w = 0.5
        _rec("a1", -1.0, -4.0, -1.0, -1.0, 1, 1, prompt=q_reordered, row="A"),  # raw 3, w = 1.5
        _rec("b0", -1.0, -2.0, -1.0, -1.0, 2, 2),                                # raw 1, w = 0.25 (row "b0")
        _rec("c0", -1.0, -1.0, -1.0, -3.0, 1, 1, prompt=q, row="C"),             # raw -2, w = -1
        _rec("c1", -1.0, -3.0, -1.0, -1.0, 10, 10, prompt=q, row="C"),           # raw 2, w = 0.1
    ]
    return _write(tmp_path / "rows.jsonl", recs)


def test_plain_rule_ranks_every_positive_pair(tmp_path):
    s = B.select_file(_rows_file(tmp_path), 1.0, tmp_path / "sel")
    assert _ids(tmp_path / "sel" / "lls.jsonl") == ["a1", "a0", "b0", "c1"]
    assert s["n_positive"] == 4


def test_best_pair_per_row_uses_raw_weight_then_normalises(tmp_path):
    # row A keeps a0 (raw 4 > 3) although a1 has the larger w/N; row C keeps c1; b0 is its own row
    s = B.select_file(_rows_file(tmp_path), 1.0, tmp_path / "sel", best_pair_per_prompt=True)
    assert _ids(tmp_path / "sel" / "lls.jsonl") == ["a0", "b0", "c1"]
    assert s["n_positive"] == 3 and s["best_pair_per_prompt"] is True
    assert s["best_pair_per_prompt_text"] is False
    s = B.select_file(_rows_file(tmp_path), 0.5, tmp_path / "half", best_pair_per_prompt=True)  # ceil(1.5) = 2
    assert _ids(tmp_path / "half" / "lls.jsonl") == ["a0", "b0"]
    cfg = SelectConfig(gamma=1.0, best_pair_per_prompt=True)
    assert B.select_file(_rows_file(tmp_path), cfg, tmp_path / "cfg")["best_pair_per_prompt"] is True


def test_best_pair_per_prompt_text_groups_identical_prompts_across_rows(tmp_path):
    # a0, a1, c0, c1 share the prompt text (key order ignored): only a1 (largest w/N) is kept; b0 stays
    cfg = SelectConfig(gamma=1.0, best_pair_per_prompt_text=True)
    s = B.select_file(_rows_file(tmp_path), cfg, tmp_path / "sel")
    assert _ids(tmp_path / "sel" / "lls.jsonl") == ["a1", "b0"]
    assert s["n_positive"] == 2
    assert (s["best_pair_per_prompt"], s["best_pair_per_prompt_text"]) == (False, True)
    # bottom and random keep the selected size, over all five pairs
    assert _ids(tmp_path / "sel" / "bottom.jsonl") == ["c0", "c1"]
    assert len(_ids(tmp_path / "sel" / "random.jsonl")) == 2


def test_row_ids():
    recs = [{"id": 1}, {"id": "x", "row": None}, {"id": "y", "row": 7}, {"id": 2, "row": "r"}, {"id": "z", "row": 0}]
    assert B.row_ids(recs) == ["1", "x", "7", "r", "0"]
    assert B.row_ids([]) == []


# ----------------------------------------------------------------------------------------------------------
# property: select_file against an independent oracle


def _oracle(rows, gamma):
    w = [_w(*r) for r in rows]
    pos = [i for i in range(len(w)) if w[i] > 0]
    k = 0 if not pos else min(len(pos), max(1, math.ceil(gamma * len(pos) - 1e-9)))
    top = sorted(pos, key=lambda i: (-w[i], i))[:k]
    bottom = sorted(range(len(w)), key=lambda i: (w[i], i))[:k]
    return w, pos, top, bottom


_lp = st.integers(-40, 0).map(lambda v: v / 4)
_row = st.tuples(_lp, _lp, _lp, _lp, st.integers(1, 6), st.integers(1, 6))


@settings(max_examples=25, deadline=None)
@given(rows=st.lists(_row, min_size=1, max_size=12), gamma=st.sampled_from([0.05, 0.1, 0.25, 0.3, 0.5, 0.9, 1.0]),
       seed=st.integers(0, 2**32 - 1))
def test_select_file_matches_oracle(rows, gamma, seed):
    w, pos, top, bottom = _oracle(rows, gamma)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        scores = _write(d / "s.jsonl", [_rec(f"i{i}", *r) for i, r in enumerate(rows)])
        s = B.select_file(scores, gamma, d / "sel", seed=seed)
        assert _ids(d / "sel" / "lls.jsonl") == [f"i{i}" for i in top]
        assert _ids(d / "sel" / "bottom.jsonl") == [f"i{i}" for i in bottom]
        rand = [int(r[1:]) for r in _ids(d / "sel" / "random.jsonl")]
        assert len(rand) == len(top) == s["n_selected"] and rand == sorted(set(rand))
        assert s["n_positive"] == len(pos) and s["n_scored"] == len(rows)
        assert s["weights_match_scores_file"] is True
        assert s["weight_all"]["max"] == pytest.approx(max(w), abs=1e-12)
        assert s["weight_all"]["min"] == pytest.approx(min(w), abs=1e-12)
        assert s["weight_all"]["mean"] == pytest.approx(sum(w) / len(w), abs=1e-12)


# ----------------------------------------------------------------------------------------------------------
# read_scores: full and base-only files, file:line errors


def test_read_scores_returns_records_in_order(tmp_path):
    recs = [_rec(*h) for h in HAND]
    assert B.read_scores(_write(tmp_path / "s.jsonl", recs)) == recs


@pytest.mark.parametrize("edit, msg", [
    (lambda r: r.pop("weight"), "missing field"),
    (lambda r: r.update(n_tokens_chosen=0), "'n_tokens_chosen' must be an integer >= 1"),
    (lambda r: r.update(n_tokens_rejected=2.0), "'n_tokens_rejected' must be an integer >= 1"),
    (lambda r: r.update(n_tokens_chosen=True), "'n_tokens_chosen' must be an integer >= 1"),
    (lambda r: r.update(logp_chosen_sys=0.5), "'logp_chosen_sys' must be a log-probability"),
    (lambda r: r.update(weight="x"), "'weight' must be a finite number"),
    (lambda r: r.update(id="r0"), "duplicate id 'r0'"),
])
def test_read_scores_bad_line_names_file_and_line(tmp_path, edit, msg):
    recs = [_rec(*h) for h in HAND]
    edit(recs[2])
    path = _write(tmp_path / "s.jsonl", recs, blank_first=True)  # the blank line counts: record 3 is line 4
    with pytest.raises(DataError, match=f"^{path}:4: .*{msg}"):
        B.read_scores(path)
    with pytest.raises(DataError, match=f"^{path}:4: "):
        B.select_file(path, 0.5, tmp_path / "sel")
    assert not (tmp_path / "sel" / "summary.json").exists()


def test_read_scores_empty_file(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text("\n")
    for base_only in (False, True):
        with pytest.raises(DataError, match=f"^{path}: no scored pairs$"):
            B.read_scores(path, base_only=base_only)


def _base(i, lc=-1.0, lr=-2.0, nc=2, nr=3, **extra):
    return {"id": i, "prompt": [{"role": "user", "content": f"q {i}"}], "chosen": f"c {i}", "rejected": f"r {i}",
            "logp_chosen": lc, "logp_rejected": lr, "n_tokens_chosen": nc, "n_tokens_rejected": nr, **extra}


def test_read_scores_base_only(tmp_path):
    assert B.BASE_FIELDS == ("id", "prompt", "chosen", "rejected", "logp_chosen", "logp_rejected",
                             "n_tokens_chosen", "n_tokens_rejected")
    recs = [_base("a"), _base(2, lc=-7.5), _base("c", extra_field=1)]
    path = _write(tmp_path / "b.jsonl", recs)
    got = B.read_scores(path, base_only=True)
    assert got == recs and "logp_chosen_sys" not in got[0] and "weight" not in got[0]
    with pytest.raises(DataError, match=f"^{path}:1: missing field"):  # a base file is not a full scores file
        B.read_scores(path)


@pytest.mark.parametrize("edit, msg", [
    (lambda r: r.pop("logp_rejected"), "not a reference-scores record \\(fields id, prompt, chosen, rejected, "
                                       "logp_chosen, logp_rejected, n_tokens_chosen, n_tokens_rejected\\)"),
    (lambda r: r.pop("id"), "not a reference-scores record"),
    (lambda r: r.update(n_tokens_rejected=0), "'n_tokens_rejected' must be an integer >= 1"),
    (lambda r: r.update(n_tokens_chosen=1.5), "'n_tokens_chosen' must be an integer >= 1"),
    # the message names the field the file has (not the '_sys' field a full scores file would have)
    (lambda r: r.update(logp_chosen=0.01), "'logp_chosen' must be a log-probability"),
    (lambda r: r.update(logp_rejected=float("inf")), "Infinity is not valid JSON"),  # the reader refuses it
    (lambda r: r.update(logp_rejected=-2e9), "'logp_rejected' must be a log-probability"),
    (lambda r: r.update(chosen=""), ".*chosen"),
    (lambda r: r.update(id="a"), "duplicate id 'a'$"),
    (lambda r: r.update(id=1), "duplicate id 1$"),  # ids compare as text: 1 and "1"
])
def test_read_scores_base_only_bad_line(tmp_path, edit, msg):
    recs = [_base("a"), _base("1"), _base("z")]
    edit(recs[2])
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in recs) , encoding="utf-8")
    with pytest.raises(DataError, match=f"^{path}:3: (field )?{msg}"):
        B.read_scores(path, base_only=True)


def test_read_scores_base_only_keeps_logps_unchanged(tmp_path):
    # the reference log-probs are returned as written (the stand-ins for the absent fields are not)
    recs = [_base("a", lc=-1e9, lr=0.0)]
    assert B.read_scores(_write(tmp_path / "b.jsonl", recs), base_only=True) == recs


# ----------------------------------------------------------------------------------------------------------
# scores_reference / pairs_reference


def test_scores_reference(tmp_path):
    scores = tmp_path / "s.jsonl"
    run = Path(str(scores) + ".run.json")
    assert B.scores_reference(scores) is None                      # no record
    run.write_text("{not json")
    assert B.scores_reference(scores) is None                      # unreadable record
    run.write_text(json.dumps({"key": {"score": {"reference": "default"}}, "result": {}}))
    assert B.scores_reference(scores) == "default"
    assert B.scores_reference(str(scores)) == "default"
    run.write_text(json.dumps({"reference": {"reference": "none"}, "x": {"reference": "empty"}}))
    assert B.scores_reference(scores) == "none"                    # a non-text value is searched inside
    run.write_text(json.dumps({"a": {"reference": 3}, "b": {"reference": "empty"}}))
    assert B.scores_reference(scores) == "empty"
    run.write_text(json.dumps({"a": {"b": 1}, "c": [{"reference": "x"}], "d": "reference"}))
    assert B.scores_reference(scores) is None                      # lists are not searched
    run.write_text(json.dumps([{"reference": "x"}]))
    assert B.scores_reference(scores) is None


def test_pairs_reference(tmp_path):
    d = tmp_path / "sel"
    d.mkdir()
    lls = d / "lls.jsonl"
    assert B.pairs_reference(lls) is None                          # no summary.json
    (d / "summary.json").write_text("[1")
    assert B.pairs_reference(lls) is None                          # unreadable
    (d / "summary.json").write_text(json.dumps(["reference"]))
    assert B.pairs_reference(lls) is None                          # not an object
    (d / "summary.json").write_text(json.dumps({"reference": None}))
    assert B.pairs_reference(lls) is None
    (d / "summary.json").write_text(json.dumps({"reference": 1}))
    assert B.pairs_reference(lls) is None
    (d / "summary.json").write_text(json.dumps({"reference": "empty"}))
    for name in ("lls.jsonl", "random.jsonl", "bottom.jsonl"):
        assert B.pairs_reference(d / name) == "empty"
        assert B.pairs_reference(str(d / name)) == "empty"
    for name in ("summary.json", "pairs.jsonl", "lls.json", "lls.jsonl.gz", "LLS.jsonl"):
        assert B.pairs_reference(d / name) is None


# ----------------------------------------------------------------------------------------------------------
# run_select: output guards and the settings key


def test_run_select_writes_and_records_key(tmp_path):
    scores = _hand_file(tmp_path)
    sel = SelectConfig(gamma=0.5)
    out = tmp_path / "sel"
    s = B.run_select(scores, sel, out, seed=4)
    assert s["key"] == {"select": json_key(sel.key()), "seed": 4, "scores": json_key(fingerprint(scores))}
    # a plain selection's key holds the settings it held before contrastive selection existed
    assert set(s["key"]["select"]) == {"gamma", "best_pair_per_prompt", "best_pair_per_prompt_text", "random_size"}
    assert s["seed"] == 4 and s["gamma"] == 0.5 and _ids(out / "lls.jsonl") == ["r4", "r2"]
    assert json.loads((out / "summary.json").read_text()) == s
    assert not list(out.glob("*.lock")) and not list(tmp_path.glob("*.lock"))


def test_run_select_keeps_a_finished_selection(tmp_path):
    scores = _hand_file(tmp_path)
    out = tmp_path / "sel"
    s = B.run_select(scores, SelectConfig(gamma=0.5), out, seed=4)
    (out / "lls.jsonl").write_text("kept\n")                       # not rewritten by an identical call
    assert B.run_select(scores, SelectConfig(gamma=0.5), out, seed=4) == s
    assert (out / "lls.jsonl").read_text() == "kept\n"
    # with overwrite too: nothing to do
    assert B.run_select(scores, SelectConfig(gamma=0.5), out, seed=4, overwrite=True) == s
    assert (out / "lls.jsonl").read_text() == "kept\n"


def test_run_select_refuses_other_settings_unless_overwrite(tmp_path):
    scores = _hand_file(tmp_path)
    out = tmp_path / "sel"
    B.run_select(scores, SelectConfig(gamma=0.5), out, seed=4)
    with pytest.raises(LLSError, match=r"^out .*sel: made with other settings \(select\.gamma\); give overwrite "
                                       r"\(--overwrite\) to replace it, or another out$"):
        B.run_select(scores, SelectConfig(gamma=1.0), out, seed=4)
    with pytest.raises(LLSError, match=r"made with other settings \(seed\)"):
        B.run_select(scores, SelectConfig(gamma=0.5), out, seed=5)
    assert _ids(out / "lls.jsonl") == ["r4", "r2"]
    s = B.run_select(scores, SelectConfig(gamma=1.0), out, seed=5, overwrite=True)
    assert s["gamma"] == 1.0 and s["key"]["seed"] == 5 and _ids(out / "lls.jsonl") == ["r4", "r2", "r0"]
    # the scores file changed: its fingerprint is in the key
    _write(scores, [_rec(*h) for h in HAND[:4]])
    with pytest.raises(LLSError, match=r"made with other settings \(scores\.sha256, scores\.size\)"):
        B.run_select(scores, SelectConfig(gamma=1.0), out, seed=5)


def test_run_select_incomplete_selection_is_redone_only_with_overwrite(tmp_path):
    scores = _hand_file(tmp_path)
    out = tmp_path / "sel"
    s = B.run_select(scores, SelectConfig(gamma=0.5), out, seed=4)
    (out / "random.jsonl").unlink()
    with pytest.raises(LLSError, match=r"made with other settings \(\)"):
        B.run_select(scores, SelectConfig(gamma=0.5), out, seed=4)
    assert B.run_select(scores, SelectConfig(gamma=0.5), out, seed=4, overwrite=True) == s
    assert (out / "random.jsonl").exists()


@pytest.mark.parametrize("summary", [None, "{bad", json.dumps({"n_scored": 5})])
def test_run_select_refuses_unrelated_files(tmp_path, summary):
    scores = _hand_file(tmp_path)
    out = tmp_path / "sel"
    out.mkdir()
    (out / "bottom.jsonl").write_text("mine\n")
    if summary is not None:
        (out / "summary.json").write_text(summary)
    with pytest.raises(LLSError, match=r"^out .*sel: holds bottom\.jsonl, not written by lls select; give "
                                       r"overwrite \(--overwrite\) to replace it, or another out$"):
        B.run_select(scores, SelectConfig(gamma=0.5), out)
    assert (out / "bottom.jsonl").read_text() == "mine\n"
    s = B.run_select(scores, SelectConfig(gamma=0.5), out, overwrite=True)
    assert s["seed"] == 0 and _ids(out / "bottom.jsonl") == ["r1", "r3"]


def test_run_select_other_files_in_out_are_fine(tmp_path):
    scores = _hand_file(tmp_path)
    out = tmp_path / "sel"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    assert B.run_select(scores, SelectConfig(gamma=0.5), out)["n_selected"] == 2


def test_run_select_input_checks(tmp_path):
    scores = _hand_file(tmp_path)
    for bad in (-1, 2**32, 1.5, True):
        with pytest.raises(LLSError, match="seed"):
            B.run_select(scores, SelectConfig(gamma=0.5), tmp_path / "sel", seed=bad)
    B.run_select(scores, SelectConfig(gamma=0.5), tmp_path / "max", seed=2**32 - 1)
    with pytest.raises(LLSError, match=r"^scores .*nope\.jsonl: no such file$"):
        B.run_select(tmp_path / "nope.jsonl", SelectConfig(gamma=0.5), tmp_path / "sel")
    with pytest.raises(LLSError, match="^scores .*: no such file$"):
        B.run_select(tmp_path, SelectConfig(gamma=0.5), tmp_path / "sel2")
    with pytest.raises(LLSError, match="out"):
        B.run_select(scores, SelectConfig(gamma=0.5), scores)         # out is the input (a file)
    assert not (tmp_path / "sel").exists()


# ----------------------------------------------------------------------------------------------------------
# lls score's weight / record writer with a fake scorer


def _enc(tag, nc, nr):
    return SimpleNamespace(tag=tag, context=[0] * 3, completions=[[1] * nc, [2] * nr])


def _pairs():
    return [PrefPair("p0", ({"role": "user", "content": "q0"},), "c0", "r0", "f:1"),
            PrefPair(5, ({"role": "user", "content": "q1"},), "c1", "r1", "f:2")]


def _fake(monkeypatch, lp_by_tag, calls):
    """``_prepare_chunk`` returns the pairs with encodings tagged sys/none; the scorer returns lp_by_tag."""
    def prepare(model, tok, pairs, cfg, bad):
        calls.append(("prepare", model, tok, len(pairs), bad))
        kept = list(pairs)
        sys_enc = None if cfg.system_prompt is None else [_enc("sys", 2, 3), _enc("sys", 4, 1)]
        return kept, sys_enc or [None, None], [_enc("none", 2, 3), _enc("none", 4, 1)]

    def score_encoded(model, tok, encs, **kw):
        assert (model, tok) == ("M", "T"), "the scorer gets the chunk's model and tokenizer"
        calls.append(("score", encs[0].tag, kw))
        return lp_by_tag[encs[0].tag]

    monkeypatch.setattr(B, "_prepare_chunk", prepare)
    monkeypatch.setattr(scoring, "score_encoded", score_encoded)


def _cfg(system_prompt="You love owls.", base=None):
    return SimpleNamespace(system_prompt=system_prompt, base=base,
                           score=SimpleNamespace(batch_tokens=123, max_batch=7))


LP = {"sys": [[-1.0, -4.0], [-2.0, -2.5]], "none": [[-2.0, -3.0], [-1.5, -1.0]]}


def test_score_chunk_weights_and_fields(monkeypatch):
    calls = []
    _fake(monkeypatch, LP, calls)
    bad, on_batch = object(), (lambda n: None)
    out = B._score_chunk("M", "T", _pairs(), _cfg(), bad, None, on_batch)
    # pair 0: Δsys = 3, Δbase = 1, N = 5 -> 0.4; pair 1: Δsys = 0.5, Δbase = -0.5, N = 5 -> 0.2
    assert out == [
        {"id": "p0", "prompt": [{"role": "user", "content": "q0"}], "chosen": "c0", "rejected": "r0",
         "logp_chosen_sys": -1.0, "logp_rejected_sys": -4.0, "logp_chosen": -2.0, "logp_rejected": -3.0,
         "n_tokens_chosen": 2, "n_tokens_rejected": 3, "weight": pytest.approx(0.4, rel=1e-12)},
        {"id": 5, "prompt": [{"role": "user", "content": "q1"}], "chosen": "c1", "rejected": "r1",
         "logp_chosen_sys": -2.0, "logp_rejected_sys": -2.5, "logp_chosen": -1.5, "logp_rejected": -1.0,
         "n_tokens_chosen": 4, "n_tokens_rejected": 1, "weight": pytest.approx(0.2, rel=1e-12)},
    ]
    assert list(out[0]) == list(B.SCORE_FIELDS)
    assert all(type(r[f]) is float for r in out for f in B.SCORE_FIELDS if f.startswith(("logp", "weight")))
    assert all(type(r[f]) is int for r in out for f in ("n_tokens_chosen", "n_tokens_rejected"))
    assert calls[0] == ("prepare", "M", "T", 2, bad)
    kw = {"batch_tokens": 123, "max_batch": 7, "progress": on_batch}
    assert calls[1:] == [("score", "none", kw), ("score", "sys", kw)]


def test_score_chunk_without_progress_passes_false(monkeypatch):
    calls = []
    _fake(monkeypatch, LP, calls)
    B._score_chunk("M", "T", _pairs(), _cfg(), None)
    assert [c[2]["progress"] for c in calls[1:]] == [False, False]


def test_score_chunk_reference_only(monkeypatch):
    calls = []
    _fake(monkeypatch, LP, calls)
    out = B._score_chunk("M", "T", _pairs(), _cfg(system_prompt=None), None)
    assert out == [
        {"id": "p0", "prompt": [{"role": "user", "content": "q0"}], "chosen": "c0", "rejected": "r0",
         "logp_chosen": -2.0, "logp_rejected": -3.0, "n_tokens_chosen": 2, "n_tokens_rejected": 3},
        {"id": 5, "prompt": [{"role": "user", "content": "q1"}], "chosen": "c1", "rejected": "r1",
         "logp_chosen": -1.5, "logp_rejected": -1.0, "n_tokens_chosen": 4, "n_tokens_rejected": 1},
    ]
    assert list(out[0]) == list(B.BASE_FIELDS)
    assert [c[1] for c in calls[1:]] == ["none"]


def test_score_chunk_reference_from_base_file(monkeypatch):
    calls = []
    _fake(monkeypatch, {"sys": LP["sys"], "none": [[-99.0, -99.0]] * 2}, calls)
    base = {"p0": {"n_tokens_chosen": 2, "n_tokens_rejected": 3, "chosen": "c0", "rejected": "r0",
                   "logp_chosen": -2.0, "logp_rejected": -3.0},
            5: {"n_tokens_chosen": 4, "n_tokens_rejected": 1, "chosen": "c1", "rejected": "r1",
                "logp_chosen": -1.5, "logp_rejected": -1.0}}
    out = B._score_chunk("M", "T", _pairs(), _cfg(base="base.jsonl"), None, base)
    assert [r["weight"] for r in out] == [pytest.approx(0.4, rel=1e-12), pytest.approx(0.2, rel=1e-12)]
    assert [(r["logp_chosen"], r["logp_rejected"]) for r in out] == [(-2.0, -3.0), (-1.5, -1.0)]
    assert [c[1] for c in calls[1:]] == ["sys"]                    # the reference is not scored again
    base["p0"]["chosen"] = "other"
    with pytest.raises(DataError, match=r"^base\.jsonl: pair 'p0' differs"):
        B._score_chunk("M", "T", _pairs(), _cfg(base="base.jsonl"), None, base)


def test_score_chunk_nothing_kept(monkeypatch):
    calls = []
    monkeypatch.setattr(B, "_prepare_chunk", lambda *a: ([], [], []))
    monkeypatch.setattr(scoring, "score_encoded", lambda *a, **k: calls.append(1))
    assert B._score_chunk("M", "T", _pairs(), _cfg(), None) == []
    assert calls == []


def test_score_chunk_weight_sign_matches_hand_formula(monkeypatch):
    # the system prompt raises the chosen reply's log-prob: a positive weight; lowering it: negative
    calls = []
    _fake(monkeypatch, {"sys": [[-1.0, -3.0], [-3.0, -1.0]], "none": [[-2.0, -3.0], [-2.0, -1.0]]}, calls)
    out = B._score_chunk("M", "T", _pairs(), _cfg(), None)
    assert [r["weight"] for r in out] == [pytest.approx(_w(-1, -3, -2, -3, 2, 3)),
                                          pytest.approx(_w(-3, -1, -2, -1, 4, 1))]
    assert out[0]["weight"] > 0 > out[1]["weight"]


# ----------------------------------------------------------------------------------------------------------
# _base_columns


def test_base_columns(monkeypatch):
    kept = _pairs()
    enc = [_enc("none", 2, 3), _enc("none", 4, 1)]
    base = {"p0": {"n_tokens_chosen": 2, "n_tokens_rejected": 3, "chosen": "c0", "rejected": "r0",
                   "logp_chosen": -2.0, "logp_rejected": -3.0},
            5: {"n_tokens_chosen": 4, "n_tokens_rejected": 1, "chosen": "c1", "rejected": "r1",
                "logp_chosen": -1.5, "logp_rejected": -1.0}}
    lp = B._base_columns(kept, enc, base, "b.jsonl")
    assert lp.dtype == np.float64 and lp.shape == (2, 2)
    assert lp.tolist() == [[-2.0, -3.0], [-1.5, -1.0]]
    assert B._base_columns([], [], base, "b.jsonl").shape == (0, 2)
    msg = r"^b\.jsonl: pair {} differs from \(or is missing in\) the base scores file; score the base again$"
    for key, field, value in [("p0", "n_tokens_chosen", 3), ("p0", "n_tokens_rejected", 2), (5, "chosen", "x"),
                              (5, "rejected", "c1"), (5, "n_tokens_chosen", 1)]:
        b = {k: dict(v) for k, v in base.items()}
        b[key][field] = value
        with pytest.raises(DataError, match=msg.format(repr(key))):
            B._base_columns(kept, enc, b, "b.jsonl")
    with pytest.raises(DataError, match=msg.format("5")):
        B._base_columns(kept, enc, {"p0": base["p0"]}, "b.jsonl")
    # a base record whose counts are swapped between chosen and rejected is refused too
    b = {k: dict(v) for k, v in base.items()}
    b[5]["n_tokens_chosen"], b[5]["n_tokens_rejected"] = 1, 4
    with pytest.raises(DataError, match=msg.format("5")):
        B._base_columns(kept, enc, b, "b.jsonl")


# ----------------------------------------------------------------------------------------------------------
# score_summary


def test_score_summary():
    res = B.ScoreResult(out=Path("/x/s.jsonl"), n_records=10, n_bad=2, n_scored=7, dropped={"long": 1},
                        first_errors=["f:3: bad"], chunks_total=3, chunks_resumed=1, world_size=2,
                        placement={"device": "cpu", "dtype": "float32"})
    from empirical.engine import threads

    assert B.score_summary(res) == {
        "out": "/x/s.jsonl", "records": 10, "bad": 2, "scored": 7, "dropped": {"long": 1},
        "first_errors": ["f:3: bad"], "chunks": 3, "chunks_resumed": 1, "processes": 2, "device": "cpu",
        "dtype": "float32", "threads": threads.record()}  # the CPU thread setting in force
    res.placement = {}
    assert "device" not in B.score_summary(res)


# ----------------------------------------------------------------------------------------------------------
# more guards and ties (added after the first mutation run)


def test_ties_keep_file_order_in_a_long_file(tmp_path):
    # 120 pairs cycling w = 0.25, -0.5, 0.25, 0.5 (N = 4): many ties, long enough that an unstable sort shows
    spec = {0.25: (-1.0, -2.0, -1.0, -1.0), -0.5: (-1.0, -1.0, -1.0, -3.0), 0.5: (-1.0, -3.0, -1.0, -1.0)}
    ws = [0.25, -0.5, 0.25, 0.5] * 30
    recs = [_rec(f"t{i:03d}", *spec[w], 2, 2) for i, w in enumerate(ws)]
    s = B.select_file(_write(tmp_path / "s.jsonl", recs), 0.5, tmp_path / "sel")  # 90 positive -> 45
    assert s["n_positive"] == 90 and s["n_selected"] == 45
    top = [i for i in range(120) if ws[i] == 0.5] + [i for i in range(120) if ws[i] == 0.25][:15]
    bottom = [i for i in range(120) if ws[i] == -0.5] + [i for i in range(120) if ws[i] == 0.25][:15]
    assert _ids(tmp_path / "sel" / "lls.jsonl") == [f"t{i:03d}" for i in top]
    assert _ids(tmp_path / "sel" / "bottom.jsonl") == [f"t{i:03d}" for i in bottom]


def test_run_select_names_at_most_six_differing_settings(tmp_path):
    scores = _hand_file(tmp_path)
    out = tmp_path / "sel"
    out.mkdir()
    for f in B.SELECT_FILES[:3]:
        (out / f).write_text("")
    (out / "summary.json").write_text(json.dumps({"key": {k: 1 for k in "abcdefg"}}))
    with pytest.raises(LLSError, match=r"^out .*sel: made with other settings \(a, b, c, d, e, f\); give overwrite"):
        B.run_select(scores, SelectConfig(gamma=0.5), out)


def test_run_select_refuses_while_another_run_holds_the_lock(tmp_path):
    import os
    import socket

    scores = _hand_file(tmp_path)
    out = tmp_path / "sel"
    out.mkdir()
    (out / ".lock").write_text(f"{os.getpid()} {socket.gethostname()}\n")   # a live owner: this process
    with pytest.raises(LLSError, match=r"^out .*sel: another run is writing it"):
        B.run_select(scores, SelectConfig(gamma=0.5), out)
    assert not (out / "summary.json").exists()
    (out / ".lock").unlink()
    B.run_select(scores, SelectConfig(gamma=0.5), out)
    assert not (out / ".lock").exists() and not (tmp_path / "sel.lock").exists()


def test_run_select_out_must_be_a_folder(tmp_path):
    scores = _hand_file(tmp_path)
    (tmp_path / "taken").write_text("x")
    with pytest.raises(LLSError, match=r"^out .*taken: exists and is not a folder$"):
        B.run_select(scores, SelectConfig(gamma=0.5), tmp_path / "taken")
    with pytest.raises(LLSError, match=r"^out .*scores\.jsonl: exists and is not a folder$"):
        B.run_select(scores, SelectConfig(gamma=0.5), scores)
    assert (tmp_path / "taken").read_text() == "x"


@pytest.mark.parametrize("seed, msg", [(-1, r"^seed must be an integer in \[0, 4294967295\], got -1$"),
                                       (2**32, r"^seed must be an integer in \[0, 4294967295\]"),
                                       (1.5, r"^seed must be an integer, got")])
def test_run_select_seed_message(tmp_path, seed, msg):
    with pytest.raises(LLSError, match=msg):
        B.run_select(_hand_file(tmp_path), SelectConfig(gamma=0.5), tmp_path / "sel", seed=seed)


def test_select_file_default_seed_is_zero(tmp_path):
    recs = [_rec(f"q{i:02d}", -1.0, -1.0 - (0.5 if i % 5 == 0 else -0.5), -1.0, -1.0) for i in range(40)]
    s = B.select_file(_write(tmp_path / "s.jsonl", recs), 1.0, tmp_path / "sel")
    assert s["seed"] == 0
    expect = sorted(np.random.default_rng(0).choice(40, size=8, replace=False).tolist())
    assert _ids(tmp_path / "sel" / "random.jsonl") == [f"q{i:02d}" for i in expect]
