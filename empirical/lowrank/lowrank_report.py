"""Writes ``report.md`` of a low-rank results folder (``results/lowrank``) from its JSON files (numbers are never
typed by hand).

Thin renderer: tables are built here, the prose (interpretation, limits, commands) is `notes.md`, the statistics
come from the package (`empirical.lowrank.detect_validation`: typed detector-run records, the linear-Gaussian model).
Numbers in the prose are `{{name}}` or `{{name:format}}` fields, filled from the JSON files by `_fields` below
(negative numbers get a typographic minus). `notes.md` is split into parts by lines `<!-- part: NAME -->`:
`detect-intro` and `detect-discussion` go before and after the detect-validation table, `detect-disjoint`
after the disjoint-reference table, `end` after the generated sections.

    python -m empirical.lowrank.lowrank_report [--dir results/lowrank]
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

import numpy as np

from empirical.lowrank.detect_validation import DetectorRun, iter_runs, p_target_first_quadrature, z_for_top1
from empirical.lowrank.lowrank import DetectResult, PairCheckResult

ROOT = Path("results/lowrank")  # the folder read and written; set by main()

TOP1_GOAL = 0.9  # the top-1 hit rate the extrapolation in the detect discussion asks for (a choice, not a result)
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen twenty").split()


def _j(name):
    p = ROOT / name
    return json.loads(p.read_text()) if p.is_file() else None


def _record(cls, name):
    """A typed result record (``cls.from_json``) of a JSON file, or None when the file is missing."""
    d = _j(name)
    return None if d is None else cls.from_json(d)


def _pool_runs(val) -> list:
    """The same-pool runs of detect-validation.json, in file order (RunRecord: .pool, .detector, .run)."""
    return [r for r in iter_runs(val) if r.kind == "pool"]


def _sig2(x: float) -> float:
    """x rounded to 2 significant figures."""
    return float(f"{x:.2g}")


def _words(n: int) -> str:
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _first_sentence(candidate: str) -> str:
    return candidate.split(".")[0]


def _run_fields(v: DetectorRun, alpha: float) -> dict:
    """Summary of one detector run, the keys the prose uses for every run."""
    sizes = [t["subset_size"] for t in v.targets]
    return dict(n=v.n_targets, n_random=v.n_random, top1=v.top1_correct, top1_specific=v.top1_correct_specific,
                rank=v.mean_target_rank, rank_specific=v.mean_target_rank_specific,
                expected_top1=v.expected_top1_correct_specific, mu=v.mean_expected_target_z_specific,
                size_min=min(sizes), size_max=max(sizes),
                n_sig_raw=sum(t["target_p_holm"] < alpha for t in v.targets),
                n_sig_specific=v.n_targets_significant_specific, random_flagged=v.random_any_significant,
                random_flagged_specific=v.random_any_significant_specific,
                random_flagged_ungated=v.random_any_p_specific_holm_below_alpha,
                min_target_p_specific=min(t["target_p_specific_holm"] for t in v.targets))


def _owl_row(pc: PairCheckResult) -> dict:
    """The owl prompt's row of a pair-check result (the prompt of the end-to-end run)."""
    return pc.row("owl")


def _e2e_fields(e2e: dict, pc: PairCheckResult | None) -> dict:
    """Measured transfer of the end-to-end run (results/e2e/run/summary.json) beside the pair-check numbers."""
    corr = {(r["student"], r["arm"], r["ref"]): r for r in e2e["correlations"]}
    F = {}
    for key, (student, arm, ref) in {"same_lls": ("smollm2", "lls", "z_s"), "same_random": ("smollm2", "random", "z_s"),
                                     "cross_lls": ("gemma3", "lls", "z_T"), "cross_random": ("gemma3", "random", "z_T"),
                                     "cross_lls_own": ("gemma3", "lls", "z_s")}.items():
        r = corr[(student, arm, ref)]
        F.update({f"e2e_{key}": r["pearson"], f"e2e_{key}_lo": r["pearson_ci"][0], f"e2e_{key}_hi": r["pearson_ci"][1]})
    for key, (student, ref) in {"same_delta": ("smollm2", "z_s"), "cross_delta": ("gemma3", "z_T")}.items():
        d = e2e["lls_minus_random"][student][ref]["pearson"]
        F.update({f"e2e_{key}": d["diff"], f"e2e_{key}_lo": d["ci"][0], f"e2e_{key}_hi": d["ci"][1],
                  f"e2e_{key}_p": d["p"]})
    tvs = e2e["teacher_vs_student"]["gemma3"]
    F.update(e2e_n=e2e["n_heldout"], e2e_pre=tvs["pearson"], e2e_pre_lo=tvs["pearson_ci"][0],
             e2e_pre_hi=tvs["pearson_ci"][1])
    if pc:
        owl = _owl_row(pc)
        F.update(pc_owl=owl["pearson"], pc_owl_lo=owl["pearson_ci"][0], pc_owl_hi=owl["pearson_ci"][1],
                 pc_n_pairs=pc.n_pairs)
    return F


def _angle_fields(ang: dict, sm: dict | None) -> dict:
    S, P = ang["shape"]
    sp = {slug: _j(f"spectrum-{slug}.json") for slug in ang["slopes"]}
    fits = [d["raw"] for d in sp.values()] + ([sm["raw"]] if sm else [])
    slugs = list(ang["slopes"])
    rk = str(ang["rank"])
    raw, cen = ang["angles"]["raw"][rk], ang["angles"]["column_centred"][rk]
    F = dict(rows=S, cols=P, rows_requested=ang["rows_requested"], rank=ang["rank"],
             slope_teacher=ang["slopes"][slugs[0]]["raw"], slope_other=ang["slopes"][slugs[1]]["raw"],
             r2_min=min(f["r2"] for f in fits), r2_max=max(f["r2"] for f in fits),
             top1_energy_floor_pct=math.floor(min(f["top1_energy"] for f in fits) * 1000) / 10,
             cos1_raw=raw["cosines"][0], cos1_centred=cen["cosines"][0], mean_cos=raw["mean_cos"],
             mean_cos_baseline=raw["mean_baseline"], overlap=raw["overlap"], overlap_centred=cen["overlap"],
             slope_teacher_centred=ang["slopes"][slugs[0]]["column_centred"],
             slope_other_centred=ang["slopes"][slugs[1]]["column_centred"],
             window_lo=sp[slugs[0]]["raw"]["rank_window"][0], window_hi=sp[slugs[0]]["raw"]["rank_window"][1],
             # leading principal directions whose cosine beats the random baseline's by more than 0.1
             n_above=next((i for i, (c, b) in enumerate(zip(raw["cosines"], raw["baseline"])) if c - b <= 0.1),
                          ang["rank"]),
             matrix_minutes_teacher=sp[slugs[0]]["compute_seconds"] / 60,
             matrix_minutes_other=sp[slugs[1]]["compute_seconds"] / 60)
    if sm:
        F.update(rows_teacher_all=sm["shape"][0], cols_teacher_all=sm["shape"][1], slope_teacher_all=sm["raw"]["slope"])
    return F


def _pc_fields(pc: PairCheckResult, pc_small: PairCheckResult | None) -> dict:
    rows = pc.rows
    lo_ci = [r["pearson_ci"][0] for r in rows]
    F = dict(pc_n=len(rows), pc_top_pct=100 * pc.gamma,
             pc_pearson_min=min(r["pearson"] for r in rows), pc_pearson_max=max(r["pearson"] for r in rows),
             pc_pearson_mean=float(np.mean([r["pearson"] for r in rows])),
             pc_pos_sel_min_pct=100 * min(r["student_positive_on_selected"] for r in rows),
             pc_pos_sel_max_pct=100 * max(r["student_positive_on_selected"] for r in rows),
             # "~N %": the mean over the prompts to the nearest 10 %
             pc_pos_overall_pct_approx=round(100 * float(np.mean([r["student_positive_overall"] for r in rows])), -1),
             pc_specific_min=min(r["pearson_specific"] for r in rows),
             pc_specific_max=max(r["pearson_specific"] for r in rows),
             pc_all_ci_excl0_words=(f"all {_words(len(rows))}" if min(lo_ci) > 0 else
                                    f"{_words(sum(x > 0 for x in lo_ci)) if max(lo_ci) > 0 else 'none'} "
                                    f"of the {_words(len(rows))}"),
             pc_verdicts=" / ".join(sorted({r["verdict"] for r in rows})),
             pc_verdict_ranges=" / ".join(sorted({r.get("verdict_range", "?") for r in rows})),
             pc_owl_verdict=_owl_row(pc)["verdict"], pc_owl_range=_owl_row(pc).get("verdict_range", "?"))
    if pc_small:
        owl = _owl_row(pc_small)
        F.update(pcs_n_pairs=pc_small.n_pairs, pcs_owl=owl["pearson"], pcs_owl_lo=owl["pearson_ci"][0],
                 pcs_owl_hi=owl["pearson_ci"][1], pcs_pearson_min=min(r["pearson"] for r in pc_small.rows),
                 pcs_pearson_max=max(r["pearson"] for r in pc_small.rows))
    return F


def _teacher_other_fields(prefix: str, v: DetectorRun, teacher_z: list, alpha: float) -> dict:
    """The t_ (SmolLM2, built the subsets) or o_ (Gemma) fields of the first pool."""
    n, nr, tg = v.n_targets, v.n_random, v.targets
    sizes = [t["subset_size"] for t in tg]
    # corr_pool(r_a, w_a of the teacher) = E[z_specific] / z(w_a of the teacher on the subset)
    # (the validation's model; the teacher's raw target z stands in for its exact z)
    corr = [t["expected_target_z_specific"] / z for t, z in zip(tg, teacher_z)]
    flagged = [r for r in v.random if r["n_significant"] > 0]

    def _cands(k):
        return f"all {n} candidates" if k == n else ("one candidate" if k == 1 else f"{k} candidates")

    desc = [f"one {'subset ' if i == 0 else ''}with {_cands(r['n_significant'])} at "
            f"{'Holm p = ' if i == 0 else ''}{r['min_p_holm']:#.2g}" for i, r in enumerate(flagged)]
    k_fa = v.random_any_significant
    F = {f"{prefix}_{k}": x for k, x in _run_fields(v, alpha).items()}
    F.update({f"{prefix}_{k}": x for k, x in dict(
        n_words=_words(n), chance_top1=v.chance["top1_correct"], chance_rank=v.chance["mean_target_rank"],
        all_candidates_sig_words=(f"all {_words(n)}" if all(t["n_significant"] == n for t in tg) else
                                  f"{min(t['n_significant'] for t in tg)}–{n}"),
        random_flagged_desc=", ".join(desc),
        # chance of >= k_fa false alarms among nr null subsets, each at level alpha
        random_flagged_binom=sum(math.comb(nr, j) * alpha ** j * (1 - alpha) ** (nr - j) for j in range(k_fa, nr + 1)),
        z_min=min(t["target_z"] for t in tg), z_max=max(t["target_z"] for t in tg),
        beta_min=min(v.loadings_beta), beta_max=max(v.loadings_beta),
        ranks_raw=" ".join(str(t["target_rank_raw"]) for t in tg),
        ranks_specific=" ".join(str(t["target_rank_specific"]) for t in tg),
        same_top=sum(t["top_raw"] == t["top_specific"] for t in tg),
        first_target=tg[0]["target"], first_target_top_raw=tg[0]["top_raw"],
        first_target_top_specific=tg[0]["top_specific"],
        corr_min=min(corr), corr_max=max(corr), size_typical=int(np.median(sizes)),
        size_mean=float(np.mean(sizes))).items()})
    return F


def _val_fields(val: dict, alpha: float) -> dict:
    runs = _pool_runs(val)
    pool, teacher = runs[0].pool, runs[0].detector
    F = dict(alpha=alpha, alpha_pct=100 * alpha, gamma=val["gamma"], n_draws=val["n_draws"], pool=pool,
             validated_pools=", ".join(str(d["pool"]) for d in val["runs"].values() if isinstance(d, dict)),
             skipped_pools=", ".join(k.split("=", 1)[1] for k, d in val["runs"].items() if isinstance(d, str)),
             animal_weight_corr=val["runs"][f"pool={pool}"]["mean_corr_between_animal_weights"],
             animals=", ".join(t["target"] for t in runs[0].targets))
    # every (pool, detector) run by name: p<pool><t|o>_<key>, t = the teacher (SmolLM2), o = the other model
    for r in runs:
        F.update({f"p{r.pool}{'t' if r.detector == teacher else 'o'}_{k}": x for k, x in _run_fields(r.run, alpha).items()})
    big = [r for r in runs if r.pool != pool and r.detector == teacher]  # the largest pool, teacher detector: b_
    if big:
        v = big[-1].run
        F.update({f"b_{k}": x for k, x in _run_fields(v, alpha).items()})
        F.update(b_pool=big[-1].pool, b_all_raw_sig="all" if v.all_targets_significant else "not all",
                 b_first_target=v.targets[0]["target"], b_first_target_rank=_ordinal(v.targets[0]["target_rank_specific"]))
    teacher_z = [t["target_z"] for t in runs[0].targets]
    for prefix, r in zip(("t", "o"), runs[:2]):  # the first pool: teacher (built the subsets), then the other model
        F.update(_teacher_other_fields(prefix, r.run, teacher_z, alpha))
    # extrapolation: the expected target z for a TOP1_GOAL top-1 rate; the specific z grows like sqrt(n),
    # so the subsets must grow by (z_goal / mu)^2 (computed from the displayed, rounded numbers)
    z_goal = round(z_for_top1(TOP1_GOAL, F["t_n"]))
    factor = round((z_goal / round(F["t_mu"], 2)) ** 2)
    F.update(top1_goal_pct=100 * TOP1_GOAL, z_goal=z_goal, growth=factor,
             pairs_needed=_sig2(factor * F["t_size_mean"]), pool_needed=_sig2(factor * pool))
    return F


def _disjoint_fields(val: dict, alpha: float) -> dict:
    """d<t|o>_<same|dis>_<key>: the disjoint-reference protocol's runs (teacher t, other model o)."""
    dis = [r for r in iter_runs(val) if r.kind == "disjoint"]
    if not dis:
        return {}
    d = val["disjoint"]
    F = dict(d_pool=d["pool"], d_splits=d["splits"], d_src=d["source_size"], d_ref=d["reference_size"],
             d_splits_words=_words(d["splits"]), d_chance_top1=dis[0].run.chance["top1_correct"])
    # the half-mean offset in null-sd units: sqrt(2 / N_half) over sqrt((1 / n) (N_half - n) / (N_half - 1))
    n_sub, N_half = float(np.mean([t["subset_size"] for t in dis[0].targets])), d["reference_size"]
    F.update(d_size_typical=int(np.median([t["subset_size"] for t in dis[0].targets])),
             d_offset_sd=math.sqrt((2 / N_half) / ((N_half - n_sub) / (n_sub * (N_half - 1)))))
    # the linear-Gaussian expectation with that offset added to every candidate's noise (teacher, same-half runs)
    same_t = next(r for r in dis if r.reference == "same half")
    scale = math.sqrt(1 + F["d_offset_sd"] ** 2)
    F["d_expected_top1_offset"] = sum(p_target_first_quadrature(t["expected_target_z_specific"] / scale, 10)
                                      for t in same_t.targets)
    dis_t = next(r for r in dis if r.reference == "other half" and r.detector == same_t.detector)
    F["d_dis_top1_per_split"] = ", ".join(str(sum(t["top_specific"] == t["target"] for t in dis_t.targets if t["split"] == k))
                                          for k in range(d["splits"]))
    teacher = dis[0].detector
    for r in dis:
        key = "dis" if r.reference == "other half" else "same"
        F.update({f"d{'t' if r.detector == teacher else 'o'}_{key}_{k}": x for k, x in _run_fields(r.run, alpha).items()})
    return F


def _demo_fields(dowl: DetectResult, dran: DetectResult, val: dict | None) -> dict:
    owl, ran = dowl.detection, dran.detection
    n = len(owl.table)
    # the demo subset is the LLS subset of the validation's first target
    target = _pool_runs(val)[0].targets[0]["target"] if val else None
    own = next((r for r in owl.table if target and target in r["candidate"].lower()), None)
    top_o, top_r = owl.table[0], ran.table[0]  # rows are ranked by the specific z
    F = dict(demo_n=dowl.n_suspect,
             demo_sig=f"all {n}" if len(owl.significant) == n else f"{len(owl.significant)} of {n}",
             demo_z_min=min(r["z"] for r in owl.table), demo_z_max=max(r["z"] for r in owl.table),
             demo_top=_first_sentence(owl.top), demo_top_z_specific=top_o["z_specific"],
             demo_top_p_specific=top_o["p_specific_holm"],
             demo_random_n_sig=len(ran.significant), demo_random_top=_first_sentence(ran.top).split()[-1],
             demo_random_top_z_specific=top_r["z_specific"], demo_random_top_p_specific=top_r["p_specific_holm"],
             demo_warnings=len(owl.warnings))
    if own:
        F.update(demo_target_rank=_ordinal(own["rank"]), demo_target_z_specific=own["z_specific"])
    return F


def _fields(ang, sm, pc, val, dowl, dran, e2e=None, pc_small=None) -> dict:
    """Every number the prose of notes.md uses, by name (see notes.md for where each one appears)."""
    F: dict = _e2e_fields(e2e, pc) if e2e else {}
    if ang:
        F.update(_angle_fields(ang, sm))
    if pc:
        F.update(_pc_fields(pc, pc_small))
    if val and dowl:
        alpha = dowl.detection.alpha  # detect_trait's default, used by the CLI demo and the validation
        F.update(_val_fields(val, alpha))
        F.update(_disjoint_fields(val, alpha))
    if dowl and dran:
        F.update(_demo_fields(dowl, dran, val))
    return F


_FIELD = re.compile(r"\{\{(\w+)(?::([^}]*))?\}\}")


def _fill(text: str, F: dict) -> str:
    def sub(m):
        name, spec = m.group(1), m.group(2) or ""
        if name not in F:
            raise KeyError(f"notes.md field {{{{{name}}}}} has no value (its JSON file missing?)")
        x = F[name]
        if x == "":
            raise ValueError(f"notes.md field {{{{{name}}}}} is empty: the JSON no longer fits the prose, update notes.md")
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return format(x, spec).replace("-", "−")
        return format(x, spec)
    return _FIELD.sub(sub, text)


def _notes_parts(F: dict) -> dict:
    """notes.md split at its `<!-- part: NAME -->` lines (text before the first one is a comment), fields filled."""
    chunks = re.split(r"^<!-- part: ([\w-]+) -->\n", (ROOT / "notes.md").read_text(), flags=re.M)
    return {name: _fill(body.strip("\n"), F) for name, body in zip(chunks[1::2], chunks[2::2])}


# ------------------------------------------------------------------------------------------------ sections
def _spectrum_section(ang: dict, sm: dict | None) -> list[str]:
    S, P = ang["shape"]
    L = ["## Spectrum of X_M (log Pr_M[r|s,p])", "",
         f"Rows: the empty system prompt + library prompts (a stratified sample of `empirical/systems/library.txt`); "
         f"columns: {P} HH-RLHF harmless-base test pairs, one random response per single-turn prompt, prompt and "
         f"response 8-64 tokens (paper's bounds), columns selected with SmolLM2's tokenizer, the same texts for both "
         f"models. Both models: **{S} common rows x {P} columns**"
         + (f" (requested {ang['rows_requested']} rows; the CPU budget ran out first, see 'Missing')."
            if S < ang["rows_requested"] else "."), "",
         "| model | X | slope (raw) | window | R² | slope (column-centred) | R² | top-1 energy |",
         "|---|---|---|---|---|---|---|---|"]
    row = lambda name, shape, r, c: (f"| {name} | {shape} | {r['slope']:.3f} | {r['rank_window'][0]}-{r['rank_window'][1]} "  # noqa: E731
                                     f"| {r['r2']:.3f} | {c['slope']:.3f} | {c['r2']:.3f} | {r['top1_energy']:.4f} |")
    for slug in ang["slopes"]:
        sp = _j(f"spectrum-{slug}.json")
        L.append(row(slug, f"{S}x{P}", sp["raw"], sp["column_centred"]))
    if sm and sm["shape"] != [S, P]:
        L.append(row("smollm2-135m-instruct (all its cached rows)", f"{sm['shape'][0]}x{sm['shape'][1]}", sm["raw"],
                     sm["column_centred"]))
    L += ["", "Paper: slope ≈ −0.6 for every model (2000 x 2000). Figures: `spectra.png`, "
          "`spectrum-smollm2/spectrum-smollm2-135m-instruct.png`.", "",
          "## Principal angles between the two models' top-r row subspaces (Fig. 18 view)", "",
          "| variant | r | mean cosine | random-Gaussian baseline | overlap (0 = random, 1 = same) | cosines |",
          "|---|---|---|---|---|---|"]
    for key in ("raw", "column_centred"):
        for r, d in ang["angles"][key].items():
            L.append(f"| {key} | {r} | {d['mean_cos']:.3f} | {d['mean_baseline']:.3f} | {d['overlap']:.2f} | "
                     + ", ".join(f"{x:.2f}" for x in d["cosines"]) + " |")
    return L + ["", "Figure: `angles.png`.", ""]


def _pc_section(pc: PairCheckResult, notes: dict) -> list[str]:
    L = [f"## Pair-check SmolLM2 (teacher) -> Gemma-3-270M (student), {len(pc.rows)} animal prompts", "",
         f"{pc.n_pairs} held-out HH pairs (single-turn, responses truncated to {pc.truncate} teacher tokens). "
         "ρ_{M,s} = margin with s minus margin without s, reference = the same model (lls_theory.margins.margin).", "",
         "| system prompt | Pearson [95% CI] | Spearman | prompt-specific Pearson "
         f"| student ρ>0 on teacher's selected pairs (top {100 * pc.gamma:.0f}% of its positive-weight pairs) "
         "| student ρ>0 overall | verdict |",
         "|---|---|---|---|---|---|---|"]
    for r in pc.rows:
        ci = r["pearson_ci"]
        L.append(f"| {r['system_prompt'].split('.')[0]} | {r['pearson']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {r['spearman']:.3f} "
                 f"| {r.get('pearson_specific', float('nan')):.3f} | {r['student_positive_on_selected']:.2f} "
                 f"| {r['student_positive_overall']:.2f} | {r['verdict']} |")
    sub = pc.subspace
    if sub:
        L += ["", f"Subspace overlap of the library matrices (top-{sub['raw']['r']}, X {sub['shape'][0]}x{sub['shape'][1]}): "
              f"mean cosine {sub['raw']['mean_cos']:.3f} vs random {sub['raw']['mean_baseline']:.3f} "
              f"(overlap {sub['raw']['overlap']:.2f}); column-centred overlap {sub['column_centred']['overlap']:.2f}."]
    L += ["", f"Thresholds: {pc.THRESHOLDS}. Figures: `pair-check/pair-check.png` (the correlations ranked, with 95% "
          "CIs), `pair-check/pair-check-shifts.png` (one scatter panel per prompt), `pair-check/pair-check-projection.png` "
          f"(Fig. 19 view: the {2 * len(pc.rows)} margin vectors on their top-2 singular vectors).", ""]
    L += [f"Warning: {w}" for w in pc.warnings] + ([""] if pc.warnings else [])
    if "pair-check-caveat" in notes:
        L += [notes["pair-check-caveat"], ""]
    return L


def _detect_section(val: dict, alpha: float, notes: dict) -> list[str]:
    v0 = _pool_runs(val)[0].run
    L = ["## Detect (inverse LLS): validation", "", notes["detect-intro"], "",
         f"| pool | detector | top-1 correct of {v0.n_targets}, old → new | mean rank of the target, old → new "
         f"(chance {v0.chance['mean_target_rank']:.1f}) | targets Holm-significant, raw | targets significant, specific "
         "| random subsets flagged, raw | random subsets flagged, specific (without the gate) |",
         "|---|---|---|---|---|---|---|---|"]
    for run, d in val["runs"].items():
        pool = run.split("=", 1)[1]
        dets = {"either": d} if isinstance(d, str) else {k[9:]: v for k, v in d.items() if k.startswith("detector=")}
        for name, v in dets.items():
            if isinstance(v, str):  # not cached; skipped
                L.append(f"| {pool} | {name} |" + " — |" * 6)
                continue
            L.append(_validation_row(pool, name, DetectorRun.from_json(v), alpha))
    return L + ["", notes["detect-discussion"], ""]


def _validation_row(first: str, name: str, v: DetectorRun, alpha: float) -> str:
    n, nr = v.n_targets, v.n_random
    n_sig = sum(t["target_p_holm"] < alpha for t in v.targets)
    return (f"| {first} | {name} | {v.top1_correct} → {v.top1_correct_specific} "
            f"| {v.mean_target_rank:.1f} → {v.mean_target_rank_specific:.1f} | {n_sig}/{n} "
            f"| {v.n_targets_significant_specific}/{n} | {v.random_any_significant}/{nr} "
            f"| {v.random_any_significant_specific}/{nr} ({v.random_any_p_specific_holm_below_alpha}/{nr}) |")


def _disjoint_section(val: dict, alpha: float, notes: dict) -> list[str]:
    dis = [r for r in iter_runs(val) if r.kind == "disjoint"]
    if not dis:
        return []
    d = val["disjoint"]
    L = [f"## Detect with a disjoint reference ({d['source_size']} + {d['reference_size']} split of the "
         f"{d['pool']}-pair pool, {d['splits']} splits)", "",
         f"| null reference | detector | top-1 correct of {dis[0].n_targets}, raw → specific | mean rank of the target, "
         f"raw → specific | targets Holm-significant, raw | targets significant, specific | random subsets flagged, "
         "raw | random subsets flagged, specific (without the gate) |", "|---|---|---|---|---|---|---|---|"]
    for r in dis:
        L.append(_validation_row(r.reference, r.detector, r.run, alpha))
    return L + ["", notes["detect-disjoint"], "", "Figure: `detect-validation.png`.", ""]


def main(argv: list[str] | None = None) -> None:
    global ROOT
    ap = argparse.ArgumentParser(prog="python -m empirical.lowrank.lowrank_report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=ROOT, help="the low-rank results folder (default results/lowrank)")
    ROOT = ap.parse_args(argv).dir
    ang, val = _j("angles.json"), _j("detect-validation.json")
    sm = _j("spectrum-smollm2/spectrum-smollm2-135m-instruct.json")
    pc, pc_small = _record(PairCheckResult, "pair-check/pair-check.json"), _record(PairCheckResult, "pair-check-64/pair-check.json")
    dowl, dran = _record(DetectResult, "detect-owl/detect.json"), _record(DetectResult, "detect-random/detect.json")
    L = ["# Low logit rank on SmolLM2-135M-Instruct and Gemma-3-270M", "",
         "Generated by `python -m empirical.lowrank.lowrank_report` from the JSON files in this folder; commands at the end.",
         ""]
    e2e_file = ROOT.parent / "e2e" / "run" / "summary.json"
    e2e = json.loads(e2e_file.read_text()) if e2e_file.is_file() else None
    notes = _notes_parts(_fields(ang, sm, pc, val, dowl, dran, e2e, pc_small))
    if ang:
        L += _spectrum_section(ang, sm)
    if pc:
        L += _pc_section(pc, notes)
    if val:
        alpha = dowl.detection.alpha  # detect_trait's default, used by the CLI demo and the validation
        L += _detect_section(val, alpha, notes) + _disjoint_section(val, alpha, notes)
    L += ["", notes["end"] + "\n"]
    (ROOT / "report.md").write_text("\n".join(L) + "\n")
    print(f"wrote {ROOT / 'report.md'}")


if __name__ == "__main__":
    main()
