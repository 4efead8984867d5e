"""Exact, fast log-probabilities of completions: ``log Pr_M[r | s, p] = sum_t log softmax(logits_t)[r_t]``.

API (other modules and workers use these two):

``score_completions(model, tok, prompts, completions, system_prompt=None, *, batch_tokens=16384,
max_batch=64, progress=False) -> (logp, n_tokens)``
    ``prompts``: list of prompts (string = one user turn, or a list of chat messages);
    ``completions``: list (same length) of lists of reply strings for that prompt (any number >= 1).
    Returns ragged lists ``logp[i][j]`` (float, sum of log-probs of the scored tokens of reply j of
    prompt i, computed in float32 from the model's logits) and ``n_tokens[i][j]`` (int, number of scored
    tokens). Rendering and the prompt/completion token split follow :mod:`empirical.render` (TRL's
    conversational convention; end-of-turn tokens included).

``score_pairs(model, tok, pairs, system_prompt=None, **kw) -> PairScores``
    ``pairs``: iterable of objects with ``prompt``, ``chosen``, ``rejected`` (attributes or dict keys).
    Returns arrays ``logp_chosen``, ``logp_rejected`` (float64, shape (n,)) and ``n_chosen``,
    ``n_rejected`` (int64, shape (n,)).

``score_completions_naive(...)``: the slow reference (one full forward per (prompt, completion),
full-vocabulary log-softmax at every position). Same signature and outputs; tests and the benchmark
compare the two.

How the fast scorer works (it is exact: the same arithmetic on the same tokens, up to float rounding):

1. Each prompt is rendered once; its context (the tokens shared by all its replies) is run once in a
   batched forward pass (left padding, explicit ``position_ids`` so padding does not shift positions),
   filling a key/value cache. Only the hidden state of the last context token goes through the LM head:
   it gives the log-prob of each reply's first token.
2. The cache is index-selected so every reply row sees its own prompt's keys/values, and the replies
   (without their last token) run in one batched pass with right padding. The LM head and the
   log-softmax are applied only at real reply positions (never at prompt or padding positions).
3. Prompts are sorted by context length and cut into batches of at most ``batch_tokens`` padded
   tokens and ``max_batch`` prompts (length bucketing keeps padding small). Results are returned in
   input order.

Works with the model in float32 or bfloat16 (log-softmax always in float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from empirical import render

__all__ = [
    "PairScores",
    "context_limit",
    "encode_all",
    "score_completions",
    "score_completions_naive",
    "score_encoded",
    "score_pairs",
]


def context_limit(model: Any) -> int | None:
    """Maximum sequence length the model accepts (``max_position_embeddings``), or None if unknown."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(cfg, "max_position_embeddings", None)


def _check_inputs(prompts: Sequence[Any], completions: Sequence[Sequence[str]]) -> list[list[dict[str, str]]]:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completion lists")
    msgs = []
    for i, (p, cs) in enumerate(zip(prompts, completions)):
        msgs.append(render.as_messages(p, where=f"prompt {i}"))
        if isinstance(cs, str) or not cs:
            raise ValueError(f"completions {i}: expected a non-empty list of strings")
        for j, c in enumerate(cs):
            if not isinstance(c, str) or not c.strip():
                raise ValueError(f"completion {j} of prompt {i}: empty or non-string")
    return msgs


def encode_all(
    model: Any, tok: Any, prompts: Sequence[Any], completions: Sequence[Sequence[str]], system_prompt: str | None
) -> list[render.Encoded]:
    """Validate and tokenize every (prompt, replies) group; raises ``ValueError`` naming the index."""
    msgs = _check_inputs(prompts, completions)
    limit = context_limit(model)
    out = []
    for i, (m, cs) in enumerate(zip(msgs, completions)):
        try:
            enc = render.encode_group(tok, m, list(cs), system_prompt)
        except ValueError as exc:
            raise ValueError(f"prompt {i}: {exc}") from None
        longest = len(enc.context) + max(len(c) for c in enc.completions)
        if limit is not None and longest > limit:
            raise ValueError(f"prompt {i}: {longest} tokens exceed the model's context of {limit}")
        out.append(enc)
    return out


def _head_logprobs(model: Any, hidden: Any, targets: Any) -> Any:
    """log softmax(LM head(hidden))[targets] in float32; ``hidden`` (N, H), ``targets`` (N,) -> (N,)."""
    import torch

    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def _batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Indices sorted by decreasing length, cut so that (count * longest) <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * longest > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _score_batch(model: Any, encs: list[render.Encoded], pad_id: int) -> list[list[float]]:
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    decoder = model.get_decoder()
    B = len(encs)
    ctx_len = [len(e.context) for e in encs]
    P = max(ctx_len)
    ids = torch.full((B, P), pad_id, dtype=torch.long)
    mask = torch.zeros((B, P), dtype=torch.long)
    for b, e in enumerate(encs):  # left padding: the last column is every prompt's last token
        ids[b, P - ctx_len[b]:] = torch.tensor(e.context)
        mask[b, P - ctx_len[b]:] = 1
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    ids, mask, pos = ids.to(device), mask.to(device), pos.to(device)
    cache = DynamicCache()
    out = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
    h_last = out.last_hidden_state[:, -1]  # (B, H)

    rows = [(b, j) for b, e in enumerate(encs) for j in range(len(e.completions))]
    row_prompt = torch.tensor([b for b, _ in rows], device=device)
    comps = [encs[b].completions[j] for b, j in rows]
    first = torch.tensor([c[0] for c in comps], device=device)
    totals = _head_logprobs(model, h_last[row_prompt], first).double()  # (R,)

    m = max(len(c) for c in comps) - 1  # inputs: reply tokens 0..n-2; targets: tokens 1..n-1
    if m > 0:
        R = len(rows)
        cin = torch.full((R, m), pad_id, dtype=torch.long)
        tgt = torch.zeros((R, m), dtype=torch.long)
        cmask = torch.zeros((R, m), dtype=torch.long)
        for r, c in enumerate(comps):
            k = len(c) - 1
            if k:
                cin[r, :k] = torch.tensor(c[:-1])
                tgt[r, :k] = torch.tensor(c[1:])
                cmask[r, :k] = 1
        cin, tgt, cmask = cin.to(device), tgt.to(device), cmask.to(device)
        cache.reorder_cache(row_prompt)
        full_mask = torch.cat([mask[row_prompt], cmask], dim=1)
        cpos = torch.tensor(ctx_len, device=device)[row_prompt][:, None] + torch.arange(m, device=device)[None]
        out2 = decoder(input_ids=cin, attention_mask=full_mask, position_ids=cpos, cache=cache, use_cache=True)
        valid = cmask.bool()
        lp = _head_logprobs(model, out2.last_hidden_state[valid], tgt[valid]).double()
        row_of = torch.arange(R, device=device)[:, None].expand(R, m)[valid]
        totals = totals.index_add(0, row_of, lp)
    res: list[list[float]] = [[0.0] * len(e.completions) for e in encs]
    for (b, j), v in zip(rows, totals.tolist()):
        res[b][j] = v
    return res


def score_encoded(
    model: Any, tok: Any, encs: Sequence[render.Encoded], *, batch_tokens: int = 16384, max_batch: int = 64,
    progress: bool = False,
) -> list[list[float]]:
    """Fast scorer on already-encoded groups (see :func:`encode_all`); returns ``logp[i][j]``."""
    import torch

    if batch_tokens < 1 or max_batch < 1:
        raise ValueError("batch_tokens and max_batch must be >= 1")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    lengths = [len(e.context) for e in encs]
    results: list[list[float] | None] = [None] * len(encs)
    batches = _batches(lengths, batch_tokens, max_batch)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(encs), desc="scoring", unit="prompt", leave=False)
    with torch.inference_mode():
        for idx in batches:
            for i, v in zip(idx, _score_batch(model, [encs[i] for i in idx], pad_id)):
                results[i] = v
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    return results  # type: ignore[return-value]


def score_completions(
    model: Any, tok: Any, prompts: Sequence[Any], completions: Sequence[Sequence[str]],
    system_prompt: str | None = None, *, batch_tokens: int = 16384, max_batch: int = 64, progress: bool = False,
) -> tuple[list[list[float]], list[list[int]]]:
    """Fast exact scorer: ``(logp[i][j], n_tokens[i][j])`` of reply j to prompt i (see module doc)."""
    encs = encode_all(model, tok, prompts, completions, system_prompt)
    logp = score_encoded(model, tok, encs, batch_tokens=batch_tokens, max_batch=max_batch, progress=progress)
    return logp, [[len(c) for c in e.completions] for e in encs]


def score_completions_naive(
    model: Any, tok: Any, prompts: Sequence[Any], completions: Sequence[Sequence[str]],
    system_prompt: str | None = None, **_: Any,
) -> tuple[list[list[float]], list[list[int]]]:
    """Reference scorer: one full forward per (prompt, reply), full-vocabulary log-softmax everywhere."""
    import torch

    encs = encode_all(model, tok, prompts, completions, system_prompt)
    logp: list[list[float]] = []
    with torch.inference_mode():
        for e in encs:
            row = []
            for c in e.completions:
                ids = torch.tensor([list(e.context) + list(c)], device=next(model.parameters()).device)
                logits = model(input_ids=ids).logits[0].float()  # (T, V)
                lsm = torch.log_softmax(logits, dim=-1)
                L = len(e.context)
                pos = torch.arange(L - 1, L - 1 + len(c), device=ids.device)
                row.append(float(lsm[pos, ids[0, L:]].double().sum()))
            logp.append(row)
    return logp, [[len(c) for c in e.completions] for e in encs]


@dataclass
class PairScores:
    """Per-pair log-probs (float64, (n,)) and scored token counts (int64, (n,))."""

    logp_chosen: np.ndarray
    logp_rejected: np.ndarray
    n_chosen: np.ndarray
    n_rejected: np.ndarray


def _field(obj: Any, name: str) -> Any:
    return obj[name] if isinstance(obj, dict) else getattr(obj, name)


def score_pairs(
    model: Any, tok: Any, pairs: Iterable[Any], system_prompt: str | None = None, *, naive: bool = False, **kw: Any
) -> PairScores:
    """Score the chosen and rejected reply of each pair under ``system_prompt`` (None = no system prompt)."""
    pairs = list(pairs)
    prompts = [_field(p, "prompt") for p in pairs]
    comps = [[_field(p, "chosen"), _field(p, "rejected")] for p in pairs]
    fn = score_completions_naive if naive else score_completions
    logp, n = fn(model, tok, prompts, comps, system_prompt, **kw)
    lp = np.array(logp, dtype=np.float64).reshape(len(pairs), 2)
    nt = np.array(n, dtype=np.int64).reshape(len(pairs), 2)
    return PairScores(lp[:, 0].copy(), lp[:, 1].copy(), nt[:, 0].copy(), nt[:, 1].copy())
