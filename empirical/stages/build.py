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

Settings: a :class:`ScoreJob` holds one config object per section (:mod:`empirical.config`: ``ModelArgs``,
``DataConfig``, ``Filters``, ``ScoreConfig``, ``TraitConfig`` for the system prompt) and the output. ``trait=None``
scores the reference condition only (fields :data:`BASE_FIELDS`); ``base=<such a file>`` reads the reference
log-probs from it and scores only the system-prompted ones (what ``lls experiment`` does to share the
reference scores between traits; the numbers equal a combined run's: each condition is its own
``score_encoded`` call per chunk).

Output guards: :func:`run_score` and :func:`run_select` (what the CLI calls) refuse an output that is an
input, unwritable or of the wrong kind, and a finished output made with other settings unless ``overwrite``;
they take ``<out>.lock`` and record the settings and input fingerprints (``<out>.run.json``; ``summary.json``'s
``key``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lls_common.errors import LLSError
from lls_common.io import atomic_write_json
from empirical.config import DataConfig, Filters, ModelArgs, SelectConfig, TraitConfig
from empirical.config import ScoreConfig as ScoreSettings
from empirical.stages.data import DataError, LoadReport, PrefPair, check_pairs, iter_json_objects, load_pairs

__all__ = ["ScoreJob", "ScoreResult", "score_file", "select_file", "read_scores", "SCORE_FIELDS",
           "BASE_FIELDS", "run_score", "run_select", "score_summary", "SELECT_FILES", "selection", "contrast_weights",
           "check_contrast_inputs", "scores_system_prompt", "score_columns", "run_build"]

SCORE_FIELDS = (
    "id", "prompt", "chosen", "rejected", "logp_chosen_sys", "logp_rejected_sys", "logp_chosen",
    "logp_rejected", "n_tokens_chosen", "n_tokens_rejected", "weight",
)
#: The fields of a base-only scores file (the reference condition only; ``ScoreJob.system_prompt`` None).
BASE_FIELDS = tuple(f for f in SCORE_FIELDS if not f.endswith("_sys") and f != "weight")


@dataclass
class ScoreJob:
    """One scoring run: the settings (one config object per section, validated there) and the output file.

    Everything that changes the numbers is part of :meth:`run_key`, with the input file's fingerprint.
    """

    model: ModelArgs
    data: DataConfig
    trait: TraitConfig | None
    out: Path
    filters: Filters = field(default_factory=Filters)
    score: ScoreSettings = field(default_factory=ScoreSettings)
    base: Path | None = None

    @property
    def system_prompt(self) -> str | None:
        """The system prompt s (validated by :class:`empirical.config.TraitConfig`); None = reference only."""
        return None if self.trait is None else self.trait.system_prompt

    def __post_init__(self) -> None:
        if self.trait is None and self.base is not None:
            raise LLSError("a base-only scoring run (no system prompt) cannot read another base file")
        self.out = Path(self.out)
        self.base = None if self.base is None else Path(self.base)

    def run_key(self) -> dict[str, Any]:
        """Settings + input fingerprint (``out``, ``progress`` and ``skip_bad`` left out: a chunk saved without
        skip_bad holds no bad pair, so it is valid with it too)."""
        from lls_common.io import fingerprint, json_key

        data = asdict(self.data)
        for k in ("skip_bad", "heldout", "pool", "path"):  # the path is identified by its content ("input")
            data.pop(k)
        score = asdict(self.score)
        score.pop("progress")
        from empirical.engine import models

        model = asdict(self.model)
        if model["model"] not in models.REGISTRY and Path(model["model"]).expanduser().exists():
            model["model"] = str(Path(model["model"]).expanduser().resolve())
        try:  # the model by content: another model at the same path is another run
            model_fp = models.model_fingerprint(self.model.model, self.model.revision)
        except (ValueError, OSError):  # an unknown model is refused when it loads
            model_fp = None
        key = {"model": model, "model_fingerprint": model_fp, "system_prompt": self.system_prompt, "data": data,
               "filters": asdict(self.filters), "score": score, "input": fingerprint(self.data.path)}
        if self.base is not None:
            key["base"] = fingerprint(self.base)
        return json_key(key)


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
    placement: dict[str, str] = field(default_factory=dict)  # {"device", "dtype"} of the scoring model


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _atomic_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    from lls_common.io import atomic_write_jsonl

    atomic_write_jsonl(path, records)


def _prepare_chunk(model: Any, tok: Any, pairs: list[PrefPair], cfg: ScoreJob,
                   bad: Callable[[str], None]) -> tuple[list[PrefPair], list[Any], list[Any]]:
    """Truncate and encode (with and without system prompt); pairs that fail are reported via ``bad``."""
    from empirical.engine import render, scoring

    kept, enc_sys, enc_none = [], [], []
    limit = scoring.context_limit(model)
    for p in pairs:
        try:
            chosen = render.truncate_response(tok, p.chosen, cfg.data.truncate)
            rejected = render.truncate_response(tok, p.rejected, cfg.data.truncate)
            if not chosen.strip() or not rejected.strip():
                raise ValueError("reply is empty after truncation")
            e_sys = None if cfg.system_prompt is None else render.encode_group(
                tok, p.messages, [chosen, rejected], cfg.system_prompt, reference=cfg.score.reference)
            e_none = render.encode_group(tok, p.messages, [chosen, rejected], None, reference=cfg.score.reference)
            for e in (e_sys, e_none) if e_sys is not None else (e_none,):
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


def check_system_prompt_fits(model: Any, tok: Any, system_prompt: str | None, reference: str = "auto") -> None:
    """Refuse (one :class:`LLSError` line, before any pair is scored) a system prompt that alone, rendered with
    an empty user turn, fills the model's context: every pair would fail, and the data is not at fault."""
    from empirical.engine import render, scoring

    limit = scoring.context_limit(model)
    if system_prompt is None or limit is None:
        return
    n = len(render.encode_text(tok, render.render_prompt(tok, [{"role": "user", "content": ""}], system_prompt,
                                                         reference)))
    if n >= limit:
        raise LLSError(f"system prompt: {n} tokens with the chat template, the model's context is {limit}; "
                       "shorten the system prompt")


def _base_columns(kept: list[PrefPair], enc_none: list[Any], base: dict[str, dict[str, Any]],
                  where: str) -> np.ndarray:
    """The no-system log-probs of ``kept`` taken from a base scores file (same pairs, same tokens)."""
    lp = np.empty((len(kept), 2), dtype=np.float64)
    for i, (p, e) in enumerate(zip(kept, enc_none)):
        b = base.get(p.id)
        n = [len(c) for c in e.completions]
        if b is None or [b["n_tokens_chosen"], b["n_tokens_rejected"]] != n or \
                (b["chosen"], b["rejected"]) != (p.chosen, p.rejected):
            raise DataError(f"{where}: pair {p.id!r} differs from (or is missing in) the base scores file; "
                            "score the base again")
        lp[i] = b["logp_chosen"], b["logp_rejected"]
    return lp


def _conditions(cfg: ScoreJob) -> int:
    """How many scoring passes a chunk takes: the reference (unless read from ``base``) and the system prompt."""
    return (cfg.base is None) + (cfg.system_prompt is not None)


def _score_chunk(model: Any, tok: Any, pairs: list[PrefPair], cfg: ScoreJob,
                 bad: Callable[[str], None], base: dict[str, dict[str, Any]] | None = None,
                 on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    """Score one chunk: both conditions, only the reference (``system_prompt`` None), or only the system
    prompt with the reference read from ``base`` (the scores of a base-only run on the same pairs).
    ``on_batch(n)``: called after each batch with the number of pairs it finished (one condition)."""
    from empirical.engine import scoring
    from lls_theory.selection import lls_weights

    kept, enc_sys, enc_none = _prepare_chunk(model, tok, pairs, cfg, bad)
    if not kept:
        return []
    kw = dict(batch_tokens=cfg.score.batch_tokens, max_batch=cfg.score.max_batch, progress=on_batch or False)
    n = np.array([[len(c) for c in e.completions] for e in enc_none], dtype=np.int64)
    if base is not None:
        lp = _base_columns(kept, enc_none, base, str(cfg.base))
    else:
        lp = np.array(scoring.score_encoded(model, tok, enc_none, **kw), dtype=np.float64)
    if cfg.system_prompt is None:
        return [{"id": p.id, "prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected,
                 "logp_chosen": float(lp[i, 0]), "logp_rejected": float(lp[i, 1]),
                 "n_tokens_chosen": int(n[i, 0]), "n_tokens_rejected": int(n[i, 1])} for i, p in enumerate(kept)]
    lp_sys = np.array(scoring.score_encoded(model, tok, enc_sys, **kw), dtype=np.float64)
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


def _valid_chunk(path: Path) -> bool:
    """Whether a saved chunk of a resumed run is readable; a damaged one (truncated by a crash or a full disk)
    is removed, with a note, and scored again -- before any scoring, not after the rest ran."""
    if not path.exists():
        return False
    try:
        recs, errs = _read_chunk(path)
        if isinstance(recs, list) and isinstance(errs, list) and all(isinstance(r, dict) for r in recs):
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    print(f"note: {path}: damaged saved chunk, scoring it again", file=sys.stderr)
    path.unlink(missing_ok=True)
    return False


def _distributed_state() -> Any:
    """accelerate's PartialState when launched by torchrun/accelerate (WORLD_SIZE > 1), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    # Without cpu=True accelerate ignores torchrun's variables on a machine with no GPU (1 process each).
    return PartialState(cpu=not torch.cuda.is_available())


def _open_parts(parts: Path, key: dict[str, Any], rank: int, state: Any) -> None:
    """Process 0 creates ``parts`` with ``run.json`` = key, or checks that an existing one has the same key."""
    from lls_common.io import atomic_write_json

    setup_error: list[str | None] = [None]
    if rank == 0:
        if parts.exists():
            try:
                old = json.loads((parts / "run.json").read_text())
            except (OSError, ValueError):
                old = None
            if old != key:
                setup_error[0] = (f"{parts}: left by a run with other settings; give overwrite (--overwrite) "
                                  "to discard it, or delete it")
        else:
            parts.mkdir(parents=True)
            atomic_write_json(parts / "run.json", key)
    if state is not None:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(setup_error, from_process=0)
    if setup_error[0] is not None:
        raise DataError(setup_error[0])


def _score_pieces(model: Any, tok: Any, chunk: list[PrefPair], cfg: ScoreJob, bad: Callable[[str], None],
                  base: Any, on_batch: Callable[[int], None], stem: Path, errors: list[str]) -> list[dict[str, Any]]:
    """Score one chunk as pieces of ``4 * score.max_batch`` pairs (64 by default), saving each piece as
    ``<stem>.piece-NNNN.json`` as soon as it is scored: a run stopped inside a chunk (Ctrl-C, a kill, a lost
    machine) keeps its finished pieces, and the re-run scores only the rest. (Pieces of one batch of rows
    cost 15% more CPU than whole 64-pair chunks, SmolLM2 on the CPU; pieces of four batches about 1%.)
    Pieces saved by an earlier run are read back (their pairs counted on the progress bar). Returns the
    chunk's records in order; ``errors`` collects the skipped records' messages."""
    from lls_common.io import atomic_write_json

    size = max(4 * cfg.score.max_batch, 1)
    recs: list[dict[str, Any]] = []
    for j, start in enumerate(range(0, len(chunk), size)):
        piece, f = chunk[start:start + size], Path(f"{stem}.piece-{j:04d}.json")
        if f.exists():
            got, errs = _read_chunk(f)
            on_batch(len(piece) * max(_conditions(cfg), 1))
        else:
            n_err = len(errors)
            got = _score_chunk(model, tok, piece, cfg, bad, base, on_batch)
            errs = errors[n_err:]
            del errors[n_err:]
            atomic_write_json(f, {"records": got, "errors": errs})
        recs.extend(got)
        errors.extend(errs)
    return recs


def _score_chunks(model: Any, tok: Any, cfg: ScoreJob, chunks: list[list[PrefPair]], mine: list[int],
                  parts: Path, base: Any, bar: Any, world: int, stop_after_chunks: int | None) -> str | None:
    """Score this process's chunks into ``parts``; returns the first fatal error (other processes go on)."""
    from lls_common.io import atomic_write_json

    for count, k in enumerate(mine):
        if stop_after_chunks is not None and count >= stop_after_chunks:
            raise KeyboardInterrupt("simulated interruption")
        errors: list[str] = []

        def bad(msg: str) -> None:
            if not cfg.data.skip_bad:
                raise DataError(msg)
            errors.append(msg)

        scored = [0]

        def on_batch(n: int) -> None:  # process 0 shows every process's pairs, assuming they keep pace
            scored[0] += n
            if bar is not None:
                bar.update(n * world / max(_conditions(cfg), 1))

        try:
            recs = _score_pieces(model, tok, chunks[k], cfg, bad, base, on_batch, parts / f"chunk-{k:06d}", errors)
        except DataError as exc:  # stop, but let the other processes reach the barrier too
            return str(exc)
        atomic_write_json(parts / f"chunk-{k:06d}.json", {"records": recs, "errors": errors})
        for f in parts.glob(f"chunk-{k:06d}.piece-*.json"):
            f.unlink(missing_ok=True)
        if bar is not None:  # pairs the batches did not count (filtered, or a reference read from base)
            rest = len(chunks[k]) * max(_conditions(cfg), 1) - scored[0]
            bar.update(max(rest, 0) * world / max(_conditions(cfg), 1))
    return None


def _raise_errors(parts: Path, rank: int, state: Any) -> None:
    """After the barrier: the first process error, if any, stops every process (chunks kept for a resume)."""
    errs = sorted(parts.glob("error-*.json"))
    if not errs:
        return
    msg = json.loads(errs[0].read_text())["error"]
    if state is not None:
        state.wait_for_everyone()
    if rank == 0:
        for e in errs:
            e.unlink(missing_ok=True)
        if not any(parts.glob("chunk-*.json")):  # nothing worth resuming
            shutil.rmtree(parts, ignore_errors=True)
    raise DataError(msg)


def _join_chunks(cfg: ScoreJob, parts: Path, n_chunks: int, rank: int, state: Any) -> tuple[list, list[str]]:
    """Read every chunk; process 0 writes ``cfg.out`` (temporary file + rename) and removes ``parts``."""
    records: list[dict[str, Any]] = []
    errors_all: list[str] = []
    for k in range(n_chunks):
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
    return records, errors_all


def score_file(cfg: ScoreJob, *, model_and_tok: tuple[Any, Any] | None = None,
               stop_after_chunks: int | None = None) -> ScoreResult:
    """Score ``cfg.data`` into ``cfg.out`` (see module doc). ``stop_after_chunks`` (tests) simulates a kill.

    Raises :class:`empirical.stages.data.DataError` on bad input unless ``cfg.data.skip_bad``.
    """
    from empirical.engine import models, render
    from lls_common.io import atomic_write_json

    d = cfg.data
    if model_and_tok is None:  # a damaged input fails here, before the model loads
        check_pairs(d.path, split=d.split, limit=d.limit, skip_bad=d.skip_bad, config=d.config_name,
                    data_dir=d.data_dir)
    state = _distributed_state()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    if model_and_tok is None:
        kw = cfg.model.load_kwargs()
        if state is not None:
            kw["device"] = state.device
        model, tok = models.load(cfg.model.model, **kw)
    else:
        model, tok = model_and_tok
    check_system_prompt_fits(model, tok, cfg.system_prompt, cfg.score.reference)
    pairs, report = load_pairs(d.path, split=d.split, limit=d.limit, skip_bad=d.skip_bad, filters=cfg.filters,
                               tok=tok, config=d.config_name, data_dir=d.data_dir)
    base = None if cfg.base is None else {r["id"]: r for r in read_scores(cfg.base, base_only=True)}
    size = cfg.score.chunk_size
    chunks = [pairs[i:i + size] for i in range(0, len(pairs), size)]
    parts = _parts_dir(cfg.out)
    _open_parts(parts, cfg.run_key(), rank, state)

    done = {k for k in range(len(chunks)) if _valid_chunk(parts / f"chunk-{k:06d}.json")}
    mine = [k for k in range(len(chunks)) if k % world == rank and k not in done]
    bar = None
    if cfg.score.progress and rank == 0:  # per batch, with pairs/s; plain lines when stderr is not a terminal
        from empirical.engine.batching import Progress

        bar = Progress(total=len(pairs) - sum(len(chunks[k]) for k in done), desc=f"scoring x{world}")
    try:
        fatal = _score_chunks(model, tok, cfg, chunks, mine, parts, base, bar, world, stop_after_chunks)
    finally:
        if bar is not None:
            bar.close()
    if fatal is not None:
        atomic_write_json(parts / f"error-{rank}.json", {"error": fatal})
    if state is not None:
        state.wait_for_everyone()
    _raise_errors(parts, rank, state)
    records, errors_all = _join_chunks(cfg, parts, len(chunks), rank, state)
    return ScoreResult(
        out=cfg.out, n_records=report.n_records, n_bad=report.n_bad + len(errors_all), n_scored=len(records),
        dropped=report.dropped, first_errors=(report.first_errors + errors_all)[:5],
        chunks_total=len(chunks), chunks_resumed=len(done), world_size=world,
        placement={**models.placement(model), "reference_resolved": render.resolve_reference(tok, cfg.score.reference)},
    )


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def score_summary(res: ScoreResult) -> dict[str, Any]:
    """The JSON summary of a scoring run (what ``lls score --json`` prints)."""
    from empirical.engine import threads

    return {"out": str(res.out), "records": res.n_records, "bad": res.n_bad, "scored": res.n_scored,
            "dropped": res.dropped, "first_errors": res.first_errors, "chunks": res.chunks_total,
            "chunks_resumed": res.chunks_resumed, "processes": res.world_size, **res.placement,
            "threads": threads.record()}


def run_score(job: ScoreJob, *, overwrite: bool = False, model_and_tok: tuple[Any, Any] | None = None,
              inputs: tuple[str | Path, ...] = ()) -> dict[str, Any]:
    """:func:`score_file` behind the output guards; returns :func:`score_summary`'s dict.

    Before any model work: ``out`` must be writable and not an input. A finished ``out`` whose record
    ``<out>.run.json`` (settings + input fingerprint) matches is kept as it is (its saved summary returned);
    a finished ``out`` made with other settings, or an unrelated file, is refused unless ``overwrite``.
    One run per ``out`` at a time (``<out>.lock``, taken by process 0).
    """
    from lls_common.io import OutputLock, cached_json, cached_result, check_output, key_diff, read_record

    base = () if job.base is None else (job.base,)
    out = check_output(job.out, inputs=(job.data.path, *base, *inputs), kind="file", name="out")
    record = out.with_name(out.name + ".run.json")
    key = job.run_key()
    done = cached_result(record, key, outputs=(out,))
    if done is not None:
        return {**done, "reference": job.score.reference}
    old = read_record(record)
    if out.exists():
        if not overwrite:
            why = ("made with other settings (" + ", ".join(key_diff(old["key"], key)[:6]) + ")"
                   if old is not None else "exists and was not written by lls score")
            if old is not None and isinstance(old["key"], dict):
                why = _model_changed(old["key"].get("model_fingerprint"), key.get("model_fingerprint"), why)
            raise LLSError(f"out {out}: {why}; give overwrite (--overwrite) to replace it, or another out")
    if overwrite:
        shutil.rmtree(_parts_dir(out), ignore_errors=True)
    compute = lambda: score_summary(score_file(job, model_and_tok=model_and_tok))  # noqa: E731
    if _rank() != 0:
        return compute()
    record.unlink(missing_ok=True)
    with OutputLock(out, name="out"):
        res = cached_json(record, key, compute)  # key = every setting + the input's fingerprint
    return {**res, "reference": job.score.reference}  # the no-system rendering (score.reference)


def _model_changed(recorded: Any, current: Any, why: str) -> str:
    """``why``, or -- when the recorded model fingerprint names other content than the current one -- a reason
    naming both fingerprints."""
    from empirical.engine import models

    if models.fingerprint_mismatch(recorded, current or {}):
        return (f"made with a model of {models.short_fingerprint(recorded)}, but the model is now "
                f"{models.short_fingerprint(current)}")
    return why


# ------------------------------------------------------------------------------------------- selection
def read_scores(path: str | Path, base_only: bool = False) -> list[dict[str, Any]]:
    """Read a scores file; raises DataError naming file and line at the first bad line.

    Every line is checked by :func:`empirical.stages.data.check_score_record` (log-probs in [min, 0], integer token
    counts >= 1, duplicate ids refused, ...). ``base_only``: a file of reference scores only (no ``*_sys``
    fields and no weight, :data:`BASE_FIELDS`), checked the same way.
    """
    from empirical.stages.data import check_score_record, read_score_file

    if not base_only:
        return read_score_file(path)
    out, seen = [], set()
    for lineno, rec in iter_json_objects(path):
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict) or any(f not in rec for f in BASE_FIELDS):
            raise DataError(f"{where}: not a reference-scores record (fields {', '.join(BASE_FIELDS)})")
        # the fields a reference-scores file lacks get valid stand-ins, so an error names the field it has
        check_score_record({**rec, "logp_chosen_sys": -1.0, "logp_rejected_sys": -1.0, "weight": 0.0}, where)
        if str(rec["id"]) in seen:
            raise DataError(f"{where}: duplicate id {rec['id']!r}")
        seen.add(str(rec["id"]))
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


def row_ids(recs: list[dict[str, Any]]) -> list[str]:
    """The dataset row of each scored pair: the record's ``row`` field when the pairs of one row (several
    chosen / rejected responses) were written as separate records, else its ``id`` (one pair per row)."""
    return [str(r["row"]) if r.get("row") is not None else str(r["id"]) for r in recs]


def score_columns(recs: list[dict[str, Any]]) -> tuple[np.ndarray, ...]:
    """The six arrays of :func:`lls_theory.selection.lls_weights` from scored records, each shape (n,)."""
    col = lambda f, t=np.float64: np.array([r[f] for r in recs], dtype=t)  # noqa: E731
    return (col("logp_chosen_sys"), col("logp_rejected_sys"), col("logp_chosen"), col("logp_rejected"),
            col("n_tokens_chosen", np.int64), col("n_tokens_rejected", np.int64))


def scores_system_prompt(scores: str | Path) -> str | None:
    """The system prompt a scores file was made with (its ``<scores>.run.json``), None if unknown."""
    try:
        rec = json.loads(Path(str(scores) + ".run.json").read_text())
    except (OSError, ValueError):
        return None
    sp = rec.get("key", {}).get("system_prompt") if isinstance(rec, dict) and isinstance(rec.get("key"), dict) \
        else None
    return sp if isinstance(sp, str) else None


def contrast_weights(recs: list[dict[str, Any]], files: list[str | Path] | tuple[str | Path, ...],
                     where: str) -> np.ndarray:
    """The reference weights w_i / N_i of contrastive selection, shape (m, n): one row per scores file in
    ``files``, each scored on the same pairs as ``recs`` (same ids in the same order, same replies and token
    counts; else a :class:`DataError` naming the file). ``where`` names the trait's scores file in messages."""
    from lls_theory.selection import lls_weights

    rows = []
    for f in files:
        other = read_scores(f)
        same = len(other) == len(recs) and all(
            (a["id"], a["chosen"], a["rejected"], a["n_tokens_chosen"], a["n_tokens_rejected"])
            == (b["id"], b["chosen"], b["rejected"], b["n_tokens_chosen"], b["n_tokens_rejected"])
            for a, b in zip(other, recs))
        if not same:
            raise DataError(f"contrast scores {f}: not the pairs of {where} (ids, replies or token counts differ); "
                            "score the same pairs with the same teacher and truncation")
        rows.append(lls_weights(*score_columns(other)))
    return np.stack(rows)


def select_file(scores: str | Path, gamma: float | SelectConfig, out_dir: str | Path, seed: int = 0,
                best_pair_per_prompt: bool = False, key: dict[str, Any] | None = None,
                contrast_scores: list[str | Path] | tuple[str | Path, ...] = (),
                contrast_names: list[str] | None = None) -> dict[str, Any]:
    """Algorithm 1 on a scores file; writes lls/random/bottom.jsonl and summary.json; returns the summary.

    ``gamma``: a :class:`empirical.config.SelectConfig` (validated when it was built; its
    ``best_pair_per_prompt`` / ``best_pair_per_prompt_text`` are used), or a bare number, then checked here by
    the same class (``(0, 1]``). ``best_pair_per_prompt``: the authors' rule per dataset row (:func:`row_ids`,
    :func:`lls_theory.selection.lls_select_best_pair_per_row`: largest positive raw w, then w / N);
    ``best_pair_per_prompt_text``: per identical prompt text across rows, largest positive w / N.
    ``key`` (settings + input fingerprint, from :func:`run_select`) is recorded in summary.json, with the
    scores file's reference rendering (``reference``, from ``<scores>.run.json``) when known.

    Contrastive selection (``select.contrast`` others / baseline): ``contrast_scores`` are the scores files of
    the reference system prompts on the same pairs (the other traits, or the baseline prompt); Algorithm 1
    step 3 then ranks w − mean of their weights (:func:`lls_theory.selection.contrastive_weights`), and the
    bottom control takes the lowest contrastive weights. ``contrast_names`` (one per file) label them in
    summary.json. Every summary records ``selected_ids`` (the LLS subset's pair ids, highest weight first).
    """
    from lls_common.io import RunDir
    from lls_theory.selection import lls_weights

    sel_cfg = gamma if isinstance(gamma, SelectConfig) else SelectConfig(gamma, best_pair_per_prompt)
    gamma, best_pair_per_prompt = sel_cfg.gamma, sel_cfg.best_pair_per_prompt
    check_contrast_inputs(sel_cfg, contrast_scores, scores)
    recs = read_scores(scores)
    cols = score_columns(recs)
    refs = contrast_weights(recs, contrast_scores, str(scores)) if sel_cfg.contrast != "none" else None
    sel = selection(recs, sel_cfg, refs)
    idx = [int(i) for i in np.asarray(sel.indices)]
    plain = lls_weights(*cols)
    weights = np.asarray(sel.weights, dtype=np.float64)  # the ranked weights: contrastive ones when contrastive
    stored = np.array([r["weight"] for r in recs], dtype=np.float64)
    k = len(idx)
    rng = np.random.default_rng(seed)
    rand = sorted(int(i) for i in rng.choice(len(recs), size=k, replace=False)) if k else []
    bottom = [int(i) for i in np.argsort(weights, kind="stable")[:k]]
    run = RunDir(out_dir)
    from lls_common.io import atomic_write_jsonl

    atomic_write_jsonl(run.path("lls.jsonl"), [_trl(recs[i]) for i in idx])
    atomic_write_jsonl(run.path("random.jsonl"), [_trl(recs[i]) for i in rand])
    atomic_write_jsonl(run.path("bottom.jsonl"), [_trl(recs[i]) for i in bottom])
    stat = lambda ii, w=plain: ({"mean": float(w[ii].mean()), "min": float(w[ii].min()),  # noqa: E731
                                 "max": float(w[ii].max())} if len(ii) else None)
    summary = {
        "scores": str(scores), "n_scored": len(recs), "n_positive": int(sel.n_positive), "gamma": gamma,
        "n_selected": k, "subset_size": sel_cfg.subset_size, "seed": seed, "best_pair_per_prompt": best_pair_per_prompt,
        "best_pair_per_prompt_text": sel_cfg.best_pair_per_prompt_text, "reference": scores_reference(scores),
        "contrast": sel_cfg.contrast, "baseline": sel_cfg.baseline,
        "weights_match_scores_file": bool(np.allclose(plain, stored, rtol=1e-9, atol=1e-12)),
        "weight_all": stat(np.arange(len(recs))), "weight_lls": stat(np.array(idx, dtype=int)),
        "weight_random": stat(np.array(rand, dtype=int)), "weight_bottom": stat(np.array(bottom, dtype=int)),
        "selected_ids": [str(recs[i]["id"]) for i in idx],
        "files": {"lls": "lls.jsonl", "random": "random.jsonl", "bottom": "bottom.jsonl"},
    }
    if refs is not None:
        from lls_common.io import fingerprint

        names = list(contrast_names) if contrast_names is not None else [Path(f).name for f in contrast_scores]
        summary["contrast_against"] = [{"name": n, "scores": str(f), "fingerprint": fingerprint(f),
                                        "system_prompt": scores_system_prompt(f)}
                                       for n, f in zip(names, contrast_scores)]
        cstat = lambda ii: stat(ii, weights)  # noqa: E731
        summary["contrast_weight_all"] = cstat(np.arange(len(recs)))
        summary["contrast_weight_lls"] = cstat(np.array(idx, dtype=int))
        summary["contrast_weight_bottom"] = cstat(np.array(bottom, dtype=int))
    if key is not None:
        summary["key"] = key
    run.write_json("summary.json", summary)
    return summary


SELECT_FILES = ("lls.jsonl", "random.jsonl", "bottom.jsonl", "summary.json")


def selection(recs: list[dict[str, Any]], sel_cfg: SelectConfig, reference_weights: np.ndarray | None = None) -> Any:
    """Algorithm 1 on scored records under ``sel_cfg``'s rule (plain, per row, per prompt text), on the
    contrastive weights when ``reference_weights`` (shape (m, n)) are given; a
    :class:`lls_theory.selection.Selection`."""
    from lls_theory.selection import lls_select, lls_select_best_pair_per_row

    cols = score_columns(recs)
    if sel_cfg.best_pair_per_prompt:
        if reference_weights is not None:  # SelectConfig refuses the combination; a library call too
            raise LLSError("select.contrast works with select.best_pair_per_prompt_text, not best_pair_per_prompt")
        return lls_select_best_pair_per_row(*cols, row_ids(recs), sel_cfg.gamma, size=sel_cfg.subset_size)
    if sel_cfg.best_pair_per_prompt_text:
        keys: dict[str, int] = {}
        prompt_ids = np.array([keys.setdefault(json.dumps(r["prompt"], sort_keys=True), len(keys)) for r in recs])
        return lls_select(*cols, sel_cfg.gamma, prompt_ids=prompt_ids, best_pair_per_prompt=True,
                          reference_weights=reference_weights, size=sel_cfg.subset_size)
    return lls_select(*cols, sel_cfg.gamma, reference_weights=reference_weights, size=sel_cfg.subset_size)


def check_contrast_inputs(select: SelectConfig, contrast_scores: Any, scores: str | Path | None = None) -> None:
    """Before any work: contrastive selection has its reference scores files (others: at least one; baseline:
    exactly one, made with the baseline prompt when its ``.run.json`` says), plain selection none; the trait's
    own scores are not among them. One-line :class:`LLSError` naming the setting."""
    from empirical.config import baseline_text

    files = [Path(f) for f in contrast_scores]
    if select.contrast == "none":
        if files:
            raise LLSError("contrast scores given but select.contrast is none; set --contrast others or baseline")
        return
    if not files:
        raise LLSError(f"select.contrast = {select.contrast!r} needs the reference scores files "
                       "(--contrast-scores FILE ...: " + ("the other traits' scores of the same pairs)"
                                                          if select.contrast == "others" else
                                                          "the baseline prompt's scores of the same pairs)"))
    if select.contrast == "baseline" and len(files) != 1:
        raise LLSError(f"select.contrast = 'baseline' takes one scores file (the baseline's), got {len(files)}")
    for f in files:
        if not f.is_file():
            raise LLSError(f"contrast scores {f}: no such file")
        if scores is not None and f.resolve() == Path(scores).resolve():
            raise LLSError(f"contrast scores {f}: the trait's own scores (its contrast would be zero)")
    if select.contrast == "baseline":
        want, got = baseline_text(select.baseline, "select.baseline"), scores_system_prompt(files[0])
        if got is not None and got != want:
            raise LLSError(f"contrast scores {files[0]}: scored with another system prompt than select.baseline = "
                           f"{select.baseline!r}")
        if scores is not None and scores_system_prompt(scores) == want:
            raise LLSError(f"select.baseline = {select.baseline!r} is the system prompt of {scores} itself (its "
                           "contrast would be zero); name another baseline")


def scores_reference(scores: str | Path) -> str | None:
    """The reference rendering a scores file was made with (its ``<scores>.run.json``), None if unknown."""
    try:
        rec = json.loads(Path(str(scores) + ".run.json").read_text())
    except (OSError, ValueError):
        return None
    found: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "reference" and isinstance(v, str):
                    found.append(v)
                else:
                    walk(v)
    walk(rec)
    return found[0] if found else None


def pairs_reference(data: str | Path) -> str | None:
    """The reference rendering the pair file ``data`` was selected under: ``summary.json`` next to an
    ``lls select`` / ``lls build`` output (``reference``), None when unknown (any other pair file)."""
    p = Path(data)
    if p.suffix != ".jsonl" or p.name not in SELECT_FILES:
        return None
    try:
        summ = json.loads((p.parent / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    ref = summ.get("reference") if isinstance(summ, dict) else None
    return ref if isinstance(ref, str) else None


def run_select(scores: str | Path, select: SelectConfig, out_dir: str | Path, seed: int = 0, *,
               overwrite: bool = False, contrast_scores: list[str | Path] | tuple[str | Path, ...] = ()
               ) -> dict[str, Any]:
    """:func:`select_file` behind the output guards (see :func:`run_score`); ``out_dir`` is a folder.

    A finished selection with the same settings and the same scores file is kept (its summary returned); one
    made with other settings, or unrelated files where the selection goes, is refused unless ``overwrite``.
    """
    from lls_common.io import OutputLock, check_output, fingerprint, json_key, key_diff
    from lls_common.validate import check_seed

    check_seed(seed, "seed")
    out = check_output(out_dir, inputs=(scores, *contrast_scores), kind="dir", name="out")
    if not Path(scores).is_file():
        raise LLSError(f"scores {scores}: no such file")
    check_contrast_inputs(select, contrast_scores, scores)
    key = json_key({"select": select.key(), "seed": seed, "scores": fingerprint(scores)}
                   | ({"contrast_scores": [fingerprint(f) for f in contrast_scores]} if contrast_scores else {}))
    present = [f for f in SELECT_FILES if (out / f).exists()]
    if present:
        try:
            old = json.loads((out / "summary.json").read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("key") == key and len(present) == len(SELECT_FILES):
            return old
        if not overwrite:
            why = ("made with other settings (" + ", ".join(key_diff(old["key"], key)[:6]) + ")"
                   if "key" in old else f"holds {present[0]}, not written by lls select")
            raise LLSError(f"out {out}: {why}; give overwrite (--overwrite) to replace it, or another out")
    with OutputLock(out, kind="dir", name="out"):
        return select_file(scores, select, out, seed=seed, key=key, contrast_scores=contrast_scores)


def run_build(job: ScoreJob, select: SelectConfig, out: Path, *, seed: int = 0, overwrite: bool = False,
              contrast_scores: list[str | Path] = ()) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``lls build``: :func:`run_score` of ``job`` (into ``out/scores.jsonl``), then on the main process
    :func:`run_select` into ``out``; returns ``(score summary, select summary)``, the latter None on the other
    processes of a multi-process run.

    ``select.contrast = "baseline"`` without ``contrast_scores`` scores the baseline prompt too
    (``out/baseline-scores.jsonl``, the reference condition read back from ``scores.jsonl``); a baseline equal
    to the job's own system prompt is refused (its contrast would be zero). Otherwise the contrast inputs are
    checked before any model work (:func:`check_contrast_inputs`).
    """
    from dataclasses import replace

    from empirical.config import baseline_text

    contrast = list(contrast_scores)
    base_job = None
    if select.contrast == "baseline" and not contrast:  # score the baseline prompt too (reference read back)
        text = baseline_text(select.baseline, "select.baseline")
        if text == job.system_prompt:
            raise LLSError(f"select.baseline = {select.baseline!r} is the --system-prompt itself (its contrast "
                           "would be zero); name another baseline")
        base_job = replace(job, trait=TraitConfig(name="baseline", system_prompt=text),
                           out=out / "baseline-scores.jsonl", base=out / "scores.jsonl")
        contrast = [base_job.out]
    else:
        check_contrast_inputs(select, contrast)  # before any model work
    sc = run_score(job, overwrite=overwrite)
    if base_job is not None:
        run_score(base_job, overwrite=overwrite)
    if int(os.environ.get("RANK", "0")) != 0:
        return sc, None
    return sc, run_select(out / "scores.jsonl", select, out, seed=seed, overwrite=overwrite,
                          contrast_scores=contrast)
