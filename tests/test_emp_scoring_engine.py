"""empirical.engine.batching (the fast scorer's engine): exact in float64 on tiny random models of four
architectures, shared prefix, tree rows, chunked head, batch budget with replies, self-check, progress."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from empirical.engine import batching
from empirical.engine.batching import _Group

torch = pytest.importorskip("torch")

ARCHS = ["llama", "qwen2", "gemma3", "gpt_neox", "llama_eager"]


def tiny(kind: str):
    """A 3-layer random model in float64 built from a config (no weights needed). Gemma3 gets a sliding
    window of 6 tokens, so the window binds and the per-layer-type mask is exercised."""
    from transformers import AutoModelForCausalLM, GPTNeoXConfig, Gemma3TextConfig, LlamaConfig, Qwen2Config

    common = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                  max_position_embeddings=256)
    if kind.startswith("llama"):
        cfg = LlamaConfig(num_key_value_heads=2, **common)
    elif kind == "qwen2":
        cfg = Qwen2Config(num_key_value_heads=2, **common)
    elif kind == "gemma3":
        cfg = Gemma3TextConfig(num_key_value_heads=2, head_dim=8, sliding_window=6, final_logit_softcapping=5.0,
                               layer_types=["sliding_attention", "full_attention", "sliding_attention"], **common)
    else:
        cfg = GPTNeoXConfig(**common)
    if kind.endswith("eager"):
        cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float64)
    return model.eval()


def reference(model, groups) -> list[list[float]]:
    """One plain forward per (context + completion), full log-softmax in float64."""
    out = []
    with torch.inference_mode():
        for g in groups:
            row = []
            for c in g.completions:
                s = list(g.context) + list(c)
                lsm = torch.log_softmax(model(input_ids=torch.tensor([s])).logits[0].double(), -1)
                P = len(g.context)
                row.append(float(lsm[torch.arange(P - 1, len(s) - 1), torch.tensor(c)].sum()))
            out.append(row)
    return out


def random_groups(seed: int, n: int = 6, head: int = 5) -> list[_Group]:
    rng = np.random.default_rng(seed)
    h = [int(t) for t in rng.integers(1, 97, head)]
    return [_Group(tuple(h + [int(t) for t in rng.integers(1, 97, rng.integers(1, 9))]),
                   tuple(tuple(int(t) for t in rng.integers(1, 97, rng.integers(1, 12)))
                         for _ in range(rng.integers(1, 4)))) for _ in range(n)]


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request):
    return tiny(request.param)


@pytest.fixture(scope="module")
def llama():
    return tiny("llama")


def maxdiff(a, b) -> float:
    return max(abs(x - y) for r1, r2 in zip(a, b) for x, y in zip(r1, r2))


@pytest.mark.parametrize("layout", ["tree", "packed", "linear"])
@pytest.mark.parametrize("budget", [1, 30, 10**6])
def test_exact_in_float64_every_architecture(arch_model, layout, budget):
    """Same tokens, same arithmetic: in float64 the engine equals one plain forward per sequence to 1e-10
    (1e-6 with eager attention, whose softmax runs in float32 whatever the model's dtype)."""
    groups = random_groups(0)
    out, stats = batching.score_groups(arch_model, groups, batch_tokens=budget, layout=layout)
    eager = arch_model.config._attn_implementation == "eager"
    assert maxdiff(out, reference(arch_model, groups)) < (1e-6 if eager else 1e-10)
    assert stats.prefix_tokens == 5  # the shared head of the random contexts
    assert stats.head_positions == sum(len(c) for g in groups for c in g.completions)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 7), head=st.integers(0, 6), budget=st.integers(1, 80),
       max_batch=st.integers(1, 5), head_chunk=st.sampled_from([None, 1, 3]),
       layout=st.sampled_from(["tree", "packed", "linear"]), pack=st.integers(1, 40))
def test_exact_for_any_groups_and_batching(llama, seed, n, head, budget, max_batch, head_chunk, layout, pack):
    groups = random_groups(seed, n, head)
    out, stats = batching.score_groups(llama, groups, batch_tokens=budget, max_batch=max_batch,
                                       head_chunk=head_chunk, layout=layout, pack_tokens=pack)
    assert maxdiff(out, reference(llama, groups)) < 1e-10
    expect_k = min(batching.lcp_length([g.context for g in groups]), min(len(g.context) for g in groups) - 1)
    assert stats.prefix_tokens == expect_k
    per_reply = layout == "linear"  # the linear layout recomputes the context for every reply
    assert stats.real_tokens == sum((len(g.context) - expect_k) * (len(g.completions) if per_reply else 1)
                                    + sum(len(c) - 1 for c in g.completions) for g in groups)


@pytest.mark.parametrize("layout", ["tree", "packed"])
def test_batches_count_reply_tokens_and_head_is_chunked(llama, layout):
    """Every forward batch has rows x longest row <= batch_tokens (replies counted) unless it is one row;
    packed rows hold at most pack_tokens tokens unless one group is longer; the LM head never sees more
    than head_chunk positions at once."""
    groups = random_groups(3, n=7)
    shapes, head_rows = [], []
    h1 = llama.get_decoder().register_forward_pre_hook(
        lambda mod, args, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    h2 = llama.get_output_embeddings().register_forward_pre_hook(lambda mod, args: head_rows.append(args[0].shape[0]))
    try:
        batching.score_groups(llama, groups, batch_tokens=24, max_batch=3, head_chunk=4, check=False, layout=layout,
                              pack_tokens=16)
    finally:
        h1.remove(), h2.remove()
    forward = shapes[1:]  # the first call is the shared prefix (batch 1)
    assert shapes[0][0] == 1
    assert all(b == 1 or b * t <= 24 for b, t in forward) and all(b <= 3 for b, _ in forward)
    seg = [len(g.context) - 5 + sum(len(c) - 1 for c in g.completions) for g in groups]
    if layout == "tree":
        assert max(t for _, t in forward) == max(seg)
    else:
        assert all(t <= 16 or t in seg for _, t in forward)
        assert sum(b * t for b, t in forward) < sum(max(seg) for _ in seg)  # fewer tokens than padded tree rows
    assert head_rows and max(head_rows) <= 4
    assert sum(head_rows) == sum(len(c) for g in groups for c in g.completions)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 300), min_size=0, max_size=60), budget=st.integers(1, 2000),
       max_batch=st.integers(1, 16))
def test_length_batches_partition_and_respect_budget(lengths, budget, max_batch):
    batches = batching.length_batches(lengths, budget, max_batch)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert 1 <= len(b) <= max_batch
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget


@given(seqs=st.lists(st.lists(st.integers(0, 3), max_size=8), min_size=1, max_size=5))
def test_lcp_length(seqs):
    k = batching.lcp_length(seqs)
    assert all(s[:k] == seqs[0][:k] for s in seqs)
    assert k == min(len(s) for s in seqs) or len({s[k] for s in seqs if len(s) > k}) > 1 or any(
        len(s) == k for s in seqs)


@pytest.mark.parametrize("layout", ["linear", "tree"])
def test_wrong_cache_keyword_is_caught_by_the_self_check(monkeypatch, layout):
    """A cache fed under a keyword the forward swallows (transformers 5.6 took ``past_key_values``, not
    ``cache``): without the self-check the linear layout gives silently wrong numbers (the tree layout's 4-D
    mask no longer fits the keys and raises); with it, both give an LLSError naming the numbers/version."""
    from lls_common.errors import LLSError

    model = tiny("llama")
    groups = random_groups(1)
    good, _ = batching.score_groups(model, groups, layout=layout)
    monkeypatch.setattr(batching, "cache_keyword", lambda m: "cache_typo")
    monkeypatch.setattr(batching, "_CHECKED", weakref.WeakKeyDictionary())
    if layout == "linear":
        wrong, _ = batching.score_groups(model, groups, check=False, layout=layout)
        assert maxdiff(wrong, good) > 1e-3  # the cache was dropped: wrong numbers, no error
        match = r"self-check failed .* fast path gives -?\d+\.\d+ nats and a plain forward -?\d+\.\d+ nats"
    else:
        match = r"self-check failed .* fast path raised .* plain forward gives -?\d+\.\d+ nats"
    with pytest.raises(LLSError, match=match) as info:
        batching.score_groups(model, groups, layout=layout)
    assert "transformers 5" in str(info.value) or "transformers 4" in str(info.value)


def test_cache_keyword_follows_the_signature():
    model = tiny("llama")
    import inspect

    params = inspect.signature(type(model.get_decoder()).forward).parameters
    kw = batching.cache_keyword(model)
    assert kw in params and kw in ("past_key_values", "cache")


def test_progress_callback_and_plain_lines(llama, capsys):
    groups = random_groups(2, n=7)
    seen: list[int] = []
    for layout in ("tree", "packed", "linear"):
        seen.clear()
        batching.score_groups(llama, groups, batch_tokens=20, max_batch=2, progress=seen.append, layout=layout,
                              pack_tokens=20)
        assert sum(seen) == len(groups) and len(seen) >= 2  # one update per batch
    p = batching.Progress(10, desc="x", unit="pair", every=0.0)
    p.update(4)
    p.update(6)
    p.close()
    err = capsys.readouterr().err
    assert "x: 4/10 pairs" in err and "x: 10/10 pairs" in err and "pairs/s" in err


def test_self_check_tolerance_scales():
    assert batching.self_check_tolerance(10, torch.float32) == 1e-3
    assert batching.self_check_tolerance(10, torch.bfloat16) == pytest.approx(1.8)


def test_bad_groups_and_settings(llama):
    with pytest.raises(ValueError, match="group 1: empty"):
        batching.score_groups(llama, [_Group((1, 2), ((3,),)), _Group((1, 2), ((),))])
    with pytest.raises(ValueError, match="batch_tokens"):
        batching.score_groups(llama, random_groups(0), batch_tokens=0)
    with pytest.raises(ValueError, match="layout"):
        batching.score_groups(llama, random_groups(0), layout="zigzag")
    assert batching.score_groups(llama, []) == ([], batching.ScoreStats())


def test_share_prefix_off_is_the_same_numbers(llama):
    groups = random_groups(4)
    a, sa = batching.score_groups(llama, groups)
    b, sb = batching.score_groups(llama, groups, share_prefix=False)
    assert sa.prefix_tokens == 5 and sb.prefix_tokens == 0
    assert maxdiff(a, b) < 1e-10 and sb.real_tokens == sa.real_tokens + 5 * len(groups)


def test_plain_progress_lines_carry_rate_elapsed_and_time_left(monkeypatch, capsys):
    """Long scoring without a terminal: each line has the rate, the time elapsed and an estimate of the rest."""
    from empirical.engine import batching

    clock = iter([0.0, 0.0, 100.0, 100.0, 200.0, 200.0])
    monkeypatch.setattr(batching.time, "perf_counter", lambda: next(clock))
    p = batching.Progress(40, desc="scoring", unit="pair", every=0.0)
    p.update(10)
    line = capsys.readouterr().err.strip()
    assert line == "scoring: 10/40 pairs, 0.10 pairs/s, 1.7 min elapsed, about 5.0 min left", line
    assert batching._duration(30) == "30 s" and batching._duration(7200) == "2.0 h"
