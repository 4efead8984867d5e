"""`lls check-proof`: machine-check the proof of Theorem C.1 step by step (see lls_theory.proof)."""

from __future__ import annotations

from lls_cli.args import add_output_args, positive_int
from lls_common.io import RunDir, emit_summary


def register(sub) -> None:
    p = sub.add_parser(
        "check-proof",
        help="machine-check the proof of Theorem C.1 step by step",
        description="Checks each step of the proof of Theorem C.1 exactly (sympy / interval arithmetic), "
                    "derives the corrected hypothesis when a step fails, and runs a seeded numerical adversary "
                    "against the conclusion. Writes proof.json to --out. Exit 0 whatever it finds.",
    )
    add_output_args(p, default_out="lls-proof")
    p.add_argument("--instances", type=positive_int, default=None, help="adversary instances (default 40)")
    p.set_defaults(func=_run_check_proof)


def _run_check_proof(args) -> int:
    from lls_theory.proof import format_table, run_proof_check
    from lls_theory.proof.adversary import AdversaryConfig

    cfg = AdversaryConfig() if args.instances is None else AdversaryConfig(n_instances=args.instances)
    report = run_proof_check(seed=args.seed, adversary_cfg=cfg)
    run = RunDir(args.out)
    path = run.write_json("proof.json", report)
    summary = {k: report[k] for k in ("steps", "chain_holds", "corrected", "adversary", "failed_steps")}
    summary["adversary"] = {k: v for k, v in report["adversary"].items() if k != "instances"}
    summary["output"] = str(path)
    emit_summary(summary, args.json, format_table(report) + f"\n\nwrote {path}")
    return 0
