"""Figures of the low-rank commands, drawn from their JSON records with the project style
(:mod:`lls_common.figstyle`: fonts >= 9 pt at the saved size, every axis "quantity (unit)", legends outside
the data, n and intervals stated).

* :func:`plot_spectra` -- singular values of X on log-log axes with the fitted power law (``spectra.png``);
* :func:`plot_angles` -- principal-angle cosines vs the random baseline (``angles.png``);
* :func:`plot_pair_check` -- a ranked dot plot of the teacher/student correlations with their 95% CIs
  (``pair-check.png``), one scatter panel per system prompt (``pair-check-shifts.png``) and the Fig. 19 view
  (``pair-check-projection.png``);
* :func:`plot_detect` -- both z statistics per candidate (``detect.png``);
* :func:`plot_detect_validation` -- the detect validation: same-pool vs disjoint reference
  (``detect-validation.png``).

Units: X holds log-probabilities in nats, so singular values, margin shifts rho and projections of margin
vectors are in nats; LLS weights w/N are nats per token; z, cosines and correlations are dimensionless.

Each function takes the records it draws (no file or module is read here); ``python -m empirical.lowrank.lowrank_replot
DIR`` (:mod:`empirical.lowrank.lowrank_replot`) redraws every figure under a results folder from its JSON files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lls_common import figstyle as fs

__all__ = ["plot_angles", "plot_detect", "plot_detect_validation", "plot_pair_check", "plot_spectra"]


def _short(text: str) -> str:
    """Short label for a system prompt ("You really love owls. ..." -> "owls")."""
    words = text.split()
    if text.startswith("You really love ") and len(words) > 3:
        return words[3].rstrip(".")
    return text[:14]


# ------------------------------------------------------------------------------------------------ spectra
def plot_spectra(fits: dict[str, dict], path: Any) -> Path:
    """``fits``: {label: spectrum-<slug>.json record}; panels X and X minus its column means. Fitted slopes and R²
    are in the panel titles, in the legend's order."""
    fig, axes = fs.subplots(1, 2, width="two", height=3.4)
    colors = fs.series_colors(len(fits))
    shape = next(iter(fits.values()))["shape"]
    for ax, key, title in ((axes[0], "raw", "X"), (axes[1], "column_centred", "X − column means")):
        windows, slopes, r2s = set(), [], []
        for color, (label, f) in zip(colors, fits.items()):
            d = f[key]
            s = np.asarray(d["singular_values"], float)
            k = np.arange(1, s.size + 1)
            keep = s > 1e-9 * s[0]  # centring removes one dimension: drop its round-off singular value
            lo, hi = d["rank_window"]
            windows.add(f"{lo}–{hi}")
            slopes.append(f"{d['slope']:.2f}".replace("-", "−"))
            r2s.append(f"{d['r2']:.2f}")
            ax.loglog(k[keep], s[keep], "o", ms=3, color=color, label=label)
            kk = np.arange(lo, hi + 1)
            ax.loglog(kk, np.exp(d["intercept"]) * kk ** d["slope"], "-", color="black", lw=0.8)
        fs.label_axes(ax, ("rank k", ""), ("singular value σ_k", "nats"))
        ax.set_title(f"{title} ({shape[0]} × {shape[1]}), fit over ranks {', '.join(sorted(windows))}\n"
                     f"slope {' / '.join(slopes)}, R² {' / '.join(r2s)}")
    axes[0].plot([], [], "-", color="black", lw=0.8, label="power-law fit")
    fs.legend_outside(fig, where="below", ncol=len(fits) + 1)
    fig.suptitle("singular values of X; paper: slope ≈ −0.6 for every model")
    return fs.save(fig, path)


# ------------------------------------------------------------------------------------------------ angles
def plot_angles(ang: dict, r: int, models: list[str], path: Any) -> Path:
    """``ang``: angles.json's ``angles``; the top-``r`` cosines, raw and column-centred, vs the random baseline."""
    fig, axes = fs.subplots(1, 2, width="two", height=3.0, sharey=True)
    for ax, key in zip(axes, ("raw", "column_centred")):
        d = ang[key][str(r)]
        k = np.arange(1, len(d["cosines"]) + 1)
        ax.plot(k, d["cosines"], "o-", color=fs.color("lls"), label=f"{models[0]} vs {models[1]}")
        ax.plot(k, d["baseline"], "s--", color=fs.color("random"), label="random Gaussian matrices, same shapes")
        ax.set_ylim(0, 1.05)
        ax.set_xticks(k)
        fs.label_axes(ax, ("principal angle index", ""), ("cosine of principal angle", ""))
        ax.set_title(f"top-{r} row subspaces, {key.replace('_', '-')}")
    fs.legend_outside(fig, where="below", ncol=2)
    return fs.save(fig, path)


# ------------------------------------------------------------------------------------------------ pair-check
def _pair_check_dots(pc: dict, path: Path) -> Path:
    rows = sorted(pc["rows"], key=lambda r: r["pearson"])
    K = len(rows)
    fig, ax = fs.subplots(1, 1, width="one" if K <= 4 else 5.0, height=1.2 + 0.32 * K)
    y = np.arange(K)
    for j, (key, ci_key, role, label) in enumerate((("pearson", "pearson_ci", "lls", "Pearson r of ρ_T, ρ_S"),
                                                    ("pearson_specific", "pearson_specific_ci", "teacher",
                                                     "prompt-specific part (mean over prompts removed)"))):
        if key not in rows[0]:
            continue
        x = np.array([r[key] for r in rows], float)
        ci = np.array([r[ci_key] for r in rows], float)
        yy = y + (0.15 if j == 0 else -0.15)
        ax.errorbar(x, yy, xerr=[x - ci[:, 0], ci[:, 1] - x], fmt=fs.marker(role), color=fs.color(role),
                    capsize=2.5, label=label, ls="none")
    for thr in (0.05, 0.2, 0.5):
        ax.axvline(thr, color=fs.color("bound"), lw=0.8, ls=":")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_yticks(y, [_short(r["system_prompt"]) for r in rows])
    fs.label_axes(ax, ("correlation of teacher and student margin shifts", ""), ("system prompt", ""))
    fs.title_n_ci(ax, f"{pc['teacher']} → {pc['student']}", n=f"{pc['n_pairs']} pairs", ci="95% bootstrap CI")
    fs.legend_outside(ax, where="below", ncol=1)
    fs.caption(fig, "dotted lines: verdict thresholds 0.05 weak, 0.2 moderate, 0.5 strong (heuristic); a CI "
                    "containing 0 gives 'none'")
    return fs.save(fig, path)


def _pair_check_panels(pc: dict, path: Path) -> Path:
    rt, rs = np.asarray(pc["rho_teacher"], float), np.asarray(pc["rho_student"], float)
    K = rt.shape[0]
    ncol = min(K, 5)
    nrow = int(np.ceil(K / ncol))
    fig, axes = fs.subplots(nrow, ncol, width=7.5, height=0.5 + 1.9 * nrow, sharex=True, sharey=True,
                            squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= K:
            ax.set_visible(False)
            continue
        row = pc["rows"][k]
        ax.scatter(rt[k], rs[k], s=4, alpha=0.5, color=fs.color("lls"), linewidths=0)
        ax.axhline(0, color="grey", lw=0.5)
        ax.axvline(0, color="grey", lw=0.5)
        ci = row.get("pearson_ci") or (np.nan, np.nan)
        ax.set_title(f"{_short(row['system_prompt'])}\nr = {row['pearson']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]",
                     fontsize=fs.FONT_PT)
    fig.supxlabel(fs.axis_label(f"teacher margin shift ρ_T ({pc['teacher']})", "nats"))
    fig.supylabel(fs.axis_label(f"student ρ_S ({pc['student']})", "nats"))
    fig.suptitle(f"system-prompt margin shifts, one panel per prompt (n = {pc['n_pairs']} held-out pairs; 95% "
                 "bootstrap CI)")
    return fs.save(fig, path)


def _place_labels(fig: Any, ax: Any, xy: np.ndarray, names: list[str]) -> None:
    """Label points without overlapping labels: for each point (top to bottom) the first offset whose text box
    overlaps no label or point placed so far; labels moved away from their point get a thin leader line."""
    near = [(4, 3, "left"), (-4, 3, "right")]
    far = [(dx * s, dy, ha) for dy in (-12, 14, -24, 26, -36) for s in (1, -1) for dx, ha in ((14, "left"),)
           for ha in (("left",) if s > 0 else ("right",))]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    pts = ax.transData.transform(xy)
    placed: list[Any] = []
    for k in np.argsort(-xy[:, 1]):
        for dx, dy, ha in near + far:
            arrow = None if (dx, dy, ha) in near else dict(arrowstyle="-", lw=0.5, color="grey", shrinkA=0, shrinkB=3)
            t = ax.annotate(names[k], tuple(xy[k]), xytext=(dx, dy), textcoords="offset points", ha=ha,
                            va="bottom" if dy > 0 else "top", fontsize=fs.FONT_PT, arrowprops=arrow)
            box = t.get_window_extent(renderer)
            hits_point = any(box.contains(*p) for j, p in enumerate(pts) if j != k)
            if not (hits_point or any(box.overlaps(b) for b in placed)) or (dx, dy, ha) == far[-1]:
                placed.append(box)
                break
            t.remove()


def _pair_check_projection(pc: dict, path: Path) -> Path | None:
    """Fig. 19 view: all 2K margin vectors on their top-2 singular vectors, then each model's cluster zoomed in."""
    proj = pc.get("projection")
    if proj is None:
        return None
    proj = np.asarray(proj, float)
    K = len(pc["rows"])
    names = [_short(r["system_prompt"]) for r in pc["rows"]]
    fig, axes = fs.subplots(1, 3, width="two", height=3.0)
    for part, role, mk, who in ((slice(0, K), "teacher", "o", pc["teacher"]), (slice(K, 2 * K), "other", "^", pc["student"])):
        axes[0].scatter(proj[part, 0], proj[part, 1], marker=mk, color=fs.color(role), label=who)
    axes[0].set_title("all 2K vectors")
    fs.legend_outside(fig, where="below", ncol=2)
    for ax, part, role, mk, who in ((axes[1], slice(0, K), "teacher", "o", "teacher"),
                                    (axes[2], slice(K, 2 * K), "other", "^", "student")):
        xy = proj[part]
        ax.scatter(xy[:, 0], xy[:, 1], marker=mk, color=fs.color(role))
        pad = 0.15 * max(np.ptp(xy[:, 0]), np.ptp(xy[:, 1]), 1e-9)
        ax.set_xlim(xy[:, 0].min() - 3 * pad, xy[:, 0].max() + 3 * pad)
        ax.set_ylim(xy[:, 1].min() - pad, xy[:, 1].max() + pad)
        _place_labels(fig, ax, xy, names)
        ax.set_title(f"{who} cluster, zoomed")
    for ax in axes:
        fs.label_axes(ax, ("singular vector 1", "nats"), ("singular vector 2", "nats"))
    fig.suptitle(f"margin vectors ρ_s on their top-2 singular vectors (Fig. 19 view; n = {pc['n_pairs']} pairs)")
    return fs.save(fig, path)


def plot_pair_check(pc: dict, folder: Any) -> list[Path]:
    """The three pair-check figures from a pair-check.json record, into ``folder``."""
    folder = Path(folder)
    out = [_pair_check_dots(pc, folder / "pair-check.png"), _pair_check_panels(pc, folder / "pair-check-shifts.png"),
           _pair_check_projection(pc, folder / "pair-check-projection.png")]
    return [p for p in out if p is not None]


# ------------------------------------------------------------------------------------------------ detect
def plot_detect(det: dict, names: list[str] | None, path: Any) -> Path:
    """Raw and candidate-specific z per candidate (ranked by the specific z); filled = Holm-significant."""
    t = det["table"]
    K = len(t)
    fig, ax = fs.subplots(1, 1, width=5.0, height=1.3 + 0.3 * K)
    y = np.arange(K)
    for j, (key, sig, role, label) in enumerate((("z", "significant", "lls", "raw: mean w_c/N_i"),
                                                 ("z_specific", "significant_specific", "teacher",
                                                  "specific: common factor removed"))):
        if t[0][key] is None:
            continue
        x = np.array([r[key] for r in t], float)
        filled = np.array([bool(r[sig]) for r in t])
        yy = y + (-0.15 if j == 0 else 0.15)
        if filled.any():
            ax.scatter(x[filled], yy[filled], marker=fs.marker(role), color=fs.color(role),
                       label=f"{label}, Holm-significant")
        if (~filled).any():
            ax.scatter(x[~filled], yy[~filled], marker=fs.marker(role), facecolors="none", edgecolors=fs.color(role),
                       label=f"{label}, not significant")
    ax.axvline(0, color="black", lw=0.6)
    ax.set_yticks(y, [_short(r["candidate"]) for r in t])
    ax.invert_yaxis()
    fs.label_axes(ax, ("z against random same-size reference subsets", ""), ("candidate (ranked)", ""))
    fs.title_n_ci(ax, "inverse LLS", n=f"{det['n_suspect']} suspect vs {det['n_reference']} reference pairs")
    fs.legend_outside(ax, where="below", ncol=1)
    if det.get("warnings"):
        fs.caption(fig, "warning: " + det["warnings"][0])
    return fs.save(fig, path)


# ------------------------------------------------------------------------------------------------ validation
def _rate_ci(k: int, n: int) -> tuple[float, float, float]:
    from lls_theory.stats import wilson_interval

    lo, hi = wilson_interval(int(k), int(n))
    return k / n, lo, hi


def plot_detect_validation(runs: list[Any], path: Any) -> Path:
    """Per validation run (pool, or half of a split pool tested against the same or the other half) and detector:
    the share of LLS subsets whose target is raw-significant, the top-1 hit rate (specific statistic) and the share
    of random subsets flagged (raw), with Wilson 95% intervals; n per run in the row label. ``runs``: the
    :class:`empirical.lowrank.detect_validation.RunRecord` list of a validation (``list(iter_runs(record))``)."""
    labels = list(dict.fromkeys(r.label for r in runs))
    sizes = {r.label: f"{r.n_targets} LLS / {r.n_random} random" for r in runs}
    detectors = list(dict.fromkeys(r.detector for r in runs))
    metrics = (("target raw-significant\n(LLS subsets)", lambda r: (r.n_targets_raw_significant, r.n_targets), None),
               ("right animal ranked first\n(LLS subsets)", lambda r: (r.top1_correct_specific, r.n_targets), 0.1),
               ("any candidate flagged\n(random subsets, raw)", lambda r: (r.random_any_significant, r.n_random), 0.05))
    fig, axes = fs.subplots(1, 3, width="two", height=1.6 + 0.55 * len(labels), sharey=True)
    for ax, (title, get, guide) in zip(axes, metrics):
        for i, det in enumerate(detectors):
            pts = [(labels.index(r.label), *_rate_ci(*get(r))) for r in runs if r.detector == det]
            yy = fs.dodge([p[0] for p in pts], i, len(detectors), span=0.35)
            x = np.array([p[1:] for p in pts])
            role = "teacher" if i == 0 else "other"
            ax.errorbar(x[:, 0], yy, xerr=[x[:, 0] - x[:, 1], x[:, 2] - x[:, 0]], fmt=fs.marker(role),
                        color=fs.color(role), capsize=2.5, ls="none", label=f"detector {det}")
        if guide is not None:
            ax.axvline(guide, color=fs.color("bound"), ls=":" if guide == 0.1 else "--", lw=1,
                       label="chance (1 of 10)" if guide == 0.1 else "nominal level 0.05")
        ax.set_xlim(-0.03, 1.03)
        ax.set_title(title)
        ax.set_xlabel(fs.axis_label("share of subsets", ""))
    axes[0].set_yticks(range(len(labels)), [f"{lab}\n({sizes[lab]})" for lab in labels])
    axes[0].invert_yaxis()
    axes[0].set_ylabel("subsets from / null reference")
    fs.legend_outside(fig, where="below", ncol=2)
    return fs.save(fig, path)
