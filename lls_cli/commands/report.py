"""``lls report --run DIR`` (alias ``lls figures``): rebuild every figure and report of a finished experiment
run from its JSON alone (no model is loaded; see :func:`empirical.report.write_run_report`).
``lls specificity --run DIR``: the trait-specificity measurement of a many-trait run, from its JSON alone
(:func:`empirical.report.specificity.write_specificity`)."""

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

    from empirical.config import SpecificityConfig
    from lls_common.config import add_arguments

    q = sub.add_parser(
        "specificity",
        help="does the trait itself transfer? K×K test of a finished many-trait run (no model, seconds)",
        description="Reads the held-out shift vectors of a finished many-trait `lls experiment` run and tests "
                    "whether each LLS student moves along its own trait's shift more than along the other traits' "
                    "(K×K correlation matrix raw and trait-centred, permutation test of the mean diagonal, "
                    "bootstrap CI of diagonal − off-diagonal, the specific-to-common gain kappa, the effective "
                    "number of independent Table-1 cells, a positive control from a second model's own shifts, "
                    "the training-subset overlap and, where the probe stored its answer distribution, behaviour). "
                    "Writes specificity.json and specificity-<student>.png. Columns: diag / off = mean diagonal / "
                    "off-diagonal correlation; p = one-sided permutation p; gap = centred diag − off with its 95%% "
                    "bootstrap CI; MDE = the centred gap detectable at one-sided alpha 0.05 with 80%% power; kappa = "
                    "specific-to-common gain (1: the trait's own part moves the student as much as the shared part; "
                    "0: only the shared part); N_eff = effective number of independent cells of K.",
    )
    q.add_argument("--run", type=Path, required=True, metavar="DIR", help="finished many-trait `lls experiment` folder")
    q.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for specificity.json and the heatmaps (default: the run folder)")
    add_arguments(q, SpecificityConfig)
    q.add_argument("--json", action="store_true", help="print the per-student summary as JSON on stdout")
    q.set_defaults(func=_run_specificity)


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


def specificity_summary(spec: dict) -> dict:
    """The headline numbers of :func:`empirical.report.specificity.run_specificity`, per student."""
    out = {}
    for s, st in spec["students"].items():
        t, pc = st["test"], st["positive_control"]
        out[s] = {
            "ref": st["ref"], "n": st["n"],
            **{f"{k}_{x}": t[k][x] for k in ("raw", "centred") for x in ("diagonal", "off_diagonal")},
            "raw_p": t["raw"]["permutation"]["p"], "centred_p": t["centred"]["permutation"]["p"],
            "permutation": {x: t["raw"]["permutation"][x] for x in ("method", "n_permutations")},
            "centred_gap": t["gap_ci"]["gap"], "centred_gap_ci": t["gap_ci"]["ci"], "mde": t["mde"]["gap"],
            "kappa": t["gain"]["kappa"], "kappa_ci": t["gain"]["kappa_ci"],
            "n_eff": st["cells"]["n_eff"], "K": st["cells"]["K"],
            "positive_control": ({"source": pc["source"], "centred_diagonal": pc["centred"]["diagonal"],
                                  "centred_off_diagonal": pc["centred"]["off_diagonal"],
                                  "centred_p": pc["centred"]["permutation"]["p"]}
                                 if pc["available"] else {"source": None, "reason": pc["reason"]}),
            "behaviour_centred_p": (st["behaviour"]["centred"]["permutation"]["p"]
                                    if st["behaviour"]["available"] else None),
        }
    return out


def by_selection_summary(groups: dict) -> dict:
    """Per selection form and student: the K×K test's headline numbers and the control comparison."""
    out = {}
    for form, g in groups.items():
        out[form] = {"traits": g["traits"], "students": {}}
        for s, st in g["students"].items():
            t, c = st["test"], st["controls"]
            out[form]["students"][s] = {
                "centred_diagonal": t["centred"]["diagonal"], "centred_off_diagonal": t["centred"]["off_diagonal"],
                "centred_p": t["centred"]["permutation"]["p"], "kappa": t["gain"]["kappa"],
                "kappa_ci": t["gain"]["kappa_ci"], "beta_common": t["gain"]["beta_common"],
                "beta_specific": t["gain"]["beta_specific"], "beta_specific_ci": t["gain"]["beta_specific_ci"],
                "control_traits": c["traits"], "target_level": c["target_level"],
                "control_level": c["control_level"], "half_rule": c["half_rule"],
                "control_minus_half_ci": c["ci"]}
    return out


def _run_specificity(args: argparse.Namespace) -> int:
    from empirical.config import SpecificityConfig
    from empirical.report.specificity import write_specificity
    from lls_common.config import from_namespace
    from lls_common.io import check_output, emit_summary

    cfg = from_namespace(SpecificityConfig, args)
    if not args.run.is_dir():
        raise LLSError(f"--run {args.run}: no such folder")
    out = check_output(args.out if args.out is not None else args.run, kind="dir", name="--out")
    spec = write_specificity(args.run, out, n_perm=cfg.n_perm, n_boot=cfg.n_boot, seed=cfg.seed)
    summary = {"run": str(args.run), "out": str(out), "traits": spec["traits"], "settings": spec["settings"],
               "students": specificity_summary(spec), "overlap": {k: spec["overlap"].get(k) for k in
                                                                  ("available", "mean_offdiag_overlap", "common_to_all",
                                                                   "union")},
               "files": spec["files"]}
    if spec.get("by_selection"):
        summary["by_selection"] = by_selection_summary(spec["by_selection"])
    L = [f"trait specificity of {args.run} ({len(spec['traits'])} traits; written to {out}/specificity.json)",
         f"{'student':<10} {'r':<4} {'raw diag/off':>14} {'raw p':>7} {'centred diag/off':>17} {'cen. p':>7} "
         f"{'centred gap [95% CI]':>24} {'MDE':>6} {'kappa [95% CI]':>22} {'N_eff':>8}  positive control"]
    for s, v in summary["students"].items():
        pc = v["positive_control"]
        pc_txt = (f"centred diag {pc['centred_diagonal']:+.3f}, p {pc['centred_p']:.2g} ({pc['source']})"
                  if pc["source"] else "none")
        L.append(f"{s:<10} {v['ref']:<4} {v['raw_diagonal']:>6.3f}/{v['raw_off_diagonal']:<7.3f} {v['raw_p']:>7.3g} "
                 f"{v['centred_diagonal']:>+8.3f}/{v['centred_off_diagonal']:<+8.3f} {v['centred_p']:>7.3g} "
                 f"{v['centred_gap']:>+7.3f} [{v['centred_gap_ci'][0]:+.3f}, {v['centred_gap_ci'][1]:+.3f}] "
                 f"{v['mde']:>6.3f} {v['kappa']:>+6.2f} [{v['kappa_ci'][0]:+.2f}, {v['kappa_ci'][1]:+.2f}] "
                 f"{v['n_eff']:>4.1f}/{v['K']:<3}  {pc_txt}")
    L.append("diag/off: mean diagonal/off-diagonal Pearson r; p: one-sided permutation p of the mean diagonal; "
             "centred: the mean over the traits removed from both sides; MDE: centred gap detectable at "
             "alpha 0.05, power 0.8; kappa: specific-to-common gain (0 = only the shared direction); "
             "N_eff: independent Table-1 cells of K.")
    emit_summary(summary, args.json, "\n".join(L))
    return 0
