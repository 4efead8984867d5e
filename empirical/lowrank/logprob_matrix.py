"""Log-probability matrices ``X_M[s, j] = log Pr_M[r_j | s, p_j]`` (paper's Fact 2.1 / Appendix C.1).

Rows = system prompts ``s`` (``None`` = no system prompt), columns = prompt-response pairs ``(p_j, r_j)``.
Each entry is the sum of log-probs of the scored completion tokens, rendered and split exactly as
:mod:`empirical.engine.render` does for scoring and DPO (chat template over ``[system] + prompt`` with the
generation prompt; completion = the suffix the assistant turn adds, end-of-turn tokens included).

Prefix reuse (:func:`logprob_row`, engine :mod:`empirical.engine.batching`, shared with the scorer): for one
system prompt all ``P`` token sequences ``context_j + completion_j`` start with the same rendered system
block. Its longest common token prefix (capped so that every sequence keeps at least one context token)
runs once through the model; the resulting key/value cache is repeated over each batch of pairs, which
then run only their own suffix tokens (explicit positions; columns sharing a prompt share its context
through a tree attention mask). The LM head and log-softmax run only at positions that predict
completion tokens. Same tokens, same arithmetic as a full forward, up to float rounding (tests: equal to
the naive reference to 1e-4 x max(1, n/100) nats in fp32).

Resumable (:func:`compute_matrix` with ``store``): rows are computed in column chunks and each finished
(row, chunk) is saved as ``store/<chunk fingerprint>/<row key>.npz`` (atomic writes). The fingerprint
hashes the model name, dtype and the chunk's columns as text; the row key adds the system prompt. A re-run
skips finished rows; different commands that need the same (model, system prompt, columns) share them;
different inputs can never be mixed up.

Speed: prefix reuse saves the shared tokens (K per pair) and restricts the LM head to completion
positions, so its gain over recomputing is about (K + L) / L tokens, L = the pair's own tokens, and a row's
cost does not depend on the system prompt's length (benchmarks/bench_logprob_matrix.py: 1.44x with the
library's ~20-token system blocks and HH pairs of 8-64 + 8-64 tokens, 2.9x with 184-token system prompts).
Batches are length-sorted and capped at ``batch_tokens`` padded tokens (default 2048, best on CPU).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from empirical.engine import render

__all__ = [
    "Column",
    "MatrixResult",
    "compute_matrix",
    "fingerprint",
    "cached_rows",
    "pair_columns",
    "row_key",
    "select_columns",
    "select_pairs",
    "logprob_row",
    "logprob_row_naive",
    "logprob_row_recompute",
]


#: How a row with ``system=None`` renders the no-system condition (:mod:`empirical.engine.render`): the template's own
#: default (SmolLM2: its persona), as the committed low-rank, pair-check and detection results and their
#: cached matrices were made. The experiment pipeline (score / train / correlate / eval) defaults to the
#: authors' empty system turn instead (``reference="auto"``); this module keeps ``"default"`` so that cached
#: rows stay what their keys say.
NO_SYSTEM_REFERENCE = "default"


@dataclass(frozen=True)
class Column:
    """One column of X: a prompt (string or chat messages) and one response text."""

    id: str
    prompt: Any
    response: str


def _encode_row(model: Any, tok: Any, system: str | None, columns: Sequence[Column]) -> list[render.Encoded]:
    from empirical.engine import scoring

    try:
        return scoring.encode_all(model, tok, [c.prompt for c in columns], [[c.response] for c in columns], system,
                                  reference=NO_SYSTEM_REFERENCE)
    except ValueError as exc:
        raise ValueError(f"column {exc}") from None


def logprob_row(model: Any, tok: Any, system: str | None, columns: Sequence[Column], *,
                batch_tokens: int = 2048, max_batch: int = 64, encoded: list[render.Encoded] | None = None
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """One row ``X[s, :]`` with prefix reuse. Returns ``(logp (P,) float64, n_tokens (P,) int64, K)``.

    ``K`` = number of shared prefix tokens computed once (the rendered system block and template head).
    Columns with the same context (e.g. the chosen and rejected reply of one pair) are scored as one group:
    their context runs once (:func:`empirical.engine.batching.score_groups`).
    """
    from empirical.engine.batching import score_groups

    if not columns:
        raise ValueError("no columns")
    encs = encoded if encoded is not None else _encode_row(model, tok, system, columns)
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, e in enumerate(encs):
        groups.setdefault(tuple(e.context), []).append(j)
    members = list(groups.values())
    merged = [_Group(ctx, tuple(tuple(encs[j].completions[0]) for j in js)) for ctx, js in groups.items()]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    lp, stats = score_groups(model, merged, pad_id=pad_id, batch_tokens=batch_tokens, max_batch=max_batch,
                             unit="prompt")
    out = np.zeros(len(encs))
    for js, row in zip(members, lp):
        out[js] = row
    return out, np.array([len(e.completions[0]) for e in encs], dtype=np.int64), stats.prefix_tokens


@dataclass(frozen=True)
class _Group:
    context: tuple[int, ...]
    completions: tuple[tuple[int, ...], ...]


def logprob_row_naive(model: Any, tok: Any, system: str | None, columns: Sequence[Column]) -> np.ndarray:
    """Reference row: one full forward per pair (system prompt recomputed every time), full log-softmax."""
    from empirical.engine import scoring

    lp, _ = scoring.score_completions_naive(model, tok, [c.prompt for c in columns],
                                            [[c.response] for c in columns], system, reference=NO_SYSTEM_REFERENCE)
    return np.array([r[0] for r in lp])


def logprob_row_recompute(model: Any, tok: Any, system: str | None, columns: Sequence[Column], **kw: Any
                          ) -> np.ndarray:
    """Baseline row: the batched fast scorer without the shared prefix (``share_prefix=False``): the system
    prompt is recomputed inside every sequence."""
    from empirical.engine import scoring

    lp, _ = scoring.score_completions(model, tok, [c.prompt for c in columns], [[c.response] for c in columns],
                                      system, share_prefix=False, reference=NO_SYSTEM_REFERENCE, **kw)
    return np.array([r[0] for r in lp])


# ----------------------------------------------------------------------------------------------
# Matrices, resumable


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode()).hexdigest()


def fingerprint(model_name: str, dtype: str, columns: Sequence[Column]) -> str:
    """sha256 of what determines a row besides its system prompt: model, dtype and the columns as text."""
    return _sha({"model": model_name, "dtype": dtype, "columns": [[c.id, c.prompt, c.response] for c in columns]})


def row_key(colset: str, system: str | None) -> str:
    return _sha({"colset": colset, "system": system})


@dataclass
class MatrixResult:
    """``X`` (S, P) float64 log-probs; ``n_tokens`` (S, P) scored token counts; per-row prefix lengths/timings."""

    X: np.ndarray
    n_tokens: np.ndarray
    prefix_tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cached: list[bool] = field(default_factory=list)


def _row_path(store: Path, colset: str, system: str | None) -> Path:
    return store / colset[:16] / f"{row_key(colset, system)[:24]}.npz"


def _save_row(path: Path, key: str, logp: np.ndarray, n: np.ndarray, K: int, secs: float) -> None:
    import io

    from lls_common.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, logp=logp, n_tokens=n, prefix=np.array(K), seconds=np.array(secs), key=np.array(key))
    atomic_write_bytes(path, buf.getvalue())


def _load_row(path: Path, key: str, P: int):
    r = np.load(path)
    if str(r["key"]) != key or r["logp"].shape != (P,):
        raise ValueError(f"{path}: cached row does not match its inputs (corrupt cache?); delete it")
    return r["logp"], r["n_tokens"], int(r["prefix"]), float(r["seconds"])


def cached_rows(store: str | Path, model_name: str, dtype: str, systems: Sequence[str | None],
                columns: Sequence[Column], chunk_columns: int = 128) -> list[bool]:
    """Which rows are completely in the row cache ``store``."""
    colsets = [fingerprint(model_name, dtype, columns[a:b]) for a, b in _chunks(len(columns), chunk_columns)]
    return [all(_row_path(Path(store), c, s).is_file() for c in colsets) for s in systems]


def _chunks(P: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(P, a + chunk)) for a in range(0, P, chunk)]


def compute_matrix(model: Any, tok: Any, systems: Sequence[str | None], columns: Sequence[Column], *,
                   store: str | Path | None = None, model_name: str = "", dtype: str = "float32",
                   batch_tokens: int = 2048, max_batch: int = 64, progress: bool = False,
                   only_cached: bool = False, chunk_columns: int = 128) -> MatrixResult:
    """``X[s, j] = log Pr[r_j | s, p_j]`` for all rows (prefix reuse per row).

    Columns are processed in consecutive chunks of ``chunk_columns`` (each chunk shares one prefix
    computation per row). With ``store`` (a row cache folder) every finished (row, chunk) is saved as
    ``store/<chunk fingerprint>/<row key>.npz`` (atomic write) and reused by any later call with the same
    model name, dtype, chunk columns and system prompt: a killed run resumes, commands share rows, and a
    larger column set whose leading columns are an earlier set (the column selections are prefix-stable)
    reuses it. The result is identical to an uninterrupted run. ``only_cached``: never compute; missing
    rows are NaN (``cached[i]`` False).
    """
    if not systems:
        raise ValueError("no system prompts")
    if not columns:
        raise ValueError("no columns")
    if chunk_columns < 1:
        raise ValueError("chunk_columns must be >= 1")
    ids = [c.id for c in columns]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate column ids")
    if len(set(systems)) != len(systems):
        raise ValueError("duplicate system prompts")
    S, P = len(systems), len(columns)
    chunks = _chunks(P, chunk_columns)
    colsets = [fingerprint(model_name, dtype, columns[a:b]) for a, b in chunks]
    store_p = Path(store) if store is not None else None
    X = np.full((S, P), np.nan)
    N = np.zeros((S, P), dtype=np.int64)
    prefix, secs, cached = [0] * S, [0.0] * S, [True] * S
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=S * len(chunks), desc=f"X[{model_name or 'model'}] {S}x{P}", unit="row-chunk")
    for i, s in enumerate(systems):
        for (a, b), colset in zip(chunks, colsets):
            path = _row_path(store_p, colset, s) if store_p is not None else None
            key = row_key(colset, s)
            if path is not None and path.is_file():
                X[i, a:b], N[i, a:b], k, t = _load_row(path, key, b - a)
            elif only_cached:
                cached[i] = False
                continue
            else:
                cached[i] = False
                t0 = time.perf_counter()
                try:
                    X[i, a:b], N[i, a:b], k = logprob_row(model, tok, s, columns[a:b], batch_tokens=batch_tokens,
                                                          max_batch=max_batch)
                except ValueError as exc:
                    raise ValueError(f"system prompt {i}: {exc}") from None
                t = time.perf_counter() - t0
                if path is not None:
                    _save_row(path, key, X[i, a:b], N[i, a:b], k, t)
            prefix[i] = max(prefix[i], k)
            secs[i] += t
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return MatrixResult(X, N, prefix, secs, cached)


# ----------------------------------------------------------------------------------------------
# Columns from a preference dataset


def _ntok(tok: Any, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def select_columns(pairs: Sequence[Any], tok: Any, n: int, *, prompt_tokens: tuple[int, int] = (8, 64),
                   response_tokens: tuple[int, int] = (8, 64), single_turn: bool = True, seed: int = 0
                   ) -> list[Column]:
    """``n`` columns ``(p, r)``: one response per prompt, chosen or rejected at random (seeded).

    ``pairs``: :class:`empirical.stages.data.PrefPair` objects (``id``, ``prompt`` messages, ``chosen``,
    ``rejected``). Kept when the prompt text (sum over its messages, ``tok`` tokens, no template) and the
    drawn response have token counts within the closed bounds. Pairs are visited in a seeded random order;
    fewer than ``n`` eligible pairs raises ``ValueError``.
    """
    (plo, phi), (rlo, rhi) = prompt_tokens, response_tokens
    if not (1 <= plo <= phi and 1 <= rlo <= rhi):
        raise ValueError(f"bad length bounds prompt={prompt_tokens} response={response_tokens}")
    if n < 1:
        raise ValueError(f"need n >= 1 columns, got {n}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    picks = rng.integers(0, 2, size=len(pairs))
    out: list[Column] = []
    for i in order:
        p = pairs[i]
        msgs = [dict(m) for m in p.prompt]
        if single_turn and len(msgs) != 1:
            continue
        if not plo <= sum(_ntok(tok, m["content"]) for m in msgs) <= phi:
            continue
        resp = p.chosen if picks[i] == 0 else p.rejected
        if not rlo <= _ntok(tok, resp) <= rhi:
            continue
        out.append(Column(f"{p.id}:{'chosen' if picks[i] == 0 else 'rejected'}", msgs, resp))
        if len(out) == n:
            return out
    raise ValueError(f"only {len(out)} pairs satisfy the bounds (prompt {prompt_tokens}, response "
                     f"{response_tokens}, single_turn={single_turn}); asked for {n}")


def select_pairs(pairs: Sequence[Any], tok: Any, n: int | None, *, prompt_tokens: tuple[int, int] = (1, 64),
                 response_tokens: tuple[int, int] = (1, 10**9), truncate: int | None = None,
                 single_turn: bool = True, seed: int = 0) -> list[Any]:
    """Preference pairs (both responses within bounds, raw lengths), then responses truncated to ``truncate``
    teacher tokens (:func:`empirical.engine.render.truncate_response`). Seeded random order; ``n=None`` keeps all."""
    from empirical.stages.data import PrefPair

    (plo, phi), (rlo, rhi) = prompt_tokens, response_tokens
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.permutation(len(pairs)):
        p = pairs[i]
        if single_turn and len(p.prompt) != 1:
            continue
        if not plo <= sum(_ntok(tok, m["content"]) for m in p.prompt) <= phi:
            continue
        if not all(rlo <= _ntok(tok, r) <= rhi for r in (p.chosen, p.rejected)):
            continue
        c, r = render.truncate_response(tok, p.chosen, truncate), render.truncate_response(tok, p.rejected, truncate)
        if not c.strip() or not r.strip():
            continue
        out.append(PrefPair(p.id, tuple(dict(m) for m in p.prompt), c, r, p.where))
        if n is not None and len(out) == n:
            return out
    if n is not None:
        raise ValueError(f"only {len(out)} pairs satisfy the bounds; asked for {n}")
    return out


def pair_columns(pairs: Sequence[Any]) -> list[Column]:
    """Columns ``[(p_0, r+_0), (p_0, r-_0), (p_1, r+_1), ...]`` of preference pairs (ids ``<id>:+`` / ``<id>:-``)."""
    cols = []
    for p in pairs:
        msgs = [dict(m) for m in p.prompt]
        cols += [Column(f"{p.id}:+", msgs, p.chosen), Column(f"{p.id}:-", msgs, p.rejected)]
    return cols


# ----------------------------------------------------------------------------------------------
# Spectrum


def default_rank_window(S: int, P: int) -> tuple[int, int]:
    """Ranks (1-based, inclusive) used for the power-law fit by default: 2 .. ceil(0.75 min(S, P)).

    Rank 1 is left out (it carries the large common offset of all log-probs); the last quarter is left
    out (finite-size fall-off of the smallest singular values).
    """
    k = min(S, P)
    if k < 4:
        raise ValueError(f"need a matrix with at least 4 rows and columns for a spectrum fit, got {S}x{P}")
    return 2, max(3, int(np.ceil(0.75 * k)))


def spectrum_fit(X: np.ndarray, rank_window: tuple[int, int] | None = None, center: bool = False) -> dict:
    """Singular values of X (S, P) (:func:`lls_theory.lowrank.singular_spectrum`) and the log-log power-law
    slope over ``rank_window`` (:func:`lls_theory.lowrank.power_law_slope`): ``log s_k ~ a + slope log k``.

    ``center``: subtract each column's mean over rows first (the system-prompt-independent part of X).
    """
    from lls_theory.lowrank import power_law_slope, singular_spectrum

    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise ValueError("X must be a finite 2-D array")
    s = np.asarray(singular_spectrum(X, center=center))
    win = tuple(rank_window) if rank_window is not None else default_rank_window(*X.shape)
    s_fit = s[s > 0]
    if win[1] > s_fit.size:
        raise ValueError(f"rank window {win} exceeds the {s_fit.size} non-zero singular values")
    fit = power_law_slope(s, rank_window=win)
    energy = np.cumsum(s**2) / np.sum(s**2)
    return {"center": center, "shape": list(X.shape), "singular_values": s, "rank_window": list(win),
            "slope": float(fit.slope), "intercept": float(fit.intercept), "r2": float(fit.r2),
            "top1_energy": float(energy[0]),
            "rank_for_90pct": int(np.searchsorted(energy, 0.90) + 1),
            "rank_for_99pct": int(np.searchsorted(energy, 0.99) + 1)}
