"""Exact, fast log-probabilities of completions: ``log Pr_M[r | s, p] = sum_t log softmax(logits_t)[r_t]``.

API (other modules and workers use these):

``score_completions(model, tok, prompts, completions, system_prompt=None, *, batch_tokens=2048,
max_batch=16, progress=False) -> (logp, n_tokens)``
    ``prompts``: list of prompts (string = one user turn, or a list of chat messages);
    ``completions``: list (same length) of lists of reply strings for that prompt (any number >= 1).
    Returns ragged lists ``logp[i][j]`` (float, sum of log-probs of the scored tokens of reply j of
    prompt i: float32 logits from the model, log-softmax and sum in float64) and ``n_tokens[i][j]`` (int,
    number of scored tokens). Rendering and the prompt/completion token split follow :mod:`empirical.engine.render`
    (TRL's conversational convention; end-of-turn tokens included).

``score_encoded(model, tok, encs, ...)`` / ``score_encoded_with_stats``: the same on encoded groups.

``score_pairs(model, tok, pairs, system_prompt=None, **kw) -> PairScores``
    ``pairs``: iterable of objects with ``prompt``, ``chosen``, ``rejected`` (attributes or dict keys).
    Returns arrays ``logp_chosen``, ``logp_rejected`` (float64, shape (n,)) and ``n_chosen``,
    ``n_rejected`` (int64, shape (n,)).

``score_completions_naive(...)``: the slow reference (one full forward per (prompt, completion),
full-vocabulary log-softmax at every position, in float64 from the float32 logits). Same signature and
outputs; tests and the benchmark compare the two.

How the fast scorer works: :mod:`empirical.engine.batching` (the engine shared with the log-prob matrix). The
tokens every prompt shares -- the rendered system block and template head -- run once per call and their
KV cache is shared; each prompt's own context runs once for all its replies (tree attention mask, replies
never see each other); batches are cut by padded tokens with the replies counted; the LM head runs only
at positions that predict a reply token, in chunks. It is exact: the same arithmetic on the same tokens up
to float rounding (in float64 the fast and naive scorers agree to 1e-13 nats). Works with the model in
float32 or bfloat16 on any device (inputs go to the model's device). The first call per model object runs
a self-check (fast path vs one plain forward) and raises :class:`lls_common.errors.LLSError` on mismatch.

Tolerance used by tests and benchmarks: ``|fast - naive| <= 1e-4 * max(1, n_tokens / 100)`` nats in fp32
(:func:`tolerance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from empirical.engine import render
from lls_common.errors import LLSError

__all__ = [
    "PairScores",
    "context_limit",
    "encode_all",
    "score_completions",
    "score_completions_naive",
    "score_encoded",
    "score_encoded_with_stats",
    "score_pairs",
    "tolerance",
]


def tolerance(n_tokens: int) -> float:
    """Allowed |fast - naive| in nats for an fp32 sum over ``n_tokens`` tokens: ``1e-4 * max(1, n/100)``."""
    return 1e-4 * max(1.0, n_tokens / 100)


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
    model: Any, tok: Any, prompts: Sequence[Any], completions: Sequence[Sequence[str]], system_prompt: str | None,
    reference: str = "auto",
) -> list[render.Encoded]:
    """Validate and tokenize every (prompt, replies) group; raises ``ValueError`` naming the index.
    ``reference``: the rendering of the no-system condition (:func:`empirical.engine.render.resolve_reference`)."""
    msgs = _check_inputs(prompts, completions)
    limit = context_limit(model)
    out = []
    for i, (m, cs) in enumerate(zip(msgs, completions)):
        try:
            enc = render.encode_group(tok, m, list(cs), system_prompt, reference=reference)
        except ValueError as exc:
            raise LLSError(f"prompt {i}: {exc}") from None
        longest = len(enc.context) + max(len(c) for c in enc.completions)
        if limit is not None and longest > limit:
            raise LLSError(f"prompt {i}: {longest} tokens exceed the model's context of {limit}")
        out.append(enc)
    return out


DEFAULT_BATCH_TOKENS = 2048
"""Default padded row tokens (context suffix + replies) per forward batch (CPU-measured; see benchmarks)."""
DEFAULT_MAX_BATCH = 16
"""Default rows (prompt groups) per forward batch."""


def score_encoded_with_stats(
    model: Any, tok: Any, encs: Sequence[render.Encoded], *, batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH, progress: Any = False, head_chunk: int | None = None, layout: str = "auto",
    desc: str = "scoring", share_prefix: bool = True,
) -> tuple[list[list[float]], Any]:
    """:func:`score_encoded` plus the engine's :class:`empirical.engine.batching.ScoreStats` (prefix tokens K,
    batches, real/padded row tokens, LM-head positions)."""
    from empirical.engine.batching import score_groups

    if batch_tokens < 1 or max_batch < 1:
        raise ValueError("batch_tokens and max_batch must be >= 1")
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    return score_groups(model, list(encs), pad_id=pad_id, batch_tokens=batch_tokens, max_batch=max_batch,
                        head_chunk=head_chunk, layout=layout, progress=progress, desc=desc, unit="prompt",
                        share_prefix=share_prefix)


def score_encoded(
    model: Any, tok: Any, encs: Sequence[render.Encoded], *, batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH, progress: Any = False, head_chunk: int | None = None, layout: str = "auto",
    share_prefix: bool = True,
) -> list[list[float]]:
    """Fast scorer on already-encoded groups (see :func:`encode_all`); returns ``logp[i][j]`` (float64 sums).

    ``batch_tokens``: padded row tokens per forward batch, replies included (rows = one prompt with all its
    replies); ``max_batch``: rows per batch; ``progress``: bool (tqdm on a terminal, periodic lines on
    stderr otherwise) or a callable receiving the number of prompts finished after each batch;
    ``head_chunk``, ``layout``, ``share_prefix``: see :func:`empirical.engine.batching.score_groups`.
    """
    return score_encoded_with_stats(model, tok, encs, batch_tokens=batch_tokens, max_batch=max_batch,
                                    progress=progress, head_chunk=head_chunk, layout=layout,
                                    share_prefix=share_prefix)[0]


def score_completions(
    model: Any, tok: Any, prompts: Sequence[Any], completions: Sequence[Sequence[str]],
    system_prompt: str | None = None, *, batch_tokens: int = DEFAULT_BATCH_TOKENS,
    max_batch: int = DEFAULT_MAX_BATCH, progress: Any = False, reference: str = "auto", **kw: Any,
) -> tuple[list[list[float]], list[list[int]]]:
    """Fast exact scorer: ``(logp[i][j], n_tokens[i][j])`` of reply j to prompt i (see module doc)."""
    encs = encode_all(model, tok, prompts, completions, system_prompt, reference)
    logp = score_encoded(model, tok, encs, batch_tokens=batch_tokens, max_batch=max_batch, progress=progress, **kw)
    return logp, [[len(c) for c in e.completions] for e in encs]


def score_completions_naive(
    model: Any, tok: Any, prompts: Sequence[Any], completions: Sequence[Sequence[str]],
    system_prompt: str | None = None, reference: str = "auto", **_: Any,
) -> tuple[list[list[float]], list[list[int]]]:
    """Reference scorer: one full forward per (prompt, reply), full-vocabulary log-softmax everywhere."""
    import torch

    encs = encode_all(model, tok, prompts, completions, system_prompt, reference)
    logp: list[list[float]] = []
    with torch.inference_mode():
        for e in encs:
            row = []
            for c in e.completions:
                ids = torch.tensor([list(e.context) + list(c)], device=next(model.parameters()).device)
                logits = model(input_ids=ids).logits[0].float()  # (T, V) float32, as the model computes them
                lsm = torch.log_softmax(logits.double(), dim=-1)  # float64: float32's is biased ~1e-5 nats/token
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
