"""Figures of the real-model experiments (the paper's Table 1, Fig. 2, Fig. 3 and Fig. 19 analogues).

Each function takes the JSON-ready dicts the commands write (``correlate.json``, ``eval.json``, or the tables of
:mod:`empirical.report.table1`) and returns a matplotlib figure drawn in the project style
(:mod:`lls_common.figstyle`: fonts >= 9 pt at the saved size, Okabe-Ito colours with LLS blue, random control
grey, base black, system-prompted vermillion, paper reddish purple; legends outside the data). Callers save it
with :func:`lls_common.figstyle.save` (or ``lls_common.io.save_figure``). Matplotlib is imported lazily.

Notation written on the figures: z_s = the initial student's per-pair margin shift when the system prompt is
added; z_T = the teacher's; z_M = the fine-tuned student's shift (no system prompt) relative to the initial
student; every statistic is on held-out pairs never used for selection or training.
"""

from __future__ import annotations

import math
from typing import Any

from empirical.report.paper import TABLE1 as _PAPER

__all__ = ["trajectory_figure", "table1_figure", "table1_grid_figure", "fig19_figure", "mention_figure",
           "specificity_figure", "NOTATION", "PAPER_TABLE1"]

PAPER_TABLE1 = {"same teacher (OLMo2-1B -> OLMo2-1B)": _PAPER["same"]["owls"],
                "cross teacher (Qwen3-8B -> OLMo2-1B)": _PAPER["cross"]["owls"]}
"""The paper's owl column of Table 1 (kept for callers of the one-trait report)."""

NOTATION = ("z_s: initial student's margin shift from adding the system prompt; z_T: the teacher's; "
            "z_M: fine-tuned student's shift (no system prompt) vs the initial student. "
            "All on held-out pairs.")

_REF_STYLE = {"z_s": dict(marker="o", ls="-", mfc=None), "z_T": dict(marker="s", ls=":", mfc="white")}


def _fs():
    from lls_common import figstyle

    return figstyle


def _arm_role(arm: str) -> str:
    return "lls" if arm == "lls" else "random" if arm == "random" else "other"


def _traj_panel(ax, res: dict, stat: str) -> int:
    fs = _fs()
    series = [(arm, ref) for arm, rep in res["arms"].items() for ref in rep["final"]]
    for i, (arm, ref) in enumerate(series):
        rep = res["arms"][arm]
        steps = [c["step"] for c in rep["checkpoints"]]  # step 0: z_M = 0, correlation undefined
        vals = [c["vs"][ref][stat] for c in rep["checkpoints"]]
        cis = [c["vs"][ref][f"{stat}_ci"] for c in rep["checkpoints"]]
        st = _REF_STYLE.get(ref, _REF_STYLE["z_s"])
        kw = {"mfc": st["mfc"]} if st["mfc"] else {}
        # one checkpoint per arm: a dot plot (a line through one point would be a legend entry never drawn)
        single = all(len(res["arms"][a]["checkpoints"]) == 1 for a in res["arms"])
        fs.errorbars(ax, steps, vals, [c[0] for c in cis], [c[1] for c in cis], i=i, n=len(series),
                     color_=fs.color(_arm_role(arm)), marker=st["marker"], ls="none" if single else st["ls"],
                     label=f"{'LLS' if arm == 'lls' else arm} student vs {ref}", **kw)
    ax.axhline(0, color=fs.color("base"), lw=0.6)
    steps_all = sorted({c["step"] for rep in res["arms"].values() for c in rep["checkpoints"]})
    ax.set_xticks(steps_all)
    return len(series)


def trajectory_figure(res: dict | None = None, stat: str = "pearson", *, by_trait: dict[str, dict] | None = None,
                      student: str | None = None):
    """Fig-3 analogue: ``stat`` of (reference, z_M) against the training step, one series per arm and reference,
    95% bootstrap CIs, series dodged so their error bars do not overlap.

    ``res``: one ``correlate.json`` dict (one panel); or ``by_trait``: ``{trait: correlate dict}`` (one panel per
    trait, shared axes).
    """
    fs = _fs()
    panels = by_trait if by_trait is not None else {"": res}
    if not panels or any(v is None for v in panels.values()):
        raise ValueError("trajectory_figure: give res or by_trait")
    k = len(panels)
    ncol = min(k, 5)
    nrow = math.ceil(k / ncol)
    fig, axes = fs.subplots(nrow, ncol, width=4.8 if k == 1 else "two",
                            height=3.0 if k == 1 else 1.9 * nrow + 0.9, sharex=True, sharey=True, squeeze=False)
    first = next(iter(panels.values()))
    for ax, (trait, r) in zip(axes.flat, panels.items()):
        _traj_panel(ax, r, stat)
        if trait:
            ax.set_title(trait)
    for ax in list(axes.flat)[k:]:
        ax.set_visible(False)
    name = student or first.get("student", "")
    if k == 1:
        axes[0, 0].set_xlabel("training step (DPO steps)")
        axes[0, 0].set_ylabel(f"{stat.capitalize()} r with z_M (95% CI)")
        fs.title_n_ci(axes[0, 0], name, n=f"{first['n']} held-out pairs")
    else:
        for ax in list(axes.flat)[k - ncol:k]:  # the last visible panel of each column carries the x label
            ax.set_xlabel("DPO step")
        fig.supylabel(f"{stat.capitalize()} r with z_M (95% CI)")
        fig.suptitle(f"{name}: n = {first['n']} held-out pairs per trait; 95% bootstrap CIs")
    fs.legend_outside(fig if k > 1 else axes[0, 0], "below", ncol=2)
    return fig


def table1_figure(rows: list[dict[str, Any]], stat: str = "pearson"):
    """Forest plot of ``stat`` with 95% CI per (student, arm, reference), the paper's owl numbers as lines.

    ``rows``: ``[{"label", "arm"?, "report"}]`` where ``report`` is a :func:`lls_theory.stats.correlation_report`.
    """
    fs = _fs()
    fig, ax = fs.subplots(width="two", height=0.32 * len(rows) + 1.9)
    ys = list(range(len(rows)))[::-1]
    seen = set()
    for y, r in zip(ys, rows):
        rep = r["report"]
        v, (lo, hi) = rep[stat], rep[f"{stat}_ci"]
        role = "lls" if "lls" in r.get("arm", r["label"]) else "random"
        lab = None if role in seen else {"lls": "LLS-trained student", "random": "random-subset control"}[role]
        seen.add(role)
        ax.errorbar([v], [y], xerr=[[max(0.0, v - lo)], [max(0.0, hi - v)]], fmt=fs.marker(role), color=fs.color(role), capsize=3,
                    label=lab)
    for (name, val), ls in zip(PAPER_TABLE1.items(), ("-", ":")):
        ax.axvline(val, color=fs.color("paper"), ls=ls, lw=1.2, label=f"paper, owls, {name}: {val}")
    ax.axvline(0, color=fs.color("base"), lw=0.6)
    ax.set_yticks(ys, [r["label"] for r in rows])
    ax.set_xlabel(f"{stat} r on held-out pairs (95% bootstrap CI)")
    ax.set_ylabel("student / training subset / r")
    fs.legend_outside(ax, "below", ncol=2)
    fs.caption(fig, NOTATION)
    return fig


def table1_grid_figure(tab: dict[str, Any]):
    """Table-1 figure from :func:`empirical.report.table1.table1`: one row of panels per student.

    Left panel: per trait, Pearson(r, z_M) of the LLS student (blue circle) and of the random-subset control
    (grey square) with 95% bootstrap CIs, the paper's number for that trait and row (purple star). Right panel:
    the paired LLS − random difference with its 95% CI (zero line). Row titles give the reference r and the
    summary (mean over traits; traits whose difference CI excludes 0).
    """
    fs = _fs()
    traits, rows = tab["traits"], tab["rows"]
    if not rows:
        raise ValueError("table1_grid_figure: no rows")
    k = len(traits)
    fig, axes = fs.subplots(len(rows), 2, width="two", height=len(rows) * (0.3 * k + 1.5) + 1.3,
                            sharey="row", squeeze=False, gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(k))[::-1]
    for (axl, axr), row in zip(axes, rows):
        cells, s = row["cells"], row["summary"]
        for role, key, i in (("lls", "lls", 0), ("random", "random", 1)):
            pts = [(y, cells[t][key]) for y, t in zip(ys, traits) if t in cells and cells[t][key]]
            if not pts:
                continue
            y = [p[0] + (0.12 if i == 0 else -0.12) for p in pts]
            v = [p[1]["pearson"] for p in pts]
            # percentile-bootstrap intervals need not contain the estimate: clip the bar lengths at 0
            lo = [max(0.0, v_ - (p[1]["ci"] or [v_, v_])[0]) for v_, p in zip(v, pts)]
            hi = [max(0.0, (p[1]["ci"] or [v_, v_])[1] - v_) for v_, p in zip(v, pts)]
            axl.errorbar(v, y, xerr=[lo, hi], fmt=fs.marker(role), color=fs.color(role), capsize=2.5,
                         label={"lls": "LLS-trained student", "random": "random-subset control"}[role])
        pp = [(y, cells[t]["paper"]) for y, t in zip(ys, traits) if t in cells and cells[t]["paper"] is not None]
        if pp:
            axl.plot([p[1] for p in pp], [p[0] for p in pp], ls="none", marker="*", ms=9, color=fs.color("paper"),
                     label="paper's Table 1 (OLMo2-1B student)")
        axl.axvline(0, color=fs.color("base"), lw=0.6)
        axl.set_yticks(ys, traits)
        axl.set_ylim(-0.6, k - 0.4)
        axl.set_xlabel(f"Pearson r of {row['ref']} with z_M (95% CI)")
        axl.set_ylabel("trait")
        who = "same model as teacher" if row["kind"] == "same" else "not the teacher"
        n = next(iter(cells.values()))["lls"]["n"]
        axl.set_title(f"{row['student']} ({who})\nn = {n} held-out pairs; mean LLS r "
                      f"{'–' if s['mean_lls'] is None else format(s['mean_lls'], '.2f')}", loc="left")
        dd = [(y, cells[t]["diff"]) for y, t in zip(ys, traits) if t in cells and cells[t]["diff"]]
        if dd:
            v = [d["diff"] for _, d in dd]
            axr.errorbar(v, [y for y, _ in dd], xerr=[[max(0.0, x - d["ci"][0]) for x, (_, d) in zip(v, dd)],
                                                     [max(0.0, d["ci"][1] - x) for x, (_, d) in zip(v, dd)]],
                         fmt="D", color=fs.color("lls"), mfc="white", capsize=2.5,
                         label="LLS − random (paired bootstrap 95% CI)")
        axr.axvline(0, color=fs.color("base"), lw=0.6)
        axr.set_xlabel("LLS − random, Δ Pearson r (95% CI)")
        ind = row.get("independence")
        axr.set_title(f"paired difference\nCI excludes 0: {s['n_diff_excludes_0']} of {s['n_diffs']} traits"
                      + (f"\n≈ {ind['n_eff']:.1f} independent cells" + (", one shared control" if
                                                                        ind["control_shared"] else "")
                         if ind else ""), loc="left")
        axr.tick_params(labelleft=False)
    fs.legend_outside(fig, "below", ncol=2)
    shared = [r["student"] for r in rows if (r.get("independence") or {}).get("control_shared")]
    fs.caption(fig, NOTATION + " Reference r: z_T where the student is not the teacher, else z_s (= z_T)."
               + (f" One random-control student serves every trait ({', '.join(shared)}), and all cells share the "
                  "held-out pairs, so a row's cells are not independent replications: 'independent cells' is "
                  "their effective number from the correlation of their bootstrap replicates." if shared else ""))
    return fig


_F19_MARKERS = (("o", "^"), ("s", "v"), ("D", "<"))


def _f19_panel(ax, fs, traits: list[str], xy: list, angles: dict, label_points: bool) -> None:
    K = len(traits)
    cols = fs.series_colors(K)
    for k, t in enumerate(traits):
        (x1, y1), (x2, y2) = xy[k], xy[K + k]
        ang = angles.get(t)
        filled, hollow = _F19_MARKERS[(k // 8) % len(_F19_MARKERS)]  # past 8 colours, change the shapes
        ax.annotate("", xy=(x2, y2), xytext=(x1, y1),
                    arrowprops=dict(arrowstyle="->", color=cols[k], lw=0.9, alpha=0.8))
        ax.plot([x1], [y1], filled, color=cols[k], ms=6, ls="none",
                label=f"{t}: {'–' if ang is None else f'{ang:.0f}°'}")
        ax.plot([x2], [y2], hollow, color=cols[k], mfc="white", ms=7, ls="none")
        if label_points:
            ax.annotate(t, (x1, y1), xytext=(3, 3), textcoords="offset points", color=cols[k], fontsize=9)
    ax.axhline(0, color="#BBBBBB", lw=0.5)
    ax.axvline(0, color="#BBBBBB", lw=0.5)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("singular direction 1")
    ax.set_ylabel("singular direction 2")


def fig19_figure(f19: dict[str, Any]):
    """Fig-19 view from :func:`empirical.report.table1.fig19`: per student, the unit-scaled margin vectors on
    their top-2 singular directions; filled marker = fine-tuned z_M, open marker = reference r of the same
    trait, an arrow from each trait's z_M to its r; the legend lists each trait's angle ∠(z_M, r) in the full
    space. Where the run has 3 or more traits a second panel shows the trait-centred vectors (each side's mean
    over the traits removed), labelled trait by trait, with the centred angles."""
    fs = _fs()
    students = list(f19)
    if not students:
        raise ValueError("fig19_figure: nothing to draw")
    n = len(students)
    ncol = 2 if any("centred" in f19[s] for s in students) else 1
    fig, axes = fs.subplots(n, ncol, width="two", height=3.4 * n + 0.3, squeeze=False)
    for row, s in zip(axes, students):
        d = f19[s]
        K = len(d["traits"])
        _f19_panel(row[0], fs, d["traits"], d["xy"], d["angles_deg"], label_points=False)
        row[0].set_title(f"{s}: raw; filled = z_M, open = {d['ref']}\n{K} trait{'s' if K != 1 else ''}; "
                         f"top-2 share of σ² {d['explained']:.2f}", loc="left")
        row[0].legend(title="trait: ∠(z_M, r)", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                      ncol=1 if K <= 12 else 2)
        if ncol == 2:
            c = d.get("centred")
            if c is None:
                row[1].set_visible(False)
                continue
            _f19_panel(row[1], fs, d["traits"], c["xy"], c["angles_deg"], label_points=True)
            mean_ang = sum(c["angles_deg"].values()) / len(c["angles_deg"])
            row[1].set_title(f"{s}: trait-centred\nmean ∠ {mean_ang:.0f}° (90° = unrelated); top-2 share "
                             f"{c['explained']:.2f}", loc="left")
    fs.caption(fig, "Each student's 2K margin vectors, scaled to unit length, projected on their top-2 "
               "right singular vectors (dimensionless); arrows run from a trait's z_M to its reference. " + NOTATION +
               " Angles: arccos of the uncentred cosine in the full space of held-out pairs, not in the projection. "
               "Trait-centred: the mean over the traits removed from the z_M side and from the reference side "
               "before scaling; a student that learned its trait's own part points towards its own reference here.")
    return fig


_COND_ROLE = {"base": "base", "system": "system", "lls": "lls", "random": "random"}
_COND_LABEL = {"base": "base student", "system": "base + system prompt", "lls": "LLS-trained",
               "random": "random-subset control"}


def mention_figure(evals: dict[str, dict[str, Any]], target: str):
    """Fig-2 analogue: share of sampled answers mentioning ``target`` per student and condition, Wilson 95%
    CIs, each bar labelled with its value and k/n (so a zero bar still shows).

    ``evals``: ``{student name: eval dict with "conditions": {cond: {"mention": {k, n, rate, ci}}}}``.
    """
    fs = _fs()
    students = list(evals)
    conds = list(dict.fromkeys(c for e in evals.values() for c in e["conditions"]))
    fig, ax = fs.subplots(width="two" if len(students) * len(conds) > 4 else "one", height=3.0)
    width = 0.8 / max(1, len(conds))
    extra = fs.series_colors(len(conds) + 4)[4:]
    ns = set()
    top = 0.0
    bar_sets = []
    for j, cond in enumerate(conds):
        xs, vals, lo, hi, labels = [], [], [], [], []
        for i, s in enumerate(students):
            m = evals[s]["conditions"].get(cond, {}).get("mention")
            if m is None:
                continue
            xs.append(i + (j - (len(conds) - 1) / 2) * width)
            vals.append(m["rate"])
            lo.append(max(0.0, m["rate"] - m["ci"][0]))
            hi.append(max(0.0, m["ci"][1] - m["rate"]))
            labels.append(f"{m['k']}/{m['n']}" if "k" in m else f"{m['rate']:.2f}")
            ns.add(m.get("n"))
            top = max(top, m["ci"][1])
        role = _COND_ROLE.get(cond)
        colour = fs.color(role) if role else extra[j % len(extra)]
        bars = ax.bar(xs, vals, width=width * 0.92, color=colour, label=_COND_LABEL.get(cond, cond),
                      edgecolor=colour)
        # a coloured stub on the axis so that a zero-height bar still shows its condition's colour
        ax.hlines([0] * len(xs), [x - width * 0.46 for x in xs], [x + width * 0.46 for x in xs], colors=colour,
                  lw=3, clip_on=False, zorder=3)
        ax.errorbar(xs, vals, yerr=[lo, hi], fmt="none", ecolor="#444444", capsize=2.5, lw=0.9)
        bar_sets.append((bars, vals, hi, labels))
    ax.set_ylim(0, max(0.08, top * 1.4))
    for bars, vals, hi, labels in bar_sets:
        for b, v, h, lab in zip(bars, vals, hi, labels):
            ax.annotate(f"{v:.2f}\n{lab}", (b.get_x() + b.get_width() / 2, v + h), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=fs.FONT_PT,
                        linespacing=1.0)
    ax.set_xticks(range(len(students)), students)
    ax.set_xlabel("student model")
    ax.set_ylabel(f"share mentioning '{target}'")
    n_txt = "/".join(str(x) for x in sorted(x for x in ns if x is not None))
    fs.title_n_ci(ax, "Sampled answers to general prompts", n=f"{n_txt} answers per bar" if n_txt else None,
                  ci="95% Wilson CI")
    fs.legend_outside(ax, "right")
    return fig


def specificity_figure(traits: list[str], student: str, spec: dict[str, Any]):
    """Heatmaps of one student's specificity test (:func:`empirical.report.specificity.run_specificity`):
    C[a, b] = Pearson(z_M of the student trained on a, reference of trait b), raw and trait-centred, and the
    positive control's centred matrix (a second model's own z_s against the teacher's z_T) where the run has
    one. A trait-specific effect shows as a diagonal that stands out in the centred panels."""
    import numpy as np

    fs = _fs()
    test, pc = spec["test"], spec["positive_control"]
    ref = spec["ref"]
    panels = [(np.array(test["raw"]["C"]), f"students, raw: z_M vs {ref}", test["raw"]),
              (np.array(test["centred"]["C"]), "students, centred", test["centred"])]
    if pc["available"]:
        panels.append((np.array(pc["centred"]["C"]), f"control ({pc['model']}), centred", pc["centred"]))
    K = len(traits)
    rows = (len(panels) + 1) // 2
    fig, axes = fs.subplots(rows, 2, width="two", height=3.6 * rows + 0.4, squeeze=False)
    flat = list(axes.ravel())
    for j, (ax, (C, title, stats)) in enumerate(zip(flat, panels)):
        lim = float(np.max(np.abs(C))) or 1.0
        im = ax.imshow(C, cmap="RdBu_r", vmin=-lim, vmax=lim)
        for k in range(K):
            ax.add_patch(fs.plt().Rectangle((k - 0.5, k - 0.5), 1, 1, fill=False, ec="black", lw=1.0))
        ax.set_xticks(range(K), traits, rotation=90)
        ax.set_yticks(range(K), traits)
        ax.set_xlabel("reference shift of trait b")
        ax.set_ylabel("student trained on trait a" if j != 2 else "model scoring trait a")
        ax.set_title(f"{title}\ndiag {stats['diagonal']:+.3f} / off {stats['off_diagonal']:+.3f}\n"
                     f"p = {stats['permutation']['p']:.2g}", loc="left")
        fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    for ax in flat[len(panels):]:
        ax.remove()
    fs.caption(fig, f"{student}: K×K held-out Pearson correlations (n = {spec['n']} pairs). Rows: the student "
               f"trained on trait a; columns: the reference shift of trait b ({ref} for the students, z_T for the "
               "control); outlined cells: the diagonal (own trait); colour scale symmetric per panel. Centred: the "
               "mean over the traits removed from both sides pair by pair, so only trait-specific parts remain. p: "
               "one-sided permutation test of the mean diagonal over relabellings of the traits. " + NOTATION)
    return fig
