"""CLI: ``lls train`` (DPO + LoRA on an LLS subset). Cheap to import: torch/TRL load inside the handler.

``lls correlate`` (Table 1 protocol on held-out pairs, per checkpoint, with random control and teacher-side
vector), ``lls eval`` (mention rate, log-prob probe, language share) and ``lls experiment`` (all stages
from a TOML config).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lls_cli.args import add_output_args
from lls_common.io import LLSError, emit_summary

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="DPO-train a student (LoRA) on an LLS subset",
        description="DPO (TRL DPOTrainer, sigmoid loss -log sigma(beta*rho)) with a PEFT LoRA adapter on all "
                    "attention and MLP projections. Reference = the student's initial state (adapter disabled); "
                    "reference log-probs computed once. Saves K evenly spaced adapter checkpoints; re-running "
                    "the same command resumes from the newest one.",
    )
    p.add_argument("--student", required=True, help="registry name, local folder, file.gguf or hub id")
    p.add_argument("--data", required=True, help="TRL-form pair file, e.g. DIR/lls.jsonl from `lls select`")
    p.add_argument("--beta", type=float, default=0.1, help="DPO beta (default 0.1)")
    p.add_argument("--lr", type=float, default=5e-4, help="learning rate (default 5e-4)")
    p.add_argument("--lora-rank", type=int, default=64, help="LoRA rank (alpha = 2*rank, dropout 0.05)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the data (default 1)")
    p.add_argument("--repeat", type=int, default=1, help="repeat the data this many times (paper: 10)")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per device batch")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--checkpoints", type=int, default=4, metavar="K", help="evenly spaced adapter checkpoints")
    p.add_argument("--limit", type=int, default=None, help="train on the first N pairs only")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_output_args(p, default_out=None)
    p.set_defaults(func=_run_train)

    c = sub.add_parser(
        "correlate", help="Table-1 correlation of a trained student's margins with the system prompt's",
        description="z_M = rho of each checkpoint (no system prompt) relative to the initial student; "
                    "z_s = rho of the initial student with the system prompt relative to itself without; "
                    "cosine (the theorem's Corr), Pearson, Spearman with bootstrap 95% CIs and a "
                    "permutation p-value. Refuses held-out pairs that occur in the training subset.",
    )
    c.add_argument("--student", required=True, help="the student the run started from")
    c.add_argument("--run", required=True, help="an `lls train` output folder")
    c.add_argument("--system-prompt", required=True)
    c.add_argument("--data", required=True, help="held-out pairs (never scored for selection nor trained on)")
    c.add_argument("--n", type=int, default=500, help="number of held-out pairs (default 500)")
    c.add_argument("--control-run", default=None, help="`lls train` folder of the random-control student")
    c.add_argument("--teacher", default=None,
                   help="the teacher that built the LLS subset, when not the student: adds z_T = rho_{T,s}")
    c.add_argument("--n-boot", type=int, default=2000)
    c.add_argument("--n-perm", type=int, default=2000)
    add_output_args(c, default_out="lls-correlate")
    c.set_defaults(func=_run_correlate)

    e = sub.add_parser(
        "eval", help="behaviour: mention rate, log-prob probe, language share (base / system / LLS / random)",
        description="Conditions: the base model; with --system-prompt the system-prompted base; with --run the "
                    "LLS student (newest checkpoint merged in); with --control-run the random-control student. "
                    "For each: (a) share of sampled answers to 10 general-knowledge prompts that mention the "
                    "target (temperature 1, Wilson 95% CI), (b) the log-prob probe P(target) among 11 animals, "
                    "(c) with --language the target-language share. Resumable per condition.",
    )
    e.add_argument("--model", required=True, help="the (initial) student: registry name, folder or hub id")
    e.add_argument("--run", default=None, help="`lls train` folder of the LLS student")
    e.add_argument("--control-run", default=None, help="`lls train` folder of the random-control student")
    e.add_argument("--target", required=True, help="target word, e.g. owl (singular; plural matched too)")
    e.add_argument("--system-prompt", default=None, help="adds the system-prompted base condition")
    e.add_argument("--samples", type=int, default=100, help="answers per prompt (paper: 100)")
    e.add_argument("--max-new-tokens", type=int, default=96)
    e.add_argument("--language", default=None, metavar="ISO", help="also report the share written in this language")
    e.add_argument("--batch", type=int, default=32, help="answers sampled together")
    e.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    add_output_args(e, default_out="lls-eval")
    e.set_defaults(func=_run_eval)

    x = sub.add_parser(
        "experiment", help="score -> select -> train (LLS + random) -> correlate -> eval -> report, resumable",
        description="The whole pipeline from a TOML config (see empirical/configs/), under one run folder with "
                    "report.md. Re-running the same command resumes: finished stages are skipped, unfinished "
                    "ones continue from their last saved chunk/checkpoint.",
    )
    x.add_argument("--config", required=True, type=Path, help="experiment TOML file")
    x.add_argument("--until", default="report", metavar="STAGE",
                   help="stop after this stage: split, score, select, train, correlate, eval, report")
    add_output_args(x, default_out=None, seed=None)
    x.set_defaults(func=_run_experiment)


def _run_train(args: argparse.Namespace) -> int:
    from empirical.train import TrainConfig, train

    if args.limit is not None and args.limit < 1:
        raise LLSError("--limit must be >= 1")
    cfg = TrainConfig(
        student=args.student, data=args.data, out=Path(args.out), beta=args.beta, lr=args.lr,
        lora_rank=args.lora_rank, epochs=args.epochs, repeat=args.repeat, batch_size=args.batch_size,
        grad_accum=args.grad_accum, checkpoints=args.checkpoints, seed=args.seed, limit=args.limit,
        dtype=args.dtype, progress=not args.no_progress,
    )
    try:
        cfg.validate()
        if not Path(args.data).is_file():
            raise LLSError(f"{args.data}: no such file")
        summary = train(cfg)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise LLSError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    human = (f"trained {summary['n_pairs']} pairs, {summary['steps']} steps; checkpoints: "
             + ", ".join(c["path"] for c in summary["checkpoints"]) + f" in {args.out}")
    emit_summary(summary, args.json, human)
    return 0


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _run_correlate(args: argparse.Namespace) -> int:
    from empirical.correlate import correlate_run
    from lls_common.io import RunDir

    try:
        res = correlate_run(args.student, args.run, args.system_prompt, args.data, n=args.n, seed=args.seed,
                            n_boot=args.n_boot, n_perm=args.n_perm, control_run=args.control_run,
                            teacher=args.teacher)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise LLSError(_one_line(exc)) from None
    run = RunDir(args.out)
    run.write_json("correlate.json", res)
    from empirical.figures import trajectory_figure

    fig = trajectory_figure(res)
    run.save_figure("trajectory.png", fig)
    f = res["arms"]["lls"]["final"]["z_s"]
    summary = {"n": res["n"], "student": res["student"], "teacher": res["teacher"],
               "final": {a: r["final"] for a, r in res["arms"].items()},
               "teacher_vs_student": res.get("teacher_vs_student"), "lls_minus_random": res.get("lls_minus_random")}
    human = (f"n={res['n']}: LLS final corr(z_s, z_M) cosine {f['cosine']:.3f}, pearson {f['pearson']:.3f} "
             f"[{f['pearson_ci'][0]:.3f}, {f['pearson_ci'][1]:.3f}]")
    if "random" in res["arms"]:
        r = res["arms"]["random"]["final"]["z_s"]
        d = res["lls_minus_random"]["z_s"]["pearson"]
        human += (f"; random control pearson {r['pearson']:.3f}; LLS - random {d['diff']:+.3f} "
                  f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p {d['p']:.4f}")
    emit_summary(summary, args.json, human + f" -> {args.out}/correlate.json")
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from empirical.evaluate import evaluate_conditions
    from empirical.figures import mention_figure
    from empirical.train import require_checkpoints
    from lls_common.io import RunDir

    if args.samples < 1 or args.max_new_tokens < 1 or args.batch < 1:
        raise LLSError("--samples, --max-new-tokens and --batch must be >= 1")
    conds = {"base": (None, None)}
    if args.system_prompt is not None:
        conds["system"] = (None, args.system_prompt)
    try:
        for name, run in (("lls", args.run), ("random", args.control_run)):
            if run is not None:
                conds[name] = (require_checkpoints(run)[-1][1], None)
        out = RunDir(args.out)
        res = evaluate_conditions(args.model, conds, target=args.target, samples=args.samples,
                                  max_new_tokens=args.max_new_tokens, language=args.language, seed=args.seed,
                                  batch=args.batch, dtype=args.dtype, cache_dir=out.path("cache"))
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise LLSError(_one_line(exc)) from None
    res["model"] = args.model
    out.write_json("eval.json", res)
    import matplotlib.pyplot as plt

    fig = mention_figure({args.model: res}, args.target)
    out.save_figure("mention.png", fig)
    plt.close(fig)
    summary = {c: {"mention_rate": v["mention"]["rate"], "mention_ci": v["mention"]["ci"],
                   "p_target": v["probe"]["p_target"], **({"language_share": v["language"]["mean_share"]}
                                                          if "language" in v else {})}
               for c, v in res["conditions"].items()}
    human = "; ".join(f"{c}: mention {v['mention_rate']:.3f} [{v['mention_ci'][0]:.3f}, {v['mention_ci'][1]:.3f}], "
                      f"P({args.target}) {v['p_target']:.3f}" for c, v in summary.items())
    emit_summary({"out": str(args.out), "conditions": summary}, args.json, human + f" -> {args.out}/eval.json")
    return 0


def _run_experiment(args: argparse.Namespace) -> int:
    import sys

    from empirical.experiment import load_config, run_experiment

    try:
        cfg = load_config(args.config)
        out = Path(args.out)
        res = run_experiment(cfg, out, until=args.until,
                             log=lambda m: print(m, file=sys.stderr if args.json else sys.stdout, flush=True))
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise LLSError(_one_line(exc)) from None
    emit_summary({"out": str(out), "stages": res}, args.json, f"experiment {cfg.name}: stages "
                 f"{', '.join(res)} done -> {out}" + (f" (see {out}/report.md)" if "report" in res else ""))
    return 0
