"""The exact fast scoring engine shared by :mod:`empirical.engine.scoring` and :mod:`empirical.lowrank.logprob_matrix`.

Input: ``G`` groups (:class:`empirical.engine.render.Encoded`): a context ``c`` (token ids, length ``P_g``) and
``k_g >= 1`` completions ``r_{g,1..k}`` (token ids). Output: ``logp[g][j] = sum_t log softmax(z_t)[r_{g,j,t}]``
where ``z_t`` are the model's logits predicting token ``t`` of ``r_{g,j}`` after ``c + r_{g,j,<t}`` -- the
same numbers as one plain forward over ``c + r_{g,j}`` (:func:`empirical.engine.scoring.score_completions_naive`),
up to float rounding: logits in the model's dtype, ``logit - logsumexp`` in float32 (unbiased, ~1e-6 nats
per token from float64), sums in float64.

How (every token the model must see is computed exactly once per call):

1. **Shared prefix.** ``K`` = longest common token prefix of all contexts, capped at ``min_g P_g - 1`` (each
   group keeps one context token of its own). These ``K`` tokens -- the rendered system block and template
   head, the same for every pair of a run -- run once; their key/value cache is repeated over each batch.
   Templates that put the system prompt inside the user turn (Gemma) share only what their renderings
   share: the longest common token prefix is found from the tokens, whatever the template.
2. **Tree rows.** Each group becomes one row ``[c[K:], r_1[:-1], r_2[:-1], ...]`` with explicit positions
   (each reply's positions restart at ``P_g``) and a 4-D attention mask: context tokens see the prefix and
   the earlier context tokens; reply ``j`` sees the prefix, the whole context and its own earlier tokens,
   never another reply. So the context is computed once for all its replies, with no cache copy per reply.
   Models whose sliding-window layers would bind get a per-layer-type mask dict (window measured in
   positions, as the model's own mask does).
3. **Packed, length-aware batches.** Short groups are packed first-fit into rows of at most
   ``pack_tokens`` tokens (block-diagonal mask, positions restarting per group: no padding inside a row);
   rows are sorted by length and cut into batches of at most ``batch_tokens`` padded row tokens
   (``rows x longest row``, replies included) and ``max_batch`` rows.
4. **Head only where scored, in chunks.** The LM head + log-softmax run only at the positions that predict
   a completion token (the last context token, once per reply, and each reply token but the last), in
   chunks of at most ``head_chunk`` positions, so the logits in memory are ``head_chunk x V`` floats.

Attention implementations that cannot take a 4-D mask (flash-attention, flex) use *linear rows* instead:
one row ``c[K:] + r_j[:-1]`` per reply with a 2-D padding mask (each context recomputed per reply).

The KV cache is passed by the keyword the model's forward declares (:func:`cache_keyword`), and the first
call on each model object runs :func:`self_check` (one short sequence, this path vs a plain forward): a
cache swallowed by a wrong keyword gives a loud :class:`~lls_common.errors.LLSError`, never wrong numbers.

Peak memory per batch (activations, besides the weights):
``B*T*d*c_act*bytes`` (hidden states and MLP intermediates of one layer; ``c_act ~ 2 + 3*d_ff/d``)
+ ``B*heads*T*(K+T)*4`` bytes (one layer's attention scores with the math kernel; 0 with a fused kernel)
+ ``2*layers*B*(K+T)*kv_dim*bytes`` (the KV cache of the batch)
+ ``3*head_chunk*V*4`` bytes (one chunk of float32 logits and logsumexp's two temporaries);
``B*T <= batch_tokens``.
"""

from __future__ import annotations

import copy
import inspect
import math
import sys
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = [
    "PackedRows",
    "ScoreStats",
    "cache_keyword",
    "head_logprobs",
    "lcp_length",
    "length_batches",
    "pack_rows",
    "make_rows",
    "supports_4d_mask",
    "Progress",
    "run_prefix",
    "score_groups",
    "self_check",
    "self_check_tolerance",
]

HEAD_ELEMENTS = 1 << 24  # logits per LM-head chunk (64 MiB in fp32): head_chunk = HEAD_ELEMENTS // vocab


# ----------------------------------------------------------------------------------------------
# Small pure helpers


def lcp_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of the token sequences (0 for an empty list)."""
    if not seqs:
        return 0
    first = seqs[0]
    k = min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < k and s[i] == first[i]:
            i += 1
        k = i
        if k == 0:
            break
    return k


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Indices sorted by decreasing length, cut so that ``count * longest <= batch_tokens`` (a single item
    longer than the budget is a batch of its own) and ``count <= max_batch``. A partition of ``range(n)``."""
    if batch_tokens < 1 or max_batch < 1:
        raise ValueError("batch_tokens and max_batch must be >= 1")
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


def self_check_tolerance(n_tokens: int, dtype: Any) -> float:
    """Allowed |fast - plain| in nats for the self-check's sum over ``n_tokens`` reply tokens: ``1e-3``
    in fp32/fp64 (10x the fp32 test tolerance, leaving room for TF32 or other GPU kernels); ``0.15 n + 0.3``
    in half precision (bf16 keeps 8 mantissa bits: logits of magnitude ~20 carry errors up to ~0.1 nats,
    and the naive bf16 scorer itself differs from fp32 by that much). A cache that is not honoured
    changes such a sum by tens of nats."""
    import torch

    if dtype in (torch.float32, torch.float64):
        return 1e-3
    return 0.15 * n_tokens + 0.3


# ----------------------------------------------------------------------------------------------
# Model plumbing


def _decoder(model: Any) -> Any:
    return model.get_decoder()


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def cache_keyword(model: Any) -> str:
    """The keyword under which the decoder's ``forward`` takes a KV cache: ``past_key_values`` (transformers 4.x
    and 5.x before the rename) or ``cache`` (later 5.x); checked once per decoder class from its signature.

    Raises :class:`LLSError` when the forward declares neither (a cache passed through ``**kwargs`` could be
    silently dropped)."""
    from lls_common.errors import LLSError

    cls = type(_decoder(model))
    kw = _KEYWORDS.get(cls)
    if kw is None:
        params = inspect.signature(cls.forward).parameters
        kw = next((k for k in ("past_key_values", "cache") if k in params), None)
        if kw is None:
            import transformers

            raise LLSError(f"{cls.__name__}.forward declares neither 'past_key_values' nor 'cache' (transformers "
                           f"{transformers.__version__}); the fast scorer cannot pass it a KV cache")
        _KEYWORDS[cls] = kw
    return kw


_KEYWORDS: dict[type, str] = {}
_CHECKED: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers < 4.56: no config argument
        return DynamicCache()


def run_prefix(model: Any, prefix: Sequence[int]) -> Any:
    """KV cache (batch 1) of the ``K = len(prefix) >= 1`` tokens at positions ``0..K-1``."""
    import torch

    device = _device(model)
    cache = _new_cache(model)
    ids = torch.tensor([list(prefix)], device=device)
    with torch.inference_mode():
        _decoder(model)(input_ids=ids, position_ids=torch.arange(len(prefix), device=device)[None],
                        use_cache=True, **{cache_keyword(model): cache})
    return cache


def head_logprobs(model: Any, hidden: Any, targets: Any, head_chunk: int | None = None) -> Any:
    """``log softmax(head(hidden))[targets]`` as ``logit - logsumexp`` in float32 (float64 for a float64
    model) from the logits in the model's dtype, ``head_chunk`` positions at a time.

    ``hidden`` (N, H), ``targets`` (N,) long -> (N,) float64. Applies ``final_logit_softcapping`` when the
    config has it (Gemma 2/3), as the model's own forward does.
    """
    import torch

    head = model.get_output_embeddings()
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    n = hidden.shape[0]
    if head_chunk is None:
        head_chunk = max(1, HEAD_ELEMENTS // head.weight.shape[0])
    out = torch.empty(n, dtype=torch.float64, device=hidden.device)
    for a in range(0, n, head_chunk):
        b = min(n, a + head_chunk)
        logits = head(hidden[a:b])
        if cap is not None:  # in the model's dtype, as its own forward does
            logits = torch.tanh(logits / cap) * cap
        if logits.dtype != torch.float64:
            logits = logits.float()
        # logit - logsumexp: float32's log_softmax on CPU is biased by ~1e-5 nats per token, this is not (~1e-6
        # nats, unbiased, vs float64); float64 here would cost 20% of a long-reply run on CPU.
        lp = logits.gather(-1, targets[a:b, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        out[a:b] = lp.double()
    return out


# ----------------------------------------------------------------------------------------------
# Progress


def _duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``: a duration in the unit a person reads at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Per-batch progress with items/s: a tqdm bar on stderr when it is a terminal, else one line every
    ``every`` seconds (and at the end). ``callback(n)`` instead of a display when given."""

    def __init__(self, total: int, desc: str = "scoring", unit: str = "pair", every: float = 30.0,
                 callback: Callable[[int], None] | None = None, enabled: bool = True):
        self.total, self.desc, self.unit, self.every = total, desc, unit, every
        self.callback, self.enabled = callback, enabled
        self.done, self.t0, self.last = 0, time.perf_counter(), time.perf_counter()
        self.bar = None
        if enabled and callback is None and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)

    def update(self, n: int) -> None:
        self.done += n
        if self.callback is not None:
            self.callback(n)
        elif self.bar is not None:
            self.bar.update(n)
        elif self.enabled:
            now = time.perf_counter()
            if now - self.last >= self.every:
                self.last = now
                self._line(now)

    def line(self, now: float) -> str:
        """``desc: done/total units, rate units/s, elapsed, ETA`` (the ETA from the mean rate so far)."""
        el = max(now - self.t0, 1e-9)
        rate = self.done / el
        left = max(self.total - self.done, 0)
        eta = f", about {_duration(left / rate)} left" if rate > 0 and left else ""
        return (f"{self.desc}: {self.done:.0f}/{self.total} {self.unit}s, {rate:.2f} {self.unit}s/s, "
                f"{_duration(el)} elapsed{eta}")

    def _line(self, now: float) -> None:
        print(self.line(now), file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self.callback is None and self.total:
            self._line(time.perf_counter())


# ----------------------------------------------------------------------------------------------
# Rows and masks


@dataclass(frozen=True)
class _Group:
    """Duck type of :class:`empirical.engine.render.Encoded` (what the engine reads)."""

    context: tuple[int, ...]
    completions: tuple[tuple[int, ...], ...]


@dataclass
class ScoreStats:
    """What a :func:`score_groups` call did: shared prefix tokens ``K``, batches, row tokens computed
    (``real``) and padded (``padded``), positions through the LM head, and the row layout used."""

    prefix_tokens: int = 0
    batches: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    head_positions: int = 0
    layout: str = "tree"


Row = list[tuple[int, list[int]]]  # segments of one row: (group index, reply indices scored in it)


def _seg_len(e: Any, K: int, reps: list[int]) -> int:
    return len(e.context) - K + sum(len(e.completions[j]) - 1 for j in reps)


def _row_len(encs: Sequence[Any], K: int, row: Row) -> int:
    return sum(_seg_len(encs[g], K, reps) for g, reps in row)


def _rows(encs: Sequence[Any], K: int, layout: str, pack_tokens: int = 256) -> list[Row]:
    """Rows: ``tree`` = one group (all its replies) per row; ``linear`` = one reply per row; ``packed`` = tree
    segments packed first-fit-decreasing into rows of at most ``pack_tokens`` tokens (longer groups alone);
    ``balanced`` = tree segments spread over ``R = ceil(total / pack_tokens)`` rows, longest first onto the
    shortest row (rows of near-equal length, so one batch of them has little padding; the longest row is at
    most ``total / R + the longest segment``)."""
    if layout == "linear":
        return [[(g, [j])] for g, e in enumerate(encs) for j in range(len(e.completions))]
    segs = [(g, list(range(len(e.completions)))) for g, e in enumerate(encs)]
    if layout == "tree":
        return [[sg] for sg in segs]
    if layout == "balanced":
        lengths = [_seg_len(encs[g], K, reps) for g, reps in segs]
        n_rows = max(1, min(len(segs), -(-sum(lengths) // pack_tokens)))
        out: list[Row] = [[] for _ in range(n_rows)]
        load = [0] * n_rows
        for k in sorted(range(len(segs)), key=lambda k: (-lengths[k], k)):
            r = min(range(n_rows), key=lambda r: (load[r], r))
            out[r].append(segs[k])
            load[r] += lengths[k]
        return out
    rows: list[Row] = []
    room: list[int] = []
    for sg in sorted(segs, key=lambda sg: (-_seg_len(encs[sg[0]], K, sg[1]), sg[0])):
        n = _seg_len(encs[sg[0]], K, sg[1])
        for r, left in enumerate(room):
            if n <= left:
                rows[r].append(sg)
                room[r] -= n
                break
        else:
            rows.append([sg])
            room.append(pack_tokens - n)
    return rows


def _sliding_window(model: Any) -> int | None:
    """The window of the model's sliding-attention layers, or None when it has none."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    w = getattr(cfg, "sliding_window", None)
    types = getattr(cfg, "layer_types", None)
    if w is None or (types is not None and "sliding_attention" not in types):
        return None
    if types is None and not getattr(cfg, "use_sliding_window", True):
        return None
    return int(w)


def _mask_value(allowed: Any, model: Any) -> Any:
    """Boolean 'may attend' (B, 1, T, S) -> what the attention implementation takes (bool for sdpa,
    additive float for eager)."""
    import torch

    impl = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
    if impl == "sdpa":
        return allowed
    dtype = next(model.parameters()).dtype
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, torch.finfo(dtype).min)


def _supports_4d(model: Any) -> bool:
    impl = getattr(model.config, "_attn_implementation", "sdpa") or "sdpa"
    return impl in ("sdpa", "eager")


def supports_4d_mask(model: Any) -> bool:
    """Whether the model's attention implementation takes an arbitrary 4-D mask (sdpa, eager): what tree and
    packed rows need; flash-attention and flex do not."""
    return _supports_4d(model)


def make_rows(encs: Sequence[Any], K: int, layout: str, pack_tokens: int = 256) -> list[Row]:
    """The rows of ``layout`` (``tree``, ``packed``, ``balanced`` or ``linear``) for groups ``encs`` after a
    shared prefix of ``K`` tokens: a list of rows, each a list of ``(group, [reply indices])`` segments (see
    :func:`_rows`)."""
    return _rows(encs, K, layout, pack_tokens)


@dataclass
class PackedRows:
    """One batch of rows as the model takes it: ``ids``/``pos`` (B, T) long (CPU), ``mask`` (on the model's
    device: a 4-D (B, 1, T, K + T) mask in the implementation's form, a dict of them per layer type, or a 2-D
    (B, K + T) padding mask for linear rows), and the scored positions in sequence order: hidden state
    ``(sel_r[i], sel_c[i])`` predicts token ``tgt[i]`` of sequence ``seq[i]`` (a completion's tokens in order,
    its first from the last context token). ``lens``: real tokens per row."""

    ids: Any
    pos: Any
    mask: Any
    sel_r: list[int]
    sel_c: list[int]
    tgt: list[int]
    seq: list[int]
    lens: list[int]


def pack_rows(model: Any, encs: Sequence[Any], rows: list[Row], K: int, pad_id: int, tree: bool,
              seq_index: dict, spare: Sequence[int] | None = None) -> PackedRows:
    """Lay out ``rows`` (from :func:`_rows`) after a shared prefix of ``K`` tokens: token ids, explicit
    positions, the attention mask (module doc, steps 2-3) and the positions that predict completion tokens.
    ``seq_index[(g, j)]`` numbers completion ``j`` of group ``g``; ``spare[b]``: padding columns kept free
    at the end of row ``b`` (they see only themselves, like all padding). The one place rows are built: the
    scorer (:func:`score_groups`) and the packed DPO forward (:mod:`empirical.stages.packed_dpo`) both use it."""
    import torch

    device = _device(model)
    B = len(rows)
    lens = [_row_len(encs, K, row) for row in rows]
    T = max(n + (spare[b] if spare is not None else 0) for b, n in enumerate(lens))
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    grp = torch.full((B, T), -1, dtype=torch.long)  # reply ids: -1 padding, 0 context, j+1 reply j
    slot = torch.full((B, T), -1, dtype=torch.long)  # which segment (group) of the row a token belongs to
    sel_r: list[int] = []
    sel_c: list[int] = []
    tgt: list[int] = []
    seq: list[int] = []
    for b, row in enumerate(rows):
        o = 0
        for k, (g, reps) in enumerate(row):
            e = encs[g]
            P = len(e.context)
            p = P - K
            ids[b, o:o + p] = torch.tensor(e.context[K:])
            pos[b, o:o + p] = torch.arange(K, P)
            grp[b, o:o + p] = 0
            slot[b, o:o + p] = k
            last = o + p - 1
            o += p
            for j in reps:
                c = e.completions[j]
                n = len(c) - 1
                s = seq_index[(g, j)]
                sel_r.append(b), sel_c.append(last), tgt.append(c[0]), seq.append(s)  # last context token -> c[0]
                if n:
                    ids[b, o:o + n] = torch.tensor(c[:-1])
                    pos[b, o:o + n] = torch.arange(P, P + n)
                    grp[b, o:o + n] = j + 1
                    slot[b, o:o + n] = k
                    sel_r += [b] * n
                    sel_c += range(o, o + n)
                    tgt += c[1:]
                    seq += [s] * n
                o += n
    real = grp >= 0
    if tree:
        # allowed[b, i, j]: query i may see row key j (earlier or same, same group, context or own reply)
        lower = torch.ones((T, T), dtype=torch.bool).tril()
        same = ((grp[:, None, :] == 0) | (grp[:, None, :] == grp[:, :, None])) & (slot[:, None, :] == slot[:, :, None])
        allowed = lower[None] & same & real[:, None, :] & real[:, :, None]
        allowed |= torch.eye(T, dtype=torch.bool)[None]  # padding queries see themselves (no empty rows)
        full = torch.cat([real[:, :, None].expand(B, T, K), allowed], dim=2)[:, None]  # (B, 1, T, K + T)
        window = _sliding_window(model)
        if window is not None and K + T > window:
            kpos = torch.cat([torch.arange(K)[None].expand(B, K), pos], dim=1)  # (B, K + T)
            near = (pos[:, :, None] - kpos[:, None, :]) < window
            sliding = full & near[:, None]
            sliding |= torch.cat([torch.zeros((T, K), dtype=torch.bool), torch.eye(T, dtype=torch.bool)], 1)[None, None]
            mask: Any = {"full_attention": _mask_value(full.to(device), model),
                         "sliding_attention": _mask_value(sliding.to(device), model)}
        else:
            mask = _mask_value(full.to(device), model)
    else:
        mask = torch.cat([torch.ones((B, K), dtype=torch.long), real.long()], dim=1).to(device)
    return PackedRows(ids=ids, pos=pos, mask=mask, sel_r=sel_r, sel_c=sel_c, tgt=tgt, seq=seq, lens=lens)


def _score_batch(model: Any, encs: Sequence[Any], rows: list[Row], K: int, cache: Any,
                 pad_id: int, tree: bool, head_chunk: int | None, totals: Any, seq_index: dict) -> tuple[int, int, int]:
    """Run one batch of rows; adds each scored sequence's log-prob (float64) into ``totals[seq_index[(g, j)]]``.
    Returns (real tokens, padded tokens, head positions)."""
    import torch

    device = _device(model)
    pk = pack_rows(model, encs, rows, K, pad_id, tree, seq_index)
    B, T = pk.ids.shape
    kw: dict[str, Any] = {}
    if cache is not None:
        c = copy.deepcopy(cache)
        c.batch_repeat_interleave(B)
        kw = {cache_keyword(model): c, "use_cache": True}
    out = _decoder(model)(input_ids=pk.ids.to(device), attention_mask=pk.mask, position_ids=pk.pos.to(device), **kw)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    h = hidden[torch.tensor(pk.sel_r, device=device), torch.tensor(pk.sel_c, device=device)]
    lp = head_logprobs(model, h, torch.tensor(pk.tgt, device=device), head_chunk)
    totals.index_add_(0, torch.tensor(pk.seq, device=device), lp)
    return sum(pk.lens), B * T, len(pk.tgt)


def score_groups(model: Any, encs: Sequence[Any], *, pad_id: int = 0, batch_tokens: int = 2048,
                 max_batch: int = 16, head_chunk: int | None = None, layout: str = "auto",
                 progress: Any = False, desc: str = "scoring", unit: str = "pair",
                 check: bool = True, pack_tokens: int = 256, share_prefix: bool = True
                 ) -> tuple[list[list[float]], ScoreStats]:
    """Exact log-probs ``logp[g][j]`` of every completion of every group (see module doc) and the stats.

    ``batch_tokens``: padded row tokens per forward batch (context suffix + replies); ``max_batch``: rows
    per batch; ``head_chunk``: positions per LM-head chunk (default ``2**24 // vocab``); ``layout``:
    ``"tree"`` (one row per group, 4-D mask), ``"packed"`` (tree segments packed into rows of at most
    ``pack_tokens`` tokens, block-diagonal mask: no padding inside), ``"linear"`` (one row per reply, 2-D
    mask) or ``"auto"`` (packed when the attention implementation takes a 4-D mask, else linear; on CPU
    with SmolLM2 packed rows of 256 tokens took 12% less CPU time than tree rows on short HH replies and the
    same on 200-token replies, where groups are longer than a packed row and run alone); ``progress``: bool,
    or a callable receiving the number of groups finished after each batch; ``check``: run
    :func:`self_check` on the first call per model; ``share_prefix=False``: no shared prefix (K = 0;
    every row recomputes the system block -- a baseline).
    """
    import torch

    if batch_tokens < 1 or max_batch < 1:
        raise ValueError("batch_tokens and max_batch must be >= 1")
    if layout not in ("auto", "tree", "packed", "linear"):
        raise ValueError(f"layout must be 'auto', 'tree', 'packed' or 'linear', got {layout!r}")
    if not encs:
        return [], ScoreStats()
    for g, e in enumerate(encs):
        if not e.context or not e.completions or any(not c for c in e.completions):
            raise ValueError(f"group {g}: empty context or completion")
    if layout == "auto":
        layout = "packed" if _supports_4d(model) else "linear"
    tree = layout != "linear"
    if check and not model.training and model not in _CHECKED:
        self_check(model, encs[0], pad_id=pad_id, layout="tree" if tree else "linear")
    K = max(0, min(lcp_length([e.context for e in encs]), min(len(e.context) for e in encs) - 1))
    K = K if share_prefix else 0
    rows = _rows(encs, K, layout, pack_tokens)
    seq_index = {(g, j): i for i, (g, j) in enumerate((g, j) for g, e in enumerate(encs)
                                                        for j in range(len(e.completions)))}
    stats = ScoreStats(prefix_tokens=K, layout=layout)
    bar = Progress(len(encs), desc=desc, unit=unit, callback=progress if callable(progress) else None,
                   enabled=bool(progress))
    device = _device(model)
    totals = torch.zeros(len(seq_index), dtype=torch.float64, device=device)
    with torch.inference_mode():
        cache = run_prefix(model, encs[0].context[:K]) if K > 0 else None
        lens = [_row_len(encs, K, row) for row in rows]
        for idx in length_batches(lens, batch_tokens, max_batch):
            real, padded, heads = _score_batch(model, encs, [rows[i] for i in idx], K, cache, pad_id, tree,
                                               head_chunk, totals, seq_index)
            stats.batches += 1
            stats.real_tokens += real
            stats.padded_tokens += padded
            stats.head_positions += heads
            done = sum(1 for i in idx for g, reps in rows[i] if reps[-1] == len(encs[g].completions) - 1)
            bar.update(done)
    bar.close()
    flat = totals.tolist()
    out = [[flat[seq_index[(g, j)]] for j in range(len(e.completions))] for g, e in enumerate(encs)]
    return out, stats


# ----------------------------------------------------------------------------------------------
# Self-check


def self_check(model: Any, enc: Any, *, pad_id: int = 0, layout: str = "tree") -> dict[str, float]:
    """Score one short sequence built from ``enc`` with this engine (a cached prefix, a shared context and
    two replies) and with one plain forward; raise :class:`LLSError` naming both numbers and the transformers
    version when they differ by more than :func:`self_check_tolerance`. Marks ``model`` as checked.

    The sequence: ``s = (context + first completion)[:32]`` (repeated until it has at least 8 tokens);
    prefix ``s[:n//2]`` through the cache, context ``s[:3n//4]``, replies ``s[3n//4:]`` and ``s[3n//4:-1]``.
    """
    import torch

    from lls_common.errors import LLSError

    s = (list(enc.context) + list(enc.completions[0]))[:32]
    while len(s) < 8:
        s = s + s
    n = len(s)
    k, c = n // 2, (3 * n) // 4
    probe = _Group(tuple(s[:c]), (tuple(s[c:]), tuple(s[c:-1])))
    device = _device(model)
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([s], device=device)).logits[0].float()
        lsm = torch.log_softmax(logits.double(), dim=-1)
        plain = [float(lsm[c - 1:n - 1].gather(-1, torch.tensor(s[c:], device=device)[:, None]).double().sum()),
                 float(lsm[c - 1:n - 2].gather(-1, torch.tensor(s[c:-1], device=device)[:, None]).double().sum())]
        totals = torch.zeros(2, dtype=torch.float64, device=device)
        tree = layout == "tree"
        try:
            cache = run_prefix(model, s[:k])
            _score_batch(model, [probe], _rows([probe], k, layout), k, cache, pad_id, tree, None, totals,
                         {(0, 0): 0, (0, 1): 1})
        except Exception as exc:  # e.g. a dropped cache makes the 4-D mask longer than the keys
            import transformers

            raise LLSError(
                f"scorer self-check failed for {type(model).__name__}: the fast path raised "
                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (transformers "
                f"{transformers.__version__}, cache keyword {cache_keyword(model)!r}, layout {layout}); plain "
                f"forward gives {plain[0]:.6f} nats") from exc
    fast = totals.tolist()
    dtype = next(model.parameters()).dtype
    for j, (a, b) in enumerate(zip(fast, plain)):
        m = len(s) - c - j
        if not (math.isfinite(a) and abs(a - b) <= self_check_tolerance(m, dtype)):
            import transformers

            raise LLSError(
                f"scorer self-check failed for {type(model).__name__}: the fast path gives {a:.6f} nats and a plain "
                f"forward {b:.6f} nats for the same {m}-token reply (transformers {transformers.__version__}, cache "
                f"keyword {cache_keyword(model)!r}, layout {layout}); the KV cache or attention mask is not being "
                f"honoured -- report this, and pin a transformers version the tests pass with")
    _CHECKED[model] = True
    return {"fast": fast[0], "plain": plain[0]}

