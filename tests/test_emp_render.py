"""empirical.engine.render: chat rendering, TRL token split, system-role fallback, plain template, truncation."""

from __future__ import annotations

import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from empirical.engine import render

NO_SYSTEM_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}<turn>{{ m['role'] }}\n{{ m['content'] }}</turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<turn>assistant\n{% endif %}"
)


class _Raise(Exception):
    pass


@pytest.fixture(scope="module")
def tok(smollm2):
    return smollm2[1]


@pytest.fixture(scope="module")
def plain_tok(tok):
    t = copy.deepcopy(tok)
    t.chat_template = None
    return t


@pytest.fixture(scope="module")
def nosys_tok(tok):
    t = copy.deepcopy(tok)
    t.chat_template = NO_SYSTEM_TEMPLATE
    return t


@pytest.mark.parametrize(
    "bad, match",
    [
        ("", "empty prompt"),
        ([], "non-empty"),
        ([{"role": "user"}], "'role' and 'content'"),
        ([{"role": "user", "content": 3}], "non-string"),
        ([{"role": "user", "content": "  "}], "empty"),
        ([{"role": "robot", "content": "x"}], "unknown role"),
        ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "last prompt message"),
    ],
)
def test_as_messages_rejects_bad_prompts(bad, match):
    with pytest.raises(ValueError, match=match):
        render.as_messages(bad, where="line 3")


def test_as_messages_string_is_one_user_turn():
    assert render.as_messages("hi") == [{"role": "user", "content": "hi"}]


@pytest.mark.model
def test_smollm2_rendering_and_split(tok):
    msgs = render.as_messages("What is 2+2?")
    prompt = render.render_prompt(tok, msgs, "You love owls.")
    assert prompt == (
        "<|im_start|>system\nYou love owls.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    enc = render.encode_group(tok, msgs, ["It is 4.", "Five"], "You love owls.")
    assert enc.prompt_is_prefix
    assert tok.decode(enc.context) == prompt
    assert [tok.decode(c) for c in enc.completions] == ["It is 4.<|im_end|>\n", "Five<|im_end|>\n"]
    # Same tokens as TRL's conversational tokenization (apply_chat_template(tokenize=True)).
    full = tok.apply_chat_template(
        [{"role": "system", "content": "You love owls."}] + msgs + [{"role": "assistant", "content": "It is 4."}],
        tokenize=True, return_dict=True,
    )["input_ids"]
    assert list(enc.context) + list(enc.completions[0]) == list(full)


@pytest.mark.model
def test_smollm2_without_system_default_and_empty_reference(tok):
    """reference="default" lets SmolLM2's template insert its persona; the keyword default ("auto") is the
    authors' empty system turn instead."""
    prompt = render.render_prompt(tok, render.as_messages("Hi"), None, reference="default")
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert render.render_prompt(tok, render.as_messages("Hi"), None) == \
        "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.model
def test_template_without_system_role_merges_into_first_user_turn(nosys_tok):
    assert not render.supports_system_role(nosys_tok)
    msgs = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    prompt = render.render_prompt(nosys_tok, msgs, "SYS")
    assert prompt == "<turn>user\nSYS\n\nQ1</turn>\n<turn>assistant\nA1</turn>\n<turn>user\nQ2</turn>\n<turn>assistant\n"
    enc = render.encode_group(nosys_tok, msgs, ["R"], "SYS")
    assert nosys_tok.decode(enc.completions[0]) == "R</turn>\n"


@pytest.mark.model
def test_plain_template(plain_tok):
    msgs = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    eos = plain_tok.eos_token
    assert render.render_prompt(plain_tok, msgs, "SYS") == f"SYS\n\nUser: Q1\n\nAssistant: A1{eos}\n\nUser: Q2\n\nAssistant:"
    enc = render.encode_group(plain_tok, msgs, ["Sure thing"], None)
    assert enc.completions[0][-1] == plain_tok.eos_token_id
    assert plain_tok.decode(enc.completions[0]) == " Sure thing" + eos


@pytest.mark.model
def test_split_when_prompt_is_not_a_token_prefix(tok):
    """Tokens merging across the boundary: the completion starts where the tokenizations diverge (TRL rule)."""
    t = copy.deepcopy(tok)
    t.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    msgs = [{"role": "user", "content": "hello wor"}]
    enc = render.encode_group(t, msgs, ["ld", "k"], None)
    assert not enc.prompt_is_prefix  # "wor" + "ld" re-tokenizes as " world"
    prompt_ids = render.encode_text(t, "hello wor")
    assert len(enc.context) < len(prompt_ids)
    for reply, comp in zip(["ld", "k"], enc.completions):
        assert list(enc.context) + list(comp) == render.encode_text(t, "hello wor" + reply)


@pytest.mark.model
def test_trl_example_tokenizes_to_scored_tokens(tok, plain_tok):
    msgs = render.as_messages("Name a colour.")
    for t in (tok, plain_tok):
        ex = render.trl_example(t, msgs, "Red", "Blue", system_prompt="SYS")
        enc = render.encode_group(t, msgs, ["Red", "Blue"], "SYS")
        if render.has_chat_template(t):  # TRL conversational: apply_chat_template(prompt + chosen)
            full = t.apply_chat_template(ex["prompt"] + ex["chosen"], tokenize=True, return_dict=True)["input_ids"]
        else:  # TRL string form: tokenizer(prompt + chosen), EOS already present
            assert ex["chosen"].endswith(t.eos_token)
            full = t(text=ex["prompt"] + ex["chosen"])["input_ids"]
        assert list(full) == list(enc.context) + list(enc.completions[0])


@pytest.mark.model
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.text(alphabet="abcdefghij ", min_size=1, max_size=8), min_size=1, max_size=12),
       T=st.integers(1, 12))
def test_truncation_keeps_first_T_tokens(tok, words, T):
    text = " ".join(words)
    out = render.truncate_response(tok, text, T)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= T:
        assert out == text
    else:
        assert out == tok.decode(ids[:T])
        assert text.startswith(out)  # byte-level BPE: a token prefix decodes to a text prefix
        assert len(tok(out, add_special_tokens=False)["input_ids"]) <= T


def test_truncation_rejects_bad_length():
    with pytest.raises(ValueError):
        render.truncate_response(None, "x", 0)


# ------------------------------------------------------------------ reference rendering
MSGS = [{"role": "user", "content": "Name a bird."}]


def test_reference_auto_resolves_by_template(tok, plain_tok, nosys_tok):
    assert render.resolve_reference(tok, "auto") == "empty"        # SmolLM2: system role
    assert render.resolve_reference(nosys_tok, "auto") == "none"   # template without a system role
    assert render.resolve_reference(plain_tok, "auto") == "none"   # no chat template
    with pytest.raises(ValueError, match="system role"):
        render.resolve_reference(nosys_tok, "empty")
    with pytest.raises(ValueError, match="has one"):
        render.resolve_reference(tok, "none")
    with pytest.raises(ValueError, match="unknown reference"):
        render.resolve_reference(tok, "blank")


def test_reference_empty_is_the_authors_empty_system_turn(tok):
    """'empty' = the text of the template over [{"role": "system", "content": ""}] + prompt (the authors'
    rendering), with no SmolLM2 persona; 'default' = the template's own default, which inserts the persona."""
    empty = render.render_prompt(tok, MSGS, None, reference="empty")
    oracle = tok.apply_chat_template([{"role": "system", "content": ""}] + MSGS, tokenize=False,
                                     add_generation_prompt=True)
    assert empty == oracle and "SmolLM" not in empty and empty.startswith("<|im_start|>system\n<|im_end|>")
    default = render.render_prompt(tok, MSGS, None, reference="default")
    assert "SmolLM" in default
    assert render.render_prompt(tok, MSGS, None, reference="auto") == empty == render.render_prompt(tok, MSGS, None)
    full = render.render_full(tok, MSGS, "An owl.", None, reference="empty")
    assert full.startswith(empty) and "SmolLM" not in full


def test_reference_does_not_touch_the_system_prompt_condition(tok):
    for ref in ("empty", "default", "auto"):
        assert render.render_prompt(tok, MSGS, "You love owls.", reference=ref) == \
            render.render_prompt(tok, MSGS, "You love owls.")


def test_reference_none_and_plain(plain_tok, nosys_tok):
    assert render.render_prompt(nosys_tok, MSGS, None, reference="none") == \
        render.render_prompt(nosys_tok, MSGS, None, reference="auto")
    # the plain template renders an empty system turn as nothing
    assert render.render_prompt(plain_tok, MSGS, None, reference="empty") == \
        render.render_prompt(plain_tok, MSGS, None, reference="none") == "User: Name a bird.\n\nAssistant:"


def test_leading_empty_system_message_follows_the_setting(tok, nosys_tok):
    """A pair file written with the empty rendering gives the same text as the bare prompt, whatever the file."""
    with_empty = [{"role": "system", "content": ""}] + MSGS
    assert render.as_messages(with_empty) == with_empty
    for ref in ("empty", "default"):
        assert render.render_prompt(tok, with_empty, None, reference=ref) == \
            render.render_prompt(tok, MSGS, None, reference=ref)
    assert render.render_prompt(tok, with_empty, "S.") == render.render_prompt(tok, MSGS, "S.")
    assert render.render_prompt(nosys_tok, with_empty, None, reference="none") == \
        render.render_prompt(nosys_tok, MSGS, None, reference="none")
    with pytest.raises(ValueError, match="message 1 has empty"):
        render.as_messages([{"role": "user", "content": "a"}, {"role": "system", "content": ""},
                            {"role": "user", "content": "b"}])


def test_trl_example_and_encode_group_agree_under_every_reference(tok):
    """The conversational TRL prompt rendered by the template gives exactly the scored context tokens."""
    for ref in ("empty", "default"):
        ex = render.trl_example(tok, MSGS, "Owl.", "Crow.", None, reference=ref)
        enc = render.encode_group(tok, MSGS, ["Owl.", "Crow."], None, reference=ref)
        text = tok.apply_chat_template(ex["prompt"], tokenize=False, add_generation_prompt=True)
        assert render.encode_text(tok, text)[:len(enc.context)] == list(enc.context)
    e = render.encode_group(tok, MSGS, ["Owl.", "Crow."], None, reference="empty")
    d = render.encode_group(tok, MSGS, ["Owl.", "Crow."], None, reference="default")
    assert e.completions == d.completions and len(e.context) < len(d.context)
