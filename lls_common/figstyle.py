"""One figure style for the whole project: sizes, fonts, colours per role, legends, labels, saving.

Every figure the toolkit writes goes through this module so that a figure pasted into a paper is readable
at the size it was saved:

* **Sizes.** :data:`ONE_COLUMN` (3.4 in) and :data:`TWO_COLUMN` (7.0 in) widths, saved at :data:`DPI`
  (200 dpi). Figures are saved at their ``figsize`` (``bbox_inches="tight"`` only trims or grows the margin, it
  never rescales), so a font's point size in the figure is its point size in the saved file.
* **Fonts.** Every text is at least :data:`MIN_FONT_PT` (9 pt); :func:`problems` checks it.
* **Colours.** The Okabe-Ito colour-blind-safe palette (:data:`OKABE_ITO`) with one fixed colour per role
  (:data:`ROLE_COLORS`: LLS blue, random control grey, base model black, system-prompted vermillion, teacher
  orange, paper reference reddish purple, bound / guide bluish green); :func:`color` looks a role up and
  :func:`series_colors` gives distinct colours for unnamed series.
* **Legends** go outside the data (:func:`legend_outside`: right of or below the axes); :func:`problems`
  flags a legend that covers a data point.
* **Labels.** :func:`label_axes` writes "quantity (unit)" on both axes; :func:`title_n_ci` states n and the
  interval in the title.
* **Error bars** of series that share an x are offset (:func:`dodge`); bars carry value labels
  (:func:`bar_labels`) so a zero bar is still visible as "0.00".
* :func:`save` checks the figure (:func:`problems`), writes it atomically through
  :func:`lls_common.atomic.atomic_write_bytes` and closes it.

Matplotlib is imported lazily (inside the functions), so importing this module costs nothing at ``lls --help``.

Typical use::

    from lls_common import figstyle as fs
    fig, ax = fs.subplots(width="one", height=2.6)
    fs.errorbars(ax, steps, vals, lo, hi, i=0, n=2, role="lls", label="LLS")
    fs.label_axes(ax, x=("training step", "Adam steps"), y=("Pearson r of z_s with z_M", ""))
    fs.title_n_ci(ax, "SmolLM2 student", n=80, ci="95% bootstrap CI")
    fs.legend_outside(ax, where="below")
    fs.save(fig, run_dir / "trajectory.png")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = [
    "DPI", "ONE_COLUMN", "TWO_COLUMN", "MIN_FONT_PT", "FONT_PT", "TITLE_PT",
    "OKABE_ITO", "ROLE_COLORS", "ROLE_MARKERS", "ROLE_LINESTYLES",
    "color", "marker", "linestyle", "series_colors", "rc", "plt", "subplots", "width_inches",
    "axis_label", "label_axes", "title_n_ci", "caption", "dodge", "errorbars", "bar_labels",
    "legend_outside", "problems", "save", "FigureStyleError",
]

DPI = 200
"""Resolution (dots per inch) every figure is saved at."""
ONE_COLUMN = 3.4
"""Width (inches) of a one-column figure (a two-column paper's column)."""
TWO_COLUMN = 7.0
"""Width (inches) of a full-width figure."""
MIN_FONT_PT = 9.0
"""No text in a saved figure is smaller than this (points at the saved size)."""
FONT_PT = 9.0
"""Default size of tick labels, legends, annotations."""
LABEL_PT = 10.0
"""Axis-label size."""
TITLE_PT = 10.0
"""Title size."""

OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
    "grey": "#8C8C8C",
}
"""Okabe & Ito (2008) colour-blind-safe palette, plus a neutral grey for controls."""

ROLE_COLORS = {
    "lls": OKABE_ITO["blue"],
    "random": OKABE_ITO["grey"],
    "base": OKABE_ITO["black"],
    "system": OKABE_ITO["vermillion"],
    "system-prompted": OKABE_ITO["vermillion"],
    "teacher": OKABE_ITO["orange"],
    "paper": OKABE_ITO["reddish_purple"],
    "bound": OKABE_ITO["bluish_green"],
    "other": OKABE_ITO["sky_blue"],
}
"""Fixed colour per role: the same role has the same colour in every figure of the project."""

ROLE_MARKERS = {"lls": "o", "random": "s", "base": "D", "system": "^", "system-prompted": "^",
                "teacher": "v", "paper": "*", "bound": "x", "other": "P"}
ROLE_LINESTYLES = {"lls": "-", "random": "--", "base": ":", "system": "-.", "system-prompted": "-.",
                   "teacher": "-", "paper": ":", "bound": "--", "other": "-"}

_CYCLE = [OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "vermillion", "reddish_purple", "sky_blue",
                                 "black", "yellow")]

_ROLE_ALIASES = {"fine-tuned": "lls", "lls student": "lls", "control": "random", "random control": "random",
                 "none": "base", "no system": "base", "base model": "base", "prompted": "system",
                 "system prompt": "system", "z_s": "system", "z_t": "teacher", "z_m": "lls"}


def _role(role: str) -> str:
    r = str(role).strip().lower()
    r = _ROLE_ALIASES.get(r, r)
    if r not in ROLE_COLORS:
        raise KeyError(f"figstyle: unknown role {role!r}; known: {sorted(ROLE_COLORS)}")
    return r


def color(role: str) -> str:
    """Hex colour of a role (``"lls"``, ``"random"``, ``"base"``, ``"system"``, ``"teacher"``, ``"paper"``...)."""
    return ROLE_COLORS[_role(role)]


def marker(role: str) -> str:
    return ROLE_MARKERS[_role(role)]


def linestyle(role: str) -> str:
    return ROLE_LINESTYLES[_role(role)]


def series_colors(n: int) -> list[str]:
    """``n`` distinct colour-blind-safe colours (cycling the Okabe-Ito palette past 8)."""
    if n < 0:
        raise ValueError(f"figstyle.series_colors: n={n} must be >= 0")
    return [_CYCLE[i % len(_CYCLE)] for i in range(n)]


def rc() -> dict[str, Any]:
    """The matplotlib rcParams of the style (applied by :func:`subplots`)."""
    from cycler import cycler

    return {
        "font.size": FONT_PT,
        "axes.titlesize": TITLE_PT,
        "axes.labelsize": LABEL_PT,
        "xtick.labelsize": FONT_PT,
        "ytick.labelsize": FONT_PT,
        "legend.fontsize": FONT_PT,
        "legend.title_fontsize": FONT_PT,
        "figure.titlesize": TITLE_PT + 1,
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "axes.prop_cycle": cycler(color=_CYCLE),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": False,
        "legend.frameon": False,
        "errorbar.capsize": 2.5,
        "lines.markersize": 5,
        "image.cmap": "viridis",
    }


def plt():
    """``matplotlib.pyplot`` on the Agg backend with the project style applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    pyplot.rcParams.update(rc())
    return pyplot


def width_inches(width: str | float) -> float:
    """``"one"`` -> :data:`ONE_COLUMN`, ``"two"`` -> :data:`TWO_COLUMN`, a number -> itself (inches)."""
    if width in ("one", 1):
        return ONE_COLUMN
    if width in ("two", 2):
        return TWO_COLUMN
    w = float(width)
    if not 1.0 <= w <= 14.0:
        raise ValueError(f"figstyle: width {width!r} inches is outside [1, 14]")
    return w


def subplots(nrows: int = 1, ncols: int = 1, *, width: str | float = "two", height: float | None = None,
             **kwargs):
    """``plt.subplots`` at a standard width (``"one"``, ``"two"`` or inches) with the style applied.

    ``height`` defaults to 0.62 x width for one panel row (+ 2.4 in per further row). Returns ``(fig, axes)``.
    """
    p = plt()
    w = width_inches(width)
    h = height if height is not None else (0.62 * w if nrows == 1 else 0.62 * w + 2.4 * (nrows - 1))
    kwargs.setdefault("layout", "constrained")
    return p.subplots(nrows, ncols, figsize=(w, h), **kwargs)


def axis_label(quantity: str, unit: str | None) -> str:
    """``"quantity (unit)"``; ``unit=""`` marks a dimensionless quantity (no brackets).

    Raises ``ValueError`` when the quantity is empty or the unit is ``None`` (state it, even if empty).
    """
    if not quantity or not str(quantity).strip():
        raise ValueError("figstyle.axis_label: empty quantity")
    if unit is None:
        raise ValueError(f"figstyle.axis_label({quantity!r}): give the unit ('' for a dimensionless quantity)")
    return f"{quantity} ({unit})" if unit else str(quantity)


def label_axes(ax, x: tuple[str, str] | str, y: tuple[str, str] | str) -> None:
    """Label both axes: ``x=("training step", "Adam steps")``; a plain string is used as given."""
    ax.set_xlabel(x if isinstance(x, str) else axis_label(*x))
    ax.set_ylabel(y if isinstance(y, str) else axis_label(*y))


def title_n_ci(ax, title: str, *, n: int | str | None = None, ci: str | None = None, **kwargs) -> None:
    """Title stating the sample size and the interval, e.g. ``"SmolLM2 (n = 80 pairs; 95% bootstrap CI)"``."""
    extra = []
    if n is not None:
        extra.append(f"n = {n}")
    if ci:
        extra.append(ci)
    ax.set_title(f"{title} ({'; '.join(extra)})" if extra else title, **kwargs)


def _band_layout(fig) -> None:
    """Stack the bottom-band items (figure legends "below", captions) top-down under the layout area."""
    band = fig._lls_band
    total = sum(h for _, h, _ in band)
    H = fig.get_figheight()
    engine = fig.get_layout_engine()
    if engine is not None and "rect" in engine.get():
        engine.set(rect=(0.0, total / H, 1.0, 1.0 - total / H))
    else:
        fig.subplots_adjust(bottom=total / H + 0.1)
    y = total
    for artist, h, kind in band:
        if kind == "legend":
            artist.set_bbox_to_anchor((0.5, y / H), transform=fig.transFigure)
        else:
            artist.set_position((0.01, (y - 2 / 72) / H))
        y -= h


def _band_add(fig, artist, height_in: float, kind: str) -> None:
    if not hasattr(fig, "_lls_band"):
        fig._lls_band = []
    w, h = fig.get_figwidth(), fig.get_figheight()
    fig.set_size_inches(w, h + height_in)
    fig._lls_band.append((artist, height_in, kind))
    _band_layout(fig)


def caption(fig, text: str, *, width_chars: int | None = None) -> None:
    """A caption under the figure's content (wrapped to the figure width), e.g. to explain notation or state n
    and the interval. The figure grows by the caption's height and the layout is confined above it, so the
    caption never overlaps axes, labels or a figure legend below them (call it after :func:`legend_outside`)."""
    import textwrap

    if width_chars is None:
        width_chars = max(30, int(fig.get_figwidth() * 72 / (FONT_PT * 0.55)))
    wrapped = "\n".join(textwrap.fill(par, width_chars) for par in text.split("\n"))
    n_lines = wrapped.count("\n") + 1
    txt = fig.text(0.01, 0.0, wrapped, fontsize=FONT_PT, ha="left", va="top", transform=fig.transFigure)
    _band_add(fig, txt, (n_lines * FONT_PT * 1.25 + 8) / 72, "text")


def dodge(x: Sequence[float], i: int, n: int, span: float | None = None) -> list[float]:
    """x positions of series ``i`` of ``n`` that share ``x``, spread over ``span`` (default: min(0.3, 0.1 (n − 1))
    of the smallest gap between distinct x values, or of 1 for a single x) so their error bars do not overlap."""
    if not 0 <= i < n:
        raise ValueError(f"figstyle.dodge: series {i} of {n}")
    xs = [float(v) for v in x]
    if span is None:
        distinct = sorted(set(xs))
        gaps = [b - a for a, b in zip(distinct, distinct[1:]) if b > a]
        span = min(0.3, 0.1 * (n - 1)) * (min(gaps) if gaps else 1.0)
    off = 0.0 if n == 1 else (i - (n - 1) / 2) * span / (n - 1)
    return [v + off for v in xs]


def errorbars(ax, x, y, lo, hi, *, i: int = 0, n: int = 1, role: str | None = None, color_: str | None = None,
              label: str | None = None, span: float | None = None, **kwargs):
    """Points with asymmetric error bars from interval ends ``lo``/``hi`` (not half-widths), dodged as series
    ``i`` of ``n``. ``role`` picks colour, marker and line style; ``color_`` overrides the colour."""
    xs = dodge(x, i, n, span)
    ys = [float(v) for v in y]
    err = [[max(0.0, v - float(a)) for v, a in zip(ys, lo)], [max(0.0, float(b) - v) for v, b in zip(ys, hi)]]
    if role is not None:
        kwargs.setdefault("color", color(role))
        kwargs.setdefault("marker", marker(role))
        kwargs.setdefault("ls", linestyle(role))
    if color_ is not None:
        kwargs["color"] = color_
    kwargs.setdefault("marker", "o")
    kwargs.setdefault("capsize", 2.5)
    return ax.errorbar(xs, ys, yerr=err, label=label, **kwargs)


def bar_labels(ax, bars, values: Iterable[float] | None = None, fmt: str = "{:.2f}", *, tops=None,
               fontsize: float = FONT_PT) -> None:
    """Write each bar's value above it (above its error bar when ``tops`` gives the upper CI ends), so a
    zero-height bar still shows as "0.00"."""
    import numpy as np

    rects = list(bars)
    vals = [r.get_height() for r in rects] if values is None else [float(v) for v in values]
    if tops is None:
        tops = vals
    ymin, ymax = ax.get_ylim()
    pad = 0.015 * (ymax - ymin)
    for r, v, t in zip(rects, vals, tops):
        top = v if t is None or not np.isfinite(t) else max(v, float(t))
        ax.annotate(fmt.format(v), (r.get_x() + r.get_width() / 2, top + pad), ha="center", va="bottom",
                    fontsize=fontsize)


def legend_outside(ax_or_fig, where: str = "right", *, ncol: int | None = None, handles=None, labels=None,
                   **kwargs):
    """A legend outside the data: ``where="right"`` (beside the axes), ``"below"`` (under the x label) or
    ``"above"``. On a Figure (one legend for all panels) the entries of every axes are merged (one per label);
    ``"below"`` then puts the legend in a band under the panels (the figure grows by its height), and
    ``"right"``/``"above"`` use the figure's outside positions; constrained layout makes room in every case."""
    import matplotlib.figure
    from matplotlib.transforms import offset_copy

    target = ax_or_fig
    is_fig = isinstance(target, matplotlib.figure.Figure)
    if handles is None:
        if is_fig:
            seen: dict[str, Any] = {}
            for a in target.axes:
                for h, lab in zip(*a.get_legend_handles_labels()):
                    seen.setdefault(lab, h)
            labels, handles = list(seen), list(seen.values())
        else:
            handles, labels = target.get_legend_handles_labels()
    if not handles:
        return None
    if where not in ("right", "below", "above"):
        raise ValueError(f"figstyle.legend_outside: where={where!r} (right, below, above)")
    if is_fig and where == "below":  # a band under the panels (and above any caption)
        kw = dict(loc="upper center", ncol=ncol or min(len(handles), 2), borderaxespad=0.0)
        kw.update(kwargs)
        leg = target.legend(handles, labels, **kw)
        target.canvas.draw()
        height = leg.get_window_extent(target.canvas.get_renderer()).height / target.dpi
        _band_add(target, leg, height + 8 / 72, "legend")
        return leg
    if is_fig:
        kw = dict(loc={"right": "outside right upper", "above": "outside upper center"}[where],
                  ncol=ncol or (1 if where == "right" else min(len(handles), 3)))
        kw.update(kwargs)
        return target.legend(handles, labels, **kw)
    ax = target
    if where == "right":
        kw = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=ncol or 1, borderaxespad=0.0)
    elif where == "above":
        kw = dict(loc="lower center", bbox_to_anchor=(0.5, 1.02), ncol=ncol or min(len(handles), 3),
                  borderaxespad=0.0)
    else:
        # below the tick labels and the x label: an offset in points, whatever the axes' height
        drop = (FONT_PT + LABEL_PT) * 1.45 + 8 if ax.get_xlabel() else FONT_PT * 1.45 + 6
        kw = dict(loc="upper center", bbox_to_anchor=(0.5, 0.0),
                  bbox_transform=offset_copy(ax.transAxes, fig=ax.figure, y=-drop, units="points"),
                  ncol=ncol or min(len(handles), 2), borderaxespad=0.0)
    kw.update(kwargs)
    return ax.legend(handles, labels, **kw)


class FigureStyleError(ValueError):
    """A figure breaks the style (font below 9 pt, unlabelled axis, legend over data)."""


def _data_points_display(ax):
    """Display coordinates of every plotted data point of ``ax`` (lines, markers, scatter, bar tops)."""
    import numpy as np
    from matplotlib.collections import PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    pts = []
    for line in ax.get_lines():
        # reference lines spanning the axes (axhline/axvline) use a blended transform: not data points
        if not isinstance(line, Line2D) or not line.get_visible() or line.get_transform() != ax.transData:
            continue
        xy = np.asarray(line.get_xydata(), dtype=float)
        if xy.size:
            pts.append(ax.transData.transform(xy))
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and coll.get_visible():
            off = np.asarray(coll.get_offsets(), dtype=float)
            if off.size:
                pts.append(coll.get_offset_transform().transform(off))
    for patch in ax.patches:
        if isinstance(patch, Rectangle) and patch.get_visible() and patch.get_height() != 0:
            x, y, w, h = patch.get_x(), patch.get_y(), patch.get_width(), patch.get_height()
            pts.append(ax.transData.transform([[x + w / 2, y + h]]))
    if not pts:
        return np.zeros((0, 2))
    out = np.vstack(pts)
    return out[np.all(np.isfinite(out), axis=1)]


def problems(fig, min_font_pt: float = MIN_FONT_PT) -> list[str]:
    """What breaks the style in ``fig`` (empty list when nothing does):

    * a visible, non-empty text smaller than ``min_font_pt`` points;
    * an axes with data whose x or y axis has no label (a figure-level ``supxlabel``/``supylabel`` counts;
      an axis whose tick labels are hidden, as in shared small multiples, needs none);
    * a legend inside an axes that covers one of its data points.
    """
    import numpy as np
    from matplotlib.text import Text

    fig.canvas.draw()
    out: list[str] = []
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and t.get_fontsize() < min_font_pt - 1e-9:
            out.append(f"text {t.get_text()[:40]!r} is {t.get_fontsize():.1f} pt < {min_font_pt} pt")
    has_sup_x = bool(getattr(fig, "_supxlabel", None) and fig._supxlabel.get_text())
    has_sup_y = bool(getattr(fig, "_supylabel", None) and fig._supylabel.get_text())
    renderer = fig.canvas.get_renderer()
    for k, ax in enumerate(fig.axes):
        if not ax.get_visible() or not ax.axison:
            continue
        if ax.get_label() == "<colorbar>":
            continue
        has_data = bool(ax.lines or ax.collections or ax.patches or ax.images)
        if not has_data:
            continue
        xt = any(t.get_visible() and t.get_text() for t in ax.get_xticklabels())
        yt = any(t.get_visible() and t.get_text() for t in ax.get_yticklabels())
        if xt and not ax.get_xlabel().strip() and not has_sup_x:
            out.append(f"axes {k} ({ax.get_title()[:30]!r}): x axis has no label")
        if yt and not ax.get_ylabel().strip() and not has_sup_y:
            out.append(f"axes {k} ({ax.get_title()[:30]!r}): y axis has no label")
        leg = ax.get_legend()
        if leg is not None and leg.get_visible():
            box = leg.get_window_extent(renderer)
            axbox = ax.get_window_extent(renderer)
            inside = box.overlaps(axbox)
            if inside:
                pts = _data_points_display(ax)
                if len(pts):
                    hit = ((pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1)
                           & (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1))
                    if bool(np.any(hit)):
                        out.append(f"axes {k} ({ax.get_title()[:30]!r}): legend covers {int(hit.sum())} data "
                                   "point(s)")
    return out


def save(fig, path: str | os.PathLike, *, dpi: int = DPI, check: bool = True) -> Path:
    """Check ``fig`` against the style (raise :class:`FigureStyleError` listing :func:`problems`), save it at
    ``dpi`` through an atomic write (temporary file + rename; format from the suffix, PNG by default) and close it.
    """
    import io

    from lls_common.atomic import atomic_write_bytes

    import matplotlib.pyplot as pyplot

    path = Path(path)
    try:
        if check:
            found = problems(fig)
            if found:
                raise FigureStyleError(f"{path.name}: " + "; ".join(found))
        buf = io.BytesIO()
        fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight", pad_inches=0.05)
    finally:
        pyplot.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
