"""LLS dataset construction: score a preference file under a teacher (resumable, multi-process), then select.

``score_file(cfg)`` writes one JSON line per kept pair, in input order::

    {"id", "prompt" (messages), "chosen", "rejected" (as scored, after truncation),
     "logp_chosen_sys", "logp_rejected_sys", "logp_chosen", "logp_rejected",
     "n_tokens_chosen", "n_tokens_rejected", "weight"}

``weight`` is Algorithm 1's w_i / N_i from :func:`lls_theory.selection.lls_weights`. ``n_tokens_*`` (the
N_i of Algorithm 1) are the scored completion tokens of the rendering without the system prompt (for the
templates here the completion tokens are the same with it).

Resume and scale-out: the kept pairs are cut, in input order, into chunks of ``chunk_size``. Each
chunk is scored on its own (so its numbers do not depend on what else runs) and saved atomically as
``<out>.parts/chunk-NNNNNN.json``; ``<out>.parts/run.json`` records the settings. A re-run with the
same settings skips the chunks already saved, so an interrupted run ends with the same file as an
uninterrupted one. With N processes (``torchrun --nproc_per_node N``; accelerate's ``PartialState``
sets up torch.distributed), process r scores chunks r, r+N, ...; after a barrier, process 0 joins the
chunks into ``<out>`` (temporary file + rename) and removes the parts folder. The parts folder must be
on a filesystem every process sees.

``select_file(scores, gamma, out_dir, seed)`` runs Algorithm 1 (:func:`lls_theory.selection.lls_select`)
and writes ``lls.jsonl`` (selected pairs, highest weight first), ``random.jsonl`` (same size, uniform
without replacement from all scored pairs, in file order), ``bottom.jsonl`` (same size, lowest weights
first) and ``summary.json``. Pair files are in TRL conversational form with ``id`` and ``weight``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from empirical.data import DataError, Filters, LoadReport, PrefPair, iter_json_objects, load_pairs

__all__ = ["ScoreConfig", "ScoreResult", "score_file", "select_file", "read_scores", "SCORE_FIELDS"]

SCORE_FIELDS = (
    "id", "prompt", "chosen", "rejected", "logp_chosen_sys", "logp_rejected_sys", "logp_chosen",
    "logp_rejected", "n_tokens_chosen", "n_tokens_rejected", "weight",
)


@dataclass
class ScoreConfig:
    """Settings of one scoring run (everything that changes the numbers is part of the resume key)."""

    model: str
    system_prompt: str
    data: str
    out: Path
    truncate: int | None = None
    split: str = "train"
    limit: int | None = None
    filters: Filters = field(default_factory=Filters)
    skip_bad: bool = False
    dtype: str = "float32"
    batch_tokens: int = 16384
    max_batch: int = 64
    chunk_size: int = 256
    progress: bool = True

    def run_key(self) -> dict[str, Any]:
        d = asdict(self)
        # skip_bad is left out: a chunk saved without it holds no bad pair, so it is valid with it too.
        for k in ("out", "progress", "skip_bad"):
            d.pop(k)
        d["filters"] = asdict(self.filters)
        src = Path(self.data)
        if src.is_file():  # a changed input file invalidates saved chunks
            st = src.stat()
            d["data_stat"] = [st.st_size, st.st_mtime_ns]
        return json.loads(json.dumps(d, default=str))


@dataclass
class ScoreResult:
    out: Path
    n_records: int
    n_bad: int
    n_scored: int
    dropped: dict[str, int]
    first_errors: list[str]
    chunks_total: int
    chunks_resumed: int
    world_size: int


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _atomic_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    from lls_common.io import atomic_write_jsonl

    atomic_write_jsonl(path, records)


def _prepare_chunk(model: Any, tok: Any, pairs: list[PrefPair], cfg: ScoreConfig,
                   bad: Callable[[str], None]) -> tuple[list[PrefPair], list[Any], list[Any]]:
    """Truncate and encode (with and without system prompt); pairs that fail are reported via ``bad``."""
    from empirical import render, scoring

    kept, enc_sys, enc_none = [], [], []
    limit = scoring.context_limit(model)
    for p in pairs:
        try:
            chosen = render.truncate_response(tok, p.chosen, cfg.truncate)
            rejected = render.truncate_response(tok, p.rejected, cfg.truncate)
            if not chosen.strip() or not rejected.strip():
                raise ValueError("reply is empty after truncation")
            e_sys = render.encode_group(tok, p.messages, [chosen, rejected], cfg.system_prompt)
            e_none = render.encode_group(tok, p.messages, [chosen, rejected], None)
            for e in (e_sys, e_none):
                longest = len(e.context) + max(len(c) for c in e.completions)
                if limit is not None and longest > limit:
                    raise ValueError(f"{longest} tokens exceed the model's context of {limit}")
        except ValueError as exc:
            bad(f"{p.where}: {exc}")
            continue
        kept.append(PrefPair(p.id, p.prompt, chosen, rejected, p.where))
        enc_sys.append(e_sys)
        enc_none.append(e_none)
    return kept, enc_sys, enc_none


def _score_chunk(model: Any, tok: Any, pairs: list[PrefPair], cfg: ScoreConfig,
                 bad: Callable[[str], None]) -> list[dict[str, Any]]:
    from empirical import scoring
    from lls_theory.selection import lls_weights

    kept, enc_sys, enc_none = _prepare_chunk(model, tok, pairs, cfg, bad)
    if not kept:
        return []
    kw = dict(batch_tokens=cfg.batch_tokens, max_batch=cfg.max_batch)
    lp_sys = np.array(scoring.score_encoded(model, tok, enc_sys, **kw), dtype=np.float64)
    lp = np.array(scoring.score_encoded(model, tok, enc_none, **kw), dtype=np.float64)
    n = np.array([[len(c) for c in e.completions] for e in enc_none], dtype=np.int64)
    w = lls_weights(lp_sys[:, 0], lp_sys[:, 1], lp[:, 0], lp[:, 1], n[:, 0], n[:, 1])
    out = []
    for i, p in enumerate(kept):
        out.append({
            "id": p.id, "prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected,
            "logp_chosen_sys": float(lp_sys[i, 0]), "logp_rejected_sys": float(lp_sys[i, 1]),
            "logp_chosen": float(lp[i, 0]), "logp_rejected": float(lp[i, 1]),
            "n_tokens_chosen": int(n[i, 0]), "n_tokens_rejected": int(n[i, 1]),
            "weight": float(w[i]),
        })
    return out


def _read_chunk(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    obj = json.loads(path.read_text())
    return obj["records"], obj["errors"]


def _distributed_state() -> Any:
    """accelerate's PartialState when launched by torchrun/accelerate (WORLD_SIZE > 1), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # Without cpu=True accelerate ignores torchrun's variables on a machine with no GPU (1 process each).
    return PartialState(cpu=not torch.cuda.is_available())


def score_file(cfg: ScoreConfig, *, model_and_tok: tuple[Any, Any] | None = None,
               stop_after_chunks: int | None = None) -> ScoreResult:
    """Score ``cfg.data`` into ``cfg.out`` (see module doc). ``stop_after_chunks`` (tests) simulates a kill.

    Raises :class:`empirical.data.DataError` on bad input unless ``cfg.skip_bad``.
    """
    from empirical import models
    from lls_common.io import atomic_write_json

    if cfg.chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    state = _distributed_state()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = state.device if state is not None else None
    if model_and_tok is None:
        model, tok = models.load(cfg.model, dtype=cfg.dtype, device=device)
    else:
        model, tok = model_and_tok

    pairs, report = load_pairs(cfg.data, split=cfg.split, limit=cfg.limit, skip_bad=cfg.skip_bad,
                               filters=cfg.filters, tok=tok)
    chunks = [pairs[i:i + cfg.chunk_size] for i in range(0, len(pairs), cfg.chunk_size)]
    parts = _parts_dir(cfg.out)
    key = cfg.run_key()
    setup_error = [None]
    if rank == 0:
        if parts.exists():
            try:
                old = json.loads((parts / "run.json").read_text())
            except (OSError, ValueError):
                old = None
            if old != key:
                setup_error[0] = f"{parts}: left by a run with other settings; delete it to start over"
        else:
            parts.mkdir(parents=True)
            atomic_write_json(parts / "run.json", key)
    if state is not None:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(setup_error, from_process=0)
    if setup_error[0] is not None:
        raise DataError(setup_error[0])

    done = {k for k in range(len(chunks)) if (parts / f"chunk-{k:06d}.json").exists()}
    mine = [k for k in range(len(chunks)) if k % world == rank and k not in done]
    bar = None
    if cfg.progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pairs), initial=sum(len(chunks[k]) for k in done), desc=f"scoring x{world}",
                   unit="pair", dynamic_ncols=True)
    fatal: str | None = None
    for count, k in enumerate(mine):
        if stop_after_chunks is not None and count >= stop_after_chunks:
            raise KeyboardInterrupt("simulated interruption")
        errors: list[str] = []

        def bad(msg: str) -> None:
            if not cfg.skip_bad:
                raise DataError(msg)
            errors.append(msg)

        try:
            recs = _score_chunk(model, tok, chunks[k], cfg, bad)
        except DataError as exc:  # stop, but let the other processes reach the barrier too
            fatal = str(exc)
            break
        atomic_write_json(parts / f"chunk-{k:06d}.json", {"records": recs, "errors": errors})
        if bar is not None:
            bar.update(sum(len(chunks[j]) for j in range(k, min(k + world, len(chunks)))))
    if bar is not None:
        bar.close()
    if fatal is not None:
        atomic_write_json(parts / f"error-{rank}.json", {"error": fatal})
    if state is not None:
        state.wait_for_everyone()
    errs = sorted(parts.glob("error-*.json"))
    if errs:
        msg = json.loads(errs[0].read_text())["error"]
        if state is not None:
            state.wait_for_everyone()
        if rank == 0:
            for e in errs:
                e.unlink(missing_ok=True)
            if not any(parts.glob("chunk-*.json")):  # nothing worth resuming
                shutil.rmtree(parts, ignore_errors=True)
        raise DataError(msg)

    records: list[dict[str, Any]] = []
    errors_all: list[str] = []
    for k in range(len(chunks)):
        recs, errs = _read_chunk(parts / f"chunk-{k:06d}.json")
        records.extend(recs)
        errors_all.extend(errs)
    if state is not None:  # every process has read the parts before process 0 removes them
        state.wait_for_everyone()
    if rank == 0:
        _atomic_jsonl(cfg.out, records)
        shutil.rmtree(parts, ignore_errors=True)
    if state is not None:
        state.wait_for_everyone()
    n_bad_scoring = len(errors_all)
    return ScoreResult(
        out=cfg.out, n_records=report.n_records, n_bad=report.n_bad + n_bad_scoring, n_scored=len(records),
        dropped=report.dropped, first_errors=(report.first_errors + errors_all)[:5],
        chunks_total=len(chunks), chunks_resumed=len(done), world_size=world,
    )


# ------------------------------------------------------------------------------------------- selection
def read_scores(path: str | Path) -> list[dict[str, Any]]:
    """Read a scores file; raises DataError naming file and line on malformed lines or missing fields."""
    out = []
    for lineno, rec in iter_json_objects(path):
        missing = [f for f in SCORE_FIELDS if f not in rec]
        if missing:
            raise DataError(f"{path}:{lineno}: missing field(s) {', '.join(missing)}")
        for f in SCORE_FIELDS[4:]:
            v = rec[f]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise DataError(f"{path}:{lineno}: field {f!r} must be a finite number")
        out.append(rec)
    if not out:
        raise DataError(f"{path}: no scored pairs")
    return out


def _trl(rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": rec["id"], "prompt": rec["prompt"],
        "chosen": [{"role": "assistant", "content": rec["chosen"]}],
        "rejected": [{"role": "assistant", "content": rec["rejected"]}],
        "weight": rec["weight"],
    }


def select_file(scores: str | Path, gamma: float, out_dir: str | Path, seed: int = 0,
                best_pair_per_prompt: bool = False) -> dict[str, Any]:
    """Algorithm 1 on a scores file; writes lls/random/bottom.jsonl and summary.json; returns the summary."""
    from lls_common.io import RunDir
    from lls_theory.selection import lls_select

    if not (0 < gamma <= 1):
        raise ValueError(f"quantile must be in (0, 1], got {gamma}")
    recs = read_scores(scores)
    col = lambda f, t=np.float64: np.array([r[f] for r in recs], dtype=t)  # noqa: E731
    prompt_ids = None
    if best_pair_per_prompt:
        keys: dict[str, int] = {}
        prompt_ids = np.array([keys.setdefault(json.dumps(r["prompt"], sort_keys=True), len(keys)) for r in recs])
    sel = lls_select(col("logp_chosen_sys"), col("logp_rejected_sys"), col("logp_chosen"), col("logp_rejected"),
                     col("n_tokens_chosen", np.int64), col("n_tokens_rejected", np.int64), gamma,
                     prompt_ids=prompt_ids, best_pair_per_prompt=best_pair_per_prompt)
    idx = [int(i) for i in np.asarray(sel.indices)]
    weights = np.asarray(sel.weights, dtype=np.float64)
    stored = col("weight")
    k = len(idx)
    rng = np.random.default_rng(seed)
    rand = sorted(int(i) for i in rng.choice(len(recs), size=k, replace=False)) if k else []
    bottom = [int(i) for i in np.argsort(weights, kind="stable")[:k]]
    run = RunDir(out_dir)
    from lls_common.io import atomic_write_jsonl

    atomic_write_jsonl(run.path("lls.jsonl"), [_trl(recs[i]) for i in idx])
    atomic_write_jsonl(run.path("random.jsonl"), [_trl(recs[i]) for i in rand])
    atomic_write_jsonl(run.path("bottom.jsonl"), [_trl(recs[i]) for i in bottom])
    stat = lambda ii: ({"mean": float(weights[ii].mean()), "min": float(weights[ii].min()),  # noqa: E731
                        "max": float(weights[ii].max())} if len(ii) else None)
    summary = {
        "scores": str(scores), "n_scored": len(recs), "n_positive": int(sel.n_positive), "gamma": gamma,
        "n_selected": k, "seed": seed, "best_pair_per_prompt": best_pair_per_prompt,
        "weights_match_scores_file": bool(np.allclose(weights, stored, rtol=1e-9, atol=1e-12)),
        "weight_all": stat(np.arange(len(recs))), "weight_lls": stat(np.array(idx, dtype=int)),
        "weight_random": stat(np.array(rand, dtype=int)), "weight_bottom": stat(np.array(bottom, dtype=int)),
        "files": {"lls": "lls.jsonl", "random": "random.jsonl", "bottom": "bottom.jsonl"},
    }
    run.write_json("summary.json", summary)
    return summary
