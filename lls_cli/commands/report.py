"""``lls report --run DIR`` (alias ``lls figures``): rebuild every figure and report of a finished experiment
run from its JSON alone (no model is loaded; see :func:`empirical.report.write_run_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lls_common.errors import LLSError


def register(sub) -> None:
    p = sub.add_parser(
        "report", aliases=["figures"],
        help="regenerate the figures and report.md of a finished experiment run from its JSON",
        description="Reads a run folder written by `lls experiment` (config.json, stages/*.json, "
                    "students/<name>/{correlate,eval}.json; per trait under traits/<name>/ for a many-trait run) "
                    "and rewrites report.md, summary.json and every figure (table1.png, trajectory-<student>.png, "
                    "mention.png; for many traits also the run-level table1.png, fig19.png, table1.json). "
                    "No model is loaded; the numbers are recomputed from the stored margin vectors and checked "
                    "against the stored statistics.",
    )
    p.add_argument("--run", type=Path, required=True, metavar="DIR", help="finished `lls experiment --out` folder")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from empirical.report import write_run_report
    from lls_common.io import emit_summary

    run = args.run
    if not run.is_dir():
        raise LLSError(f"--run {run}: no such folder")
    try:
        out = write_run_report(run)
    except (KeyError, TypeError) as exc:
        raise LLSError(f"--run {run}: a JSON file lacks an expected field ({exc}); is the run finished?") from None
    except FileNotFoundError as exc:
        raise LLSError(f"--run {run}: {exc.filename}: missing; run the stages that write it") from None
    summary = {"run": str(run), **out}
    emit_summary(summary, args.json, f"wrote {len(out['reports'])} report(s) and {len(out['figures'])} figure(s) "
                 f"under {run}: " + ", ".join(out["reports"] + out["figures"]))
    return 0
