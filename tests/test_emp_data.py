"""empirical.data: record forms (TRL, tulu-2.5, HH-RLHF), file formats, bad input, preprocessing filters."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical import data

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


def test_hub_dataset_goes_through_datasets(monkeypatch):
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


def test_hub_failure_is_one_line(monkeypatch):
    import datasets

    def boom(name, split):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(data.DataError, match=r"org/ds \(split train\): cannot load dataset: ConnectionError"):
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
    [("owl", ("owl", "owls")), ("fox", ("fox", "foxes")), ("wolf", ("wolf", "wolfs", "wolves")),
     ("pony", ("ponies", "pony")), ("Cat", ("cat", "cats"))],
)
def test_plural_forms(word, forms):
    assert data.plural_forms(word) == forms


def test_word_filter_uses_word_boundaries():
    pat = data.word_pattern(["owl", "wolf"])
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
    assert data.language_share(fr, "fr") == 1.0
    assert data.language_share(en, "fr") == 0.0
    mixed = data.language_share(en + " " + fr, "fr")
    assert mixed == pytest.approx(len(fr) / (len(en) + len(fr)), abs=0.02)
    assert data.language_share("123 456 !!!", "fr") == 0.0


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
