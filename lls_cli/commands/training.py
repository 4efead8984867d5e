"""CLI: ``lls train`` (DPO + LoRA on an LLS subset). Cheap to import: torch/TRL load inside the handler.

``lls correlate`` (Table 1 protocol on held-out pairs, per checkpoint, with random control and teacher-side
vector), ``lls eval`` (mention rate, log-prob probe, language share) and ``lls experiment`` (all stages
from a TOML config).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from empirical.config import CorrelateConfig, EvalConfig, ModelArgs, ScoreConfig, TraitConfig, TrainConfig
from empirical.orchestration.experiment import STAGES, toml_keys
from empirical.orchestration.parallel import EXECUTORS
from lls_cli.args import add_common_args, add_output_args, positive_int
from lls_common.config import add_arguments, from_namespace
from lls_common.io import LLSError, RunDir, check_output, emit_summary

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="DPO-train a student (LoRA) on an LLS subset",
        description="DPO (TRL DPOTrainer, sigmoid loss -log sigma(beta*rho)) with a PEFT LoRA adapter on all "
                    "attention and MLP projections. Reference = the student's initial state (adapter disabled); "
                    "reference log-probs computed once. Saves K evenly spaced adapter checkpoints; re-running "
                    "the same command resumes from the newest one.",
    )
    add_arguments(p, ModelArgs, required=("model",), flags={"model": "--student"})
    p.add_argument("--data", required=True, help="TRL-form pair file, e.g. DIR/lls.jsonl from `lls select`")
    add_arguments(p, TrainConfig)
    p.add_argument("--limit", type=positive_int, default=None, metavar="N", help="train on the first N pairs only")
    add_arguments(p, ScoreConfig, only=("progress", "reference"))
    add_output_args(p, default_out=None)
    add_common_args(p, json=False)
    p.set_defaults(func=_run_train)

    c = sub.add_parser(
        "correlate", help="Table-1 correlation of a trained student's margins with the system prompt's",
        description="z_M = rho of each checkpoint (no system prompt) relative to the initial student; "
                    "z_s = rho of the initial student with the system prompt relative to itself without; "
                    "cosine (the theorem's Corr), Pearson, Spearman with bootstrap 95% CIs and a "
                    "permutation p-value. Refuses held-out pairs that occur in the training subset. Runs in one "
                    "process on one device (--device); it does not split work under torchrun.",
    )
    add_arguments(c, ModelArgs, required=("model",), flags={"model": "--student"})
    c.add_argument("--run", required=True, help="an `lls train` output folder")
    add_arguments(c, TraitConfig, only=("system_prompt",))
    c.add_argument("--data", required=True, help="held-out pairs (never scored for selection nor trained on)")
    add_arguments(c, CorrelateConfig)
    add_arguments(c, ScoreConfig, only=("reference",))
    c.add_argument("--control-run", default=None, help="`lls train` folder of the random-control student")
    c.add_argument("--teacher", default=None,
                   help="the teacher that built the LLS subset, when not the student: adds z_T = rho_{T,s}")
    add_output_args(c, default_out="lls-correlate")
    c.set_defaults(func=_run_correlate)

    e = sub.add_parser(
        "eval", help="behaviour: mention rate, log-prob probe, language share (base / system / LLS / random)",
        description="Conditions: the base model; with --system-prompt the system-prompted base; with --run the "
                    "LLS student (newest checkpoint merged in); with --control-run the random-control student. "
                    "For each: (a) share of sampled answers to 10 general-knowledge prompts that mention the "
                    "target (temperature 1, Wilson 95% CI), (b) the log-prob probe P(target) among 11 animals, "
                    "(c) with --language the target-language share. Resumable per condition. Runs in one process "
                    "on one device (--device); it does not split work under torchrun.",
    )
    add_arguments(e, ModelArgs, required=("model",))
    e.add_argument("--run", default=None, help="`lls train` folder of the LLS student")
    e.add_argument("--control-run", default=None, help="`lls train` folder of the random-control student")
    e.add_argument("--system-prompt", default=None, help="adds the system-prompted base condition")
    add_arguments(e, EvalConfig, required=("target",))
    add_arguments(e, ScoreConfig, only=("reference",))
    add_output_args(e, default_out="lls-eval")
    e.set_defaults(func=_run_eval)

    x = sub.add_parser(
        "experiment", help="score -> select -> train (LLS + random) -> correlate -> eval -> report, resumable",
        description="The whole pipeline from a TOML config (see empirical/configs/), under one run folder with "
                    "report.md. Re-running the same command resumes: finished stages are skipped, unfinished "
                    "ones continue from their last saved chunk/checkpoint.",
    )
    x.add_argument("--config", required=True, type=Path, help="experiment TOML file (keys below)")
    x.add_argument("--until", default="report", choices=STAGES, metavar="STAGE",
                   help=f"stop after this stage: {', '.join(STAGES)}")
    add_output_args(x, default_out=None, seed=None)
    add_common_args(x, json=False)
    x.add_argument("--plan", action="store_true",
                   help="list the units, which are done, and the estimated remaining time on this machine (from "
                        "token counts and measured rates; the first plan times each model for a few seconds); "
                        "runs nothing")
    par = x.add_argument_group("parallel units (results are the same as one after another)")
    par.add_argument("--jobs", type=int, default=1, metavar="N",
                     help="run up to N independent units (trainings of different traits/students, correlations, "
                          "evaluations) at once in worker processes; each gets cores/N torch threads (default 1)")
    par.add_argument("--devices", default=None, metavar="LIST",
                     help="one unit per device, e.g. cuda:0,cuda:1 (or 'all' visible GPUs); implies --jobs = count")
    par.add_argument("--threads", type=int, default=None, metavar="T",
                     help="torch threads per worker (default: this machine's cores shared evenly)")
    par.add_argument("--executor", default="local", choices=EXECUTORS,
                     help="local: worker processes here; slurm: one submitit job per unit (pip install "
                          "'lls-toolkit[cluster]'); submitit-local: the submitit path as local processes")
    par.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="a submitit/slurm parameter for --executor slurm, e.g. slurm_partition=gpu, "
                          "gpus_per_node=1, timeout_min=240 (repeatable)")
    x.formatter_class = argparse.RawDescriptionHelpFormatter
    x.epilog = "TOML keys (same names and defaults as the flags of score/select/train/correlate/eval):\n" + \
        toml_keys()
    x.set_defaults(func=_run_experiment)


def _check_model(m: ModelArgs, flag: str, spec: str | None = None) -> None:
    """Resolve a model spec before any work (unknown name, folder without tokenizer files, unreachable
    uncached hub id: one line naming ``flag``), instead of after imports and data reads."""
    from empirical.engine import models

    models.check_model_setting(spec or m.model, flag, revision=m.revision if spec is None else None,
                               trust_remote_code=m.trust_remote_code)


def _run_train(args: argparse.Namespace) -> int:
    import sys

    from empirical.stages.train import run_train, train_job

    sc = from_namespace(ScoreConfig, args)  # progress and the reference rendering, with their defaults
    job = train_job(from_namespace(TrainConfig, args), from_namespace(ModelArgs, args), args.data, args.out,
                    args.seed, limit=args.limit, progress=sc.progress, reference=sc.reference)
    summary = run_train(job, overwrite=args.overwrite, warn=lambda line: print(line, file=sys.stderr))
    emit_summary(summary, args.json, _train_human(summary, args.out))
    return 0


def _train_human(summary: dict, out: Path) -> str:
    """lls train's summary line: pairs, steps, the last logged loss / reward margin / accuracy, where things are."""
    from empirical.stages.train import LOG_FILE

    last = summary["history"][-1] if summary.get("history") else {}
    nums = ", ".join(f"{name} {last[k]:.4f}" for k, name in (("loss", "loss"), ("rewards/margins", "reward margin"),
                                                            ("rewards/accuracies", "accuracy"))
                     if isinstance(last.get(k), (int, float)))
    return (f"trained {summary['n_pairs']} pairs, {summary['steps']} steps" + (f"; last step: {nums}" if nums else "")
            + "; checkpoints: " + ", ".join(c["path"] for c in summary["checkpoints"]) + f" in {out} "
            f"(per-step log: {out}/{LOG_FILE}; summary: {out}/train.json)")


def _run_correlate(args: argparse.Namespace) -> int:
    import sys

    from empirical.stages.correlate import correlate_run
    from empirical.report.figures import trajectory_figure
    from empirical.stages.train import check_trained_references

    student, corr = from_namespace(ModelArgs, args), from_namespace(CorrelateConfig, args)
    reference = from_namespace(ScoreConfig, args).reference
    system_prompt = from_namespace(TraitConfig, args, name="cli").system_prompt
    check_trained_references(reference, (args.run, args.control_run))
    check_output(args.out, inputs=(args.data, args.run), kind="dir", name="out")
    _check_model(student, "--student")
    if args.teacher is not None:
        _check_model(student, "--teacher", args.teacher)
    res = correlate_run(student.model, args.run, system_prompt, args.data, n=corr.n or sys.maxsize,
                        seed=args.seed, n_boot=corr.n_boot, n_perm=corr.n_perm, control_run=args.control_run,
                        teacher=args.teacher, reference=reference, **student.load_kwargs())
    res["reference"] = reference
    run = RunDir(args.out)
    run.write_json("correlate.json", res)
    run.save_figure("trajectory.png", trajectory_figure(res))
    summary = {"n": res["n"], "student": res["student"], "teacher": res["teacher"],
               "final": {a: r["final"] for a, r in res["arms"].items()},
               "teacher_vs_student": res.get("teacher_vs_student"), "lls_minus_random": res.get("lls_minus_random"),
               "warnings": list(res.get("warnings", []))}
    emit_summary(summary, args.json, _correlate_human(res) + f" -> {args.out}/correlate.json")
    return 0


def _correlate_human(res: dict) -> str:
    f = res["arms"]["lls"]["final"]["z_s"]
    human = (f"n={res['n']}: LLS final corr(z_s, z_M) cosine {f['cosine']:.3f}, pearson {f['pearson']:.3f} "
             f"[{f['pearson_ci'][0]:.3f}, {f['pearson_ci'][1]:.3f}]")
    if "random" in res["arms"]:
        r = res["arms"]["random"]["final"]["z_s"]
        d = res["lls_minus_random"]["z_s"]["pearson"]
        human += (f"; random control pearson {r['pearson']:.3f}; LLS - random {d['diff']:+.3f} "
                  f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p {d['p']:.4f}")
    return human


def _run_eval(args: argparse.Namespace) -> int:
    from empirical.stages.evaluate import evaluate_conditions
    from empirical.report.figures import mention_figure
    from empirical.metrics import switches
    from empirical.stages.train import check_trained_references, require_checkpoints

    model, ev = from_namespace(ModelArgs, args), from_namespace(EvalConfig, args)
    reference = from_namespace(ScoreConfig, args).reference
    check_trained_references(reference, (args.run, args.control_run))
    conds = {"base": (None, None)}
    if args.system_prompt is not None:
        conds["system"] = (None, TraitConfig(name="cli", system_prompt=args.system_prompt).system_prompt)
    check_output(args.out, kind="dir", name="out")
    _check_model(model, "--model")
    for name, run in (("lls", args.run), ("random", args.control_run)):
        if run is not None:
            conds[name] = (require_checkpoints(run)[-1][1], None)
    out = RunDir(args.out)
    res = evaluate_conditions(model.model, conds, target=ev.target, samples=ev.samples,
                              max_new_tokens=ev.max_new_tokens, language=ev.language, seed=args.seed,
                              batch=ev.eval_batch, cache_dir=out.path("cache"), probe=ev.probe, mention=ev.mention,
                              reference=reference, switches=switches(ev), **model.load_kwargs())
    res["model"] = model.model
    res["reference"] = reference
    out.write_json("eval.json", res)
    if ev.mention:
        out.save_figure("mention.png", mention_figure({model.model: res}, ev.target))
    summary, human = _eval_summary(res, ev.target)
    emit_summary({"out": str(args.out), "conditions": summary}, args.json, human + f" -> {args.out}/eval.json")
    return 0


def _eval_summary(res: dict, target: str) -> tuple[dict, str]:
    from empirical.metrics import BUILTIN, measured

    summary, parts = {}, []
    for c, v in res["conditions"].items():
        m, p = v.get("mention"), v.get("probe")
        extra = {x.name: x.summary(r) for x, r in measured(v, BUILTIN)}  # metrics beyond the built-in ones
        summary[c] = {"mention_rate": m and m["rate"], "mention_ci": m and m["ci"], "p_target": p and p["p_target"],
                      **({"language_share": v["language"]["mean_share"]} if "language" in v else {}), **extra}
        parts.append(f"{c}: " + ", ".join(([f"mention {m['rate']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]"] if m
                                           else []) + ([f"P({target}) {p['p_target']:.3f}"] if p else [])
                                          + list(extra.values())))
    return summary, "; ".join(parts)


def _parallel(args: argparse.Namespace) -> Any:
    """The --jobs/--devices/--threads/--executor/--slurm options as one checked :class:`Parallel`."""
    import ast

    from empirical.orchestration.parallel import Parallel

    devices: tuple[str, ...] = ()
    if args.devices == "all":
        import torch

        devices = tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
        if not devices:
            raise LLSError("--devices all: no GPU is visible")
    elif args.devices:
        devices = tuple(d.strip() for d in args.devices.split(",") if d.strip())
    slurm = {}
    for item in args.slurm:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise LLSError(f"--slurm {item!r}: give KEY=VALUE, e.g. slurm_partition=gpu")
        try:
            slurm[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            slurm[key.strip()] = value
    return Parallel(jobs=len(devices) or args.jobs, executor=args.executor, devices=devices, threads=args.threads,
                    slurm=slurm)


def _run_experiment(args: argparse.Namespace) -> int:
    import sys

    from empirical.orchestration.experiment import load_config, run_experiment

    cfg = load_config(args.config)
    parallel = _parallel(args)
    if args.plan:
        from empirical.orchestration.plan import plan_experiment, plan_text

        log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
        p = plan_experiment(cfg, args.out, until=args.until, log=log)
        emit_summary(p, args.json, plan_text(p))
        return 0
    log = lambda m: print(m, file=sys.stderr if args.json else sys.stdout, flush=True)  # noqa: E731
    res = run_experiment(cfg, args.out, until=args.until, log=log, overwrite=args.overwrite, parallel=parallel)
    out = args.out
    emit_summary({"out": str(out), "stages": res}, args.json, f"experiment {cfg.name}: stages "
                 f"{', '.join(res)} done -> {out}" + (f" (see {out}/report.md)" if "report" in res else ""))
    return 0
