"""CLI: ``lls train`` (DPO + LoRA on an LLS subset). Cheap to import: torch/TRL load inside the handler.

``lls correlate`` (Table 1 protocol on held-out pairs, per checkpoint) and ``lls eval`` (log-prob probe (b)
only). Not yet implemented (issue 6, still open): sampled mention rate (a), language share (c),
``lls experiment``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lls_cli.runs import UserError, add_output_args, emit_summary

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
    c.add_argument("--n-boot", type=int, default=2000)
    c.add_argument("--n-perm", type=int, default=2000)
    add_output_args(c, default_out="lls-correlate")
    c.set_defaults(func=_run_correlate)

    e = sub.add_parser("eval", help="behaviour probe: probability of the target among candidate animals",
                       description="Log-prob probe (b) of issue 6 for the model, optionally with a run's final "
                                   "adapter and/or a system prompt. (Sampled mention rate and language share: "
                                   "not implemented yet.)")
    e.add_argument("--model", required=True)
    e.add_argument("--run", default=None, help="`lls train` folder; its newest checkpoint is merged in")
    e.add_argument("--target", required=True, help="target word, e.g. owl")
    e.add_argument("--system-prompt", default=None)
    add_output_args(e, default_out="lls-eval")
    e.set_defaults(func=_run_eval)


def _run_train(args: argparse.Namespace) -> int:
    from empirical.train import TrainConfig, train

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be >= 1")
    cfg = TrainConfig(
        student=args.student, data=args.data, out=Path(args.out), beta=args.beta, lr=args.lr,
        lora_rank=args.lora_rank, epochs=args.epochs, repeat=args.repeat, batch_size=args.batch_size,
        grad_accum=args.grad_accum, checkpoints=args.checkpoints, seed=args.seed, limit=args.limit,
        dtype=args.dtype, progress=not args.no_progress,
    )
    try:
        cfg.validate()
        if not Path(args.data).is_file():
            raise UserError(f"{args.data}: no such file")
        summary = train(cfg)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UserError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    human = (f"trained {summary['n_pairs']} pairs, {summary['steps']} steps; checkpoints: "
             + ", ".join(c["path"] for c in summary["checkpoints"]) + f" in {args.out}")
    emit_summary(summary, args.json, human)
    return 0


def _one_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _run_correlate(args: argparse.Namespace) -> int:
    from empirical.correlate import correlate_run
    from lls_cli.runs import RunDir

    try:
        res = correlate_run(args.student, args.run, args.system_prompt, args.data, n=args.n, seed=args.seed,
                            n_boot=args.n_boot, n_perm=args.n_perm)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UserError(_one_line(exc)) from None
    run = RunDir(args.out)
    run.write_json("correlate.json", res)
    _trajectory_figure(run, res)
    f = res["final"]
    summary = {k: v for k, v in res.items() if k not in ("z_s", "z_M", "ids")}
    emit_summary(summary, args.json, f"n={res['n']}: cosine {f['cosine']:.3f}, pearson {f['pearson']:.3f}, "
                                     f"spearman {f['spearman']:.3f} -> {args.out}/correlate.json")
    return 0


def _trajectory_figure(run, res) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in res["checkpoints"]]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name in ("cosine", "pearson", "spearman"):
        vals = [c["report"][name] for c in res["checkpoints"]]
        ci = [c["report"].get(f"{name}_ci") for c in res["checkpoints"]]
        if all(x is not None for x in ci):
            lo = [v - x[0] for v, x in zip(vals, ci)]
            hi = [x[1] - v for v, x in zip(vals, ci)]
            ax.errorbar(steps, vals, yerr=[lo, hi], marker="o", capsize=3, label=name)
        else:
            ax.plot(steps, vals, marker="o", label=name)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("training step")
    ax.set_ylabel("corr(z_s, z_M)")
    ax.legend()
    fig.tight_layout()
    run.save_figure("trajectory.png", fig)
    plt.close(fig)


def _run_eval(args: argparse.Namespace) -> int:
    from empirical.evaluate import probe
    from empirical.train import list_checkpoints, load_student
    from lls_cli.runs import RunDir

    adapter = None
    try:
        if args.run is not None:
            cks = list_checkpoints(args.run)
            if not cks:
                raise FileNotFoundError(f"{args.run}: no LoRA adapter checkpoint found")
            adapter = cks[-1][1]
        model, tok = load_student(args.model, adapter)
        res = probe(model, tok, args.target, system_prompt=args.system_prompt)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise UserError(_one_line(exc)) from None
    res.update({"model": args.model, "adapter": str(adapter) if adapter else None,
                "system_prompt": args.system_prompt})
    RunDir(args.out).write_json("eval.json", res)
    emit_summary(res, args.json, f"P({res['target']}) among {len(res['candidates'])} candidates = "
                                 f"{res['p_target']:.4f} (uniform {res['uniform']:.4f}) -> {args.out}/eval.json")
    return 0
