"""Writes results/lowrank/report.md from the committed JSON files (numbers are never typed by hand).

Tables are built here; the prose (interpretation, limits, commands) is `notes.md`. Numbers in the prose are
`{{name}}` or `{{name:format}}` fields, filled from the JSON files by `_fields` below (negative numbers get a
typographic minus). `notes.md` is split into parts by lines `<!-- part: NAME -->`: `detect-intro` and
`detect-discussion` go before and after the detect-validation table, `end` after the generated sections.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
TOP1_GOAL = 0.9  # the top-1 hit rate the extrapolation in the detect discussion asks for (a choice, not a result)
_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
          "seventeen eighteen nineteen twenty").split()


def _j(name):
    p = ROOT / name
    return json.loads(p.read_text()) if p.is_file() else None


def _detectors(val) -> list[tuple[int, str, dict]]:
    """(pool, detector, result) of every detector run in detect-validation.json (skipped runs are strings)."""
    return [(d["pool"], k[9:], v) for d in val["runs"].values() if isinstance(d, dict)
            for k, v in d.items() if k.startswith("detector=") and isinstance(v, dict)]


def _p_first(mu: float, K: int) -> float:
    """P(mu + Z_0 > max(Z_1 .. Z_{K-1})), Z iid N(0, 1) (make_validation.py's model), by quadrature."""
    x = np.linspace(mu - 12.0, mu + 12.0, 24001)
    Phi = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    return float(np.sum(np.exp(-0.5 * (x - mu) ** 2) / math.sqrt(2 * math.pi) * Phi ** (K - 1)) * (x[1] - x[0]))


def _z_for_top1(goal: float, K: int) -> float:
    """The expected target z at which the target ranks first among K with probability ``goal`` (bisection)."""
    lo, hi = 0.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _p_first(mid, K) < goal else (lo, mid)
    return (lo + hi) / 2


def _sig2(x: float) -> float:
    """x rounded to 2 significant figures."""
    return float(f"{x:.2g}")


def _words(n: int) -> str:
    return _WORDS[n] if 0 <= n < len(_WORDS) else str(n)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _first_sentence(candidate: str) -> str:
    return candidate.split(".")[0]


def _run_fields(v: dict, alpha: float) -> dict:
    """Summary of one (pool, detector) run of detect-validation.json, the keys the prose uses for every run."""
    sizes = [t["subset_size"] for t in v["targets"]]
    return dict(n=v["n_targets"], n_random=v["n_random"], top1=v["top1_correct"],
                top1_specific=v["top1_correct_specific"], rank=v["mean_target_rank"],
                rank_specific=v["mean_target_rank_specific"], expected_top1=v["expected_top1_correct_specific"],
                mu=v["mean_expected_target_z_specific"], size_min=min(sizes), size_max=max(sizes),
                n_sig_raw=sum(t["target_p_holm"] < alpha for t in v["targets"]),
                n_sig_specific=v["n_targets_significant_specific"], random_flagged=v["random_any_significant"],
                random_flagged_specific=v["random_any_significant_specific"],
                min_target_p_specific=min(t["target_p_specific_holm"] for t in v["targets"]))


def _owl_row(pc: dict) -> dict:
    """The owl prompt's row of a pair-check result (the prompt of the end-to-end run)."""
    return next(r for r in pc["rows"] if "owl" in r["system_prompt"].lower())


def _e2e_fields(e2e: dict, pc: dict | None) -> dict:
    """Measured transfer of the end-to-end run (results/e2e/run/summary.json) for the pair-check validation."""
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
                 pc_n_pairs=pc["n_pairs"])
    return F


def _fields(ang, sm, pc, val, dowl, dran, e2e=None, pc_small=None) -> dict:
    """Every number the prose of notes.md uses, by name (see notes.md for where each one appears).

    ``pc_small``: the earlier pair-check on fewer held-out pairs (pair-check-64/), for the sample-size caveat."""
    F: dict = _e2e_fields(e2e, pc) if e2e else {}
    if pc_small:
        owl = _owl_row(pc_small)
        F.update(pcs_n_pairs=pc_small["n_pairs"], pcs_owl=owl["pearson"], pcs_owl_lo=owl["pearson_ci"][0],
                 pcs_owl_hi=owl["pearson_ci"][1], pcs_pearson_min=min(r["pearson"] for r in pc_small["rows"]),
                 pcs_pearson_max=max(r["pearson"] for r in pc_small["rows"]))
    if ang:
        S, P = ang["shape"]
        sp = {slug: _j(f"spectrum-{slug}.json") for slug in ang["slopes"]}
        fits = [d["raw"] for d in sp.values()] + ([sm["raw"]] if sm else [])
        slugs = list(ang["slopes"])
        rk = str(ang["rank"])
        F.update(rows=S, cols=P, rows_requested=ang["rows_requested"], rank=ang["rank"],
                 slope_teacher=ang["slopes"][slugs[0]]["raw"], slope_other=ang["slopes"][slugs[1]]["raw"],
                 r2_min=min(f["r2"] for f in fits), r2_max=max(f["r2"] for f in fits),
                 top1_energy_floor_pct=math.floor(min(f["top1_energy"] for f in fits) * 1000) / 10,
                 cos1_raw=ang["angles"]["raw"][rk]["cosines"][0],
                 cos1_centred=ang["angles"]["column_centred"][rk]["cosines"][0],
                 mean_cos=ang["angles"]["raw"][rk]["mean_cos"], mean_cos_baseline=ang["angles"]["raw"][rk]["mean_baseline"],
                 overlap=ang["angles"]["raw"][rk]["overlap"], overlap_centred=ang["angles"]["column_centred"][rk]["overlap"],
                 slope_teacher_centred=ang["slopes"][slugs[0]]["column_centred"],
                 slope_other_centred=ang["slopes"][slugs[1]]["column_centred"],
                 window_lo=sp[slugs[0]]["raw"]["rank_window"][0], window_hi=sp[slugs[0]]["raw"]["rank_window"][1],
                 # leading principal directions whose cosine beats the random baseline's by more than 0.1
                 n_above=next((i for i, (c, b) in enumerate(zip(ang["angles"]["raw"][rk]["cosines"],
                                                                 ang["angles"]["raw"][rk]["baseline"])) if c - b <= 0.1),
                              ang["rank"]),
                 matrix_minutes_teacher=sp[slugs[0]]["compute_seconds"] / 60,
                 matrix_minutes_other=sp[slugs[1]]["compute_seconds"] / 60)
        if sm:
            F.update(rows_teacher_all=sm["shape"][0], cols_teacher_all=sm["shape"][1], slope_teacher_all=sm["raw"]["slope"])
    if pc:
        rows = pc["rows"]
        lo_ci = [r["pearson_ci"][0] for r in rows]
        F.update(pc_n=len(rows), pc_top_pct=100 * pc["gamma"],
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
                 pc_owl_verdict=_owl_row(pc)["verdict"])
    if val and dowl:
        alpha = dowl["alpha"]  # detect_trait's default, used by both the CLI demo and make_validation.py
        dets = _detectors(val)
        pool = dets[0][0]
        F.update(alpha=alpha, alpha_pct=100 * alpha, gamma=val["gamma"], n_draws=val["n_draws"], pool=pool,
                 validated_pools=", ".join(str(d["pool"]) for d in val["runs"].values() if isinstance(d, dict)),
                 skipped_pools=", ".join(k.split("=", 1)[1] for k, d in val["runs"].items() if isinstance(d, str)),
                 animal_weight_corr=val["runs"][f"pool={pool}"]["mean_corr_between_animal_weights"],
                 animals=", ".join(t["target"] for t in dets[0][2]["targets"]))
        # every (pool, detector) run by name: p<pool><t|o>_<key>, t = the teacher (SmolLM2), o = the other model
        for p_, det, v in dets:
            F.update({f"p{p_}{'t' if det == dets[0][1] else 'o'}_{k}": x for k, x in _run_fields(v, alpha).items()})
        # the largest pool with the teacher as detector (make_validation.py --compute): the "b_" fields
        big = [(p2, v) for p2, det, v in dets if p2 != pool and det == dets[0][1]]
        if big:
            p2, v = big[-1]
            F.update({f"b_{k}": x for k, x in _run_fields(v, alpha).items()})
            F.update(b_pool=p2, b_all_raw_sig="all" if v["all_targets_significant"] else "not all",
                     b_first_target=v["targets"][0]["target"],
                     b_first_target_rank=_ordinal(v["targets"][0]["target_rank_specific"]))
        # the first detector is the teacher that built the subsets (make_validation.py), the second the other model
        teacher_z = [t["target_z"] for t in dets[0][2]["targets"]]
        for prefix, (_, _, v) in zip(("t", "o"), dets[:2]):
            n, nr, tg = v["n_targets"], v["n_random"], v["targets"]
            sizes = [t["subset_size"] for t in tg]
            # corr_pool(r_a, w_a of the teacher) = E[z_specific] / z(w_a of the teacher on the subset)
            # (make_validation.py's model; the teacher's raw target z stands in for its exact z)
            corr = [t["expected_target_z_specific"] / z for t, z in zip(tg, teacher_z)]
            flagged = [r for r in v["random"] if r["n_significant"] > 0]

            def _cands(k, n=n):
                return f"all {n} candidates" if k == n else ("one candidate" if k == 1 else f"{k} candidates")

            desc = [f"one {'subset ' if i == 0 else ''}with {_cands(r['n_significant'])} at "
                    f"{'Holm p = ' if i == 0 else ''}{r['min_p_holm']:#.2g}" for i, r in enumerate(flagged)]
            k_fa = v["random_any_significant"]
            F.update({f"{prefix}_{k}": x for k, x in _run_fields(v, alpha).items()})
            F.update({f"{prefix}_{k}": x for k, x in dict(
                n_words=_words(n), chance_top1=v["chance"]["top1_correct"], chance_rank=v["chance"]["mean_target_rank"],
                all_candidates_sig_words=(f"all {_words(n)}"
                                          if all(t["n_significant"] == n for t in tg) else
                                          f"{min(t['n_significant'] for t in tg)}–{n}"),
                random_flagged_ungated=v["random_any_p_specific_holm_below_alpha"],
                random_flagged_desc=", ".join(desc),
                # chance of >= k_fa false alarms among nr null subsets, each at level alpha
                random_flagged_binom=sum(math.comb(nr, j) * alpha ** j * (1 - alpha) ** (nr - j)
                                         for j in range(k_fa, nr + 1)),
                z_min=min(t["target_z"] for t in tg), z_max=max(t["target_z"] for t in tg),
                beta_min=min(v["loadings_beta"]), beta_max=max(v["loadings_beta"]),
                ranks_raw=" ".join(str(t["target_rank_raw"]) for t in tg),
                ranks_specific=" ".join(str(t["target_rank_specific"]) for t in tg),
                same_top=sum(t["top_raw"] == t["top_specific"] for t in tg),
                first_target=tg[0]["target"], first_target_top_raw=tg[0]["top_raw"],
                first_target_top_specific=tg[0]["top_specific"],
                corr_min=min(corr), corr_max=max(corr), size_typical=int(np.median(sizes)),
                size_mean=float(np.mean(sizes))).items()})
        # extrapolation: the expected target z for a TOP1_GOAL top-1 rate; the specific z grows like sqrt(n),
        # so the subsets must grow by (z_goal / mu)^2 (computed from the displayed, rounded numbers)
        z_goal = round(_z_for_top1(TOP1_GOAL, F["t_n"]))
        factor = round((z_goal / round(F["t_mu"], 2)) ** 2)
        F.update(top1_goal_pct=100 * TOP1_GOAL, z_goal=z_goal, growth=factor,
                 pairs_needed=_sig2(factor * F["t_size_mean"]), pool_needed=_sig2(factor * pool))
    if dowl and dran:
        n = len(dowl["table"])
        # the demo subset is the LLS subset of the validation's first target (make_validation.py)
        target = _detectors(val)[0][2]["targets"][0]["target"] if val else None
        own = next((r for r in dowl["table"] if target and target in r["candidate"].lower()), None)
        top_o, top_r = dowl["table"][0], dran["table"][0]  # rows are ranked by the specific z
        F.update(demo_n=dowl["n_suspect"],
                 demo_sig=f"all {n}" if len(dowl["significant"]) == n else f"{len(dowl['significant'])} of {n}",
                 demo_z_min=min(r["z"] for r in dowl["table"]), demo_z_max=max(r["z"] for r in dowl["table"]),
                 demo_top=_first_sentence(dowl["top"]), demo_top_z_specific=top_o["z_specific"],
                 demo_top_p_specific=top_o["p_specific_holm"],
                 demo_random_n_sig=len(dran["significant"]), demo_random_top=_first_sentence(dran["top"]).split()[-1],
                 demo_random_top_z_specific=top_r["z_specific"], demo_random_top_p_specific=top_r["p_specific_holm"])
        if own:
            F.update(demo_target_rank=_ordinal(own["rank"]), demo_target_z_specific=own["z_specific"])
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


def main() -> None:
    ang, pc, val = _j("angles.json"), _j("pair-check/pair-check.json"), _j("detect-validation.json")
    sm = _j("spectrum-smollm2/spectrum-smollm2-135m-instruct.json")
    dowl, dran = _j("detect-owl/detect.json"), _j("detect-random/detect.json")
    L = ["# Low logit rank on SmolLM2-135M-Instruct and Gemma-3-270M (issue 7)", "",
         "Generated by `results/lowrank/make_report.py` from the JSON files in this folder; commands at the end.", ""]
    if ang:
        S, P = ang["shape"]
        L += ["## Spectrum of X_M (log Pr_M[r|s,p])", "",
              f"Rows: the empty system prompt + library prompts (a stratified sample of `empirical/systems/library.txt`); "
              f"columns: {P} HH-RLHF harmless-base test pairs, one random response per single-turn prompt, prompt and "
              f"response 8-64 tokens (paper's bounds), columns selected with SmolLM2's tokenizer, the same texts for both "
              f"models. Both models: **{S} common rows x {P} columns**"
              + (f" (requested {ang['rows_requested']} rows; the CPU budget ran out first, see 'Missing')."
                 if S < ang["rows_requested"] else "."), "",
              "| model | X | slope (raw) | window | R² | slope (column-centred) | R² | top-1 energy |",
              "|---|---|---|---|---|---|---|---|"]
        for slug in ang["slopes"]:
            sp = _j(f"spectrum-{slug}.json")
            r, c = sp["raw"], sp["column_centred"]
            L.append(f"| {slug} | {S}x{P} | {r['slope']:.3f} | {r['rank_window'][0]}-{r['rank_window'][1]} | {r['r2']:.3f} "
                     f"| {c['slope']:.3f} | {c['r2']:.3f} | {r['top1_energy']:.4f} |")
        if sm and sm["shape"] != [S, P]:
            r, c = sm["raw"], sm["column_centred"]
            L.append(f"| smollm2-135m-instruct (all its cached rows) | {sm['shape'][0]}x{sm['shape'][1]} | {r['slope']:.3f} "
                     f"| {r['rank_window'][0]}-{r['rank_window'][1]} | {r['r2']:.3f} | {c['slope']:.3f} | {c['r2']:.3f} "
                     f"| {r['top1_energy']:.4f} |")
        L += ["", "Paper: slope ≈ −0.6 for every model (2000 x 2000). Figures: `spectra.png`, "
              "`spectrum-smollm2/spectrum-smollm2-135m-instruct.png`.", "",
              "## Principal angles between the two models' top-r row subspaces (Fig. 18 view)", "",
              "| variant | r | mean cosine | random-Gaussian baseline | overlap (0 = random, 1 = same) | cosines |",
              "|---|---|---|---|---|---|"]
        for key in ("raw", "column_centred"):
            for r, d in ang["angles"][key].items():
                L.append(f"| {key} | {r} | {d['mean_cos']:.3f} | {d['mean_baseline']:.3f} | {d['overlap']:.2f} | "
                         + ", ".join(f"{x:.2f}" for x in d["cosines"]) + " |")
        L += ["", "Figure: `angles.png`.", ""]
    if pc:
        L += [f"## Pair-check SmolLM2 (teacher) -> Gemma-3-270M (student), {len(pc['rows'])} animal prompts", "",
              f"{pc['n_pairs']} held-out HH pairs (single-turn, responses truncated to {pc['truncate']} teacher tokens). "
              "ρ_{M,s} = margin with s minus margin without s, reference = the same model (lls_theory.margins.margin).", "",
              "| system prompt | Pearson [95% CI] | Spearman | prompt-specific Pearson "
              f"| student ρ>0 on teacher's top-{100 * pc['gamma']:.0f}% | student ρ>0 overall | verdict |",
              "|---|---|---|---|---|---|---|"]
        for r in pc["rows"]:
            ci = r["pearson_ci"]
            L.append(f"| {r['system_prompt'].split('.')[0]} | {r['pearson']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {r['spearman']:.3f} "
                     f"| {r.get('pearson_specific', float('nan')):.3f} | {r['student_positive_on_selected']:.2f} "
                     f"| {r['student_positive_overall']:.2f} | {r['verdict']} |")
        sub = pc.get("subspace")
        if sub:
            L += ["", f"Subspace overlap of the library matrices (top-{sub['raw']['r']}, X {sub['shape'][0]}x{sub['shape'][1]}): "
                  f"mean cosine {sub['raw']['mean_cos']:.3f} vs random {sub['raw']['mean_baseline']:.3f} "
                  f"(overlap {sub['raw']['overlap']:.2f}); column-centred overlap {sub['column_centred']['overlap']:.2f}."]
        L += ["", f"Thresholds: {pc['thresholds']}. Figure: `pair-check/pair-check.png` (scatter, and the Fig. 19 view: "
              f"the {2 * len(pc['rows'])} margin vectors on their top-2 singular vectors).", ""]
    e2e_file = ROOT.parent / "e2e" / "run" / "summary.json"
    e2e = json.loads(e2e_file.read_text()) if e2e_file.is_file() else None
    notes = _notes_parts(_fields(ang, sm, pc, val, dowl, dran, e2e, _j("pair-check-64/pair-check.json")))
    if val:
        v0 = _detectors(val)[0][2]
        L += ["## Detect (inverse LLS): validation", "", notes["detect-intro"], "",
              f"| pool | detector | top-1 correct of {v0['n_targets']}, old → new | mean rank of the target, old → new "
              f"(chance {v0['chance']['mean_target_rank']:.1f}) | targets Holm-significant, raw | targets significant, specific "
              "| random subsets flagged, raw | random subsets flagged, specific (without the gate) |",
              "|---|---|---|---|---|---|---|---|"]
        alpha = dowl["alpha"]  # detect_trait's default, used by both the CLI demo and make_validation.py
        for run, d in val["runs"].items():
            pool = run.split("=", 1)[1]
            dets = {"either": d} if isinstance(d, str) else {k[9:]: v for k, v in d.items() if k.startswith("detector=")}
            for name, v in dets.items():
                if isinstance(v, str):  # not cached; skipped
                    L.append(f"| {pool} | {name} |" + " — |" * 6)
                    continue
                n, nr = v["n_targets"], v["n_random"]
                n_sig = sum(t["target_p_holm"] < alpha for t in v["targets"])
                L.append(f"| {pool} | {name} | {v['top1_correct']} → {v['top1_correct_specific']} "
                         f"| {v['mean_target_rank']:.1f} → {v['mean_target_rank_specific']:.1f} | {n_sig}/{n} "
                         f"| {v['n_targets_significant_specific']}/{n} | {v['random_any_significant']}/{nr} "
                         f"| {v['random_any_significant_specific']}/{nr} ({v['random_any_p_specific_holm_below_alpha']}/{nr}) |")
        L += ["", notes["detect-discussion"], ""]
    L += ["", notes["end"] + "\n"]
    (ROOT / "report.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
