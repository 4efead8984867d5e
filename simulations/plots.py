"""Figures for the simulator (matplotlib, Agg backend; imported lazily by the commands)."""

from __future__ import annotations

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def corr_vs_overlap(records: list[dict], d: int):
    """Held-out Pearson (Table-1 protocol) of the LLS arm against teacher/student overlap k."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for arm, colour in (("lls", "C0"), ("random", "C1")):
        pts = [(r["overlap"], r["heldout_pearson"]) for r in records if r["arm"] == arm and r["family"] == "gaussian"]
        if pts:
            x, y = np.array(pts).T
            ax.scatter(x, y, s=12, color=colour, label=arm, alpha=0.7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel(f"shared feature dimensions k (of d={d})")
    ax.set_ylabel("held-out Pearson(teacher, student)")
    ax.legend()
    return fig


def corr_vs_bound(records: list[dict]):
    """Measured Corr(z_s, z_M) against the guaranteed 1/(10 C^1.5): points above the diagonal obey it."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for holds, marker in ((True, "o"), (False, "x")):
        pts = [(r["bound"], r["corr_selected"]) for r in records if r["holds"] == holds and r["bound"] > 0]
        if pts:
            x, y = np.array(pts).T
            ax.scatter(x, y, marker=marker, s=14, label=f"hypotheses hold={holds}")
    ax.set_xscale("log")
    lim = [1e-5, 1]
    ax.plot(lim, lim, "k--", lw=0.7, label="Corr = bound")
    ax.set_xlabel("bound 1/(10 C^1.5)")
    ax.set_ylabel("Corr(z_s, z_M) on selected pairs")
    ax.legend(fontsize=7)
    return fig


def corr_vs_step(steps, corr_sel, corr_held):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(np.maximum(steps, 1), corr_sel, "o-", label="Corr(z_s, z_M), selected")
    ax.plot(np.maximum(steps, 1), corr_held, "s-", label="held-out Pearson")
    ax.set_xscale("log")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("correlation")
    ax.legend()
    return fig


def trait_mass(rows: list[tuple[str, float]]):
    """Behaviour analogue of Fig. 2: mass on trait responses per model."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    names, vals = zip(*rows)
    ax.bar(range(len(vals)), vals, color=["C7", "C2", "C0", "C1"][: len(vals)])
    ax.set_xticks(range(len(vals)), names, rotation=15)
    ax.set_ylabel("mean Pr[trait response]")
    return fig


def phase_diagram(points: list[dict], x_key: str, y_key: str):
    """Sweep points: colour = fraction of trials obeying Corr ≥ bound, size ∝ log10(Corr/bound) slack."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    def val(p, key):  # the point's effective value (defaults included) when recorded
        return p.get("effective", p["params"]).get(key, p["params"].get(key))

    def order(vals):  # numbers in numeric order, anything else as text
        uniq = list(dict.fromkeys(vals))
        try:
            return sorted(uniq, key=float)
        except (TypeError, ValueError):
            return sorted(uniq, key=str)

    xv = [val(p, x_key) for p in points]
    yv = [val(p, y_key) for p in points]
    xs, ys = [str(v) for v in xv], [str(v) for v in yv]
    xu, yu = [str(v) for v in order(xv)], [str(v) for v in order(yv)]
    c = [p["frac_hold"] for p in points]
    slack = [max(p["median_log10_slack"], 0.05) if p["median_log10_slack"] is not None else 0.05 for p in points]
    sc = ax.scatter([xu.index(x) for x in xs], [yu.index(y) for y in ys], c=c, s=[60 * s for s in slack],
                    cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(xu)), xu)
    ax.set_yticks(range(len(yu)), yu)
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    fig.colorbar(sc, label="fraction of trials with hypotheses holding")
    ax.set_title("size ∝ median log10(Corr / bound)", fontsize=8)
    return fig
