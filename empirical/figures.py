"""Figures of the real-model experiments (the paper's Table 1, Fig. 2 and Fig. 3 analogues).

Each function takes the JSON-ready dicts the commands write (``correlate.json``, ``eval.json``) and returns
a matplotlib figure; callers save it (``lls_common.io.save_figure``). Matplotlib is imported lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["trajectory_figure", "table1_figure", "mention_figure"]

PAPER_TABLE1 = {"same teacher (OLMo2-1B -> OLMo2-1B)": 0.537, "cross teacher (Qwen3-8B -> OLMo2-1B)": 0.113}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def trajectory_figure(res: dict, stat: str = "pearson"):
    """Fig-3 analogue: ``stat`` of (reference, z_M) vs training step, one line per arm and reference, 95% CIs."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    styles = {"lls": "-", "random": "--"}
    for arm, rep in res["arms"].items():
        steps = [c["step"] for c in rep["checkpoints"]]  # step 0: z_M = 0, correlation undefined
        for ref in rep["final"]:
            vals = [c["vs"][ref][stat] for c in rep["checkpoints"]]
            ci = [c["vs"][ref][f"{stat}_ci"] for c in rep["checkpoints"]]
            lo = [v - x[0] for v, x in zip(vals, ci)]
            hi = [x[1] - v for v, x in zip(vals, ci)]
            ax.errorbar(steps, vals, yerr=[lo, hi], marker="o", capsize=3, ls=styles.get(arm, "-"),
                        label=f"{arm}: {stat}({ref}, z_M)")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("training step")
    ax.set_ylabel(stat)
    ax.set_title(f"{res.get('student', '')} (n={res['n']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def table1_figure(rows: list[dict[str, Any]], stat: str = "pearson"):
    """Table-1 analogue: ``stat`` with 95% CI per (student, arm, reference), paper's owl numbers as lines.

    ``rows``: ``[{"label", "report"}]`` where ``report`` is a :func:`lls_theory.stats.correlation_report`.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.8))
    ys = list(range(len(rows)))[::-1]
    for y, r in zip(ys, rows):
        rep = r["report"]
        v, (lo, hi) = rep[stat], rep[f"{stat}_ci"]
        color = "C0" if "lls" in r["label"] else "C7"
        ax.errorbar([v], [y], xerr=[[v - lo], [hi - v]], fmt="o", color=color, capsize=3)
    for (name, val), ls in zip(PAPER_TABLE1.items(), ("-", ":")):
        ax.axvline(val, color="C3", ls=ls, lw=1, label=f"paper, owls, {name}: {val}")
    ax.axvline(0, color="grey", lw=0.5)
    ax.set_yticks(ys)
    ax.set_yticklabels([r["label"] for r in rows], fontsize=8)
    ax.set_ylim(-1.6, len(rows) - 0.4)  # an empty band at the bottom for the legend
    ax.set_xlabel(f"{stat} correlation on held-out pairs (95% bootstrap CI)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def mention_figure(evals: dict[str, dict[str, Any]], target: str):
    """Fig-2 analogue: mention rate (Wilson 95% CI) of ``target`` per student and condition.

    ``evals``: ``{student name: eval dict with "conditions": {cond: {"mention": {rate, ci}}}}``.
    """
    plt = _plt()
    students = list(evals)
    conds = list(dict.fromkeys(c for e in evals.values() for c in e["conditions"]))
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(students) * len(conds) / 2, 3.4))
    width = 0.8 / max(1, len(conds))
    for j, cond in enumerate(conds):
        xs, vals, lo, hi = [], [], [], []
        for i, s in enumerate(students):
            m = evals[s]["conditions"].get(cond, {}).get("mention")
            if m is None:
                continue
            xs.append(i + (j - (len(conds) - 1) / 2) * width)
            vals.append(m["rate"])
            lo.append(m["rate"] - m["ci"][0])
            hi.append(m["ci"][1] - m["rate"])
        ax.bar(xs, vals, width=width, yerr=[lo, hi], capsize=3, label=cond, color=f"C{j}")
    ax.set_xticks(range(len(students)))
    ax.set_xticklabels(students)
    ax.set_ylabel(f"share of answers mentioning '{target}'")
    ax.set_ylim(0, max(0.05, ax.get_ylim()[1]))
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
