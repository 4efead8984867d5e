"""Redraw every low-rank figure under a results folder (``results/lowrank``) from its JSON files, without a model:
this module reads the records and hands them to :mod:`empirical.lowrank.lowrank_figures`.

    python -m empirical.lowrank.lowrank_replot results/lowrank
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from empirical.lowrank.detect_validation import iter_runs
from empirical.lowrank.lowrank import model_slug
from empirical.lowrank.lowrank_figures import (plot_angles, plot_detect, plot_detect_validation, plot_pair_check,
                                               plot_spectra)

__all__ = ["replot"]


def _j(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def replot(folder: Any) -> list[Path]:
    """Redraw every low-rank figure under ``folder`` from its JSON files (no model)."""
    root, out = Path(folder), []
    ang = _j(root / "angles.json")
    if ang is not None:
        fits = {slug: _j(root / f"spectrum-{slug}.json") for slug in ang["slopes"]}
        out += [plot_spectra(fits, root / "spectra.png"), plot_angles(ang["angles"], ang["rank"], ang["models"],
                                                                      root / "angles.png")]
    for f in sorted(root.glob("*/spectrum-*.json")):
        out.append(plot_spectra({model_slug(_j(f)["model"]): _j(f)}, f.with_suffix(".png")))
    for f in sorted(root.glob("*/pair-check.json")):
        out += plot_pair_check(_j(f), f.parent)
    for f in sorted(root.glob("*/detect.json")):
        out.append(plot_detect(_j(f), None, f.with_suffix(".png")))
    val = _j(root / "detect-validation.json")
    if val is not None:
        out.append(plot_detect_validation(list(iter_runs(val)), root / "detect-validation.png"))
    return out


if __name__ == "__main__":  # pragma: no cover
    for p in replot(sys.argv[1] if len(sys.argv) > 1 else "results/lowrank"):
        print(p)
