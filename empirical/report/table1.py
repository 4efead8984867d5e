"""Table 1 and the Figure-19 view of a finished (one- or many-trait) experiment run, from its JSON alone.

A run folder holds one ``correlate.json`` per (trait, student) — the shape
:func:`empirical.stages.correlate.correlate_arms` writes: the held-out margin vectors ``z_s`` (the initial student's
system-prompt shift), ``z_T`` (the teacher's, cross-model students only), ``arms.<arm>.z_M.<step>`` (the
fine-tuned student's shift at each checkpoint) and the statistics of the final checkpoint
(``arms.<arm>.final.<ref>``), the paired ``lls_minus_random`` contrast.

Layouts found by :func:`load_run` (``<s>`` = student name, ``<t>`` = trait name):

* one trait (today's ``lls experiment``): ``students/<s>/correlate.json``; the trait is named by the config's
  ``trait``, ``target`` or ``name``;
* many traits: ``traits/<t>/students/<s>/correlate.json``, ``students/<s>/traits/<t>/correlate.json`` or
  ``students/<s>/<t>/correlate.json`` (a ``"trait"`` key inside the JSON wins over the folder name).

Table 1 (:func:`table1`): one row per student, one cell per trait. The cell is the held-out Pearson
correlation of the fine-tuned (LLS) student's z_M with the reference r — z_T when the JSON has it (the
teacher's shift: the paper's teacher-student correlation), otherwise z_s (student = teacher, so z_s = z_T) —
its 95% bootstrap CI (read from the JSON), the random-control student's value and CI, and the paired
LLS − random difference with its CI and one-sided p. Point estimates are **recomputed** from the stored vectors
(:func:`lls_theory.stats.pearson`) and checked against the stored ones, so a stale or hand-edited JSON is caught.
Row summary: mean of the LLS cells over traits, and the number of traits whose LLS − random CI excludes 0.

Figure 19 (:func:`fig19`): for each student the 2K vectors (K traits × {z_M of the LLS student, reference r}),
each scaled to unit length, projected on their top-2 right singular vectors
(:func:`lls_theory.lowrank.top2_projection`); the angle between a trait's two vectors is
``arccos(cosine(z_M, r))`` in the full n-dimensional space (the theorem's uncentred Corr), not in the projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from empirical.report.paper import paper_value
from empirical.report.run_json import read_run_json
from lls_common.errors import LLSError

__all__ = ["RunData", "load_run", "final_step", "reference", "table1", "fig19", "table1_markdown",
           "fig19_markdown", "TOL"]

TOL = 1e-6
"""Largest allowed gap between a stored point estimate and the one recomputed from the stored vectors."""


@dataclass
class RunData:
    """What a finished run folder holds, keyed by (trait, student)."""

    root: Path
    config: dict[str, Any]
    traits: list[str]
    students: list[str]
    correlate: dict[tuple[str, str], dict[str, Any]]
    paths: dict[tuple[str, str], Path]
    evals: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    trait_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def multi(self) -> bool:
        return len(self.traits) > 1


def _single_trait_name(config: dict[str, Any]) -> str:
    traits = config.get("traits")
    if isinstance(traits, list) and len(traits) == 1 and isinstance(traits[0], dict):
        return str(traits[0].get("target") or traits[0].get("name") or "trait")
    for key in ("trait", "target", "name"):
        v = config.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return "trait"


def _locate(rel: tuple[str, ...], default_trait: str) -> tuple[str, str] | None:
    """(trait, student) of a ``.../correlate.json`` path relative to the run root, or None if not a student's."""
    parts = list(rel[:-1])
    if "students" not in parts:
        return None
    i = parts.index("students")
    if i + 1 >= len(parts):
        return None
    student = parts[i + 1]
    trait = None
    if "traits" in parts:
        j = parts.index("traits")
        if j + 1 < len(parts):
            trait = parts[j + 1]
    elif i + 2 < len(parts):  # students/<s>/<t>/correlate.json
        trait = parts[i + 2]
    elif i >= 1:  # <t>/students/<s>/correlate.json
        trait = parts[i - 1]
    return (trait or default_trait, student)


def load_run(root: str | Path, trait: str | None = None) -> RunData:
    """Read every ``correlate.json`` (and ``eval.json`` beside it) of a finished run; see the module doc.

    ``trait`` names the trait of a single-trait layout (default: from ``config.json``).

    Raises :class:`LLSError` naming the folder when it holds no student's ``correlate.json``.
    """
    root = Path(root)
    if not root.is_dir():
        raise LLSError(f"--run {root}: no such folder")
    config = read_run_json(root / "config.json") if (root / "config.json").exists() else {}
    default_trait = trait or _single_trait_name(config)
    corr: dict[tuple[str, str], dict] = {}
    paths: dict[tuple[str, str], Path] = {}
    evals: dict[tuple[str, str], dict] = {}
    info: dict[str, dict[str, Any]] = {}
    for f in sorted(root.rglob("correlate.json")):
        rel = f.relative_to(root).parts
        if any(p.startswith(".") or p in ("stages", "cache") for p in rel[:-1]):
            continue
        loc = _locate(rel, default_trait)
        if loc is None:
            continue
        data = read_run_json(f)
        if not isinstance(data, dict) or "arms" not in data or "z_s" not in data:
            raise LLSError(f"{f}: not a correlate.json (needs keys 'z_s' and 'arms')")
        trait = str(data.get("trait") or loc[0])
        key = (trait, loc[1])
        if key in corr:
            raise LLSError(f"{f}: a second correlate.json for trait {trait!r}, student {loc[1]!r} "
                           f"(first: {paths[key]})")
        corr[key], paths[key] = data, f
        ev = f.parent / "eval.json"
        if ev.exists():
            evals[key] = read_run_json(ev)
        info.setdefault(trait, {"system_prompt": data.get("system_prompt"),
                                "target": data.get("target") or (config.get("target") if trait == default_trait
                                                                 else None)})
    if not corr:
        raise LLSError(f"--run {root}: no students/<name>/correlate.json found; run `lls experiment` to the "
                       "correlate stage first")
    students = _ordered([s for _, s in corr], [s.get("name") for s in config.get("students", [])
                                                  if isinstance(s, dict)])
    cfg_traits = [t.get("name") if isinstance(t, dict) else t for t in config.get("traits", []) or []]
    traits = _ordered([t for t, _ in corr], cfg_traits)
    return RunData(root, config, traits, students, corr, paths, evals, info)


def _ordered(found: list[str], preferred: list[Any]) -> list[str]:
    seen = list(dict.fromkeys(found))
    first = [p for p in preferred if p in seen]
    return first + [s for s in seen if s not in first]


def final_step(arm: dict[str, Any], path: Any = "") -> str:
    """Key of the final checkpoint's z_M vector (the largest step)."""
    zm = arm.get("z_M") or {}
    if not zm:
        raise LLSError(f"{path}: arm {arm.get('run', '?')!r} has no z_M vectors")
    return max(zm, key=lambda k: int(k))


def reference(res: dict[str, Any]) -> str:
    """The Table-1 reference vector: ``"z_T"`` (the teacher's shift) when present, else ``"z_s"``."""
    return "z_T" if res.get("z_T") is not None and "z_T" in res["arms"].get("lls", {}).get("final", {}) else "z_s"


def _vec(res: dict[str, Any], key: str, path: Any) -> np.ndarray:
    v = np.asarray(res[key], dtype=float)
    if v.ndim != 1 or v.size < 3 or not np.all(np.isfinite(v)):
        raise LLSError(f"{path}: {key} must be a list of >= 3 finite numbers")
    return v


def _arm_cell(res: dict[str, Any], arm: str, ref: str, path: Any) -> dict[str, Any] | None:
    from lls_theory.stats import cosine, pearson

    if arm not in res["arms"]:
        return None
    a = res["arms"][arm]
    step = final_step(a, path)
    zm = np.asarray(a["z_M"][step], dtype=float)
    r = _vec(res, ref, path)
    if zm.shape != r.shape:
        raise LLSError(f"{path}: arms.{arm}.z_M.{step} has {zm.size} values, {ref} has {r.size}")
    val = pearson(r, zm)
    stored = a.get("final", {}).get(ref, {})
    if "pearson" in stored and stored["pearson"] is not None and math.isfinite(val) \
            and abs(stored["pearson"] - val) > TOL:
        raise LLSError(f"{path}: arms.{arm}.final.{ref}.pearson = {stored['pearson']:.6f} but the stored vectors "
                       f"give {val:.6f}; the JSON is stale, re-run the correlate stage")
    ci = stored.get("pearson_ci")
    return {"pearson": val, "ci": list(ci) if ci else None, "p": stored.get("pearson_p"),
            "cosine": cosine(r, zm), "step": int(step), "n": int(r.size)}


def _seeded_cells(res: dict[str, Any], ref: str, path: Any, lls: dict[str, Any], rnd: dict[str, Any] | None,
                  diff: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """The cells of a correlate.json with training seeds (``seeds``: :func:`empirical.stages.correlate.seed_summary`):
    each arm's value is the mean over its seeds (checked against the stored vectors) with the CI over pairs and
    seeds; the LLS − random difference is that of the seed means."""
    from lls_theory.stats import pearson

    seeds = res["seeds"]
    cells = {}
    for group, cell in (("lls", lls), ("random", rnd)):
        rec = ((seeds.get("arms") or {}).get(group) or {}).get(ref)
        if cell is None or rec is None:
            cells[group] = cell
            continue
        names = seeds["groups"][group]
        val = float(np.mean([pearson(_vec(res, ref, path), np.asarray(res["arms"][a]["z_M"][final_step(
            res["arms"][a], path)], dtype=float)) for a in names]))
        if abs(val - rec["mean"]) > TOL:
            raise LLSError(f"{path}: seeds.arms.{group}.{ref}.mean = {rec['mean']:.6f} but the stored vectors give "
                           f"{val:.6f}; re-run the correlate stage")
        cells[group] = cell | {"pearson": val, "ci": list(rec["ci"]), "p": None, "n_seeds": rec["n_seeds"],
                               "per_seed": rec["per_seed"], "sd": rec["sd"], "ci_includes": rec["ci_includes"]}
    d = (seeds.get("lls_minus_random") or {}).get(ref)
    if d is not None and cells["random"] is not None:
        diff = {"diff": cells["lls"]["pearson"] - cells["random"]["pearson"], "ci": list(d["ci"]), "p": d.get("p"),
                "n_seeds": d["n_seeds"], "ci_includes": d["ci_includes"]}
    return cells["lls"], cells["random"], diff


def table1(run: RunData) -> dict[str, Any]:
    """Table 1 of ``run``: ``{"traits", "rows": [{student, model, kind, ref, cells: {trait: cell}, summary}]}``.

    cell = ``{"lls": {pearson, ci, p, cosine, step, n}, "random": same or None,
    "diff": {diff, ci, p} or None, "paper": float or None}``; summary = ``{"mean_lls", "mean_random",
    "mean_diff", "n_traits", "n_diff_excludes_0", "n_diff_above_0", "n_diff_below_0"}`` (means over the traits
    that have the value).
    """
    teacher = run.config.get("teacher")
    if isinstance(teacher, dict):
        teacher = teacher.get("model")
    rows = []
    for s in run.students:
        cells: dict[str, Any] = {}
        model, ref = None, None
        for t in run.traits:
            res = run.correlate.get((t, s))
            if res is None:
                continue
            path = run.paths[(t, s)]
            model = res.get("student", model)
            r = reference(res)
            if ref is not None and r != ref:
                raise LLSError(f"{path}: reference {r} differs from the other traits' {ref} for student {s!r}")
            ref = r
            lls = _arm_cell(res, "lls", r, path)
            if lls is None:
                raise LLSError(f"{path}: no 'lls' arm")
            rnd = _arm_cell(res, "random", r, path)
            d = (res.get("lls_minus_random") or {}).get(r, {}).get("pearson")
            if d is not None and rnd is not None and abs(d["diff"] - (lls["pearson"] - rnd["pearson"])) > TOL:
                raise LLSError(f"{path}: lls_minus_random.{r}.pearson.diff = {d['diff']:.6f} but the stored vectors "
                               f"give {lls['pearson'] - rnd['pearson']:.6f}; re-run the correlate stage")
            diff = None if d is None else {"diff": lls["pearson"] - (rnd["pearson"] if rnd else float("nan")),
                                           "ci": list(d["ci"]), "p": d.get("p")}
            if res.get("seeds"):  # training seeds: every value a mean over seeds, every CI over pairs and seeds
                lls, rnd, diff = _seeded_cells(res, r, path, lls, rnd, diff)
            t_model = res.get("teacher", teacher)
            kind = "same" if (model is not None and model == t_model) else "cross"
            cells[t] = {"lls": lls, "random": rnd, "diff": diff, "paper": paper_value(kind, t), "kind": kind}
        if not cells:
            continue
        kinds = {c["kind"] for c in cells.values()}
        rows.append({"student": s, "model": model, "kind": kinds.pop() if len(kinds) == 1 else "mixed",
                     "ref": ref, "cells": cells, "summary": _summary(cells)})
    return {"traits": list(run.traits), "rows": rows, "stat": "pearson"}


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def _summary(cells: dict[str, Any]) -> dict[str, Any]:
    diffs = [c["diff"] for c in cells.values() if c["diff"] is not None]
    above = sum(1 for d in diffs if d["ci"][0] > 0)
    below = sum(1 for d in diffs if d["ci"][1] < 0)
    return {
        "n_traits": len(cells),
        "mean_lls": _mean([c["lls"]["pearson"] for c in cells.values()]),
        "mean_random": _mean([c["random"]["pearson"] for c in cells.values() if c["random"]]),
        "mean_diff": _mean([d["diff"] for d in diffs]),
        "mean_paper": _mean([c["paper"] for c in cells.values() if c["paper"] is not None]),
        "n_diffs": len(diffs),
        "n_diff_excludes_0": above + below,
        "n_diff_above_0": above,
        "n_diff_below_0": below,
    }


def fig19(run: RunData) -> dict[str, Any]:
    """Figure-19 data per student: ``{student: {"traits", "ref", "labels", "xy": (2K, 2) list, "angles_deg":
    {trait: deg}, "cosine": {trait: c}, "explained": [share of σ² in the top 2]}}``.

    Rows 0..K-1 of ``xy`` are the fine-tuned z_M (LLS arm, final checkpoint), rows K..2K-1 the references, in
    ``traits`` order; every vector is scaled to unit length before the SVD. A trait whose z_M or r is all zeros
    (no direction) is listed under ``"skipped"`` instead. With 3 or more traits, ``"centred"`` holds the same view
    of the trait-centred vectors (each side's mean over the traits removed), where the shared direction no longer
    hides the traits: ``{"xy", "explained", "angles_deg", "cosine"}``.
    """
    from lls_theory.stats import cosine

    out = {}
    for s in run.students:
        traits = [t for t in run.traits if (t, s) in run.correlate]
        if not traits:
            continue
        zm, refs, angles, cosines, kept, skipped = [], [], {}, {}, [], []
        ref = None
        for t in traits:
            res, path = run.correlate[(t, s)], run.paths[(t, s)]
            ref = reference(res)
            a = res["arms"]["lls"]
            m = np.asarray(a["z_M"][final_step(a, path)], dtype=float)
            r = _vec(res, ref, path)
            if not (np.any(m) and np.any(r)) or not np.all(np.isfinite(m)):
                skipped.append(t)  # a zero (or non-finite) vector has no direction to draw
                continue
            kept.append(t)
            c = cosine(r, m)
            cosines[t] = c
            angles[t] = float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))) if math.isfinite(c) else None
            zm.append(m)
            refs.append(r)
        if not kept:
            continue
        out[s] = {"traits": kept, "ref": ref, "angles_deg": angles, "cosine": cosines, "skipped": skipped,
                  "labels": [f"{t} z_M" for t in kept] + [f"{t} {ref}" for t in kept], **_project(zm + refs)}
        if len(kept) >= 3:  # centred: each side's mean over the traits removed, so only trait-specific parts remain
            from lls_theory.specificity import trait_centre

            zc, rc = trait_centre(np.vstack(zm)), trait_centre(np.vstack(refs))
            cc = {t: cosine(r_, m_) for t, m_, r_ in zip(kept, zc, rc)}
            out[s]["centred"] = {"cosine": cc, "angles_deg": {t: float(np.degrees(np.arccos(np.clip(c, -1, 1))))
                                                               for t, c in cc.items()},
                                 **_project(list(zc) + list(rc))}
    return out


def _project(vectors: list[np.ndarray]) -> dict[str, Any]:
    """Unit-scaled (2K, n) vectors on their top-2 right singular vectors: ``{"xy", "explained"}``."""
    from lls_theory.lowrank import top2_projection

    V = np.vstack(vectors)
    U = V / np.linalg.norm(V, axis=1, keepdims=True)
    sv = np.linalg.svd(U, compute_uv=False)
    return {"xy": top2_projection(U).tolist(), "explained": float((sv[:2] ** 2).sum() / (sv ** 2).sum())}


def _f(x: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _ci(ci: list[float] | None, fmt: str = "{:+.2f}") -> str:
    return "" if not ci else f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _seeds(cell: dict[str, Any]) -> str:
    """" (n seeds)" for a value averaged over training seeds (its CI includes them), else ""."""
    n = cell.get("n_seeds")
    n = max(n) if isinstance(n, list) else n
    return f" ({n} seeds)" if n and n > 1 else ""


def table1_markdown(tab: dict[str, Any]) -> list[str]:
    """Markdown lines: the main table (one row per student), then one summary line per row."""
    traits = tab["traits"]
    L = ["| student (reference) | " + " | ".join(traits) + " |", "|---|" + "---|" * len(traits)]
    for row in tab["rows"]:
        cells = []
        for t in traits:
            c = row["cells"].get(t)
            if c is None:
                cells.append("–")
                continue
            txt = f"**{_f(c['lls']['pearson'], '{:.2f}')}**{_ci(c['lls']['ci'], '{:.2f}')}{_seeds(c['lls'])}"
            if c["random"]:
                txt += (f"<br>random {_f(c['random']['pearson'], '{:.2f}')}{_ci(c['random']['ci'], '{:.2f}')}"
                        f"{_seeds(c['random'])}")
            if c["diff"]:
                txt += f"<br>Δ {_f(c['diff']['diff'], '{:+.2f}')}{_ci(c['diff']['ci'])}{_seeds(c['diff'])}"
            if c["paper"] is not None:
                txt += f"<br>paper {c['paper']:.2f}"
            cells.append(txt)
        L.append(f"| {row['student']} (`{row['model']}`; r = {row['ref']}) | " + " | ".join(cells) + " |")
    L.append("")
    if any(_seeds(c[k] or {}) for row in tab["rows"] for c in row["cells"].values() for k in ("lls", "random", "diff")):
        L += ["95% CIs over the held-out pairs, except those marked (n seeds): means over n training seeds, with a "
              "two-stage bootstrap CI over the seeds and the pairs (it includes training variance).", ""]
    for row in tab["rows"]:
        s = row["summary"]
        line = (f"- **{row['student']}** ({'same model as the teacher' if row['kind'] == 'same' else 'not the teacher'}"
                f"; Pearson({row['ref']}, z_M)): mean over {s['n_traits']} trait(s) {_f(s['mean_lls'])}")
        if s["mean_random"] is not None:
            line += f", random control {_f(s['mean_random'])}"
        if s["n_diffs"]:
            line += (f"; LLS − random CI excludes 0 for {s['n_diff_excludes_0']} of {s['n_diffs']} "
                     f"({s['n_diff_above_0']} above, {s['n_diff_below_0']} below)")
        if s["mean_paper"] is not None:
            line += f"; paper's mean over the same traits {_f(s['mean_paper'])}"
        ind = row.get("independence")
        if ind:
            line += (f"; the {ind['K']} cells amount to ≈ {ind['n_eff']:.1f} independent cell(s)"
                     + (" (they share one random-control student and the held-out pairs)" if ind["control_shared"]
                        else " (they share the held-out pairs)"))
        L.append(line + ".")
    return L


def seeds_markdown(tab: dict[str, Any]) -> list[str]:
    """The "Training seeds" section: per student and trait, each arm's per-seed values, their SD and the CI over
    pairs and seeds (empty when no cell has more than one seed)."""
    rows = [(row, t, c) for row in tab["rows"] for t, c in row["cells"].items()
            if _seeds(c["lls"]) or (c["random"] and _seeds(c["random"]))]
    if not rows:
        return []
    L = ["## Training seeds", "",
         "Students trained with other training seeds (LLS: the same subset; random control: its own random subset "
         "too). Per seed: the held-out Pearson of the reference with z_M; mean ± SD over the seeds; 95% CI of the "
         "seed mean from a two-stage bootstrap (seeds, then pairs), so it includes training variance; Δ = mean LLS − "
         "mean random with its two-stage CI.", "",
         "| student | trait | LLS per seed | LLS mean ± SD [CI] | random per seed | random mean ± SD [CI] | Δ [CI] |",
         "|---|---|---|---|---|---|---|"]

    def arm(c: dict[str, Any] | None) -> tuple[str, str]:
        if not c:
            return "–", "–"
        per = c.get("per_seed") or [c["pearson"]]
        sd = c.get("sd")
        return (", ".join(f"{v:.3f}" for v in per),
                f"{c['pearson']:.3f}" + (f" ± {sd:.3f}" if sd is not None else "") + _ci(c["ci"], "{:.3f}"))

    sds = []
    for row, t, c in rows:
        (lp, lm), (rp, rm) = arm(c["lls"]), arm(c["random"])
        if c["random"] and c["random"].get("sd") is not None:
            sds.append(c["random"]["sd"])
        d = c["diff"]
        dtxt = "–" if not d else f"{d['diff']:+.3f}{_ci(d['ci'], '{:+.3f}')}"
        L.append(f"| {row['student']} | {t} | {lp} | {lm} | {rp} | {rm} | {dtxt} |")
    if sds:
        L += ["", f"Across-seed SD of the random-control students' correlation: mean {np.mean(sds):.3f} "
              f"(range {min(sds):.3f}–{max(sds):.3f}) over {len(sds)} trait × student cells."]
    return L


def fig19_markdown(f19: dict[str, Any]) -> list[str]:
    """Markdown table of the angles between each trait's z_M and its reference, per student."""
    students = list(f19)
    traits = list(dict.fromkeys(t for v in f19.values() for t in v["traits"]))
    L = ["| trait | " + " | ".join(f"{s}: ∠(z_M, {f19[s]['ref']}) [cosine]" for s in students) + " |",
         "|---|" + "---|" * len(students)]
    for t in traits:
        cells = []
        for s in students:
            a, c = f19[s]["angles_deg"].get(t), f19[s]["cosine"].get(t)
            cells.append("–" if a is None else f"{a:.1f}° [{c:+.3f}]")
        L.append(f"| {t} | " + " | ".join(cells) + " |")
    if any(len(f19[s]["traits"]) > 1 for s in students):
        L.append("| top-2 share of σ² | " + " | ".join(f"{f19[s]['explained']:.2f}" for s in students) + " |")
    return L
