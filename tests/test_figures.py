"""The project figure style (lls_common.figstyle) and every figure drawn with it.

Each figure function is rendered from small synthetic inputs and checked with ``figstyle.problems`` (fonts
>= 9 pt at the saved size, every axis with data labelled, no legend over a data point); the checker itself is
tested on figures that break each rule, so a check that passes everything would fail here.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lls_common import figstyle as fs


# --------------------------------------------------------------------------------------- the checker
def test_problems_flags_small_fonts_unlabelled_axes_and_covering_legends():
    fig, ax = fs.subplots(width="one")
    ax.plot([0, 1, 2], [0, 1, 2], "o", label="data")
    ax.legend(loc="center")  # the middle point (1, 1) sits under the legend
    ax.text(0.1, 0.1, "tiny", fontsize=6)
    found = " | ".join(fs.problems(fig))
    assert "x axis has no label" in found and "y axis has no label" in found
    assert "'tiny' is 6.0 pt" in found
    assert "legend covers" in found
    with pytest.raises(fs.FigureStyleError):
        fs.save(fig, "/tmp/never-written.png")


def test_clean_figure_passes_and_saves_atomically(tmp_path):
    fig, ax = fs.subplots(width="one", height=2.6)
    fs.errorbars(ax, [1, 2, 3], [0.1, 0.2, 0.3], [0.0, 0.1, 0.2], [0.2, 0.3, 0.4], i=0, n=2, role="lls", label="LLS")
    fs.errorbars(ax, [1, 2, 3], [0.1, 0.2, 0.3], [0.0, 0.1, 0.2], [0.2, 0.3, 0.4], i=1, n=2, role="random",
                 label="random")
    fs.label_axes(ax, x=("training step", "steps"), y=("Pearson r", ""))
    fs.title_n_ci(ax, "test", n=80, ci="95% CI")
    fs.legend_outside(ax, "below")
    fs.caption(fig, "A caption that explains the notation.")
    assert fs.problems(fig) == []
    out = fs.save(fig, tmp_path / "a.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_dodge_offsets_series_symmetrically_and_never_overlaps():
    xs = [0, 10, 20]
    pos = [fs.dodge(xs, i, 4) for i in range(4)]
    for k in range(3):
        col = [p[k] for p in pos]
        assert len(set(col)) == 4 and np.isclose(np.mean(col), xs[k])
        assert max(col) - min(col) < 10  # stays within the gap to the next x
    assert fs.dodge([5.0], 0, 1) == [5.0]
    with pytest.raises(ValueError):
        fs.dodge(xs, 2, 2)


def test_roles_have_fixed_distinct_colours_and_axis_label_rules():
    roles = ["lls", "random", "base", "system", "teacher", "paper", "bound"]
    assert len({fs.color(r) for r in roles}) == len(roles)
    assert fs.color("LLS") == fs.color("lls") == fs.OKABE_ITO["blue"]
    assert fs.color("control") == fs.color("random")
    with pytest.raises(KeyError):
        fs.color("no-such-role")
    assert fs.axis_label("training step", "steps") == "training step (steps)"
    assert fs.axis_label("Pearson r", "") == "Pearson r"
    with pytest.raises(ValueError):
        fs.axis_label("Pearson r", None)
    assert fs.width_inches("one") == fs.ONE_COLUMN and fs.width_inches("two") == fs.TWO_COLUMN


def test_importing_the_style_does_not_import_matplotlib():
    code = "import sys, lls_common.figstyle; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------------- empirical figures
def _rep(v, h=0.1):
    return {"pearson": v, "pearson_ci": [v - h, v + h], "cosine": v, "cosine_ci": [v - h, v + h], "pearson_p": 0.01,
            "spearman": v, "spearman_ci": [v - h, v + h], "n": 50}


def _correlate(with_t: bool):
    refs = ["z_s", "z_T"] if with_t else ["z_s"]
    arms = {}
    for arm, base in (("lls", 0.3), ("random", 0.05)):
        cps = [{"step": st, "vs": {r: _rep(base * st / 16) for r in refs}} for st in (8, 16)]
        arms[arm] = {"checkpoints": cps, "final": {r: _rep(base) for r in refs}}
    return {"student": "m", "n": 50, "arms": arms}


@pytest.mark.parametrize("with_t", [False, True])
def test_trajectory_figure_is_clean_and_dodges_series(with_t):
    from empirical.report.figures import trajectory_figure

    fig = trajectory_figure(_correlate(with_t))
    assert fs.problems(fig) == []
    ax = fig.axes[0]
    xs = [tuple(np.round(np.asarray(line.get_xdata(), dtype=float), 6)) for line in ax.get_lines() if line.get_transform() == ax.transData
          and len(line.get_xdata()) == 2 and line.get_marker() not in ("", "None", None, "_")]
    assert len(set(xs)) == len(xs)  # every series at its own x offsets


def test_trajectory_figure_small_multiples():
    from empirical.report.figures import trajectory_figure

    fig = trajectory_figure(by_trait={t: _correlate(True) for t in ("owl", "dog", "cat")}, student="s")
    assert fs.problems(fig) == []
    assert [a.get_title() for a in fig.axes if a.get_visible()][:3] == ["owl", "dog", "cat"]


def test_mention_figure_labels_zero_bars_and_states_n():
    from empirical.report.figures import mention_figure

    cond = lambda k: {"mention": {"k": k, "n": 100, "rate": k / 100, "ci": [0.0, k / 100 + 0.037]}}  # noqa: E731
    evals = {"a": {"conditions": {"base": cond(0), "system": cond(24), "lls": cond(0), "random": cond(0)}}}
    fig = mention_figure(evals, "owl")
    assert fs.problems(fig) == []
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert labels.count("0.00\n0/100") == 3 and "0.24\n24/100" in labels
    assert "n = 100" in ax.get_title()
    assert ax.get_legend() is not None and len(ax.get_legend().get_texts()) == 4


def test_table1_and_fig19_figures_are_clean():
    from empirical.report.figures import fig19_figure, table1_figure, table1_grid_figure

    cell = lambda v: {"lls": {"pearson": v, "ci": [v - .1, v + .1], "n": 50},  # noqa: E731
                      "random": {"pearson": 0.0, "ci": [-.1, .1], "n": 50},
                      "diff": {"diff": v, "ci": [v - .15, v + .15]}, "paper": 0.5}
    summ = {"mean_lls": 0.3, "n_diff_excludes_0": 1, "n_diffs": 2}
    tab = {"traits": ["owl", "dog"], "rows": [
        {"student": "s", "kind": "same", "ref": "z_s", "cells": {"owl": cell(0.3), "dog": cell(0.0)}, "summary": summ},
        {"student": "t", "kind": "cross", "ref": "z_T", "cells": {"owl": cell(0.1), "dog": cell(0.2)},
         "summary": summ}]}
    fig = table1_grid_figure(tab)
    assert fs.problems(fig) == []
    texts = " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))
    assert "z_M" in texts and "z_s" in texts  # the notation is explained on the figure
    assert "LLS-trained student" in texts and "random-subset control" in texts
    rows = [{"label": "s / lls / corr(z_s, z_M)", "arm": "lls", "report": _rep(0.3)},
            {"label": "s / random / corr(z_s, z_M)", "arm": "random", "report": _rep(0.0)}]
    assert fs.problems(table1_figure(rows)) == []
    rng = np.random.default_rng(0)
    f19 = {"s": {"traits": ["owl", "dog"], "ref": "z_s", "xy": rng.standard_normal((4, 2)).tolist(),
                 "angles_deg": {"owl": 60.0, "dog": 80.0}, "cosine": {"owl": .5, "dog": .17}, "explained": 0.7}}
    fig = fig19_figure(f19)
    assert fs.problems(fig) == []
    assert any("60°" in t.get_text() for t in fig.axes[0].get_legend().get_texts())


# --------------------------------------------------------------------------------- simulator figures
def _records(rng):
    recs = []
    for k in (0, 4, 8):
        for arm in ("lls", "random"):
            for _ in range(3):
                recs.append({"arm": arm, "family": "gaussian", "overlap": k,
                             "heldout_pearson": float(rng.uniform(-0.2, 1)), "bound": float(rng.uniform(1e-4, 1e-3)),
                             "corr_selected": float(rng.uniform(-1, 1)), "holds": bool(rng.uniform() < 0.3)})
    return recs


def test_simulator_figures_are_clean():
    from simulations import plots

    rng = np.random.default_rng(1)
    recs = _records(rng)
    figs = [plots.corr_vs_overlap(recs, 16), plots.corr_vs_bound(recs),
            plots.corr_vs_step([0, 1, 10, 100], [0.0, 0.5, 0.8, 0.9], [0.0, 0.4, 0.7, 0.8]),
            plots.trait_mass([("base", 0.2), ("base + system prompt", 0.45), ("LLS student", 0.0),
                              ("random-subset student", 0.1)]),
            plots.phase_diagram([{"params": {"a": a, "b": b}, "frac_hold": 0.5, "median_log10_slack": 1.0,
                                  "trials": 3} for a in (1, 2) for b in ("x", "y")], "a", "b")]
    for fig in figs:
        assert fs.problems(fig) == [], fig.axes[0].get_title()
    # the zero bar of trait_mass is labelled
    assert "0.000" in [t.get_text() for t in figs[3].axes[0].texts]


def _png_dpi(path) -> float:
    """The resolution a PNG records (its pHYs chunk: pixels per metre -> dots per inch)."""
    import struct

    data = path.read_bytes()
    k = data.index(b"pHYs")
    ppm_x, _, unit = struct.unpack(">IIB", data[k + 4:k + 13])
    assert unit == 1  # metres
    return ppm_x * 0.0254


def test_run_folder_figures_are_saved_at_the_style_dpi(tmp_path):
    """demo / simulate / correlate save through RunDir.save_figure: at figstyle.DPI (the README's 200), the one
    place the resolution is written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lls_common import figstyle
    from lls_common.io import RunDir

    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    path = RunDir(tmp_path).save_figure("f.png", fig)
    assert figstyle.DPI == 200 and round(_png_dpi(path)) == figstyle.DPI
