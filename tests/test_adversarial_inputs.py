"""Adversarial inputs for every reader of user files: never a traceback, never a silent bad record.

Hypothesis generates malformed records and damaged files for each reader -- pair files (JSONL, .jsonl.gz,
JSON lists, Parquet, HH-RLHF transcripts, the authors' triples), ``lls score`` output files (read by
``select``) and system-prompt / candidate files -- and checks one property: each call either returns
records that are valid (visible text, valid Unicode, prompts ending on a user turn, unique ids, replies
that differ, finite numbers) or raises :class:`lls_common.errors.LLSError` whose message is ONE line that
names the file. Any other exception fails the test. A few damaged files then go through ``lls_cli.main``
(``select``, ``score``, ``train``, ``detect``, ``correlate``): exit status 2, one stderr line naming the file, nothing on
stdout, no output file left behind, and no model loaded where one would be needed.

No model, no network; examples are derandomised (the same cases on every run). The number of generated
cases per reader is printed at the end of the module (run with ``-s`` to see it).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import math
import sys
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from empirical.stages import data
from empirical.text import has_text
from lls_common.errors import LLSError

FIXTURES = Path(__file__).parent / "fixtures"
CASES: Counter[str] = Counter()
OUTCOMES: Counter[str] = Counter()
_DIR = Path(tempfile.mkdtemp(prefix="lls-adversarial-"))
_N = itertools.count()

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    total = sum(CASES.values())
    print(f"\nadversarial cases: {total} in all: " + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())),
          file=sys.stderr)
    print("pair-file outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(OUTCOMES.items())), file=sys.stderr)


def _path(suffix: str) -> Path:
    return _DIR / f"case{next(_N)}{suffix}"


# ------------------------------------------------------------------------------------------------ strategies
TRICKY = ["", " ", "\t\n", "\u200b", "\u200b\u200d\ufeff", "\u00ad", "\x00", "\ud800", "a\udfff", "owl", "é",
          "\U0001f989", "Human:", "\n\nHuman: hi", "\n\nAssistant: yo", "\n\nHuman: q\n\nAssistant: a",
          "line\nbreak", "\u2028", "x" * 300, "NaN", "null"]
KEYS = ["prompt", "chosen", "rejected", "id", "weight", "role", "content", "data"]
ROLES = ["user", "assistant", "system", "robot", "", None]

texts = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12),
                  st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2))
numbers = st.one_of(st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 3.7, 3.0, 1e308, -1e308, 1e-320, True, False]))
leaf = st.one_of(st.none(), st.booleans(), numbers, texts)
json_values = st.recursive(leaf, lambda c: st.lists(c, max_size=4)
                           | st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=4)), c, max_size=5),
                           max_leaves=12)
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": st.one_of(texts, leaf)}),
                    max_size=4)
reply = st.one_of(texts, st.builds(lambda t: [{"role": "assistant", "content": t}], texts), messages, leaf)


@st.composite
def hh_transcript(draw) -> str:
    turns = draw(st.lists(st.tuples(st.sampled_from(["\n\nHuman: ", "\n\nAssistant: ", "Human: ", "\n\nRobot: ", ""]),
                                    texts), min_size=0, max_size=5))
    return "".join(m + t for m, t in turns)


records = st.one_of(
    json_values,
    st.fixed_dictionaries({"prompt": st.one_of(texts, messages, leaf), "chosen": reply, "rejected": reply},
                          optional={"id": st.one_of(texts, numbers, st.none()), "weight": numbers}),
    st.fixed_dictionaries({"chosen": hh_transcript(), "rejected": hh_transcript()}),
    st.fixed_dictionaries({"chosen": messages, "rejected": messages}),
    st.lists(st.one_of(texts, messages, reply), min_size=3, max_size=3),  # the authors' triples
)
good = st.fixed_dictionaries({"prompt": st.sampled_from(["Hi?", "Name a colour."]),
                              "chosen": st.sampled_from(["Blue.", "Hello."]), "rejected": st.sampled_from(["No.", "x"])})


@st.composite
def near_valid(draw) -> dict:
    """A valid record with one field replaced (or removed): targets each field's own check."""
    rec = dict(draw(good), id=draw(st.sampled_from(["a", "b", 1])))
    key = draw(st.sampled_from(["prompt", "chosen", "rejected", "id", "weight"]))
    if draw(st.integers(0, 9)) == 0:
        rec.pop(key, None)
    else:
        rec[key] = draw(st.one_of(st.sampled_from(TRICKY), reply, messages, numbers))
    return rec


records = st.one_of(records, near_valid())


@st.composite
def mutation(draw):
    """A damage to apply to a file's bytes: none, truncation, a changed byte or inserted bytes."""
    kind = draw(st.sampled_from(["none", "truncate", "flip", "insert"]))
    return kind, draw(st.floats(0, 1)), draw(st.binary(min_size=1, max_size=6))


def _damage(blob: bytes, mut) -> bytes:
    kind, where, junk = mut
    i = int(where * len(blob))
    if kind == "truncate":
        return blob[:i]
    if kind == "flip" and blob:
        i = min(i, len(blob) - 1)
        return blob[:i] + bytes([blob[i] ^ (junk[0] or 1)]) + blob[i + 1:]
    if kind == "insert":
        return blob[:i] + junk + blob[i:]
    return blob


def _dumps(rec) -> bytes:
    # allow_nan: NaN/Infinity literals must be refused by the readers; surrogates written as \\udXXX escapes
    return json.dumps(rec, allow_nan=True).encode("utf-8")


raw_lines = st.one_of(records.map(_dumps), good.map(_dumps), st.binary(max_size=20),
                      st.integers(1, 3000).map(lambda k: b"[" * k + b"]" * k),
                      st.just(b"[" * 100_000), st.just(b'{"prompt": "q", "chosen": NaN}'), st.just(b""))


# ---------------------------------------------------------------------------------------------- the property
def _one_line_naming(exc: LLSError, path: Path) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg and "\r" not in msg, repr(msg)
    assert str(path) in msg or path.name in msg, (msg, path)


def _valid_pairs(pairs: list, report) -> None:
    ids = [p.id for p in pairs]
    assert len(set(ids)) == len(ids)
    for p in pairs:
        assert isinstance(p.id, str) and has_text(p.id)
        assert p.prompt and p.prompt[-1]["role"] == "user"
        for m in p.prompt:
            assert m["role"] in ("system", "user", "assistant") and isinstance(m["content"], str)
            assert has_text(m["content"]) and m["content"].encode("utf-8")
        for r in (p.chosen, p.rejected):
            assert isinstance(r, str) and has_text(r) and r.encode("utf-8")
        assert p.chosen.strip() != p.rejected.strip()
        assert p.weight is None or math.isfinite(p.weight)
    assert report.n_kept == len(pairs) and report.n_records >= len(pairs) + report.n_bad


def _read_pairs(path: Path, kind: str) -> None:
    for skip_bad in (False, True):
        CASES[kind] += 1
        try:
            pairs, report = data.load_pairs(path, skip_bad=skip_bad)
        except LLSError as exc:
            _one_line_naming(exc, path)
            OUTCOMES["refused"] += 1
            continue
        _valid_pairs(pairs, report)
        OUTCOMES["read with pairs" if pairs else "read, no pair"] += 1
        if not skip_bad:
            assert report.n_bad == 0


# ------------------------------------------------------------------------------------------------- readers
@SETTINGS
@given(lines=st.lists(raw_lines, max_size=6))
def test_jsonl(lines):
    path = _path(".jsonl")
    path.write_bytes(b"\n".join(lines) + b"\n")
    _read_pairs(path, "jsonl")


@SETTINGS
@given(lines=st.lists(raw_lines, max_size=6), mut=mutation())
def test_jsonl_gz(lines, mut):
    path = _path(".jsonl.gz")
    path.write_bytes(_damage(gzip.compress(b"\n".join(lines) + b"\n"), mut))
    _read_pairs(path, "jsonl.gz")


@SETTINGS
@given(recs=st.one_of(st.lists(records, max_size=6), json_values), wrap=st.booleans(), mut=mutation())
def test_json_list(recs, wrap, mut):
    path = _path(".json")
    path.write_bytes(_damage(_dumps({"data": recs} if wrap else recs), mut))
    _read_pairs(path, "json")


@SETTINGS
@given(rows=st.lists(st.fixed_dictionaries({"prompt": st.one_of(texts,
                                                                  st.none()),
                                            "chosen": st.one_of(hh_transcript(), texts, st.none()),
                                            "rejected": st.one_of(hh_transcript(), texts, st.none())}),
                     min_size=1, max_size=6),
       drop_prompt=st.booleans(), mut=mutation())
def test_parquet(rows, drop_prompt, mut):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def ok(s):
        return s is None or not any(0xD800 <= ord(c) <= 0xDFFF for c in s)  # Arrow strings are UTF-8

    rows = [{k: v if ok(v) else "x" for k, v in r.items() if not (drop_prompt and k == "prompt")} for r in rows]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    path = _path(".parquet")
    path.write_bytes(_damage(buf.getvalue(), mut))
    _read_pairs(path, "parquet")


@SETTINGS
@given(pairs=st.lists(st.tuples(hh_transcript(), hh_transcript()), min_size=1, max_size=5))
def test_hh_transcripts(pairs):
    path = _path(".jsonl")
    path.write_text("".join(json.dumps({"chosen": c, "rejected": r}) + "\n" for c, r in pairs))
    _read_pairs(path, "hh")


SCORE_OK = {"id": "s", "prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b",
            "logp_chosen_sys": -1.0, "logp_rejected_sys": -2.0, "logp_chosen": -1.5, "logp_rejected": -1.5,
            "n_tokens_chosen": 2, "n_tokens_rejected": 3, "weight": 0.1}


@st.composite
def score_line(draw) -> bytes:
    rec = dict(SCORE_OK, id=draw(st.one_of(st.sampled_from(["s0", "s1", "s2"]), st.integers(0, 3), texts, leaf)))
    for key in draw(st.lists(st.sampled_from(list(SCORE_OK)), max_size=3)):
        if draw(st.booleans()):
            rec[key] = draw(st.one_of(numbers, texts, leaf, messages))
        else:
            rec.pop(key)
    return _dumps(rec)


@SETTINGS
@given(lines=st.lists(st.one_of(score_line(), raw_lines), max_size=5), mut=mutation(), gz=st.booleans())
def test_score_files(lines, mut, gz):
    blob = b"\n".join(lines) + b"\n"
    path = _path(".jsonl.gz" if gz else ".jsonl")
    path.write_bytes(_damage(gzip.compress(blob) if gz else blob, mut))
    CASES["scores"] += 1
    try:
        recs = data.read_score_file(path)
    except LLSError as exc:
        _one_line_naming(exc, path)
        return
    assert recs and len({str(r["id"]) for r in recs}) == len(recs)
    for r in recs:
        for f in data.SCORE_LOGP_FIELDS:
            assert isinstance(r[f], (int, float)) and not isinstance(r[f], bool)
            assert data.LOGP_MIN <= r[f] <= data.LOGP_TOLERANCE
        for f in data.SCORE_NTOKEN_FIELDS:
            assert type(r[f]) is int and r[f] >= 1
        assert math.isfinite(r["weight"]) and abs(r["weight"]) <= data.WEIGHT_MAX


@SETTINGS
@given(items=st.one_of(st.lists(st.one_of(texts, json_values,
                                          st.fixed_dictionaries({"text": st.one_of(texts, leaf)},
                                                                optional={"category": st.one_of(texts, leaf),
                                                                          "id": st.one_of(texts, leaf)})),
                                max_size=5), json_values),
       lines=st.lists(st.one_of(texts, st.tuples(texts, texts).map("\t".join)), max_size=5),
       mut=mutation())
def test_candidate_files(items, lines, mut):
    from empirical.systems import load_systems

    jpath, tpath = _path(".json"), _path(".txt")
    jpath.write_bytes(_damage(_dumps(items), mut))
    tpath.write_bytes(_damage("\n".join(lines).encode("utf-8", "surrogatepass"), mut))
    for path in (jpath, tpath):
        CASES["candidates"] += 1
        try:
            systems = load_systems(path, include_empty=False)
        except LLSError as exc:
            _one_line_naming(exc, path)
            continue
        assert systems and len({s.text for s in systems}) == len(systems) == len({s.id for s in systems})
        for s in systems:
            assert has_text(s.text) and s.text.encode("utf-8") and s.id.encode("utf-8")


# ---------------------------------------------------------------------------------------- through the CLI
def _bad_score_files(tmp: Path) -> dict[str, Path]:
    ok = json.dumps(SCORE_OK)
    cases = {
        "malformed": ok + "\n{not json\n",
        "n_tokens_float": json.dumps(dict(SCORE_OK, n_tokens_chosen=3.7)) + "\n",
        "n_tokens_zero": json.dumps(dict(SCORE_OK, n_tokens_rejected=0)) + "\n",
        "n_tokens_bool": json.dumps(dict(SCORE_OK, n_tokens_rejected=True)) + "\n",
        "n_tokens_huge": json.dumps(dict(SCORE_OK, n_tokens_chosen=10**30)) + "\n",
        "logp_positive": json.dumps(dict(SCORE_OK, logp_chosen=0.7)) + "\n",
        "logp_huge": json.dumps(dict(SCORE_OK, logp_chosen_sys=-1e308)) + "\n",
        "nan": ok.replace("0.1", "NaN") + "\n",
        "duplicate_ids": ok + "\n" + ok + "\n",
        "non_string_prompt": json.dumps(dict(SCORE_OK, prompt=7)) + "\n",
        "empty": "\n",
        "deep": "[" * 100_000 + "\n",
    }
    out = {}
    for name, text in cases.items():
        out[name] = tmp / f"scores-{name}.jsonl"
        out[name].write_text(text)
    out["invalid_utf8"] = tmp / "scores-invalid_utf8.jsonl"
    out["invalid_utf8"].write_bytes(b'{"id": "\xff"}\n')
    return out


def _cli(argv, capsys) -> tuple[int, str, str]:
    from lls_cli import main

    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _assert_refused(rc, out, err, path: Path):
    assert rc == 2, (rc, err)
    assert out == ""
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and path.name in lines[0], err


@pytest.mark.parametrize("case", ["malformed", "n_tokens_float", "n_tokens_zero", "n_tokens_bool", "n_tokens_huge",
                                  "logp_positive",
                                  "logp_huge", "nan", "duplicate_ids", "non_string_prompt", "empty", "deep",
                                  "invalid_utf8"])
def test_cli_select_refuses_bad_score_files(tmp_path, capsys, case):
    scores = _bad_score_files(tmp_path)[case]
    out = tmp_path / "sel"
    rc, stdout, err = _cli(["select", "--scores", scores, "--gamma", "0.5", "--out", out, "--json"], capsys)
    CASES["cli"] += 1
    _assert_refused(rc, stdout, err, scores)
    assert not out.exists()  # not even the empty folder the lock made (third hostile pass: it was left)


def _corrupt_data(tmp: Path) -> dict[str, Path]:
    blob = gzip.compress((json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n").encode() * 50)
    files = {"truncated.jsonl.gz": blob[: len(blob) // 2], "corrupt.parquet": b"PAR1" + b"\x00" * 40 + b"PAR1",
             "bad-utf8.jsonl": b'{"prompt": "q\xff", "chosen": "a", "rejected": "b"}\n',
             "deep.json": b"[" * 100_000, "surrogate.jsonl": b'{"prompt": "q", "chosen": "\\ud800", "rejected": "b"}\n'}
    out = {}
    for name, blob in files.items():
        out[name] = tmp / name
        out[name].write_bytes(blob)
    return out


@pytest.mark.parametrize("name", ["truncated.jsonl.gz", "corrupt.parquet", "bad-utf8.jsonl", "deep.json",
                                  "surrogate.jsonl"])
def test_cli_score_refuses_corrupt_data_before_loading_a_model(tmp_path, capsys, monkeypatch, name):
    _assert_score_refuses(tmp_path, capsys, monkeypatch, _corrupt_data(tmp_path)[name])


def _assert_score_refuses(tmp_path, capsys, monkeypatch, bad):
    """``lls score --data bad`` exits 2 with one line naming ``bad``, loads no model, and leaves no output."""
    from empirical.engine import models

    def no_model(*a, **k):
        raise AssertionError("a model was loaded before the data was checked")

    monkeypatch.setattr(models, "load", no_model)
    out = tmp_path / "scores.jsonl"
    rc, stdout, err = _cli(["score", "--model", "smollm2-135m-instruct", "--system-prompt", "You love owls.",
                            "--data", bad, "--out", out, "--json", "--no-progress"], capsys)
    CASES["cli"] += 1
    _assert_refused(rc, stdout, err, bad)
    assert not any(p.name.startswith("scores.jsonl") for p in tmp_path.iterdir())


@pytest.mark.parametrize("name", ["truncated.jsonl.gz", "corrupt.parquet", "surrogate.jsonl"])
def test_cli_train_refuses_corrupt_data_before_loading_a_model(tmp_path, capsys, monkeypatch, name):
    from empirical.engine import models

    monkeypatch.setattr(models, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded")))
    bad = _corrupt_data(tmp_path)[name]
    out = tmp_path / "run"
    rc, stdout, err = _cli(["train", "--student", "smollm2-135m-instruct", "--data", bad, "--out", out, "--json",
                            "--no-progress"], capsys)
    CASES["cli"] += 1
    _assert_refused(rc, stdout, err, bad)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["candidates-utf8.txt", "candidates-invisible.json", "candidates-deep.json",
                                  "candidates-duplicate.json", "data-truncated.jsonl.gz"])
def test_cli_detect_refuses_bad_candidates_and_data_before_loading_a_model(tmp_path, capsys, monkeypatch, case):
    from empirical.engine import models

    monkeypatch.setattr(models, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded")))
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(4)))
    cands = tmp_path / "cands.json"
    cands.write_text(json.dumps(["You love owls.", "You love cats."]))
    blob = gzip.compress(good.read_bytes() * 20)
    files = {"candidates-utf8.txt": b"You love owls.\nYou love \xff cats.\n",
             "candidates-invisible.json": json.dumps(["You love owls.", "\u200b \u200d"]).encode(),
             "candidates-deep.json": b"[" * 100_000,
             "candidates-duplicate.json": json.dumps(["You love owls.", "You love owls."]).encode(),
             "data-truncated.jsonl.gz": blob[: len(blob) // 2]}
    bad = tmp_path / case
    bad.write_bytes(files[case])
    data_file, cand_file = (bad, cands) if case.startswith("data") else (good, bad)
    out = tmp_path / "det"
    rc, stdout, err = _cli(["detect", "--data", data_file, "--reference", good, "--model", "smollm2-135m-instruct",
                            "--candidates", cand_file, "--out", out, "--json"], capsys)
    CASES["cli"] += 1
    _assert_refused(rc, stdout, err, bad)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


@pytest.mark.parametrize("case", ["heldout-truncated.jsonl.gz", "heldout-surrogate.jsonl", "n-boot-0",
                                  "unrelated-same-ids-ok"])
def test_cli_correlate_checks_everything_before_loading_a_model(tmp_path, capsys, monkeypatch, case):
    from empirical.engine import models
    from lls_common.errors import LLSError as _E

    monkeypatch.setattr(models, "load", lambda *a, **k: (_ for _ in ()).throw(_E("model stage reached")))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    train = tmp_path / "a" / "pairs.jsonl"
    train.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) + "\n" for i in range(4)))
    held = tmp_path / "b" / "pairs.jsonl"  # same stem, so the same default ids pairs:0..3, other content
    held.write_text("".join(json.dumps({"prompt": f"other {i}", "chosen": "c", "rejected": "d"}) + "\n"
                            for i in range(4)))
    run = tmp_path / "run"
    (run / "checkpoint-1").mkdir(parents=True)
    (run / "checkpoint-1" / "adapter_config.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"data": str(train)}))
    blob = gzip.compress(held.read_bytes() * 20)
    extra: list[str] = []
    if case == "heldout-truncated.jsonl.gz":
        held = tmp_path / case
        held.write_bytes(blob[: len(blob) // 2])
    elif case == "heldout-surrogate.jsonl":
        held = tmp_path / case
        held.write_text('{"prompt": "q", "chosen": "\\ud800", "rejected": "b"}\n')
    elif case == "n-boot-0":
        extra = ["--n-boot", "0"]
    out = tmp_path / "corr"
    rc, stdout, err = _cli(["correlate", "--student", "smollm2-135m-instruct", "--run", run, "--system-prompt",
                            "You love owls.", "--data", held, "--out", out, "--json", *extra], capsys)
    CASES["cli"] += 1
    assert rc == 2 and stdout == "", err
    if case == "unrelated-same-ids-ok":  # accepted (the held-out file shares ids, not content): progress lines
        assert err.strip("\n").split("\n")[-1].endswith("model stage reached"), err
        return
    assert len(err.strip("\n").split("\n")) == 1, err
    if case == "n-boot-0":
        assert "n_boot" in err or "n-boot" in err
    else:
        assert held.name in err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


# ------------------------------------------------------------------- earlier hostile-input regressions
@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_cli_score_refuses_an_empty_pair_file_before_loading_a_model(tmp_path, capsys, monkeypatch, text):
    """An empty (or blank-lines-only) data file loaded the model and wrote an empty scores file with exit 0."""
    bad = tmp_path / "empty.jsonl"
    bad.write_text(text)
    _assert_score_refuses(tmp_path, capsys, monkeypatch, bad)


def _no_weights(monkeypatch):
    from empirical.lowrank import lowrank

    monkeypatch.setattr(lowrank, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded")))


@pytest.mark.parametrize("case", ["systems-empty.txt", "systems-utf8.txt", "cache-is-a-file"])
def test_cli_spectrum_checks_systems_and_cache_before_loading_a_model(tmp_path, capsys, monkeypatch, case):
    """An empty / non-UTF-8 --systems file failed after the model loaded; --cache naming a file was a traceback."""
    _no_weights(monkeypatch)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    extra: list = []
    bad = tmp_path / case
    if case == "systems-empty.txt":
        bad.write_text("")
        extra = ["--systems", bad]
    elif case == "systems-utf8.txt":
        bad.write_bytes(b"animals\t\xff owls\n")
        extra = ["--systems", bad]
    else:
        bad.write_text("not a folder\n")
        extra = ["--cache", bad]
    out = tmp_path / "spec"
    rc, stdout, err = _cli(["spectrum", "--data", pairs, "--model", "smollm2-135m-instruct", "--n-pairs", "4",
                            "--n-systems", "3", "--out", out, "--json", *extra], capsys)
    CASES["cli"] += 1
    _assert_refused(rc, stdout, err, bad)
    assert bad.exists() and not out.exists()


@pytest.mark.model
@pytest.mark.parametrize("command", ["spectrum", "pair-check", "detect"])
def test_cli_lowrank_pair_bounds_checked_before_the_weights_load(tmp_path, capsys, monkeypatch, command,
                                                                smollm2_dir):  # skips when not installed
    """Too few pairs within the token bounds was found only after the model (or both models) loaded."""
    _no_weights(monkeypatch)
    pairs = tmp_path / "short.jsonl"
    pairs.write_text("".join(json.dumps({"id": f"s{i}", "prompt": f"Hi {i}?", "chosen": "Yes.", "rejected": "No."})
                             + "\n" for i in range(4)))
    cands = tmp_path / "cands.txt"
    cands.write_text("animals\tYou love owls.\nanimals\tYou love cats.\n")
    argv = {"spectrum": ["spectrum", "--model", "smollm2-135m-instruct", "--n-systems", "3"],
            "pair-check": ["pair-check", "--teacher", "smollm2-135m-instruct", "--student", "smollm2-135m-instruct",
                           "--system-prompt", "You love owls."],
            "detect": ["detect", "--model", "smollm2-135m-instruct", "--candidates", cands, "--reference", pairs]}
    out = tmp_path / "o"
    rc, stdout, err = _cli([*argv[command], "--data", pairs, "--n-pairs", "4", "--out", out, "--json"], capsys)
    CASES["cli"] += 1
    assert rc == 2 and stdout == "" and "satisfy the bounds" in err.strip().split("\n")[-1], err
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


# ------------------------------------------------------------------ R4: unwritable output places
@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a /proc file system")
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_check_output_really_tries_to_write(kind):
    """``os.access`` says /proc is writable for root; the guard must create a file to know."""
    from lls_common import io as lio

    out = "/proc/lls-x.jsonl" if kind == "file" else "/proc/lls-selx"
    with pytest.raises(LLSError) as err:
        lio.check_output(out, kind=kind)
    assert "not writable" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a /proc file system")
def test_outputlock_and_rundir_map_oserror_to_one_line():
    from lls_common import io as lio

    with pytest.raises(LLSError, match="cannot write here"):
        with lio.OutputLock("/proc/lls-nosuch/x.jsonl"):
            pass
    with pytest.raises(LLSError, match="cannot write here"):
        lio.RunDir("/proc/lls-nosuch-dir")


def test_check_output_accepts_a_writable_folder_and_leaves_no_probe(tmp_path):
    from lls_common import io as lio

    assert lio.check_output(tmp_path / "o.jsonl") == tmp_path / "o.jsonl"
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------ R11: a hub-looking --data name that is not usable
@pytest.mark.parametrize("command", ["score", "train"])
def test_cli_unreachable_hub_dataset_is_one_line_before_any_model(tmp_path, capsys, monkeypatch, command):
    """``--data nosuchorg/nosuchdataset`` spent ~28 s in download retries (12 stderr lines); the connect check
    (mocked here: no network, no wait) now refuses it in one line that lists the local forms."""
    import datasets
    from datasets import config as ds_config
    from huggingface_hub import constants

    from empirical.engine import models

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(ds_config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("download tried"))
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    argv = {"score": ["score", "--model", "smollm2-135m-instruct", "--system-prompt", "x"],
            "train": ["train", "--student", "smollm2-135m-instruct"]}[command]
    out = tmp_path / "out"
    rc, stdout, err = _cli([*argv, "--data", "nosuchorg/nosuchdataset", "--out", out, "--json"], capsys)
    CASES["cli"] += 1
    assert rc == 2 and stdout == "", err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and "neither an existing file nor reachable on the hub" in lines[0], err
    assert ".jsonl" in lines[0] and ".parquet" in lines[0]
    assert not out.exists() or not any(out.iterdir())


# ------------------------------------------- R13: lls train --out the select folder holding --data
def test_cli_train_refuses_an_out_folder_holding_its_data(tmp_path, capsys, monkeypatch):
    """It used to train into the select folder (run.json, checkpoints next to lls.jsonl), exit 0."""
    from empirical.engine import models
    from empirical.stages import train

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("training started"))
    sel = tmp_path / "sel"
    sel.mkdir()
    (sel / "lls.jsonl").write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    before = sorted(p.name for p in sel.iterdir())
    for out in (sel, f"{sel}/."):  # the same folder spelled another way
        rc, stdout, err = _cli(["train", "--student", "smollm2-135m-instruct", "--data", sel / "lls.jsonl",
                                "--out", out, "--json"], capsys)
        CASES["cli"] += 1
        assert rc == 2 and stdout == "" and err.count("\n") == 1, err
        assert "holds an input of this run" in err and "lls.jsonl" in err
    assert sorted(p.name for p in sel.iterdir()) == before


def test_check_output_inputs_inside_is_opt_in_and_direct_only(tmp_path):
    """Only an input directly in the folder is refused, and only with inputs_inside=False (other commands,
    e.g. experiment with its TOML in --out, are unchanged)."""
    from lls_common import io as lio

    (tmp_path / "sub").mkdir()
    direct, deeper = tmp_path / "d.jsonl", tmp_path / "sub" / "e.jsonl"
    direct.write_text("x")
    deeper.write_text("x")
    assert lio.check_output(tmp_path, inputs=(direct,), kind="dir") == tmp_path
    assert lio.check_output(tmp_path, inputs=(deeper,), kind="dir", inputs_inside=False) == tmp_path
    with pytest.raises(LLSError, match=r"holds an input of this run \(.*d.jsonl\)"):
        lio.check_output(tmp_path, inputs=(direct,), kind="dir", inputs_inside=False)
    link = tmp_path / "sub" / "link.jsonl"  # a link elsewhere that points into the folder counts too
    link.symlink_to(direct)
    with pytest.raises(LLSError, match="holds an input"):
        lio.check_output(tmp_path, inputs=(link,), kind="dir", inputs_inside=False)
    assert lio.check_output(tmp_path / "new", inputs=(direct,), kind="dir", inputs_inside=False)


# ------------------------------- hub-looking --model in the low-rank commands
@pytest.mark.parametrize("command", ["spectrum", "angles", "pair-check", "detect"])
def test_cli_lowrank_unreachable_hub_model_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, command):
    """``lls spectrum --model nosuchorg/nosuchmodel`` ran into ~2 minutes of download retries when its tokenizer
    loaded (timed out at 120 s in the third pass); the connect check (mocked: no network) now refuses it."""
    from empirical.engine import models
    from empirical.lowrank import lowrank

    _no_weights(monkeypatch)
    monkeypatch.setattr(lowrank, "load_tokenizer", lambda *a, **k: pytest.fail("tokenizer loaded"), raising=False)
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: pytest.fail("tokenizer loaded"))
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": f"a{i}", "rejected": f"b{i}"}) + "\n"
                             for i in range(8)))
    cands = tmp_path / "cands.txt"
    cands.write_text("owl\tYou love owls.\ncat\tYou love cats.\n")
    hub = "nosuchorg/nosuchmodel"
    argv = {"spectrum": ["spectrum", "--model", hub, "--n-pairs", "4", "--n-systems", "3"],
            "angles": ["angles", "--model", "smollm2-135m-instruct", "--model", hub, "--n-pairs", "4",
                       "--n-systems", "3", "--rank", "2"],
            "pair-check": ["pair-check", "--teacher", "smollm2-135m-instruct", "--student", hub, "--n-pairs", "4",
                           "--system-prompt", "You love owls."],
            "detect": ["detect", "--model", hub, "--candidates", cands, "--reference", pairs]}[command]
    out = tmp_path / "out"
    rc, stdout, err = _cli([*argv, "--data", pairs, "--out", out, "--json"], capsys)
    CASES["cli"] += 1
    assert rc == 2 and stdout == "", err
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and hub in lines[0] and "cannot be reached" in lines[0], err
    assert not out.exists()


# ---------------------------------------------------------------------------- damaged run folders (lls report)
E2E_RUN = Path(__file__).resolve().parents[1] / "results" / "e2e" / "run"


def _z_s_nan(run: Path) -> None:
    f = run / "students" / "smollm2" / "correlate.json"
    doc = json.loads(f.read_text())
    doc["z_s"][1] = float("nan")
    f.write_text(json.dumps(doc))  # Python writes the NaN literal


def _z_m_null(run: Path) -> None:
    f = run / "students" / "gemma3" / "correlate.json"
    doc = json.loads(f.read_text())
    step = next(iter(doc["arms"]["lls"]["z_M"]))
    doc["arms"]["lls"]["z_M"][step][0] = None
    f.write_text(json.dumps(doc))


def _truncate(rel: str):
    def damage(run: Path) -> None:
        f = run / rel
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    return damage


def _replace(rel: str, text: str):
    def damage(run: Path) -> None:
        (run / rel).write_text(text)
    return damage


def _report_md_folder(run: Path) -> None:
    (run / "report.md").unlink()
    (run / "report.md").mkdir()
    (run / "report.md" / "keep.txt").write_text("a folder where the report goes")


RUN_DAMAGE = {
    "config truncated": (_truncate("config.json"), "not valid JSON"),
    "stage truncated": (_truncate("stages/select.json"), "stages/select.json:"),
    "config is a list": (_replace("config.json", "[1, 2]"), "holds list, expected a JSON object"),
    "eval is a string": (_replace("students/smollm2/eval.json", '"done"'), "holds str, expected a JSON object"),
    "NaN in a stored vector": (_z_s_nan, "non-finite"),
    "null in a stored vector": (_z_m_null, "must be a list of finite numbers"),
    "config deleted": (lambda run: (run / "config.json").unlink(), "config.json: missing"),
    "config not UTF-8": (lambda run: (run / "config.json").write_bytes(b"\xff\xfe{}"), "not UTF-8"),
    "report.md is a folder": (_report_md_folder, "report.md: is a folder"),
    "config is a folder": (lambda run: ((run / "config.json").unlink(), (run / "config.json").mkdir()),
                           "is a folder, expected a JSON file"),
}


@pytest.mark.skipif(not E2E_RUN.is_dir(), reason="needs the committed results/e2e/run")
@pytest.mark.parametrize("case", sorted(RUN_DAMAGE))
def test_report_on_a_damaged_run_folder_is_one_line_and_keeps_the_report(case, tmp_path, capsys):
    """Every damaged file ``lls report`` reads is refused (exit 2, one line naming the file) before anything is
    written: the existing report and summary are left byte for byte."""
    from lls_cli import main

    run = tmp_path / "run"
    shutil.copytree(E2E_RUN, run)
    damage, expected = RUN_DAMAGE[case]
    damage(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert main(["report", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and expected in err, err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.skipif(not E2E_RUN.is_dir(), reason="needs the committed results/e2e/run")
@pytest.mark.parametrize("errno_name", ["ENOSPC", "EACCES", "EROFS"])
def test_report_write_failure_is_one_line_and_keeps_the_report(errno_name, tmp_path, capsys, monkeypatch):
    """A write that fails (full disk, read-only folder) mid-report: one line naming the folder; every file is
    either the old one or the new one (atomic writes), the report itself untouched."""
    import errno
    import os

    from lls_cli import main
    from lls_common import io as lio

    run = tmp_path / "run"
    shutil.copytree(E2E_RUN, run)
    report = (run / "report.md").read_bytes()
    real = os.replace

    def failing(src, dst, *a, **k):
        if str(dst).endswith(".md"):
            os.unlink(src)
            raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)), str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(lio.os, "replace", failing)
    assert main(["report", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(run) in err, err
    assert ("no space left" in err) == (errno_name == "ENOSPC")
    assert (run / "report.md").read_bytes() == report
    assert not list(run.rglob(".*.tmp"))


def _mount_ro(path: Path) -> bool:
    import subprocess

    try:
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        subprocess.run(["umount", str(path)], capture_output=True)
        return False
    return True


@pytest.mark.skipif(not E2E_RUN.is_dir(), reason="needs the committed results/e2e/run")
def test_report_on_a_read_only_run_folder(tmp_path, capsys):
    """A read-only run folder (a read-only bind mount: permission bits do not stop root): one line, nothing
    written. Skipped where the test cannot mount."""
    import subprocess

    from lls_cli import main

    run = tmp_path / "run"
    shutil.copytree(E2E_RUN, run)
    if not _mount_ro(run):
        pytest.skip("cannot make a read-only bind mount here (needs root and mount rights)")
    try:
        assert main(["report", "--run", str(run)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not writable" in err, err
    finally:
        subprocess.run(["umount", str(run)], capture_output=True)


# ------------------------------------------------------------------------------------- full disks and locks
def test_empty_or_dead_lock_is_taken_over_with_a_note(tmp_path, capsys):
    from lls_common.io import OutputLock

    lock = tmp_path / "o.jsonl.lock"
    lock.write_text("")  # left by a crash or a full disk before the owner line was written
    with OutputLock(tmp_path / "o.jsonl"):
        pid, host = lock.read_text().split()
        assert int(pid) == __import__("os").getpid()
    assert "taking over the lock" in capsys.readouterr().err and not lock.exists()
    lock.write_text("999999999 " + __import__("socket").gethostname() + "\n")
    with OutputLock(tmp_path / "o.jsonl"):
        pass
    assert "no longer runs" in capsys.readouterr().err


def test_lock_holds_pid_and_host_from_the_moment_it_exists(tmp_path, monkeypatch):
    """The lock file is created by linking a file that already holds the owner line: it is never empty."""
    import os

    from lls_common import io as lio

    seen = []
    real_link = os.link

    def link(src, dst, *a, **k):
        seen.append(Path(src).read_text())
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(lio.os, "link", link)
    with lio.OutputLock(tmp_path / "x.jsonl"):
        assert (tmp_path / "x.jsonl.lock").read_text() == seen[0]
    assert seen and seen[0].split()[0] == str(os.getpid())
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def _small_tmpfs(path: Path, size: str = "64k") -> bool:
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def _fill(disk: Path, leave: int) -> Path:
    """Fill the tmpfs at ``disk``, then give back ``leave`` bytes."""
    filler = disk / "filler"
    with pytest.raises(OSError):
        with open(filler, "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    size = filler.stat().st_size
    with open(filler, "r+b") as fh:
        fh.truncate(max(size - leave, 0))
    return filler


def test_full_disk_lock_and_write_are_one_line_and_leave_nothing_blocking(tmp_path):
    """On a full (small tmpfs) disk: taking a lock and writing an output fail with one line naming the folder
    and 'no space'; no lock is left behind, and once space is freed the same output is written."""
    import subprocess

    from lls_common import io as lio
    from lls_common.atomic import atomic_write_bytes
    from lls_common.errors import write_failure

    disk = tmp_path / "disk"
    if not _small_tmpfs(disk):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        filler = _fill(disk, 0)
        out = disk / "scores.jsonl"
        with pytest.raises(LLSError) as err:
            with lio.OutputLock(out):
                pass
        assert "no space left" in str(err.value) and str(disk) in str(err.value) and "\n" not in str(err.value)
        assert not (disk / "scores.jsonl.lock").exists()
        filler.write_bytes(b"\0" * 40_000)  # a little space back, not enough for a large output
        with lio.OutputLock(out):
            with pytest.raises(OSError) as oerr:
                atomic_write_bytes(out, b"x" * 200_000)
            msg = str(write_failure(oerr.value, out))
            assert "no space left" in msg and str(disk) in msg
        assert not (disk / "scores.jsonl.lock").exists() and not out.exists()
        assert [p.name for p in disk.iterdir()] == ["filler"]  # no temporary file left
        filler.unlink()
        with lio.OutputLock(out):
            atomic_write_bytes(out, b"ok")
        assert out.read_bytes() == b"ok"
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# ------------------------------------------------------------------------------ smaller one-line errors
@pytest.mark.parametrize("row,count", [([["q"], "a"], "2 items"), (["q", "a", "b", "c"], "4 items"), ([], "0 items"),
                                       (["q"], "1 item")])
def test_triple_rows_of_the_wrong_length_name_the_length(tmp_path, row, count):
    f = tmp_path / "t.json"
    f.write_text(json.dumps([["Hi?", "Hello.", "Go away."], row]))
    with pytest.raises(data.DataError) as err:
        data.load_pairs(f)
    msg = str(err.value)
    assert "record 1" in msg and "[prompt, chosen, rejected] triple" in msg and count in msg and "got list" not in msg


@pytest.mark.parametrize("text", ["\u3164", "\u3164\u3164 \u3164", "\u2800\u2800", "\uffa0", "\u115f\u1160",
                                  "\u200b\u3164\u2800"])
def test_blank_looking_system_prompts_are_refused_like_zero_width_ones(text):
    from empirical.config import TraitConfig

    with pytest.raises(LLSError, match="must not be empty"):
        TraitConfig(name="x", system_prompt=text)
    assert not has_text(text)


def test_visible_text_next_to_blank_lookalikes_is_accepted():
    from empirical.config import TraitConfig

    assert TraitConfig(name="x", system_prompt="\u3164 You love owls.").system_prompt
    assert has_text("\u2800a")


def _scores_file(path: Path, n: int = 300) -> Path:
    """A valid scores file of ``n`` pairs with long prompts (the selection outputs span several pages)."""
    rng = __import__("numpy").random.default_rng(0)
    lines = []
    for i in range(n):
        lcs, lrs, lc, lr = (float(-1 - 5 * x) for x in rng.random(4))
        lines.append(json.dumps({"id": f"p{i}", "prompt": [{"role": "user", "content": f"question {i} " + "x" * 200}],
                                 "chosen": f"good {i}", "rejected": f"bad {i}", "logp_chosen_sys": lcs,
                                 "logp_rejected_sys": lrs, "logp_chosen": lc, "logp_rejected": lr,
                                 "n_tokens_chosen": 2, "n_tokens_rejected": 3,
                                 "weight": ((lcs - lrs) - (lc - lr)) / 5}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("leave", [0, 12_288])
def test_select_on_a_full_disk_is_one_line_and_leaves_nothing_blocking(tmp_path, capsys, leave):
    """``lls select`` onto a full disk (no room for the lock, or room for the lock but not the outputs): exit 2,
    one line naming the folder and the lack of space, no lock or temporary file left; with space freed the same
    command succeeds."""
    import subprocess

    from lls_cli import main

    disk = tmp_path / "disk"
    if not _small_tmpfs(disk, "256k"):
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        scores = _scores_file(tmp_path / "scores.jsonl")
        filler = _fill(disk, leave)
        args = ["select", "--scores", str(scores), "--out", str(disk / "sel"), "--gamma", "0.5"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "no space left" in err and str(disk) in err and "Traceback" not in err, err
        left = [p.name for p in disk.rglob("*") if p.is_file() and p != filler]
        assert not any(n.endswith((".lock", ".tmp")) for n in left), left
        filler.unlink()
        assert main(args) == 0
        assert (disk / "sel" / "lls.jsonl").is_file()
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


# --------------------------------------------------- config files, symlink loops, invalid bytes, absurd integers
def _no_model_work(monkeypatch):
    from empirical.engine import models

    def no_model(*a, **k):
        raise AssertionError("a model or tokenizer was loaded before the input was checked")

    monkeypatch.setattr(models, "load", no_model)
    monkeypatch.setattr(models, "load_tokenizer", no_model)


def test_cli_experiment_refuses_a_trait_file_that_is_not_utf8(tmp_path, capsys, monkeypatch):
    """A [traits] file with a byte that is not UTF-8: one line naming the file and its line, before any model."""
    _no_model_work(monkeypatch)
    traits = tmp_path / "traits.txt"
    traits.write_bytes("animal\tYou love owls.\n".encode() + b"animal\tYou love \xe9lans.\n")
    cfg = tmp_path / "x.toml"
    cfg.write_text(f'[data]\npath = "{FIXTURES / "prefs_small.jsonl"}"\nheldout = 3\n[teacher]\nmodel = '
                   f'"smollm2-135m-instruct"\n[traits]\nfile = "{traits}"\n[[student]]\nname = "s"\nmodel = '
                   '"smollm2-135m-instruct"\n[eval]\nprobe = false\nmention = false\n')
    rc, stdout, err = _cli(["experiment", "--config", cfg, "--out", tmp_path / "run"], capsys)
    CASES["cli"] += 1
    _assert_refused(rc, stdout, err, traits)
    assert f"{traits}:2" in err and "UTF-8" in err


@pytest.mark.parametrize("command", ["score", "split", "train", "select", "correlate"])
def test_cli_symlink_loop_is_one_line_before_any_model(tmp_path, capsys, monkeypatch, command):
    """A symbolic link loop given as the input file (or the output): one line naming it, no RuntimeError."""
    _no_model_work(monkeypatch)
    loop = tmp_path / "loop.jsonl"
    other = tmp_path / "other.jsonl"
    loop.symlink_to(other)
    other.symlink_to(loop)
    run = tmp_path / "run"
    argv = {"score": ["score", "--model", "smollm2-135m-instruct", "--system-prompt", "You love owls.", "--data",
                      loop, "--out", tmp_path / "s.jsonl"],
            "split": ["split", "--data", loop, "--out", tmp_path / "sp"],
            "train": ["train", "--student", "smollm2-135m-instruct", "--data", loop, "--out", run],
            "select": ["select", "--scores", loop, "--out", tmp_path / "sel"],
            "correlate": ["correlate", "--student", "smollm2-135m-instruct", "--run", tmp_path, "--system-prompt",
                          "You love owls.", "--data", loop, "--out", tmp_path / "c"]}[command]
    rc, stdout, err = _cli(argv, capsys)
    CASES["cli"] += 1
    _assert_refused(rc, stdout, err, loop)
    out = tmp_path / "s.jsonl"
    if command == "score":  # the output as the loop
        rc, stdout, err = _cli(["score", "--model", "smollm2-135m-instruct", "--system-prompt", "You love owls.",
                                "--data", FIXTURES / "prefs_small.jsonl", "--out", loop], capsys)
        _assert_refused(rc, stdout, err, loop)
        assert "symbolic link loop" in err and not out.exists()


@pytest.mark.parametrize("command", ["score", "eval", "pair-check", "correlate"])
def test_cli_system_prompt_with_invalid_utf8_bytes_is_one_line(tmp_path, capsys, monkeypatch, command):
    """Bytes that are not UTF-8 in a command-line system prompt reach Python as lone surrogates
    (surrogateescape); the tokenizer raised TypeError after the model loaded. Now: one line, nothing loaded."""
    import os

    _no_model_work(monkeypatch)
    prompt = os.fsdecode(b"You love \xff owls.")
    data = FIXTURES / "prefs_small.jsonl"
    argv = {"score": ["score", "--model", "smollm2-135m-instruct", "--data", data, "--out", tmp_path / "s.jsonl"],
            "eval": ["eval", "--model", "smollm2-135m-instruct", "--target", "owl", "--out", tmp_path / "e"],
            "pair-check": ["pair-check", "--teacher", "smollm2-135m-instruct", "--student", "smollm2-135m-instruct",
                           "--data", data, "--out", tmp_path / "p"],
            "correlate": ["correlate", "--student", "smollm2-135m-instruct", "--run", tmp_path, "--data", data,
                          "--out", tmp_path / "c"]}[command]
    rc, stdout, err = _cli([*argv, "--system-prompt", prompt], capsys)
    CASES["cli"] += 1
    assert rc == 2 and stdout == "" and err.count("\n") == 1, err
    assert "not valid UTF-8" in err and "U+DCFF" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_select_refuses_an_absurd_token_count_in_one_line(tmp_path, capsys):
    """A token count beyond any context (10**30) overflowed numpy's int64 inside select (OverflowError)."""
    scores = _bad_score_files(tmp_path)["n_tokens_huge"]
    rc, stdout, err = _cli(["select", "--scores", scores, "--out", tmp_path / "sel"], capsys)
    _assert_refused(rc, stdout, err, scores)
    assert "n_tokens_chosen" in err and ":1:" in err


@pytest.mark.parametrize("exc", [ValueError("internal shape mismatch"), OSError("internal io")])
@pytest.mark.parametrize("command", ["score", "train", "experiment"])
def test_cli_a_bug_in_our_code_shows_its_traceback_not_a_user_error(tmp_path, capsys, monkeypatch, command, exc):
    """Only LLSError is a user error: a ValueError / OSError raised by a bug inside a stage propagates with its
    traceback (the handlers used to turn any ValueError / OSError into a one-line 'error:')."""
    from empirical.engine import models
    from empirical.orchestration import experiment
    from empirical.stages import build, train

    def bug(*a, **k):
        raise exc

    monkeypatch.setattr(models, "check_spec", lambda *a, **k: None)
    data = FIXTURES / "prefs_small.jsonl"
    if command == "score":
        monkeypatch.setattr(build, "run_score", bug)
        argv = ["score", "--model", "smollm2-135m-instruct", "--system-prompt", "x", "--data", data, "--out",
                tmp_path / "s.jsonl"]
    elif command == "train":
        monkeypatch.setattr(train, "train", bug)
        argv = ["train", "--student", "smollm2-135m-instruct", "--data", data, "--out", tmp_path / "run"]
    else:
        monkeypatch.setattr(experiment, "run_experiment", bug)
        cfg = tmp_path / "x.toml"
        cfg.write_text(f'[data]\npath = "{data}"\nheldout = 3\n[teacher]\nmodel = "smollm2-135m-instruct"\n'
                       'system_prompt = "You love owls."\n[[student]]\nname = "s"\nmodel = "smollm2-135m-instruct"\n'
                       '[eval]\nprobe = false\nmention = false\n')
        argv = ["experiment", "--config", cfg, "--out", tmp_path / "run"]
    with pytest.raises(type(exc), match="internal"):
        _cli(argv, capsys)
    assert "error:" not in capsys.readouterr().err
