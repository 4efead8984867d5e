"""Unit tests of the pure parts of :mod:`empirical.stages.correlate` (no model, no torch, no peft).

Exact small cases computed by hand, hypothesis property tests, and the model-facing functions
(``checkpoint_margins``, ``correlate_arms``) driven through a fake ``peft`` module and a fake scorer, so
that their bookkeeping (cache files, checkpoint order, field names, ids, warnings) is checked without
loading any weights. Written to kill the mutants of ``scripts/mutation.sh empirical correlate``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical.stages import correlate as C
from empirical.engine import scoring
from empirical.stages.data import DataError, PrefPair
from empirical.engine.scoring import PairScores
from lls_common.errors import LLSError
from lls_theory.stats import correlation_report, paired_difference

# ----------------------------------------------------------------------------------------------------------
# helpers


def _cos(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def _pearson(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return _cos(a - a.mean(), b - b.mean())


def _score_rec(i, lpc, lpr, lpcs, lprs, nc=3, nr=4, prompt=None):
    return {"id": i, "prompt": prompt if prompt is not None else f"question {i}?", "chosen": f"good answer {i}",
            "rejected": f"bad answer {i}", "logp_chosen": lpc, "logp_rejected": lpr, "logp_chosen_sys": lpcs,
            "logp_rejected_sys": lprs, "n_tokens_chosen": nc, "n_tokens_rejected": nr,
            "weight": ((lpcs - lprs) - (lpc - lpr)) / (nc + nr)}


def _write_jsonl(path: Path, recs) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------
# scores_from_file


def test_scores_from_file_exact(tmp_path):
    recs = [_score_rec("a", -2, -5, -1.5, -6.25, nc=2, nr=7),
            _score_rec(7, -3.5, -1.0, -3.0, -2.0, nc=11, nr=1,
                       prompt=[{"role": "user", "content": "hi"}]),
            _score_rec("c", -10.0, -10.0, -9.0, -12.0, nc=5, nr=6)]
    path = _write_jsonl(tmp_path / "scores.jsonl", recs)
    got, base, sys_ = C.scores_from_file(path)
    assert got == [{"id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                   for r in recs]
    assert [list(g) for g in got] == [["id", "prompt", "chosen", "rejected"]] * 3
    assert isinstance(base, PairScores) and isinstance(sys_, PairScores)
    for arr in (base.logp_chosen, base.logp_rejected, sys_.logp_chosen, sys_.logp_rejected):
        assert arr.dtype == np.float64 and arr.shape == (3,)
    for arr in (base.n_chosen, base.n_rejected, sys_.n_chosen, sys_.n_rejected):
        assert arr.dtype == np.int64 and arr.shape == (3,)
    assert base.logp_chosen.tolist() == [-2.0, -3.5, -10.0]
    assert base.logp_rejected.tolist() == [-5.0, -1.0, -10.0]
    assert sys_.logp_chosen.tolist() == [-1.5, -3.0, -9.0]
    assert sys_.logp_rejected.tolist() == [-6.25, -2.0, -12.0]
    assert base.n_chosen.tolist() == sys_.n_chosen.tolist() == [2, 11, 5]
    assert base.n_rejected.tolist() == sys_.n_rejected.tolist() == [7, 1, 6]
    # z_s by hand: (lpcs - lprs) - (lpc - lpr)
    from lls_theory.margins import margin
    z_s = margin(sys_.logp_chosen, sys_.logp_rejected, base.logp_chosen, base.logp_rejected)
    assert z_s.tolist() == [1.75, 1.5, 3.0]  # (-1.5+6.25)-(-2+5); (-3+2)-(-3.5+1); (-9+12)-0


def test_scores_from_file_integer_logps_are_float64(tmp_path):
    path = _write_jsonl(tmp_path / "ints.jsonl", [_score_rec("a", -2, -5, -1, -6), _score_rec("b", -3, -1, -3, -2)])
    _, base, sys_ = C.scores_from_file(path)
    for arr in (base.logp_chosen, base.logp_rejected, sys_.logp_chosen, sys_.logp_rejected):
        assert arr.dtype == np.float64
    z_s = sys_.logp_chosen - sys_.logp_rejected - base.logp_chosen + base.logp_rejected
    assert z_s.tolist() == [2.0, 1.0]  # (-1+6)-(-2+5); (-3+2)-(-3+1)


@pytest.mark.parametrize("limit, n", [(None, 3), (1, 1), (2, 2), (3, 3), (10, 3)])
def test_scores_from_file_limit(tmp_path, limit, n):
    recs = [_score_rec(f"r{k}", -1.0 - k, -2.0, -1.0, -2.0 - k) for k in range(3)]
    path = _write_jsonl(tmp_path / "s.jsonl", recs)
    got, base, sys_ = C.scores_from_file(path, limit=limit) if limit is not None else C.scores_from_file(path)
    assert [r["id"] for r in got] == [f"r{k}" for k in range(n)]
    assert base.logp_chosen.tolist() == [-1.0 - k for k in range(n)]
    assert sys_.logp_rejected.tolist() == [-2.0 - k for k in range(n)]
    assert len(base.n_chosen) == len(sys_.n_rejected) == n


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(*[st.floats(-50, 0, allow_nan=False, width=32)] * 4,
                          st.integers(1, 40), st.integers(1, 40)), min_size=1, max_size=6))
def test_scores_from_file_margins_property(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("sff") / "s.jsonl"
    recs = [_score_rec(f"id{k}", *r) for k, r in enumerate(rows)]
    _write_jsonl(path, recs)
    got, base, sys_ = C.scores_from_file(path)
    want = [(r[2] - r[3]) - (r[0] - r[1]) for r in rows]
    have = (sys_.logp_chosen - sys_.logp_rejected) - (base.logp_chosen - base.logp_rejected)
    assert np.allclose(have, want, rtol=0, atol=1e-9)
    assert base.n_chosen.tolist() == [r[4] for r in rows]
    assert sys_.n_rejected.tolist() == [r[5] for r in rows]
    assert [g["id"] for g in got] == [f"id{k}" for k in range(len(rows))]


def test_scores_from_file_bad_line_names_the_file(tmp_path):
    recs = [_score_rec("a", -1.0, -2.0, -1.0, -2.0), _score_rec("b", -1.0, -2.0, -1.0, -2.0)]
    del recs[1]["logp_chosen_sys"]
    path = _write_jsonl(tmp_path / "broken.jsonl", recs)
    with pytest.raises(DataError) as ei:
        C.scores_from_file(path)
    msg = str(ei.value)
    assert "\n" not in msg and "broken.jsonl:2" in msg and "logp_chosen_sys" in msg


# ----------------------------------------------------------------------------------------------------------
# pair_key / pair_fingerprint / _norm


def test_pair_key_exact():
    want = json.dumps([[{"content": "Hi  there", "role": "user"}], "yes", "no"])
    assert C.pair_key("Hi  there", "yes", "no") == want
    msgs = [{"role": "user", "content": "Hi  there"}]
    assert C.pair_key(msgs, [{"role": "assistant", "content": "yes"}], "no") == want
    assert C.pair_key(tuple(msgs), "yes", [{"role": "assistant", "content": "no"}]) == want
    assert C.pair_key("Hi  there", "no", "yes") != want


def test_pair_key_bad_reply_names_pair():
    with pytest.raises(ValueError, match=r"^pair: empty reply$"):
        C.pair_key("q?", "  ", "no")
    with pytest.raises(ValueError, match=r"^pair: reply must be a string or one assistant message$"):
        C.pair_key("q?", "yes", 7)


def test_pair_fingerprint_and_norm():
    assert C._norm("  a \n b\t\tc ") == "a b c"
    assert C._norm(5) == "5"
    fp = C.pair_fingerprint([{"role": "system", "content": "be  kind"}, {"role": "user", "content": " x\ny "}])
    assert fp == json.dumps([["system", "be kind"], ["user", "x y"]])
    assert C.pair_fingerprint(({"role": "user", "content": "q"},)) == json.dumps([["user", "q"]])
    assert C.pair_fingerprint("q") == json.dumps([["user", "q"]])


# ----------------------------------------------------------------------------------------------------------
# check_disjoint


def _pp(i, prompt, c, r, where=None):
    msgs = ({"role": "user", "content": prompt},) if isinstance(prompt, str) else tuple(prompt)
    return PrefPair(i, msgs, c, r, where or f"held.jsonl:{i}")


def test_check_disjoint_cases():
    held = [_pp("0", "q0", "good one", "bad one"), _pp("1", "q1", "alpha beta", "gamma")]
    # same id, other content: fine
    C.check_disjoint(held, [{"id": "0", "prompt": "other", "chosen": "good one", "rejected": "bad one"}])
    # same prompt, different replies: fine
    C.check_disjoint(held, [{"prompt": "q1", "chosen": "alpha", "rejected": "delta"}])
    # only the chosen reply is a prefix: fine
    C.check_disjoint(held, [{"prompt": "q1", "chosen": "alpha", "rejected": "xx"}])
    # only the rejected reply is a prefix: fine
    C.check_disjoint(held, [{"prompt": "q1", "chosen": "xx", "rejected": "gamma"}])
    # swapped labels, only one of the two replies a prefix: fine
    C.check_disjoint(held, [{"prompt": "q1", "chosen": "xx", "rejected": "alpha"}])
    C.check_disjoint(held, [{"prompt": "q1", "chosen": "gam", "rejected": "xx"}])
    # truncated copy (prefixes, whitespace differences): refused, naming pair, id, where and the train where
    train = [{"prompt": "unrelated", "chosen": "a", "rejected": "b"},
             {"prompt": " q1 ", "chosen": "alpha  beta", "rejected": "gam", "_where": "train.jsonl:9"}]
    with pytest.raises(LLSError) as ei:
        C.check_disjoint(held, train, train_name="arm X")
    assert str(ei.value) == ("held-out pair 1 (id '1', held.jsonl:1) is in arm X (train.jsonl:9): same text "
                             "(prompt and replies); give held-out pairs that were never selected nor trained on")
    # labels swapped: refused too; default names
    with pytest.raises(LLSError) as ei:
        C.check_disjoint(held, [{"prompt": "q0", "chosen": "bad", "rejected": "good one"}])
    assert "held-out pair 0 (id '0', held.jsonl:0) is in the training subset (training pair 0)" in str(ei.value)
    # the second training record gets index 1 in its default name
    with pytest.raises(LLSError, match=r"\(training pair 1\)"):
        C.check_disjoint(held, [{"prompt": "zz", "chosen": "a", "rejected": "b"},
                                {"prompt": "q0", "chosen": "good one", "rejected": "bad one"}])


def test_check_disjoint_bad_training_reply_names_it():
    with pytest.raises(ValueError, match=r"^t.jsonl:3: empty reply$"):
        C.check_disjoint([], [{"prompt": "q", "chosen": " ", "rejected": "b", "_where": "t.jsonl:3"}])
    with pytest.raises(ValueError, match=r"^training pair 0: reply must be"):
        C.check_disjoint([], [{"prompt": "q", "chosen": 3, "rejected": "b"}])
    with pytest.raises(ValueError, match=r"^t.jsonl:4: empty reply$"):
        C.check_disjoint([], [{"prompt": "q", "chosen": "a", "rejected": "", "_where": "t.jsonl:4"}])


# ----------------------------------------------------------------------------------------------------------
# sample_warnings / _degenerate_warnings / _vec / _check_count


def test_sample_warnings_boundaries():
    assert C.sample_warnings(30, 1000, 99) == []
    assert C.sample_warnings(500, 5000, 10_000) == []
    w = C.sample_warnings(29, 999, 98)
    assert w == [
        "n = 29 held-out pairs: bootstrap 95% CIs of a correlation are unreliable below 30 pairs (they "
        "under-cover); treat the intervals and p-values as rough (paper: 500)",
        "n_boot = 999: a 95% percentile interval from fewer than 1000 resamples has noisy ends",
        "n_perm = 98: the smallest attainable permutation p-value is 0.0101"]
    assert C.sample_warnings(5, 2000, 2000, level=0.9)[0].startswith("n = 5 held-out pairs: bootstrap 90% CIs")
    assert C.sample_warnings(100, 10, 2000, level=0.8) == [
        "n_boot = 10: a 80% percentile interval from fewer than 1000 resamples has noisy ends"]
    assert C.sample_warnings(100, 2000, 1) == ["n_perm = 1: the smallest attainable permutation p-value is 0.5"]
    assert C.MIN_N_FOR_CI == 30 and C.MIN_BOOT == 1000


def test_degenerate_warnings():
    assert C._degenerate_warnings({"z_s": [1, 2, 3], "z_T": np.array([0.5, -0.5])}) == []
    assert C._degenerate_warnings({"z_s": [1, 1, 1], "z_T": [0.0, 1.0], "z_X": np.zeros(4)}) == [
        "z_s is constant (every pair the same margin): its correlations are undefined (NaN)",
        "z_X is constant (every pair the same margin): its correlations are undefined (NaN)"]
    # integer input: ptp in float64 (uint8 ptp would wrap around)
    assert C._degenerate_warnings({"v": np.array([200, 10], dtype=np.uint8)}) == []
    # booleans are read as 0/1 numbers (np.ptp of a bool array raises)
    assert C._degenerate_warnings({"b": np.array([True, False]), "c": [True, True]}) == [
        "c is constant (every pair the same margin): its correlations are undefined (NaN)"]


def test_vec_and_check_count():
    v = C._vec([1, 2])
    assert v.dtype == np.float64 and v.tolist() == [1.0, 2.0]
    assert C._check_count(3, "n", 3) == 3
    for bad in (2, True, 3.0, "3", None):
        with pytest.raises(LLSError) as ei:
            C._check_count(bad, "n (held-out pairs)", 3)
        assert str(ei.value) == f"n (held-out pairs) must be an integer >= 3, got {bad!r}"


# ----------------------------------------------------------------------------------------------------------
# Progress


def test_progress_lines():
    lines = []
    p = C.Progress(2, log=lines.append, name="job")
    assert p.total == 2 and p.k == 0 and p.enabled is True and p.name == "job"
    p.stage("one")
    p.stage("two")
    p.stage("three")  # beyond total: capped
    p.note("hello")
    assert [l.rsplit(" (", 1)[0] for l in lines] == ["job [1/2] one", "job [2/2] two", "job [2/2] three",
                                                     "job: hello"]
    assert all(l.endswith(" s)") for l in lines[:3])
    assert p.k == 3
    q = C.Progress(0, enabled=False, log=lines.append)
    q.stage("x")
    q.note("y")
    assert len(lines) == 4 and q.total == 1 and q.name == "correlate" and q.bar is False and q.k == 1
    d = C.Progress("3", log=lines.append)
    d.stage("z")
    assert lines[-1].startswith("correlate [1/3] z (0 s)")


def test_progress_default_log_goes_to_stderr(capsys):
    p = C.Progress(1)
    p.stage("s")
    p.note("n")
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.splitlines()[0].startswith("correlate [1/1] s (")
    assert cap.err.splitlines()[1] == "correlate: n"


# ----------------------------------------------------------------------------------------------------------
# arm_report / arm_contrast


def test_arm_report_exact():
    z_s = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
    z_t = np.array([0.2, 0.1, -0.3, 0.4, 0.0])
    z_m = {20: np.array([2.0, 0.0, -1.0, 1.0, 0.5]), 5: [0.0, 0.0, 1.0, -1.0, 0.0]}
    rep = C.arm_report({"z_s": z_s, "z_T": z_t}, z_m, n_boot=30, n_perm=40, seed=3)
    assert [r["step"] for r in rep["checkpoints"]] == [5, 20]
    assert isinstance(rep["checkpoints"][0]["step"], int)
    assert rep["checkpoints"][0]["mean_z_M"] == 0.0 and rep["checkpoints"][0]["frac_z_M_pos"] == 0.2
    assert rep["checkpoints"][1]["mean_z_M"] == 0.5 and rep["checkpoints"][1]["frac_z_M_pos"] == 0.6
    assert list(rep["checkpoints"][1]["vs"]) == ["z_s", "z_T"]
    for row in rep["checkpoints"]:
        zm = np.asarray(z_m[row["step"]], float)
        assert row["vs"]["z_s"] == correlation_report(z_s, zm, n_boot=30, n_perm=40, seed=3)
        assert row["vs"]["z_T"] == correlation_report(z_t, zm, n_boot=30, n_perm=40, seed=3)
    assert rep["final"] is rep["checkpoints"][-1]["vs"]
    assert rep["final"]["z_s"]["cosine"] == pytest.approx(_cos(z_s, z_m[20]), abs=1e-12)
    assert set(rep) == {"checkpoints", "final"}


def test_arm_report_defaults():
    z_s = np.array([1.0, -2.0, 0.5, 3.0, -0.7, 2.2, 0.1, -1.3, 0.9, 1.7, -2.4, 0.3])
    zm = np.array([2.0, -1.0, 0.0, 1.5, 0.4, -0.3, 1.1, -2.0, 0.6, 0.2, -0.9, 1.8])
    rep = C.arm_report({"z_s": z_s}, {1: zm})
    assert rep["final"]["z_s"] == correlation_report(z_s, zm, n_boot=2000, n_perm=2000, seed=0)


def _arms(z_lls, z_rnd, steps=(10, 30)):
    """arm records as correlate_arms stores them: the last checkpoint row names the final step."""
    out = {}
    for name, final in (("lls", z_lls), ("random", z_rnd)):
        zm = {str(s): [0.0] * len(final) for s in steps[:-1]}
        zm[str(steps[-1])] = list(final)
        out[name] = {"checkpoints": [{"step": s} for s in steps], "z_M": zm}
    return out


def test_arm_contrast_exact():
    z_s = [1.0, -2.0, 0.5, 3.0, -1.0, 2.0]
    z_t = [0.5, 0.1, -0.3, 0.4, 0.2, -0.6]
    lls = [0.9, -1.5, 0.2, 2.0, -0.4, 1.0]
    rnd = [0.1, 0.3, -0.2, 0.0, 0.5, -0.1]
    arms = _arms(lls, rnd)
    res = C.arm_contrast({"z_s": z_s, "z_T": z_t}, arms, n_boot=40, seed=5)
    assert list(res) == ["z_s", "z_T"] and all(list(v) == ["cosine", "pearson"] for v in res.values())
    for ref, vec in (("z_s", z_s), ("z_T", z_t)):
        assert res[ref]["cosine"]["diff"] == pytest.approx(_cos(vec, lls) - _cos(vec, rnd), abs=1e-12)
        assert res[ref]["pearson"]["diff"] == pytest.approx(_pearson(vec, lls) - _pearson(vec, rnd), abs=1e-12)
        for stat in ("cosine", "pearson"):
            assert res[ref][stat] == paired_difference(stat, np.asarray(vec), np.asarray(lls), np.asarray(rnd),
                                                       n_boot=40, seed=5)
    # the final checkpoint is the last row, not the first (whose z_M is all zeros here)
    assert np.isfinite(res["z_s"]["cosine"]["diff"])


def test_arm_contrast_defaults():
    z_s = np.array([1.0, -2.0, 0.5, 3.0])
    lls, rnd = [0.9, -1.5, 0.2, 2.0], [0.1, 0.3, -0.2, 0.0]
    res = C.arm_contrast({"z_s": z_s}, _arms(lls, rnd, steps=(7,)))
    assert res["z_s"]["cosine"] == paired_difference("cosine", z_s, np.array(lls), np.array(rnd), n_boot=2000,
                                                      seed=0)


_NONZERO = st.floats(1e-3, 5) | st.floats(-5, -1e-3)


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 10).flatmap(lambda n: st.tuples(*[st.lists(_NONZERO, min_size=n, max_size=n)] * 3)),
       st.integers(0, 50))
def test_arm_contrast_is_the_paired_difference_on_the_same_draws(vecs, seed):
    """diff = stat(ref, lls) - stat(ref, random); every bootstrap draw resamples the items jointly, so the
    CI equals the one of the two arms' statistics computed on the same index draws."""
    ref, lls, rnd = (np.asarray(v) for v in vecs)
    res = C.arm_contrast({"z_s": ref}, _arms(lls, rnd), n_boot=25, seed=seed)["z_s"]["cosine"]
    assert res["diff"] == pytest.approx(_cos(ref, lls) - _cos(ref, rnd), abs=1e-9)
    from lls_theory.stats import _resamples  # the seeded index stream of every bootstrap of lls_theory.stats

    draws = np.concatenate(list(_resamples(ref.size, 25, seed, 500)))
    d = np.array([_cos(ref[i], lls[i]) - _cos(ref[i], rnd[i]) for i in draws])
    d = d[np.isfinite(d)]
    if d.size:
        lo, hi = np.percentile(d, [2.5, 97.5])
        assert res["ci"][0] == pytest.approx(lo, abs=1e-9) and res["ci"][1] == pytest.approx(hi, abs=1e-9)
        # p = (1 + #{d_b <= 0}) / (1 + B); a draw with d_b within round-off of 0 may count either way
        lo_p, hi_p = ((1 + np.sum(d <= t)) / (1 + d.size) for t in (-1e-12, 1e-12))
        assert lo_p - 1e-12 <= res["p"] <= hi_p + 1e-12


# ----------------------------------------------------------------------------------------------------------
# _as_pair / _load_heldout / _training_data / check_arm_disjoint / _checkpoints


def test_as_pair():
    p = C._as_pair({"prompt": ({"role": "user", "content": "q"},), "chosen": [{"role": "assistant", "content": "c"}],
                    "rejected": "r"}, 4)
    assert p == PrefPair("4", ({"role": "user", "content": "q"},), "c", "r", "held-out pair 4")
    p = C._as_pair({"id": 17, "prompt": "q", "chosen": "c", "rejected": "r", "_where": "f.jsonl:2"}, 0)
    assert p.id == "17" and p.where == "f.jsonl:2" and p.messages == [{"role": "user", "content": "q"}]
    with pytest.raises(ValueError, match=r"^held-out pair 2: empty prompt$"):
        C._as_pair({"prompt": " ", "chosen": "c", "rejected": "r"}, 2)
    with pytest.raises(ValueError, match=r"^f:1: empty reply$"):
        C._as_pair({"prompt": "q", "chosen": "c", "rejected": "", "_where": "f:1"}, 2)
    with pytest.raises(ValueError, match=r"^held-out pair 3: reply must be"):
        C._as_pair({"prompt": "q", "chosen": 1, "rejected": "r"}, 3)


def _pairs(n, stem="p"):
    return [{"id": f"{stem}{k}", "prompt": f"prompt {stem} {k}?", "chosen": f"yes {k}", "rejected": f"no {k}"}
            for k in range(n)]


def test_load_heldout(tmp_path):
    path = _write_jsonl(tmp_path / "held.jsonl", _pairs(5))
    recs = C._load_heldout(path, 4)
    assert [r["id"] for r in recs] == ["p0", "p1", "p2", "p3"]
    assert recs[1] == {"id": "p1", "prompt": [{"role": "user", "content": "prompt p 1?"}], "chosen": "yes 1",
                       "rejected": "no 1", "_where": f"{path}:2"}
    assert len(C._load_heldout(path, 100)) == 5
    small = _write_jsonl(tmp_path / "small.jsonl", _pairs(2))
    with pytest.raises(LLSError) as ei:
        C._load_heldout(small, 10)
    assert str(ei.value) == f"{small}: need >= 3 held-out pairs, got 2"
    assert len(C._load_heldout(path, 3)) == 3
    with pytest.raises(LLSError, match="got 2$"):
        C._load_heldout(path, 2)


def test_load_heldout_forwards_the_source_options(monkeypatch):
    from empirical.stages import data

    seen = []

    def load_pairs(source, **kw):
        seen.append((source, kw))
        return [PrefPair(f"x{k}", ({"role": "user", "content": "q"},), "c", "r", f"w{k}") for k in range(3)], None

    monkeypatch.setattr(data, "load_pairs", load_pairs)
    recs = C._load_heldout("org/name", 3, split="test", config="cfg", data_dir="dd")
    assert seen == [("org/name", {"limit": 3, "split": "test", "config": "cfg", "data_dir": "dd"})]
    assert [r["_where"] for r in recs] == ["w0", "w1", "w2"]
    C._load_heldout("org/name", 7)
    assert seen[-1] == ("org/name", {"limit": 7, "split": "train", "config": None, "data_dir": None})


def _make_run(root: Path, name: str, data: Path | None, steps=(10, 20), run_json: object = "auto") -> Path:
    run = root / name
    for s in steps:
        (run / f"checkpoint-{s}").mkdir(parents=True)
        (run / f"checkpoint-{s}" / "adapter_config.json").write_text("{}")
    run.mkdir(parents=True, exist_ok=True)
    if run_json == "auto":
        (run / "run.json").write_text(json.dumps({"data": str(data)}))
    elif run_json is not None:
        (run / "run.json").write_text(run_json)
    return run


def test_training_data_and_checkpoints(tmp_path):
    data = _write_jsonl(tmp_path / "train.jsonl", _pairs(3, "t"))
    run = _make_run(tmp_path, "r", data, steps=(20, 5))
    assert C._training_data(run) == str(data)
    assert C._checkpoints(run) == [(5, run / "checkpoint-5"), (20, run / "checkpoint-20")]
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        C._training_data(_make_run(tmp_path, "empty", data, steps=()))
    norun = _make_run(tmp_path, "norun", data, run_json=None)
    with pytest.raises(FileNotFoundError) as ei:
        C._training_data(norun)
    assert str(ei.value) == f"{norun}: run.json missing (not an `lls train` run)"
    with pytest.raises(FileNotFoundError):
        C._checkpoints(norun)
    bad = _make_run(tmp_path, "bad", data, run_json="{oops")
    with pytest.raises(LLSError) as ei:
        C._training_data(bad)
    assert str(ei.value) == f"{bad / 'run.json'}: unreadable (JSONDecodeError); not an `lls train` run?"
    lst = _make_run(tmp_path, "list", data, run_json="[1]")
    with pytest.raises(LLSError) as ei:
        C._training_data(lst)
    assert str(ei.value) == f"{lst / 'run.json'}: unreadable (AttributeError); not an `lls train` run?"
    for i, content in enumerate(('{"data": ""}', '{"data": 3}', '{}')):
        r = _make_run(tmp_path, f"nodata{i}", data, run_json=content)
        with pytest.raises(LLSError) as ei:
            C._training_data(r)
        assert str(ei.value) == f"{r / 'run.json'}: no 'data' entry naming the training pairs"


def test_check_arm_disjoint(tmp_path):
    data = _write_jsonl(tmp_path / "train.jsonl", _pairs(3, "t"))
    run = _make_run(tmp_path, "r", data)
    held = [C._as_pair(r, k) for k, r in enumerate(_pairs(3, "h"))]
    C.check_arm_disjoint(held, run, "lls")
    overlap = [C._as_pair(r, k) for k, r in enumerate(_pairs(2, "h") + _pairs(2, "t"))]
    with pytest.raises(LLSError) as ei:
        C.check_arm_disjoint(overlap, run, "random")
    assert str(ei.value).startswith(f"held-out pair 2 (id 't0', held-out pair 2) is in the training subset of arm "
                                    f"random ({data}) ({data}:1)")
    with pytest.raises(LLSError, match=r"the training subset of arm lls \("):
        C.check_arm_disjoint(overlap, run)
    broken = _write_jsonl(tmp_path / "broken.jsonl", [{"id": "x", "prompt": "q"}])
    brun = _make_run(tmp_path, "b", broken)
    with pytest.raises(LLSError) as ei:
        C.check_arm_disjoint(held, brun, "lls")
    msg = str(ei.value)
    assert msg.startswith(f"arm lls ({brun}): its training data {broken} cannot be read for the held-out overlap "
                          f"check: {broken}:1")
    assert "\n" not in msg


# ----------------------------------------------------------------------------------------------------------
# a model's placement (device, dtype of its parameters)


class _Dev:
    def __init__(self, s):
        self.s = s

    def __str__(self):
        return self.s


class _Param:
    device = _Dev("cuda:1")
    dtype = _Dev("torch.bfloat16")


class _FakeModel:
    def parameters(self):
        yield _Param()
        yield None


# ----------------------------------------------------------------------------------------------------------
# checkpoint_margins / correlate_arms through a fake peft and a fake scorer


class _FakePeft:
    """Stands for peft.PeftModel: records the calls; the adapter in use decides the fake log-probs."""

    log: list = []

    def __init__(self, model):
        self.model, self.active, self.adapters = model, None, {}

    @classmethod
    def from_pretrained(cls, model, path, adapter_name):
        cls.log.append(("from_pretrained", model, path, adapter_name))
        obj = cls(model)
        obj.adapters[adapter_name] = path
        return obj

    def load_adapter(self, path, adapter_name):
        self.log.append(("load_adapter", path, adapter_name))
        self.adapters[adapter_name] = path

    def set_adapter(self, name):
        self.log.append(("set_adapter", name))
        self.active = name

    def eval(self):
        self.log.append(("eval",))

    def unload(self):
        self.log.append(("unload",))


def _fake_logps(step: int, n: int):
    k = np.arange(n, dtype=np.float64)
    return -1.0 - 0.5 * k - 0.01 * step, -2.0 - 0.25 * k * (1 + step % 3)


@pytest.fixture
def fake_scoring(monkeypatch):
    _FakePeft.log = []
    monkeypatch.setitem(sys.modules, "peft", types.SimpleNamespace(PeftModel=_FakePeft))
    calls = []

    def score_pairs(model, tok, recs, system, progress=False, reference="auto"):
        calls.append({"model": model, "tok": tok, "n": len(recs), "system": system, "progress": progress,
                      "reference": reference, "active": getattr(model, "active", None)})
        step = int(model.active[len("step"):])
        lc, lr = _fake_logps(step, len(recs))
        return PairScores(lc, lr, np.ones(len(recs), np.int64), np.ones(len(recs), np.int64))

    monkeypatch.setattr(scoring, "score_pairs", score_pairs)
    return calls


def _base(n):
    k = np.arange(n, dtype=np.float64)
    return PairScores(-1.5 - k, -1.0 - 2 * k, np.ones(n, np.int64), np.ones(n, np.int64))


def _digest(recs, reference="auto"):
    return hashlib.sha256(json.dumps([reference, recs], sort_keys=True).encode()).hexdigest()


def _key(recs, adapter, reference="auto"):
    """The cache key of one checkpoint: the pairs and rendering, the adapter's content, the base model."""
    return {"recs": _digest(recs, reference), "adapter": C.adapter_digest(adapter), "model": None}


def test_checkpoint_margins_scores_and_caches(tmp_path, fake_scoring):
    recs = _pairs(4, "h")
    run = _make_run(tmp_path, "myrun", None, steps=(30, 10))
    base = _base(4)
    lines = []
    prog = C.Progress(10, log=lines.append)
    model, tok = object(), object()
    out = C.checkpoint_margins(model, tok, recs, base, run, cache_dir=tmp_path / "cache", progress=prog, arm="lls")
    assert list(out) == [10, 30]
    for step in (10, 30):
        lc, lr = _fake_logps(step, 4)
        assert out[step].dtype == np.float64
        assert np.allclose(out[step], (lc - lr) - (base.logp_chosen - base.logp_rejected), atol=1e-12)
    assert _FakePeft.log == [("from_pretrained", model, str(run / "checkpoint-10"), "step10"),
                             ("set_adapter", "step10"), ("eval",),
                             ("load_adapter", str(run / "checkpoint-30"), "step30"),
                             ("set_adapter", "step30"), ("eval",), ("unload",)]
    assert [c["system"] for c in fake_scoring] == [None, None]
    assert all(c["tok"] is tok and c["reference"] == "auto" and c["progress"] is False and c["n"] == 4
               for c in fake_scoring)
    assert [l.rsplit(" (", 1)[0] for l in lines] == ["correlate [1/10] arm lls, checkpoint step 10: scoring 4 pairs",
                                                     "correlate [2/10] arm lls, checkpoint step 30: scoring 4 pairs"]
    for step in (10, 30):
        saved = json.loads((tmp_path / "cache" / f"myrun-step{step}.json").read_text())
        lc, lr = _fake_logps(step, 4)
        assert saved == {"key": _key(recs, run / f"checkpoint-{step}"), "adapter_path": str(run / f"checkpoint-{step}"),
                         "logp_chosen": lc.tolist(), "logp_rejected": lr.tolist()}
    # second call: every checkpoint from the cache, no adapter loaded, no scoring
    _FakePeft.log.clear()
    lines.clear()
    again = C.checkpoint_margins(None, None, recs, base, run, cache_dir=tmp_path / "cache",
                                 progress=C.Progress(2, log=lines.append))
    assert _FakePeft.log == [] and len(fake_scoring) == 2
    assert {k: v.tolist() for k, v in again.items()} == {k: v.tolist() for k, v in out.items()}
    assert [l.rsplit(" (", 1)[0] for l in lines] == ["correlate [1/2] checkpoint step 10: saved log-probs reused",
                                                     "correlate [2/2] checkpoint step 30: saved log-probs reused"]


def test_checkpoint_margins_cache_is_keyed_by_pairs_and_reference(tmp_path, fake_scoring):
    recs = _pairs(3, "h")
    run = _make_run(tmp_path, "r", None, steps=(4,))
    cache = tmp_path / "c"
    C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache, reference="empty")
    assert json.loads((cache / "r-step4.json").read_text())["key"]["recs"] == _digest(recs, "empty")
    assert fake_scoring[-1]["reference"] == "empty"
    n = len(fake_scoring)
    C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache, reference="empty")
    assert len(fake_scoring) == n  # reused
    C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache)  # other reference: rescored
    assert len(fake_scoring) == n + 1
    assert json.loads((cache / "r-step4.json").read_text())["key"]["recs"] == _digest(recs)
    C.checkpoint_margins(object(), None, recs[:2], _base(2), run, cache_dir=cache)  # other pairs: rescored
    assert len(fake_scoring) == n + 2


def test_checkpoint_margins_cache_is_keyed_by_adapter_content_not_path(tmp_path, fake_scoring):
    """A retrained adapter at the same path (other weights) is scored again; the same weights are reused."""
    recs = _pairs(3, "h")
    run = _make_run(tmp_path, "r", None, steps=(4,))
    ck = run / "checkpoint-4"
    (ck / "adapter_model.safetensors").write_bytes(b"weights-1")
    cache = tmp_path / "c"
    C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache)
    C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache)
    assert len(fake_scoring) == 1  # same content: reused
    (ck / "adapter_model.safetensors").write_bytes(b"weights-2")  # retrained: same path, same size
    C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache)
    assert len(fake_scoring) == 2
    (ck / "adapter_config.json").write_text('{"r": 8}')  # another adapter configuration
    C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache)
    assert len(fake_scoring) == 3


def test_checkpoint_margins_cache_is_keyed_by_base_model(tmp_path, fake_scoring, monkeypatch):
    recs = _pairs(3, "h")
    run = _make_run(tmp_path, "r", None, steps=(4,))
    cache = tmp_path / "c"
    ids = iter([{"folder_sha256": "a"}, {"folder_sha256": "a"}, {"folder_sha256": "b"}])
    monkeypatch.setattr(C, "model_identity", lambda model: next(ids))
    for _ in range(3):
        C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache)
    assert len(fake_scoring) == 2  # the second call reused, the third (another model) rescored


@pytest.mark.parametrize("damage", [
    "not json", json.dumps([1, 2]), json.dumps({"recs": "x"}),
    "GOOD:logp_chosen=[-1.0,-1.0]", "GOOD:logp_chosen=[-1.0,-1.0,NaN]", "GOOD:logp_rejected=[-1.0,-1.0,Infinity]",
    "GOOD:logp_rejected=[-1.0,-1.0,-1.0,-1.0]", "GOOD:logp_chosen=\"abc\"", "GOOD:logp_chosen=null",
    "GOOD:-logp_rejected",
    "GOOD:logp_chosen=[[-1.0,-1.0,-1.0]]"])
def test_checkpoint_margins_damaged_cache_is_rescored(tmp_path, fake_scoring, damage):
    recs = _pairs(3, "h")
    run = _make_run(tmp_path, "r", None, steps=(2,))
    cache = tmp_path / "c"
    cache.mkdir()
    if damage.startswith("GOOD:"):
        doc = {"key": _key(recs, run / "checkpoint-2"), "logp_chosen": [-1.0] * 3, "logp_rejected": [-2.0] * 3}
        edit = damage[len("GOOD:"):]
        if edit.startswith("-"):
            del doc[edit[1:]]
        else:
            key, val = edit.split("=", 1)
            doc[key] = json.loads(val)
        text = json.dumps(doc)
    else:
        text = damage
    (cache / "r-step2.json").write_text(text)
    out = C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache)
    lc, lr = _fake_logps(2, 3)
    assert np.allclose(out[2], (lc - lr) - (_base(3).logp_chosen - _base(3).logp_rejected))
    assert len(fake_scoring) == 1


def test_checkpoint_margins_good_cache_is_exact(tmp_path, fake_scoring):
    recs = _pairs(3, "h")
    run = _make_run(tmp_path, "r", None, steps=(2,))
    cache = tmp_path / "c"
    cache.mkdir()
    (cache / "r-step2.json").write_text(json.dumps({"key": _key(recs, run / "checkpoint-2"),
                                                    "logp_chosen": [-1, -2, -3], "logp_rejected": [-4, -4, -4]}))
    out = C.checkpoint_margins(object(), None, recs, _base(3), run, cache_dir=cache)
    assert fake_scoring == [] and _FakePeft.log == []
    assert out[2].dtype == np.float64
    # (lc - lr) - (base_c - base_r) with base_c = -1.5 - k, base_r = -1 - 2k: [3 + 0.5, 2 - 0.5, 1 - 1.5]
    assert out[2].tolist() == [3.5, 1.5, -0.5]


def test_checkpoint_margins_without_cache_and_unload_on_error(tmp_path, fake_scoring, monkeypatch):
    recs = _pairs(3, "h")
    run = _make_run(tmp_path, "r", None, steps=(1, 2))
    out = C.checkpoint_margins(object(), None, recs, _base(3), run)
    assert sorted(out) == [1, 2] and not (tmp_path / "None").exists()
    assert _FakePeft.log[-1] == ("unload",)
    _FakePeft.log.clear()

    def boom(*a, **k):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(scoring, "score_pairs", boom)
    with pytest.raises(RuntimeError, match="scoring failed"):
        C.checkpoint_margins(object(), None, recs, _base(3), run)
    assert _FakePeft.log[-1] == ("unload",)
    with pytest.raises(FileNotFoundError, match="no LoRA adapter"):
        C.checkpoint_margins(object(), None, recs, _base(3), _make_run(tmp_path, "e", None, steps=()))


def test_checkpoint_margins_progress_bar_flag(tmp_path, fake_scoring, monkeypatch):
    recs = _pairs(3, "h")
    run = _make_run(tmp_path, "r", None, steps=(1,))
    monkeypatch.setattr(C.Progress, "bar", property(lambda self: True))
    C.checkpoint_margins(object(), None, recs, _base(3), run, progress=C.Progress(1, log=lambda m: None))
    assert fake_scoring[-1]["progress"] is True


def _sys_scores(n):
    k = np.arange(n, dtype=np.float64)
    return PairScores(-1.0 - 0.5 * k * k, -1.2 - 1.5 * k, np.ones(n, np.int64), np.ones(n, np.int64))


def test_correlate_arms_fields(tmp_path, fake_scoring):
    n = 5
    recs = _pairs(n, "h")
    recs[2]["id"] = 42
    data = _write_jsonl(tmp_path / "train.jsonl", _pairs(3, "t"))
    arms = {"lls": _make_run(tmp_path, "lls_run", data, steps=(3, 6)),
            "random": str(_make_run(tmp_path, "rnd_run", data, steps=(4, 8)))}
    base, sys_ = _base(n), _sys_scores(n)
    k = np.arange(n, dtype=np.float64)
    t_base = PairScores(-2.0 - k, -3.0 + 0.0 * k, base.n_chosen, base.n_rejected)
    t_sys = PairScores(-2.0 - np.array([0.0, 3.0, 1.0, 0.5, 4.0]), -3.0 - np.array([1.0, 0.0, 2.0, 0.25, 1.0]),
                       base.n_chosen, base.n_rejected)
    lines = []
    model = object()
    res = C.correlate_arms((model, "TOK"), base, sys_, recs, arms, teacher=(t_base, t_sys), n_boot=30,
                           n_perm=20, seed=2, progress=C.Progress(9, log=lines.append), reference="empty",
                           cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "lls_run-step3.json", "lls_run-step6.json", "rnd_run-step4.json", "rnd_run-step8.json"]
    assert [e[1] for e in _FakePeft.log if e[0] == "from_pretrained"] == [model, model]
    z_s = (sys_.logp_chosen - sys_.logp_rejected) - (base.logp_chosen - base.logp_rejected)
    z_t = (t_sys.logp_chosen - t_sys.logp_rejected) - (t_base.logp_chosen - t_base.logp_rejected)
    assert res["n"] == n and res["ids"] == ["h0", "h1", "42", "h3", "h4"]
    assert np.allclose(res["z_s"], z_s) and np.allclose(res["z_T"], z_t)
    assert all(type(v) is float for v in res["z_s"] + res["z_T"])
    assert "device" not in res and "dtype" not in res  # a model without parameters: no placement
    assert res["warnings"] == C.sample_warnings(n, 30, 20)
    assert [l for l in lines if "warning" in l] == [f"correlate: warning: {w}" for w in res["warnings"]]
    assert res["teacher_vs_student"] == correlation_report(z_t, z_s, n_boot=30, n_perm=20, seed=2)
    assert res["teacher_vs_student"] != correlation_report(z_t, z_s)  # the options reach it
    assert list(res["arms"]) == ["lls", "random"]
    for name, steps in (("lls", (3, 6)), ("random", (4, 8))):
        rep = res["arms"][name]
        assert rep["run"] == str(arms[name])
        assert list(rep["z_M"]) == [str(s) for s in steps]
        z_m = {}
        for s in steps:
            lc, lr = _fake_logps(s, n)
            z_m[s] = (lc - lr) - (base.logp_chosen - base.logp_rejected)
            assert np.allclose(rep["z_M"][str(s)], z_m[s]) and all(type(v) is float for v in rep["z_M"][str(s)])
        want = C.arm_report({"z_s": z_s, "z_T": z_t}, z_m, n_boot=30, n_perm=20, seed=2)
        assert rep["checkpoints"] == want["checkpoints"]
    assert all(c["reference"] == "empty" and c["tok"] == "TOK" for c in fake_scoring)
    assert res["lls_minus_random"] == C.arm_contrast({"z_s": z_s, "z_T": z_t}, res["arms"], n_boot=30, seed=2)
    assert [l.rsplit(" (", 1)[0] for l in lines if "[" in l] == [
        "correlate [1/9] arm lls, checkpoint step 3: scoring 5 pairs",
        "correlate [2/9] arm lls, checkpoint step 6: scoring 5 pairs",
        "correlate [3/9] arm random, checkpoint step 4: scoring 5 pairs",
        "correlate [4/9] arm random, checkpoint step 8: scoring 5 pairs"]


def test_correlate_arms_defaults_single_arm_and_constant_warning(tmp_path, fake_scoring):
    n = 4
    recs = _pairs(n, "h")
    data = _write_jsonl(tmp_path / "train.jsonl", _pairs(3, "t"))
    base = _base(n)
    flat = PairScores(base.logp_chosen + 1.0, base.logp_rejected + 1.0, base.n_chosen, base.n_rejected)  # z_s = 0
    res = C.correlate_arms((_FakeModel(), None), base, flat, recs, {"lls": _make_run(tmp_path, "l", data, (1,))})
    assert "z_T" not in res and "teacher_vs_student" not in res and "lls_minus_random" not in res
    assert res["z_s"] == [0.0] * n
    assert res["device"] == "cuda:1" and res["dtype"] == "bfloat16"  # placement of a model with parameters
    assert res["warnings"] == C.sample_warnings(n, 2000, 2000) + [
        "z_s is constant (every pair the same margin): its correlations are undefined (NaN)"]
    z_m = {1: np.asarray(res["arms"]["lls"]["z_M"]["1"])}
    want = C.arm_report({"z_s": np.zeros(n)}, z_m)["checkpoints"]  # NaN correlations: compare as JSON
    assert json.dumps(res["arms"]["lls"]["checkpoints"]) == json.dumps(want)
    assert fake_scoring[0]["reference"] == "auto"


def test_correlate_arms_defaults(tmp_path, fake_scoring):
    n = 12
    recs = _pairs(n, "h")
    data = _write_jsonl(tmp_path / "train.jsonl", _pairs(3, "t"))
    base, sys_ = _base(n), _sys_scores(n)
    k = np.arange(n, dtype=np.float64)
    teacher = (base, PairScores(base.logp_chosen - np.sin(k), base.logp_rejected - np.cos(3 * k),
                                base.n_chosen, base.n_rejected))
    res = C.correlate_arms((object(), None), base, sys_, recs, {"lls": _make_run(tmp_path, "l", data, (1,))},
                           teacher=teacher)
    z_s, z_t = np.asarray(res["z_s"]), np.asarray(res["z_T"])
    z_m = {1: np.asarray(res["arms"]["lls"]["z_M"]["1"])}
    assert res["arms"]["lls"]["checkpoints"] == C.arm_report({"z_s": z_s, "z_T": z_t}, z_m, n_boot=2000,
                                                             n_perm=2000, seed=0)["checkpoints"]
    assert res["teacher_vs_student"] == correlation_report(z_t, z_s, n_boot=2000, n_perm=2000, seed=0)
    assert res["warnings"] == C.sample_warnings(n, 2000, 2000)


def test_correlate_arms_refuses_overlap_before_scoring(tmp_path, fake_scoring):
    recs = _pairs(4, "h")
    ok = _write_jsonl(tmp_path / "ok.jsonl", _pairs(3, "t"))
    leak = _write_jsonl(tmp_path / "leak.jsonl", _pairs(3, "t") + [_pairs(4, "h")[3]])
    arms = {"lls": _make_run(tmp_path, "l", ok, (1,)), "random": _make_run(tmp_path, "r", leak, (1,))}
    with pytest.raises(LLSError) as ei:
        C.correlate_arms((object(), None), _base(4), _sys_scores(4), recs, arms)
    assert str(ei.value).startswith(f"held-out pair 3 (id 'h3', held-out pair 3) is in the training subset of arm "
                                    f"random ({leak})")
    assert fake_scoring == [] and _FakePeft.log == []


# ----------------------------------------------------------------------------------------------------------
# correlate_run with fake models.load / resolve_source / scorer / peft


class _LM:
    def __init__(self, tag, device="cpu", dtype="torch.float32"):
        self.tag, self.evals = tag, 0
        self._p = types.SimpleNamespace(device=_Dev(device), dtype=_Dev(dtype))

    def parameters(self):
        yield self._p

    def eval(self):
        self.evals += 1


def _run_logps(model, system, n):
    """Fake log-probs: the adapter step for a PEFT-wrapped student, else the model's tag and the system prompt."""
    k = np.arange(n, dtype=np.float64)
    if isinstance(model, _FakePeft):
        return _fake_logps(int(model.active[len("step"):]), n)
    off = {"student": 0.0, "teacher": 1.0}[model.tag]
    if system is None:
        return -1.0 - k - off, -2.0 - 0.5 * k * k
    return -1.0 - np.sqrt(k) - 2 * off, -2.0 - 0.5 * k * k + np.cos(k) + off


@pytest.fixture
def fake_models(monkeypatch):
    from empirical.engine import models

    _FakePeft.log = []
    monkeypatch.setitem(sys.modules, "peft", types.SimpleNamespace(PeftModel=_FakePeft))
    ev = {"resolve": [], "load": [], "score": []}

    def resolve_source(spec, revision=None, trust_remote_code=False):
        ev["resolve"].append((spec, revision, trust_remote_code))
        if spec == "nope":
            raise LLSError("nope: unknown model")

    def load(spec, **kw):
        ev["load"].append((spec, kw))
        tag = "teacher" if spec == "T" else "student"
        return _LM(tag, *(("cuda:0", "torch.bfloat16") if tag == "teacher" else ())), f"tok-{tag}"

    def score_pairs(model, tok, recs, system, progress=False, reference="auto"):
        ev["score"].append((getattr(model, "tag", "peft"), tok, len(recs), system, progress, reference))
        lc, lr = _run_logps(model, system, len(recs))
        return PairScores(lc, lr, np.ones(len(recs), np.int64), np.ones(len(recs), np.int64))

    monkeypatch.setattr(models, "resolve_source", resolve_source)
    monkeypatch.setattr(models, "load", load)
    monkeypatch.setattr(scoring, "score_pairs", score_pairs)
    return ev


def _setup_runs(tmp_path, n_held=5):
    held = _write_jsonl(tmp_path / "held.jsonl", _pairs(n_held, "h"))
    data = _write_jsonl(tmp_path / "train.jsonl", _pairs(3, "t"))
    return held, _make_run(tmp_path, "lls", data, (2, 4)), _make_run(tmp_path, "rnd", data, (3,))


def test_correlate_run_two_models_two_arms(tmp_path, fake_models):
    held, lls, rnd = _setup_runs(tmp_path)
    lines = []
    res = C.correlate_run("S", lls, "Be kind.", held, n=10, seed=1, n_boot=25, n_perm=15, dtype="bfloat16",
                          control_run=rnd, teacher="T", device="cpu", revision="r1", trust_remote_code=True,
                          log=lines.append, reference="empty")
    assert fake_models["resolve"] == [("S", "r1", True), ("T", "r1", True)]
    kw = {"dtype": "bfloat16", "device": "cpu", "revision": "r1", "trust_remote_code": True}
    assert fake_models["load"] == [("T", kw), ("S", kw)]
    assert [e[:4] for e in fake_models["score"]] == [
        ("teacher", "tok-teacher", 5, None), ("teacher", "tok-teacher", 5, "Be kind."),
        ("student", "tok-student", 5, None), ("student", "tok-student", 5, "Be kind."),
        ("peft", "tok-student", 5, None), ("peft", "tok-student", 5, None), ("peft", "tok-student", 5, None)]
    assert all(e[4] is False and e[5] == "empty" for e in fake_models["score"])
    n = 5
    sb, ss = _run_logps(_LM("student"), None, n), _run_logps(_LM("student"), "x", n)
    tb, ts = _run_logps(_LM("teacher"), None, n), _run_logps(_LM("teacher"), "x", n)
    z_s = (ss[0] - ss[1]) - (sb[0] - sb[1])
    z_t = (ts[0] - ts[1]) - (tb[0] - tb[1])
    assert np.allclose(res["z_s"], z_s, atol=1e-12) and np.allclose(res["z_T"], z_t, atol=1e-12)
    assert res["ids"] == [f"h{k}" for k in range(n)] and res["n"] == n
    for arm, steps in (("lls", (2, 4)), ("random", (3,))):
        assert list(res["arms"][arm]["z_M"]) == [str(s) for s in steps]
        for s in steps:
            lc, lr = _fake_logps(s, n)
            assert np.allclose(res["arms"][arm]["z_M"][str(s)], (lc - lr) - (sb[0] - sb[1]), atol=1e-12)
    assert res["arms"]["lls"]["run"] == str(lls) and res["arms"]["random"]["run"] == str(rnd)
    assert res["lls_minus_random"] == C.arm_contrast({"z_s": np.asarray(res["z_s"]), "z_T": np.asarray(res["z_T"])},
                                                     res["arms"], n_boot=25, seed=1)
    assert res["teacher_vs_student"] == correlation_report(np.asarray(res["z_T"]), np.asarray(res["z_s"]),
                                                           n_boot=25, n_perm=15, seed=1)
    assert {k: res[k] for k in ("student", "teacher", "heldout", "system_prompt", "seed", "n_boot", "n_perm",
                                "device", "dtype", "teacher_placement")} == {
        "student": "S", "teacher": "T", "heldout": str(held), "system_prompt": "Be kind.", "seed": 1,
        "n_boot": 25, "n_perm": 15, "device": "cpu", "dtype": "float32",
        "teacher_placement": {"device": "cuda:0", "dtype": "bfloat16"}}
    assert res["warnings"] == C.sample_warnings(n, 25, 15) + [
        f"{held}: 5 usable held-out pairs, fewer than the 10 asked for"]
    stages = [l.rsplit(" (", 1)[0] for l in lines if l.startswith("correlate [")]
    assert stages == [
        "correlate [1/7] teacher without system prompt: scoring 5 pairs on cuda:0",
        "correlate [2/7] teacher with system prompt: scoring 5 pairs",
        "correlate [3/7] student without system prompt: scoring 5 pairs on cpu (float32)",
        "correlate [4/7] student with system prompt: scoring 5 pairs",
        "correlate [5/7] arm lls, checkpoint step 2: scoring 5 pairs",
        "correlate [6/7] arm lls, checkpoint step 4: scoring 5 pairs",
        "correlate [7/7] arm random, checkpoint step 3: scoring 5 pairs"]
    notes = [l for l in lines if l.startswith("correlate: ")]
    assert notes[:2] == ["correlate: loading teacher T", "correlate: loading student S"]
    assert notes[-1].startswith("correlate: done in ") and notes[-1].endswith(" s")
    assert f"correlate: warning: {res['warnings'][0]}" in notes


def test_correlate_run_given_model_same_teacher_defaults(tmp_path, fake_models):
    held, lls, _ = _setup_runs(tmp_path, n_held=4)
    lm = _LM("student")
    res = C.correlate_run("S", lls, "Be kind.", held, teacher="S", model_and_tok=(lm, "tok-given"), progress=False,
                          log=lambda m: pytest.fail(f"progress disabled but logged {m!r}"))
    assert fake_models["resolve"] == [] and fake_models["load"] == [] and lm.evals == 1
    assert "z_T" not in res and "teacher_placement" not in res and "lls_minus_random" not in res
    assert res["teacher"] == "S" and res["seed"] == 0 and res["n_boot"] == 2000 and res["n_perm"] == 2000
    assert all(e[1] == "tok-given" and e[5] == "auto" for e in fake_models["score"])
    assert res["warnings"] == C.sample_warnings(4, 2000, 2000) + [  # default n = 500 asked, 4 in the file
        f"{held}: 4 usable held-out pairs, fewer than the 500 asked for"]
    zs = np.asarray(res["z_s"])
    z_m = {int(k): np.asarray(v) for k, v in res["arms"]["lls"]["z_M"].items()}
    assert res["arms"]["lls"]["checkpoints"] == C.arm_report({"z_s": zs}, z_m, n_boot=2000, n_perm=2000,
                                                             seed=0)["checkpoints"]


def test_correlate_run_loads_with_the_default_model_arguments(tmp_path, fake_models):
    held, lls, _ = _setup_runs(tmp_path, n_held=3)
    res = C.correlate_run("S", lls, "Be kind.", held, n=3, n_boot=5, n_perm=5, progress=False)
    assert fake_models["resolve"] == [("S", None, False)]
    assert fake_models["load"] == [("S", {"dtype": "float32", "device": "auto", "revision": None,
                                          "trust_remote_code": False})]
    assert res["teacher"] == "S" and res["n"] == 3
    assert not any("usable held-out pairs" in w for w in res["warnings"])


@pytest.mark.parametrize("kw, msg", [
    ({"system_prompt": "  \n"}, "system prompt must have visible text"),
    ({"system_prompt": 3}, "system prompt must have visible text"),
    ({"n": 2}, "n (held-out pairs) must be an integer >= 3, got 2"),
    ({"n_boot": 0}, "n_boot must be an integer >= 1, got 0"),
    ({"n_perm": 0}, "n_perm must be an integer >= 1, got 0"),
    ({"seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"student": "nope"}, "nope: unknown model"),
    ({"teacher": "nope"}, "nope: unknown model"),
])
def test_correlate_run_refuses_bad_input_before_any_load(tmp_path, fake_models, kw, msg):
    held, lls, _ = _setup_runs(tmp_path)
    args = {"student": "S", "run": lls, "system_prompt": "Be kind.", "heldout": held, **kw}
    with pytest.raises(LLSError) as ei:
        C.correlate_run(**args, progress=False)
    assert str(ei.value) == msg
    assert fake_models["load"] == [] and fake_models["score"] == []
    assert fake_models["resolve"] == ([] if "student" not in kw and "teacher" not in kw else
                                      [("nope", None, False)] if "student" in kw else
                                      [("S", None, False), ("nope", None, False)])


def test_correlate_run_refuses_overlap_and_missing_runs_before_any_load(tmp_path, fake_models):
    held, lls, _ = _setup_runs(tmp_path)
    leak = _make_run(tmp_path, "leak", _write_jsonl(tmp_path / "leak.jsonl", _pairs(2, "h")), (1,))
    with pytest.raises(LLSError, match=r"^held-out pair 0 \(id 'h0', .*arm random"):
        C.correlate_run("S", lls, "Be kind.", held, control_run=leak, progress=False)
    with pytest.raises(FileNotFoundError, match="run.json missing"):
        C.correlate_run("S", _make_run(tmp_path, "norun", None, (1,), run_json=None), "Be kind.", held,
                        progress=False)
    with pytest.raises(LLSError, match="need >= 3 held-out pairs, got 2"):
        C.correlate_run("S", lls, "Be kind.", _write_jsonl(tmp_path / "two.jsonl", _pairs(2, "z")), progress=False)
    assert fake_models == {"resolve": [], "load": [], "score": []}


def test_correlate_run_forwards_heldout_options_and_progress_bars(tmp_path, fake_models, monkeypatch):
    held, lls, _ = _setup_runs(tmp_path, n_held=6)
    seen = []
    real = C._load_heldout

    def load_heldout(heldout, n, split="train", config=None, data_dir=None):
        seen.append((heldout, n, split, config, data_dir))
        return real(heldout, n)

    monkeypatch.setattr(C, "_load_heldout", load_heldout)
    monkeypatch.setattr(C.Progress, "bar", property(lambda self: True))
    lines = []
    res = C.correlate_run("S", lls, "Be kind.", held, n=4, teacher="T", model_and_tok=(_LM("student"), "tk"),
                          split="test", config="cfg", data_dir="dd", log=lines.append)
    assert seen == [(held, 4, "test", "cfg", "dd")] and res["n"] == 4
    assert fake_models["resolve"] == [("T", None, False)]  # the given student is not resolved again
    assert [e[0] for e in fake_models["load"]] == ["T"]
    assert [e[4] for e in fake_models["score"]] == [True] * len(fake_models["score"]) and len(fake_models["score"]) == 6
    done = [l for l in lines if l.startswith("correlate: done in ")]
    assert len(done) == 1 and 0 <= int(done[0][len("correlate: done in "):-2]) < 600
    C.correlate_run("S", lls, "Be kind.", held, n=4, model_and_tok=(_LM("student"), "tk"), progress=False)
    assert seen[-1] == (held, 4, "train", None, None)


def test_correlate_run_n_maxsize_means_all_pairs_without_warning(tmp_path, fake_models):
    held, lls, _ = _setup_runs(tmp_path, n_held=4)
    res = C.correlate_run("S", lls, "Be kind.", held, n=sys.maxsize, n_boot=5, n_perm=5, progress=False)
    assert res["n"] == 4
    assert not any("usable held-out pairs" in w for w in res["warnings"])
    res = C.correlate_run("S", lls, "Be kind.", held, n=5, n_boot=5, n_perm=5, progress=False)
    assert res["warnings"][-1] == f"{held}: 4 usable held-out pairs, fewer than the 5 asked for"


def test_adapter_digest_ignores_the_order_peft_writes_target_modules_in(tmp_path):
    """PEFT writes target_modules from a set (order = the hash seed): the same adapter, one digest; other
    weights or another module list, another digest."""
    import json

    from empirical.stages.correlate import adapter_digest

    def adapter(name, modules, weights=b"w" * 64):
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_model.safetensors").write_bytes(weights)
        (d / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": modules}))
        return d

    a = adapter_digest(adapter("a", ["q_proj", "v_proj", "o_proj"]))
    assert a == adapter_digest(adapter("b", ["o_proj", "q_proj", "v_proj"]))
    assert a != adapter_digest(adapter("c", ["q_proj", "v_proj", "o_proj"], b"x" * 64))
    assert a != adapter_digest(adapter("d", ["q_proj", "v_proj"]))
