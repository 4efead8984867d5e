"""empirical.engine.scoring: the fast scorer equals the naive reference (1e-4, fp32) and an independent manual sum."""

from __future__ import annotations

import numpy as np
import pytest

from empirical.engine import scoring

PROMPTS = [
    "What is 2+2?",
    [{"role": "user", "content": "Tell me a story about a dragon who lived in a cave by the sea and loved gold."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Name a fruit."}],
    "x",
]
COMPS = [
    ["It is 4.", "Five, obviously, because I am bad at math."],
    ["Once upon a time", "No."],
    ["Apple", "Banana is a fruit that is yellow.", "Kiwi"],  # groups may hold any number of replies
    ["y"],
]


@pytest.mark.model
@pytest.mark.parametrize("system_prompt", [None, "You really love owls. Owls are your favorite animal."])
def test_fast_matches_naive_fp32(smollm2, system_prompt):
    model, tok = smollm2
    fast, n_fast = scoring.score_completions(model, tok, PROMPTS, COMPS, system_prompt, batch_tokens=200)
    slow, n_slow = scoring.score_completions_naive(model, tok, PROMPTS, COMPS, system_prompt)
    assert n_fast == n_slow
    for a, b, n in zip(fast, slow, n_fast):
        assert all(abs(x - y) <= scoring.tolerance(k) for x, y, k in zip(a, b, n))
        assert all(v < 0 for v in a)


@pytest.mark.model
def test_naive_reference_equals_manual_chat_template_sum(smollm2):
    """Independent check of the reference: apply_chat_template + one forward + log_softmax by hand."""
    import torch

    model, tok = smollm2
    msgs = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "What is 2+2?"}]
    p = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    f = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "It is 4."}], tokenize=True,
                                return_dict=True)["input_ids"]
    p, f = list(p), list(f)
    assert f[: len(p)] == p
    with torch.inference_mode():
        lsm = torch.log_softmax(model(input_ids=torch.tensor([f])).logits[0].float(), -1)
    manual = sum(float(lsm[t - 1, f[t]]) for t in range(len(p), len(f)))
    (fast,), (n,) = scoring.score_completions(model, tok, ["What is 2+2?"], [["It is 4."]], "SYS")
    assert n[0] == len(f) - len(p)
    assert abs(fast[0] - manual) < 1e-4


@pytest.mark.model
def test_batching_and_order_do_not_change_scores(smollm2):
    model, tok = smollm2
    ref, _ = scoring.score_completions(model, tok, PROMPTS, COMPS, None, batch_tokens=1)  # one prompt per batch
    big, _ = scoring.score_completions(model, tok, PROMPTS, COMPS, None, batch_tokens=10**6)
    perm = [2, 0, 3, 1]
    shuffled, _ = scoring.score_completions(model, tok, [PROMPTS[i] for i in perm], [COMPS[i] for i in perm], None)
    for i, row in enumerate(ref):
        np.testing.assert_allclose(big[i], row, atol=1e-4)
        np.testing.assert_allclose(shuffled[perm.index(i)], row, atol=1e-4)


@pytest.mark.model
def test_score_pairs_and_bf16(smollm2, smollm2_dir):
    import torch

    from empirical.engine import models

    model, tok = smollm2
    pairs = [{"prompt": p, "chosen": c[0], "rejected": c[-1]} for p, c in zip(PROMPTS[:3], COMPS[:3])]
    s32 = scoring.score_pairs(model, tok, pairs, "SYS")
    ref = scoring.score_pairs(model, tok, pairs, "SYS", naive=True)
    np.testing.assert_allclose(s32.logp_chosen, ref.logp_chosen, atol=1e-4)
    np.testing.assert_allclose(s32.logp_rejected, ref.logp_rejected, atol=1e-4)
    assert s32.n_chosen.dtype == np.int64 and s32.logp_chosen.shape == (3,)
    m16, tok16 = models.load(str(smollm2_dir), dtype="bfloat16")
    s16 = scoring.score_pairs(m16, tok16, pairs, "SYS")
    n16 = scoring.score_pairs(m16, tok16, pairs, "SYS", naive=True)
    np.testing.assert_array_equal(s16.n_chosen, s32.n_chosen)
    # bf16 keeps 8 mantissa bits: logits of magnitude ~20 carry errors up to ~0.1 nats per token. The bound
    # (batching.self_check_tolerance) is bf16's own: the naive bf16 scorer must satisfy it as well.
    from empirical.engine.batching import self_check_tolerance

    for s in (s16, n16):
        for lp, ref, n in ((s.logp_chosen, s32.logp_chosen, s32.n_chosen),
                           (s.logp_rejected, s32.logp_rejected, s32.n_rejected)):
            assert np.all(np.abs(lp - ref) <= [self_check_tolerance(k, torch.bfloat16) for k in n])


@pytest.mark.model
def test_bad_inputs_name_the_index(smollm2, monkeypatch):
    model, tok = smollm2
    with pytest.raises(ValueError, match="completion 1 of prompt 0"):
        scoring.score_completions(model, tok, ["q"], [["a", ""]])
    with pytest.raises(ValueError, match="prompt 1"):
        scoring.score_completions(model, tok, ["q", 5], [["a"], ["b"]])
    with pytest.raises(ValueError, match="2 prompts but 1"):
        scoring.score_completions(model, tok, ["q", "r"], [["a"]])
    monkeypatch.setattr(scoring, "context_limit", lambda m: 60)
    with pytest.raises(ValueError, match="prompt 1: .* exceed the model's context of 60"):
        scoring.score_completions(model, tok, ["q", "long " * 80], [["a"], ["b"]])


@pytest.mark.model
@pytest.mark.slow
def test_gemma_base_plain_template_and_sliding_window():
    """Gemma-3-270M base (plain template; sliding-window layers of 512): fast == naive, long prompt included."""
    from empirical.engine import models

    if not models.is_installed("gemma3-270m"):
        pytest.skip("model 'gemma3-270m' not installed: run `lls models install gemma3-270m`")
    model, tok = models.load("gemma3-270m")
    assert not tok.chat_template
    long = " ".join(f"word{i}" for i in range(200))  # > 512 tokens: crosses the sliding window
    prompts, comps = [long, "Name a colour."], [["Yes, it is long.", "No"], ["Red", "Blue is nice."]]
    fast, n = scoring.score_completions(model, tok, prompts, comps, "Be brief.")
    slow, n2 = scoring.score_completions_naive(model, tok, prompts, comps, "Be brief.")
    assert n == n2
    assert len(scoring.encode_all(model, tok, prompts, comps, "Be brief.")[0].context) > 512
    np.testing.assert_allclose(np.array(fast), np.array(slow), atol=1e-4)


@pytest.mark.model
@pytest.mark.slow
def test_long_replies_within_scaled_tolerance(smollm2):
    """Instruction-following replies of 193-227 tokens (tests/fixtures/long_replies.jsonl): fast == naive
    within 1e-4 x max(1, n/100) nats, token counts equal, with and without a system prompt."""
    import json
    from pathlib import Path

    model, tok = smollm2
    recs = [json.loads(x) for x in (Path(__file__).parent / "fixtures" / "long_replies.jsonl").read_text().splitlines()]
    prompts, comps = [r["prompt"] for r in recs[:3]], [[r["chosen"], r["rejected"]] for r in recs[:3]]
    for system in (None, "You really love owls."):
        fast, n = scoring.score_completions(model, tok, prompts, comps, system)
        slow, n2 = scoring.score_completions_naive(model, tok, prompts, comps, system)
        assert n == n2 and min(min(r) for r in n) >= 150
        for a, b, k in zip(fast, slow, n):
            assert all(abs(x - y) <= scoring.tolerance(m) for x, y, m in zip(a, b, k)), (a, b)
