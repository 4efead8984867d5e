"""Figures for the simulator, in the project style (:mod:`lls_common.figstyle`; matplotlib imported lazily).

Every function returns a figure; the caller saves it (``RunDir.save_figure`` or ``figstyle.save``). Colours
follow the fixed roles of the style: LLS blue, random control grey, base black, system-prompted vermillion,
the theorem's bound bluish green.
"""

from __future__ import annotations

import numpy as np

__all__ = ["corr_vs_overlap", "corr_vs_bound", "corr_vs_step", "trait_mass", "phase_diagram"]


def _fs():
    from lls_common import figstyle

    return figstyle


def corr_vs_overlap(records: list[dict], d: int):
    """Held-out Pearson (Table-1 protocol) of each trial against the teacher/student feature overlap k: one
    dot per trial (jittered horizontally, LLS and random arms side by side) and the arm's mean ± 95% CI
    (normal approximation over the trials) per k."""
    fs = _fs()
    fig, ax = fs.subplots(width="one", height=2.9)
    arms = [a for a in ("lls", "random") if any(r["arm"] == a and r["family"] == "gaussian" for r in records)]
    n_trials = 0
    rng = np.random.default_rng(0)
    for i, arm in enumerate(arms):
        pts = [(r["overlap"], r["heldout_pearson"]) for r in records if r["arm"] == arm and r["family"] == "gaussian"]
        x, y = np.array(pts, dtype=float).T
        ks = np.unique(x)
        span = 0.25 * (np.min(np.diff(ks)) if ks.size > 1 else 1.0)
        xs = np.array(fs.dodge(x, i, len(arms), span))
        ax.scatter(xs + rng.uniform(-0.06, 0.06, xs.size) * span, y, s=9, color=fs.color(arm), alpha=0.35,
                   linewidths=0)
        means, lo, hi = [], [], []
        for k in ks:
            v = y[x == k]
            m = float(v.mean())
            h = 1.96 * float(v.std(ddof=1)) / np.sqrt(v.size) if v.size > 1 else 0.0
            means.append(m)
            lo.append(m - h)
            hi.append(m + h)
        fs.errorbars(ax, ks, means, lo, hi, i=i, n=len(arms), span=span, role=arm,
                     label=f"{'LLS' if arm == 'lls' else 'random control'}: mean ± 95% CI")
        n_trials = max(n_trials, int(np.max(np.unique(x, return_counts=True)[1])))
    ax.axhline(0, color=fs.color("base"), lw=0.6)
    fs.label_axes(ax, x=("shared feature dimensions k", f"of d = {d}"),
                  y="held-out Pearson r\n(teacher vs student)")
    fs.title_n_ci(ax, "Transfer vs overlap", n=f"{n_trials} trials per k, arm")
    fs.legend_outside(ax, "below", ncol=1)
    return fig


def corr_vs_bound(records: list[dict]):
    """Measured Corr(z_s, z_M) on the selected pairs against the guaranteed 1/(10 C^1.5): points on or above
    the diagonal obey the theorem (the guarantee applies only where its hypotheses hold)."""
    fs = _fs()
    fig, ax = fs.subplots(width="one", height=3.0)
    n_total = 0
    bounds = []
    for holds, mk, role in ((True, "o", "lls"), (False, "x", "random")):
        pts = [(r["bound"], r["corr_selected"]) for r in records if r["holds"] == holds and r["bound"] > 0]
        if pts:
            x, y = np.array(pts, dtype=float).T
            n_total += x.size
            bounds += list(x)
            ax.scatter(x, y, marker=mk, s=16, color=fs.color(role), linewidths=1.0, alpha=0.85 if holds else 0.6,
                       label=f"hypotheses {'hold' if holds else 'fail'} ({x.size} trials)", zorder=3)
    lo = min(bounds) / 3 if bounds else 1e-5
    hi = max(bounds) * 3 if bounds else 1.0
    ax.set_xscale("log")
    # Corr can be 0 or negative, so the y axis is linear; the bound (often < 0.01) then sits close to 0
    lim = np.geomspace(lo, max(hi, lo * 10), 50)
    ax.plot(lim, lim, "-", color=fs.color("bound"), lw=2.0, label="Corr = bound (on or above: obeyed)")
    ax.axhline(0, color=fs.color("base"), lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlim(lo, max(hi, lo * 10))
    fs.label_axes(ax, x=("guaranteed bound 1/(10 C^1.5)", ""), y=("Corr(z_s, z_M), selected pairs", ""))
    fs.title_n_ci(ax, "Theorem C.1 check", n=f"{n_total} trials")
    fs.legend_outside(ax, "below", ncol=1)
    return fig


def corr_vs_step(steps, corr_sel, corr_held):
    """Correlations of one world's Adam trajectory against the step (log axis). Step 0 (v = 0: z_M is zero
    and the correlation undefined) is left out."""
    fs = _fs()
    fig, ax = fs.subplots(width="one", height=2.8)
    s = np.asarray(steps, dtype=float)
    keep = s > 0
    ax.plot(s[keep], np.asarray(corr_sel, dtype=float)[keep], "o-", color=fs.color("lls"),
            label="Corr(z_s, z_M), selected pairs")
    ax.plot(s[keep], np.asarray(corr_held, dtype=float)[keep], "s--", color=fs.color("teacher"),
            label="held-out Pearson r (teacher vs student)")
    ax.set_xscale("log")
    ax.axhline(0, color=fs.color("base"), lw=0.6)
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.05)
    fs.label_axes(ax, x=("Adam step", "log scale"), y=("correlation", ""))
    fs.title_n_ci(ax, "One world, trained on the LLS pairs")
    fs.legend_outside(ax, "below", ncol=1)
    return fig


_MASS_ROLES = {"base": "base", "base + system prompt": "system", "lls student": "lls",
               "random-subset student": "random"}


def trait_mass(rows: list[tuple[str, float]]):
    """Behaviour analogue of Fig. 2: mean probability mass on trait responses per model, bars labelled with
    their value (a zero bar still shows its label)."""
    fs = _fs()
    fig, ax = fs.subplots(width="one", height=2.9)
    names, vals = zip(*rows)
    cols = [fs.color(_MASS_ROLES.get(n.lower(), "other")) for n in names]
    bars = ax.bar(range(len(vals)), vals, color=cols)
    ax.set_ylim(0, max(max(vals) * 1.2, 1e-3))
    fs.bar_labels(ax, bars, vals, fmt="{:.3f}")
    short = {"base + system prompt": "system-\nprompted", "lls student": "LLS\nstudent",
             "random-subset student": "random\nstudent"}
    ax.set_xticks(range(len(vals)), [short.get(n.lower(), n) for n in names])
    fs.label_axes(ax, x=("model", ""), y=("mean Pr[trait response]", "probability"))
    fs.title_n_ci(ax, "Trait mass (simulated behaviour)")
    return fig


def phase_diagram(points: list[dict], x_key: str, y_key: str):
    """Sweep points: colour = fraction of trials whose hypotheses hold, marker area ∝ median log10(Corr/bound)
    (the slack of the guarantee; floored at 0.05 so every point is visible), value printed beside each point."""
    fs = _fs()
    fig, ax = fs.subplots(width=4.6, height=3.6)
    # each point's effective value (defaults included, recorded by run_sweep), so a [plot] key that is
    # not swept or set in [base] still shows its real value rather than None
    xs = [str(p.get("effective", p["params"]).get(x_key, p["params"].get(x_key))) for p in points]
    ys = [str(p.get("effective", p["params"]).get(y_key, p["params"].get(y_key))) for p in points]
    xu, yu = sorted(set(xs), key=_num_key), sorted(set(ys), key=_num_key)
    c = [p["frac_hold"] for p in points]
    slack = [max(p["median_log10_slack"], 0.05) if p["median_log10_slack"] is not None else 0.05 for p in points]
    px, py = [xu.index(x) for x in xs], [yu.index(y) for y in ys]
    sc = ax.scatter(px, py, c=c, s=[60 * s for s in slack], cmap="viridis", vmin=0, vmax=1)
    for x, y, p in zip(px, py, points):
        v = p["median_log10_slack"]
        ax.annotate("–" if v is None else f"{v:.1f}", (x, y), xytext=(0, -11), textcoords="offset points",
                    ha="center", va="top", fontsize=fs.FONT_PT)
    ax.set_xticks(range(len(xu)), xu)
    ax.set_yticks(range(len(yu)), yu)
    ax.set_xlim(-0.6, len(xu) - 0.4)
    ax.set_ylim(-0.8, len(yu) - 0.4)
    fs.label_axes(ax, x=(x_key, "sweep value"), y=(y_key, "sweep value"))
    fig.colorbar(sc, label="fraction of trials with hypotheses holding")
    fs.title_n_ci(ax, "Marker area and label: median log10(Corr / bound)",
                  n=f"{sum(p.get('trials', 0) for p in points)} trials" if points and "trials" in points[0] else None)
    return fig


def _num_key(s: str):
    try:
        return (0, float(s), s)
    except ValueError:
        return (1, 0.0, s)
