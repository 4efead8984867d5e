"""Trait specificity of a finished many-trait run, from its JSON alone (``lls specificity --run DIR``).

For each student of the run, the K LLS students' held-out shifts z_M(A) (final checkpoint) against the K
reference shifts r(A) (z_T for a student of another family, z_s for the teacher's own model: the Table-1
reference, :func:`empirical.report.table1.reference`) go through :func:`lls_theory.specificity.specificity_test`:
the K×K correlation matrix raw and trait-centred, the permutation test of the mean diagonal, the centred
bootstrap CI of (diagonal − off-diagonal), the specific-to-common gain κ, the minimum detectable effect; and
:func:`lls_theory.specificity.effective_cells` on the Table-1 cells (LLS − random when the run has a random
control), so that "10 of 10" is read as the number of independent cells it is.

Beside every student's test stands a **positive control** that needs no training: the same test with a
student model of another family's own system-prompt shifts z_s(A) in place of z_M(A), against the teacher's
z_T(A) — two models scoring the same prompts on the same pairs. If the two models' trait-specific parts agree,
the data can show specificity at this n; if the control fails too, a null for the students says nothing. The
teacher's own student (r = z_s = z_T) is shown the run's control of another family; a run whose students are
all the teacher's own model has none, and says so.

Also from the run: the training-subset overlap of the traits (from each trait's ``select/summary.json``
``selected_ids``, where the select stage recorded them) and, where the probe stored its answer distribution
over candidates, the same K×K test on behaviour (:func:`lls_theory.specificity.behaviour_specificity`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from empirical.report.table1 import RunData, final_step, load_run, reference
from lls_common.errors import LLSError

__all__ = ["run_specificity", "student_vectors", "specificity_markdown", "write_specificity"]


def _trait_target(run: RunData, trait: str) -> str:
    info = run.trait_info.get(trait, {})
    return str(info.get("target") or trait).strip().lower()


def student_vectors(run: RunData, student: str) -> dict[str, Any]:
    """The (K, n) arrays of one student: ``{"Z", "R", "own", "control", "ref", "ids", "control_shared"}``.

    ``own`` is the student's own z_s (None for the teacher's own model, where it is the reference);
    ``control`` the random-control student's z_M per trait (None without one). Refuses, naming the file, a
    trait without this student's correlate.json, a missing LLS arm, vectors of different lengths or held-out
    pairs that differ between traits.
    """
    Z, R, own, ctrl = [], [], [], []
    ref, ids, ids_from = None, None, None
    for t in run.traits:
        res = run.correlate.get((t, student))
        if res is None:
            raise LLSError(f"student {student!r} has no correlate.json for trait {t!r}: a partial run; finish it "
                           "with `lls experiment` (same config and --out) first")
        path = run.paths[(t, student)]
        r = reference(res)
        if ref is not None and r != ref:
            raise LLSError(f"{path}: reference {r} differs from the other traits' {ref} for student {student!r}")
        ref = r
        if "lls" not in res["arms"]:
            raise LLSError(f"{path}: no 'lls' arm; run the correlate stage for this trait")
        arm = res["arms"]["lls"]
        vecs = {"z_M": arm["z_M"][final_step(arm, path)], ref: res[ref]}
        if ref == "z_T":
            vecs["z_s"] = res["z_s"]
        if "random" in res["arms"]:
            rnd = res["arms"]["random"]
            vecs["random z_M"] = rnd["z_M"][final_step(rnd, path)]
        n = None
        for name, v in vecs.items():
            a = np.asarray(v, dtype=float)
            if a.ndim != 1 or not np.all(np.isfinite(a)):
                raise LLSError(f"{path}: {name} must be a list of finite numbers")
            if n is not None and a.size != n:
                raise LLSError(f"{path}: {name} has {a.size} values, z_M has {n}")
            n = a.size
        if Z and n != Z[0].size:
            raise LLSError(f"{path}: {n} held-out pairs, trait {run.traits[0]!r} has {Z[0].size}: vectors of "
                           "different lengths cannot be compared across traits")
        t_ids = res.get("ids")
        if t_ids is not None and ids is not None and list(t_ids) != ids:
            raise LLSError(f"{path}: its held-out pair ids differ from those of {ids_from}")
        if t_ids is not None and ids is None:
            ids, ids_from = list(t_ids), path
        Z.append(np.asarray(vecs["z_M"], dtype=float))
        R.append(np.asarray(vecs[ref], dtype=float))
        own.append(np.asarray(vecs["z_s"], dtype=float) if ref == "z_T" else None)
        ctrl.append(np.asarray(vecs["random z_M"], dtype=float) if "random z_M" in vecs else None)
    has_ctrl = all(c is not None for c in ctrl)
    control = np.vstack(ctrl) if has_ctrl else None
    return {"Z": np.vstack(Z), "R": np.vstack(R), "ref": ref, "ids": ids,
            "own": np.vstack(own) if ref == "z_T" else None, "control": control,
            "control_shared": bool(has_ctrl and np.all(control == control[0]))}


def _overlap(run: RunData) -> dict[str, Any]:
    """The traits' training-subset overlap: the run's ``select/overlap.json`` (the subsets as selected, and the
    plain and contrastive forms from the same scores), else computed from each trait's recorded
    ``selected_ids`` (:func:`lls_theory.selection.subset_overlap`)."""
    from lls_theory.selection import subset_overlap

    from empirical.report.run_json import read_run_json

    f = run.root / "select" / "overlap.json"
    if f.is_file():
        forms = read_run_json(f).get("forms")
        if isinstance(forms, dict) and "selected" in forms:
            return {"available": True, "source": "select/overlap.json", **forms["selected"],
                    "forms": {k: {x: v[x] for x in ("mean_offdiag_overlap", "common_to_all", "union")}
                              for k, v in forms.items()}}
    subsets, missing = {}, []
    for t in run.traits:
        f = run.root / "traits" / t / "select" / "summary.json"
        ids = read_run_json(f).get("selected_ids") if f.is_file() else None
        if ids is None:
            missing.append(t)
        else:
            subsets[t] = ids
    if missing:
        return {"available": False, "reason": "the select stage did not record the selected pair ids "
                "(`selected_ids` in traits/<name>/select/summary.json) for " + ", ".join(missing)}
    return {"available": True, "source": "selected_ids", **subset_overlap(subsets)}


def _behaviour(run: RunData, student: str, settings: dict[str, Any], traits: list[str] | None = None
               ) -> dict[str, Any]:
    from lls_theory.specificity import behaviour_specificity

    traits = list(run.traits) if traits is None else traits
    targets = [_trait_target(run, t) for t in traits]
    P = []
    for t in traits:
        probe = (((run.evals.get((t, student)) or {}).get("conditions") or {}).get("lls") or {}).get("probe")
        dist = (probe or {}).get("distribution")
        if not dist:
            return {"available": False, "reason": "the probe stored only the target's probability (no answer "
                    "distribution over candidates); re-run the eval stage to measure behaviour per trait"}
        cands = list(probe["candidates"])
        absent = [x for x in targets if x not in cands]
        if absent:
            return {"available": False, "reason": f"trait {t!r}: the probe's candidates lack {', '.join(absent)}"}
        D = np.asarray(dist, dtype=float)  # (questions, candidates)
        P.append([float(D[:, cands.index(x)].mean()) for x in targets])
    out = behaviour_specificity(np.array(P), n_perm=settings["n_perm"], seed=settings["seed"])
    return {"available": True, "targets": targets, **out}


def selection_groups(run: RunData) -> dict[str, list[str]]:
    """The run's traits by the form of their selection (``{"others": [...], "none": [...]}``: a trait's own
    ``contrast``, else the run's ``select.contrast``; "none" = plain Algorithm 1), in the run's order."""
    cfg = run.config or {}
    default = str((cfg.get("select") or {}).get("contrast") or "none")
    own = {t.get("name"): t.get("contrast") for t in cfg.get("traits") or [] if isinstance(t, dict)}
    groups: dict[str, list[str]] = {}
    for t in run.traits:
        groups.setdefault(str(own.get(t) or default), []).append(t)
    return groups


def _group_tests(run: RunData, vectors: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """For a run whose traits were selected in more than one form: the K×K test within each form with >= 2
    traits, and its control comparison (:func:`lls_theory.specificity.control_comparison`) against the
    students of the other forms' traits (for example ten contrastively selected animals against plainly
    selected non-animal controls)."""
    from lls_theory.specificity import control_comparison, specificity_test

    groups = selection_groups(run)
    if len(groups) < 2:
        return {}
    index = {t: k for k, t in enumerate(run.traits)}
    out = {}
    for form, traits in groups.items():
        if len(traits) < 2:
            continue
        rows = [index[t] for t in traits]
        others = [index[t] for t in run.traits if t not in traits]
        per = {}
        for s, v in vectors.items():
            Z, R = v["Z"][rows], v["R"][rows]
            per[s] = {"test": specificity_test(Z, R, n_perm=settings["n_perm"], n_boot=settings["n_boot"],
                                               seed=settings["seed"]),
                      "controls": {"traits": [run.traits[k] for k in others],
                                   **control_comparison(Z, R, v["Z"][others], n_boot=settings["n_boot"],
                                                        seed=settings["seed"])},
                      "behaviour": _behaviour(run, s, settings, traits)}
        out[form] = {"traits": traits, "students": per}
    return out


def run_specificity(root: str | Path, n_perm: int = 9_999, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The specificity measurement of a finished many-trait run (see the module doc).

    Returns ``{"run", "traits", "settings", "students": {name: {...}}, "overlap": {...}}``; each student holds
    ``ref``, ``n``, ``test`` (:func:`lls_theory.specificity.specificity_test`), ``cells`` (the Table-1 cells'
    effective number, with the statistic they are replicates of), ``positive_control`` and ``behaviour``.
    Raises :class:`LLSError` for a run with fewer than 2 traits, a partial student or mismatched vectors.
    """
    from lls_theory.specificity import cell_replicates, effective_cells, specificity_test

    run = load_run(root)
    if len(run.traits) < 2:
        raise LLSError(f"--run {root}: {len(run.traits)} trait(s) ({', '.join(run.traits)}); trait specificity "
                       "needs a run with 2 or more traits")
    settings = {"n_perm": int(n_perm), "n_boot": int(n_boot), "seed": int(seed)}
    vectors = {s: student_vectors(run, s) for s in run.students}  # every refusal before any statistic
    controls = {s: {"available": True, "source": f"{s}'s own z_s vs the teacher's z_T", "model": s,
                    **specificity_test(v["own"], v["R"], n_perm=n_perm, n_boot=n_boot, seed=seed)}
                for s, v in vectors.items() if v["own"] is not None}
    students = {}
    for s, v in vectors.items():
        test = specificity_test(v["Z"], v["R"], n_perm=n_perm, n_boot=n_boot, seed=seed)
        reps = cell_replicates(v["Z"], v["R"], control=v["control"], n_boot=n_boot, seed=seed)
        cells = {"statistic": "Pearson(z_M, r) − Pearson(random z_M, r)" if v["control"] is not None
                 else "Pearson(z_M, r)", "control_shared": v["control_shared"], **effective_cells(reps)}
        # the student's own model pair where it has one, else the run's first (same teacher shifts, same pairs)
        pc = controls.get(s) or next(iter(controls.values()), None) or {
            "available": False, "reason": "every student is the teacher's own model (z_s = z_T), so no second "
            "model scores the prompts; add a student of another family to get one"}
        students[s] = {"ref": v["ref"], "n": int(v["Z"].shape[1]), "test": test, "cells": cells,
                       "positive_control": pc, "behaviour": _behaviour(run, s, settings)}
    out = {"run": str(root), "traits": list(run.traits), "settings": settings, "students": students,
           "overlap": _overlap(run)}
    groups = _group_tests(run, vectors, settings)
    if groups:
        out["by_selection"] = groups
    return out


def _p(x: float) -> str:
    return f"{x:.2g}" if x < 0.01 else f"{x:.3f}"


def _ci(ci: list[float]) -> str:
    return "[" + ", ".join("–" if not math.isfinite(c) else f"{c:+.3f}" for c in ci) + "]"


def specificity_markdown(spec: dict[str, Any], figures: dict[str, str] | None = None) -> list[str]:
    """The report section: one table row per student, then what each number means, the heatmaps, the
    positive control, the subset overlap and behaviour."""
    figures = figures or {}
    K = len(spec["traits"])
    L = ["## Trait specificity", "",
         f"Does a student trained on trait A's subset move along A's own shift, or only along the direction all "
         f"{K} traits share? C[a, b] = Pearson(z_M of the student trained on a, reference r of trait b) over the "
         "held-out pairs; *centred*: the mean over the traits removed from both sides first (only the "
         "trait-specific parts remain). p: one-sided permutation test of the mean diagonal over relabellings of "
         "the traits. κ: specific-to-common gain (regression of z_M(A) on the common part mean_B r(B) and the "
         "specific part r(A) − mean_B r(B); 1 = the specific part moves the student as much as the common one, "
         "0 = only the common part). MDE: the centred gap this test detects at one-sided α = 0.05 with 80 % "
         "power. N_eff: effective number of independent Table-1 cells (from the correlation of the cells' "
         "bootstrap replicates across traits).", "",
         "| student (r) | raw diag / off | raw p | centred diag / off | centred p | centred gap [95% CI] | MDE | "
         "κ [95% CI] | N_eff of K | positive control: centred diag, p |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for s, st in spec["students"].items():
        t, pc = st["test"], st["positive_control"]
        pc_txt = (f"{pc['centred']['diagonal']:+.3f}, p {_p(pc['centred']['permutation']['p'])}"
                  if pc["available"] else "none (no second model)")
        L.append(f"| {s} ({st['ref']}) | {t['raw']['diagonal']:.3f} / {t['raw']['off_diagonal']:.3f} | "
                 f"{_p(t['raw']['permutation']['p'])} | {t['centred']['diagonal']:+.3f} / "
                 f"{t['centred']['off_diagonal']:+.3f} | {_p(t['centred']['permutation']['p'])} | "
                 f"{t['gap_ci']['gap']:+.3f} {_ci(t['gap_ci']['ci'])} | {t['mde']['gap']:.3f} | "
                 f"{t['gain']['kappa']:+.2f} {_ci(t['gain']['kappa_ci'])} | {st['cells']['n_eff']:.1f} of "
                 f"{st['cells']['K']} | {pc_txt} |")
    st0 = next(iter(spec["students"].values()))
    perm = st0["test"]["raw"]["permutation"]
    L += ["", f"n = {st0['n']} held-out pairs; permutations: {perm['method']} ({perm['n_permutations']:,}); "
          f"bootstrap: {spec['settings']['n_boot']:,} resamples of the pairs; seed {spec['settings']['seed']}."]
    shared = [s for s, st in spec["students"].items() if st["cells"]["control_shared"]]
    if shared:
        L += ["", "One random-control student serves every trait of " + ", ".join(shared) + ", so the Table-1 "
              "cells share it as well as the held-out pairs; N_eff counts how many independent cells they amount to."]
    for s, st in spec["students"].items():
        L += ["", f"### {s}", ""]
        if s in figures:
            L += [f"![specificity {s}]({figures[s]})", ""]
        pc = st["positive_control"]
        if pc["available"]:
            L.append(f"Positive control ({pc['source']}): raw diagonal {pc['raw']['diagonal']:.3f} vs off "
                     f"{pc['raw']['off_diagonal']:.3f}; centred {pc['centred']['diagonal']:+.3f} vs "
                     f"{pc['centred']['off_diagonal']:+.3f}, p {_p(pc['centred']['permutation']['p'])}; "
                     f"own trait best for {pc['centred']['own_best']} of {pc['K']}.")
        else:
            L.append(f"Positive control: {pc['reason']}.")
        g = st["test"]["gain"]
        L.append(f"Students: own trait best (centred) for {st['test']['centred']['own_best']} of {st['test']['K']}; "
                 f"β_common {g['beta_common']:+.3f} {_ci(g['beta_common_ci'])}, β_specific {g['beta_specific']:+.3f} "
                 f"{_ci(g['beta_specific_ci'])} (in sd of z_M per unit of r).")
        b = st["behaviour"]
        if b["available"]:
            L.append(f"Behaviour (probe probability of trait b's answer for the student trained on a): raw diagonal "
                     f"{b['raw']['diagonal']:.3f} vs off {b['raw']['off_diagonal']:.3f}, p "
                     f"{_p(b['raw']['permutation']['p'])}; centred (each answer's mean over students removed) "
                     f"{b['centred']['diagonal']:+.4f}, p {_p(b['centred']['permutation']['p'])}.")
        else:
            L.append(f"Behaviour: not measured per trait — {b['reason']}.")
    if spec.get("by_selection"):
        L += _groups_markdown(spec["by_selection"])
    o = spec["overlap"]
    L += ["", "### Training subsets", ""]
    if o["available"]:
        L.append(f"Mean pairwise overlap |S_a ∩ S_b| / min(|S_a|, |S_b|) = {o['mean_offdiag_overlap']:.2f}; "
                 f"{o['common_to_all']} pairs are in every trait's subset, {o['union']} in at least one (sizes "
                 f"{min(o['sizes'])}–{max(o['sizes'])}).")
        for form, v in (o.get("forms") or {}).items():
            L.append(f"- `{form}`: mean pairwise overlap {v['mean_offdiag_overlap']:.2f}, common to all "
                     f"{v['common_to_all']}, union {v['union']}.")
    else:
        L.append(f"Subset overlap: not available — {o['reason']}.")
    return L


FORMS = {"others": "contrastive (w_A − mean of the group's other traits' w)", "baseline": "contrastive (w_A − the "
         "baseline prompt's w)", "none": "plain Algorithm 1"}


def _groups_markdown(groups: dict[str, Any]) -> list[str]:
    """The per-selection-form tests and their control comparisons."""
    L = ["", "### By selection form", "",
         "The traits of this run were selected in more than one form; each form's traits are tested on their own "
         "K×K matrix, and their students' level L_T = mean_a Pearson(z_M(a), r(a)) is compared with the level "
         "L_C = mean over a and c of Pearson(z_M(c), r(a)) of the students of the other traits c (controls). "
         "L_C > L_T / 2 means the form's Table-1 statistic is not specific to its traits; the CI is that of "
         "L_C − L_T / 2 over the held-out pairs.", "",
         "| form (traits) | student | centred diag / off | centred p | κ [95% CI] | L_T | L_C (controls) | "
         "L_C / L_T | L_C − L_T/2 [95% CI] | behaviour centred diag, p |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for form, g in groups.items():
        for s, st in g["students"].items():
            t, c, b = st["test"], st["controls"], st["behaviour"]
            btxt = (f"{b['centred']['diagonal']:+.4f}, p {_p(b['centred']['permutation']['p'])}" if b["available"]
                    else "not measured")
            L.append(f"| {FORMS.get(form, form)} ({len(g['traits'])}) | {s} | {t['centred']['diagonal']:+.3f} / "
                     f"{t['centred']['off_diagonal']:+.3f} | {_p(t['centred']['permutation']['p'])} | "
                     f"{t['gain']['kappa']:+.2f} {_ci(t['gain']['kappa_ci'])} | {c['target_level']:.3f} | "
                     f"{c['control_level']:.3f} ({', '.join(c['traits'])}) | {c['ratio']:.2f} | "
                     f"{c['diff_vs_half']:+.3f} {_ci(c['ci'])} | {btxt} |")
    return L


def _provenance(root: Path) -> dict[str, Any]:
    """What the measurement read (content hashes of every JSON under the run's students and selections) and the
    versions of the code that computed it."""
    import importlib.metadata as md

    import scipy

    from lls_common.io import fingerprint

    files = sorted(p for pat in ("**/correlate.json", "**/eval.json", "traits/*/select/summary.json")
                   for p in root.glob(pat) if "stages" not in p.relative_to(root).parts)
    try:
        lls_version = md.version("lls-toolkit")
    except md.PackageNotFoundError:
        lls_version = None
    return {"inputs": {str(p.relative_to(root)): fingerprint(p).get("sha256") for p in files},
            "versions": {"lls-toolkit": lls_version, "numpy": np.__version__, "scipy": scipy.__version__}}


def write_specificity(root: str | Path, out: str | Path | None = None, **settings: Any) -> dict[str, Any]:
    """Compute :func:`run_specificity` and write ``specificity.json`` and ``specificity-<student>.png``
    (heatmaps: raw, centred and the positive control's centred matrix) under ``out`` (default: the run
    folder). Returns the JSON with ``"files"`` (paths relative to ``out``)."""
    from empirical.report.figures import specificity_figure
    from lls_common import figstyle
    from lls_common.io import atomic_write_json

    spec = run_specificity(root, **settings)
    out = Path(out) if out is not None else Path(root)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for s, st in spec["students"].items():
        name = f"specificity-{s}.png"
        figstyle.save(specificity_figure(spec["traits"], s, st), out / name)
        files[s] = name
    spec["files"] = {"json": "specificity.json", "figures": files}
    spec["provenance"] = _provenance(Path(root))
    atomic_write_json(out / "specificity.json", spec)
    return spec
