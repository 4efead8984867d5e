"""``report.md``, ``summary.json`` and figures of an ``lls experiment`` run directory.

Everything here is read back from the JSON the stages wrote (``stages/*.json``,
``students/<name>/{correlate,eval}.json``), so the report can be rebuilt at any time without a model:
``lls experiment --config C --out RUN`` re-runs only this stage when the others are done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["write_report", "collect_rows"]


def _fmt(rep: dict[str, Any], stat: str) -> str:
    lo, hi = rep[f"{stat}_ci"]
    return f"{rep[stat]:.3f} [{lo:.3f}, {hi:.3f}]"


def _verdict(rep: dict[str, Any]) -> str:
    lo = rep["pearson_ci"][0]
    if rep["pearson_p"] < 0.05 and lo > 0:
        return "positive (p < 0.05, CI > 0)"
    return "no significant positive correlation"


def collect_rows(root: Path, students: list[Any]) -> list[dict[str, Any]]:
    """One row per (student, arm, reference vector) with the final checkpoint's report."""
    rows = []
    for s in students:
        res = json.loads((root / "students" / s.name / "correlate.json").read_text())
        for arm, rep in res["arms"].items():
            for ref, r in rep["final"].items():
                rows.append({"student": s.name, "arm": arm, "ref": ref, "report": r,
                             "label": f"{s.name} / {arm} / corr({ref}, z_M)"})
    return rows


def write_report(root: str | Path, cfg: Any) -> dict[str, Any]:
    """Write ``report.md``, ``summary.json``, ``table1.png``, ``mention.png``, ``trajectory-<student>.png``."""
    from empirical.figures import PAPER_TABLE1, mention_figure, table1_figure, trajectory_figure
    from lls_common.io import atomic_write_json, atomic_write_text, save_figure

    root = Path(root)
    stage = lambda name: json.loads((root / "stages" / f"{name}.json").read_text())["result"]  # noqa: E731
    split, select, train = stage("split"), stage("select"), stage("train")
    rows = collect_rows(root, cfg.students)
    corr = {s.name: json.loads((root / "students" / s.name / "correlate.json").read_text()) for s in cfg.students}
    evals = {s.name: json.loads((root / "students" / s.name / "eval.json").read_text()) for s in cfg.students}

    import matplotlib.pyplot as plt

    figs = {"table1.png": table1_figure(rows), "mention.png": mention_figure(evals, cfg.target)}
    for name, res in corr.items():
        figs[f"trajectory-{name}.png"] = trajectory_figure(res)
    for fname, fig in figs.items():
        save_figure(fig, root / fname)
        plt.close(fig)

    L = [f"# LLS end-to-end experiment `{cfg.name}`", ""]
    L += [f"Teacher `{cfg.teacher}` with system prompt s = \"{cfg.system_prompt}\"; students "
          + ", ".join(f"`{s.model}` ({s.name})" for s in cfg.students) + f"; target word `{cfg.target}`.", ""]
    L += ["## Data and selection", "",
          f"- Source `{cfg.data}`: {split['n_records']} records, {split['n_bad']} bad (skipped), dropped by filters "
          f"{split['dropped']}; replies truncated to {cfg.truncate} teacher tokens; {split['n_usable']} usable pairs.",
          f"- Held out for correlation: {split['n_heldout']} pairs (never scored for selection, never trained on); "
          f"scored pool: {split['n_pool']} pairs (seed {cfg.seed}).",
          f"- Algorithm 1: {select['n_positive']} pairs with positive weight; γ = {cfg.quantile} -> "
          f"{select['n_selected']} selected (mean weight {select['weight_lls']['mean']:.4g} vs "
          f"{select['weight_all']['mean']:.4g} over the pool); random control: {select['n_selected']} pairs "
          f"drawn uniformly from the pool (mean weight {select['weight_random']['mean']:.4g}).", ""]
    L += ["## Training (DPO + LoRA, TRL)", "",
          f"β = {cfg.beta}, lr = {cfg.lr}, LoRA rank {cfg.lora_rank} (alpha {2 * cfg.lora_rank}), batch "
          f"{cfg.batch_size} × accumulation {cfg.grad_accum}, {cfg.epochs} epoch(s) × {cfg.repeat} repeat(s), "
          f"{cfg.checkpoints} checkpoints. Reference = the initial student.", "",
          "| run | pairs | steps | wall s (last call) | pairs/s |", "|---|---|---|---|---|"]
    for run, t in train.items():
        pps = t.get("pairs_per_s_this_call")
        L.append(f"| {run} | {t['n_pairs']} | {t['steps']} | {t['wall_s_this_call']:.0f} | "
                 f"{pps:.2f} |" if pps else f"| {run} | {t['n_pairs']} | {t['steps']} | – | – |")
    L += ["", "## Table 1 analogue: held-out margin correlations (final checkpoint)", "",
          "z_s = ρ of the initial student with s (vs without); z_T = the teacher's ρ with s (cross-family only); "
          "z_M = ρ of the fine-tuned student without s, relative to the initial student. Cosine = the "
          "theorem's Corr; 95% bootstrap CIs; one-sided permutation p-value of the Pearson correlation.", "",
          "| student | training subset | vs | cosine | Pearson | Spearman | p (Pearson) | verdict |",
          "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rep = r["report"]
        L.append(f"| {r['student']} | {r['arm']} | {r['ref']} | {_fmt(rep, 'cosine')} | {_fmt(rep, 'pearson')} | "
                 f"{_fmt(rep, 'spearman')} | {rep['pearson_p']:.4f} | {_verdict(rep)} |")
    contrasts = {name: res["lls_minus_random"] for name, res in corr.items() if "lls_minus_random" in res}
    if contrasts:
        L += ["", "LLS minus random control on the same held-out pairs (final checkpoints; paired bootstrap 95% CI "
              "and one-sided bootstrap p-value for 'LLS > random'):", "",
              "| student | vs | Δ cosine [95% CI] | p | Δ Pearson [95% CI] | p |", "|---|---|---|---|---|---|"]
        for name, con in contrasts.items():
            for ref, d in con.items():
                c, p = d["cosine"], d["pearson"]
                L.append(f"| {name} | {ref} | {c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | {c['p']:.4f} | "
                         f"{p['diff']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] | {p['p']:.4f} |")
    for name, res in corr.items():
        if "teacher_vs_student" in res:
            t = res["teacher_vs_student"]
            L.append(f"\nBefore training, {name}: corr(z_T, z_s) Pearson {_fmt(t, 'pearson')} (how alike the two "
                     "models' system-prompt shifts are).")
    L += ["", "Paper (student OLMo2-1B-Instruct, owls, 500 pairs): " + "; ".join(
        f"{k} {v}" for k, v in PAPER_TABLE1.items()) + ".", "", "![Table 1 analogue](table1.png)", ""]
    L += ["## Trajectory (Fig. 3 analogue)", ""]
    for name, res in corr.items():
        parts = []
        for arm, rep in res["arms"].items():
            pts = ", ".join(f"step {c['step']}: {c['vs']['z_s']['pearson']:.3f}" for c in rep["checkpoints"])
            parts.append(f"{arm}: {pts}")
        L.append(f"- {name}, Pearson(z_s, z_M): " + "; ".join(parts))
        L.append(f"\n![trajectory {name}](trajectory-{name}.png)\n")
    L += ["## Behaviour (Fig. 2 analogue)", "",
          f"{len(next(iter(evals.values()))['settings']['prompts'])} general-knowledge prompts × {cfg.samples} "
          f"samples (temperature 1, ≤ {cfg.max_new_tokens} new tokens); mention = word-boundary match of "
          f"`{cfg.target}` or its plural; Wilson 95% CIs; p = one-sided Fisher test against the base model. "
          "Probe = probability of the target among 11 animal names for 4 'favourite animal' questions.", "",
          "| student | condition | mentions | rate [95% CI] | p vs base | probe P(target) |" +
          (" target-language share |" if cfg.language else ""),
          "|---|---|---|---|---|---|" + ("---|" if cfg.language else "")]
    for name, ev in evals.items():
        for cond, c in ev["conditions"].items():
            m = c["mention"]
            p = ev.get("vs_base", {}).get(cond, {}).get("mention_p_greater")
            line = (f"| {name} | {cond} | {m['k']}/{m['n']} | {m['rate']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}] | "
                    f"{'–' if p is None else f'{p:.3g}'} | {c['probe']['p_target']:.3f} |")
            if cfg.language:
                lg = c["language"]
                line += f" {lg['mean_share']:.3f} [{lg['ci'][0]:.3f}, {lg['ci'][1]:.3f}] |"
            L.append(line)
    L += ["", "![mention rates](mention.png)", ""]
    atomic_write_text(root / "report.md", "\n".join(L) + "\n")
    summary = {
        "name": cfg.name, "teacher": cfg.teacher, "system_prompt": cfg.system_prompt,
        "n_heldout": split["n_heldout"], "n_pool": split["n_pool"], "n_selected": select["n_selected"],
        "correlations": [{k: r[k] for k in ("student", "arm", "ref")} | {
            s: r["report"][s] for s in ("cosine", "cosine_ci", "pearson", "pearson_ci", "spearman", "spearman_ci",
                                        "pearson_p")} for r in rows],
        "teacher_vs_student": {n: r["teacher_vs_student"] for n, r in corr.items() if "teacher_vs_student" in r},
        "lls_minus_random": contrasts,
        "behaviour": {n: {c: {"mention_rate": v["mention"]["rate"], "mention_ci": v["mention"]["ci"],
                              "p_target": v["probe"]["p_target"]} for c, v in ev["conditions"].items()}
                      for n, ev in evals.items()},
        "paper_table1_owls": PAPER_TABLE1,
        "figures": sorted(figs),
    }
    atomic_write_json(root / "summary.json", summary)
    return {"report": "report.md", "figures": sorted(figs)}
