"""``lls spectrum | angles | pair-check | detect``: low logit rank on real models (paper's Appendix C.1).

Cheap to import: torch, transformers and the model code are imported inside the handlers.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------------- inputs

DEFAULT_PROMPT_TOKENS = (8, 64)
DEFAULT_RESPONSE_TOKENS = (8, 64)


def model_slug(spec: str) -> str:
    """A folder-safe name for a model spec."""
    base = Path(spec).name if ("/" in spec or spec.endswith(".gguf")) else spec
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in base) or "model"


def load_data(path: str, skip_bad: bool) -> list[Any]:
    """Preference pairs from ``path`` through :func:`empirical.data.load_pairs` (LLSError on bad input)."""
    from empirical import data
    from lls_common.errors import LLSError

    if not Path(path).exists():
        raise LLSError(f"--data {path}: file not found")
    try:
        pairs, _ = data.load_pairs(path, skip_bad=skip_bad)
    except ValueError as exc:
        raise LLSError(f"{exc} (use --skip-bad to skip bad records)") from None
    if not pairs:
        raise LLSError(f"--data {path}: no usable preference pairs")
    return pairs


@dataclass
class MatrixInputs:
    systems: list[Any]  # empirical.systems.SystemPrompt
    columns: list[Any]  # empirical.logprob_matrix.Column


def library_inputs(pairs: list[Any], tok: Any, *, n_systems: int | None, n_pairs: int, systems_file: str | None,
                   seed: int, prompt_tokens=DEFAULT_PROMPT_TOKENS, response_tokens=DEFAULT_RESPONSE_TOKENS
                   ) -> MatrixInputs:
    """Rows: the empty prompt + a seeded, category-stratified sample of the library; columns: one random
    response per single-turn prompt within the token bounds (``tok`` = the first model's tokenizer)."""
    from empirical.logprob_matrix import select_columns
    from empirical.systems import load_systems, select_systems
    from lls_common.errors import LLSError

    try:
        systems = select_systems(load_systems(systems_file), n_systems, seed=seed)
        cols = select_columns(pairs, tok, n_pairs, prompt_tokens=prompt_tokens, response_tokens=response_tokens,
                              seed=seed)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    return MatrixInputs(systems, cols)


def pair_inputs(pairs: list[Any], tok: Any, *, n_pairs: int | None, seed: int, truncate: int | None,
                prompt_tokens=(8, 64), min_response_tokens: int = 8) -> list[Any]:
    """Preference pairs for margin shifts (pair-check, detect): single-turn, prompt within bounds, both raw
    responses >= ``min_response_tokens``, responses truncated to ``truncate`` teacher tokens (paper: 20)."""
    from empirical.logprob_matrix import select_pairs
    from lls_common.errors import LLSError

    try:
        return select_pairs(pairs, tok, n_pairs, prompt_tokens=prompt_tokens,
                            response_tokens=(min_response_tokens, 10**9), truncate=truncate, seed=seed)
    except ValueError as exc:
        raise LLSError(str(exc)) from None


# ----------------------------------------------------------------------------------------------- helpers


def _load_model(spec: str, dtype: str):
    from empirical import models
    from lls_common.errors import LLSError

    try:
        return models.load(spec, dtype=dtype)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise LLSError(f"--model {spec}: {exc}") from None


def _load_tokenizer(spec: str):
    """Tokenizer only (for column selection with another model's tokenizer)."""
    from transformers import AutoTokenizer

    from empirical import models

    if spec in models.REGISTRY:
        return AutoTokenizer.from_pretrained(models.local_dir(spec))
    if spec.endswith(".gguf"):
        path = Path(spec)
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return AutoTokenizer.from_pretrained(spec)


def _matrix(spec: str, args: Any, systems: list, columns: list, model_tok=None):
    """X for one model through the shared row cache (``--cache``, default OUT/cache)."""
    from empirical.logprob_matrix import compute_matrix
    from lls_common.errors import LLSError

    only = bool(getattr(args, "cached_only", False))
    if only:
        model, tok = None, None
    else:
        model, tok = model_tok if model_tok is not None else _load_model(spec, args.dtype)
    try:
        return compute_matrix(model, tok, systems, columns, store=_cache_dir(args), model_name=spec,
                              dtype=args.dtype, batch_tokens=args.batch_tokens, progress=True, only_cached=only)
    except ValueError as exc:
        raise LLSError(f"{spec}: {exc}") from None


def _cache_dir(args: Any) -> Path:
    return Path(args.cache) if args.cache else Path(args.out) / "cache"


def _common_args(p: argparse.ArgumentParser, pairs_default: int) -> None:
    p.add_argument("--data", required=True, help="preference data (JSONL/JSON/Parquet, TRL or HH-RLHF form)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records instead of failing")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model dtype")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="row cache shared by the commands (finished rows are reused; default OUT/cache)")
    p.add_argument("--batch-tokens", type=int, default=2048,
                   help="padded tokens per forward batch (default 2048: on CPU, smaller length-sorted batches waste "
                        "less on padding; raise it on a GPU)")
    p.add_argument("--n-pairs", type=int, default=pairs_default, help=f"columns / pairs (default {pairs_default})")
    p.add_argument("--cached-only", action="store_true",
                   help="compute nothing: use the rows already in --cache (spectrum/angles drop missing rows)")


def _library_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--systems", default=None, metavar="FILE",
                   help="system prompts (category<TAB>text lines, plain lines or JSON list); default: the library")
    p.add_argument("--n-systems", type=int, default=64,
                   help="rows incl. the empty prompt (stratified sample of the file; default 64)")
    p.add_argument("--prompt-tokens", type=int, nargs=2, default=list(DEFAULT_PROMPT_TOKENS), metavar=("LO", "HI"))
    p.add_argument("--response-tokens", type=int, nargs=2, default=list(DEFAULT_RESPONSE_TOKENS),
                   metavar=("LO", "HI"))


def _spectrum_outputs(run: Any, slug: str, spec: str, inp: MatrixInputs, res: Any, window) -> dict:
    from empirical.logprob_matrix import spectrum_fit
    from lls_common.errors import LLSError

    try:
        raw = spectrum_fit(res.X, window)
        cen = spectrum_fit(res.X, window, center=True)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    run.write_json(f"matrix-{slug}.json", {
        "model": spec, "systems": [{"id": s.id, "category": s.category, "text": s.text} for s in inp.systems],
        "columns": [{"id": c.id, "prompt": c.prompt, "response": c.response} for c in inp.columns],
        "X": res.X, "n_tokens": res.n_tokens, "prefix_tokens": res.prefix_tokens, "row_seconds": res.seconds})
    out = {"model": spec, "shape": list(res.X.shape), "raw": raw, "column_centred": cen,
           "compute_seconds": float(sum(res.seconds)), "rows_from_cache": int(sum(res.cached))}
    run.write_json(f"spectrum-{slug}.json", out)
    return out


def _plot_spectra(run: Any, name: str, fits: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "raw", "X"), (axes[1], "column_centred", "X - column means")):
        for label, f in fits.items():
            d = f[key]
            s = np.asarray(d["singular_values"])
            k = np.arange(1, s.size + 1)
            keep = s > 1e-9 * s[0]  # centring removes one dimension: drop its round-off singular value
            s, k = s[keep], k[keep]
            (line,) = ax.loglog(k, s, "o", ms=3, label=f"{label}: slope {d['slope']:.2f} (ranks {d['rank_window'][0]}-"
                                                        f"{d['rank_window'][1]}, R² {d['r2']:.2f})")
            lo, hi = d["rank_window"]
            kk = np.arange(lo, hi + 1)
            ax.loglog(kk, np.exp(d["intercept"]) * kk ** d["slope"], "-", color=line.get_color(), lw=1)
        ax.set_xlabel("rank k")
        ax.set_ylabel("singular value")
        ax.set_title(f"spectrum of {title} (paper: slope ≈ −0.6)")
        ax.legend(fontsize=7)
    run.save_figure(name, fig)


def _keep_rows(inp: MatrixInputs, results: list) -> tuple[MatrixInputs, list]:
    """``--cached-only``: keep the rows that every matrix has in the cache (in order)."""
    import numpy as np

    from empirical.logprob_matrix import MatrixResult
    from lls_common.errors import LLSError

    keep = [i for i in range(len(inp.systems)) if all(r.cached[i] for r in results)]
    if len(keep) < 4:
        raise LLSError(f"--cached-only: only {len(keep)} rows are cached for every model (need >= 4)")
    sub = lambda xs: [xs[i] for i in keep]  # noqa: E731
    out = [MatrixResult(r.X[keep], r.n_tokens[keep], sub(r.prefix_tokens), sub(r.seconds), sub(r.cached))
           for r in results]
    return MatrixInputs(sub(inp.systems), inp.columns), out


# ----------------------------------------------------------------------------------------------- spectrum


def _run_spectrum(args: Any) -> int:
    from lls_common.io import RunDir, emit_summary

    run = RunDir(args.out)
    pairs = load_data(args.data, args.skip_bad)
    model, tok = (None, _load_tokenizer(args.model)) if args.cached_only else _load_model(args.model, args.dtype)
    inp = library_inputs(pairs, tok, n_systems=args.n_systems, n_pairs=args.n_pairs, systems_file=args.systems,
                         seed=args.seed, prompt_tokens=tuple(args.prompt_tokens),
                         response_tokens=tuple(args.response_tokens))
    res = _matrix(args.model, args, [s.text for s in inp.systems], inp.columns, (model, tok))
    if args.cached_only:
        inp, (res,) = _keep_rows(inp, [res])
    slug = model_slug(args.model)
    out = _spectrum_outputs(run, slug, args.model, inp, res, args.rank_window)
    _plot_spectra(run, f"spectrum-{slug}.png", {slug: out})
    summary = {"model": args.model, "shape": out["shape"], "slope": out["raw"]["slope"],
               "rank_window": out["raw"]["rank_window"], "r2": out["raw"]["r2"],
               "slope_column_centred": out["column_centred"]["slope"], "out": str(run.root)}
    emit_summary(summary, args.json, f"{args.model}: X {out['shape'][0]}x{out['shape'][1]}, power-law slope "
                 f"{out['raw']['slope']:.3f} over ranks {out['raw']['rank_window']} (R² {out['raw']['r2']:.3f}); "
                 f"column-centred {out['column_centred']['slope']:.3f}; paper ≈ −0.6. Results in {run.root}")
    return 0


# ----------------------------------------------------------------------------------------------- angles


def _angles_for(XA, XB, ranks: list[int], seed: int) -> dict:
    from empirical.pair_check import subspace_overlap

    out = {}
    for center in (False, True):
        key = "column_centred" if center else "raw"
        out[key] = {str(r): subspace_overlap(XA, XB, r, seed=seed, center=center) for r in ranks}
    return out


def _run_angles(args: Any) -> int:
    import gc

    from lls_common.io import RunDir, LLSError, emit_summary

    if len(args.model) != 2:
        raise LLSError("give exactly two models: --model A --model B")
    if args.rank < 1:
        raise LLSError(f"--rank must be >= 1, got {args.rank}")
    run = RunDir(args.out)
    pairs = load_data(args.data, args.skip_bad)
    tok_a = _load_tokenizer(args.model[0])
    inp = library_inputs(pairs, tok_a, n_systems=args.n_systems, n_pairs=args.n_pairs, systems_file=args.systems,
                         seed=args.seed, prompt_tokens=tuple(args.prompt_tokens),
                         response_tokens=tuple(args.response_tokens))
    texts = [s.text for s in inp.systems]
    results = []
    for spec in args.model:
        results.append(_matrix(spec, args, texts, inp.columns))
        gc.collect()
    n_requested = len(inp.systems)
    if args.cached_only:
        inp, results = _keep_rows(inp, results)
    mats, fits = [], {}
    for spec, res in zip(args.model, results):
        slug = model_slug(spec)
        fits[slug] = _spectrum_outputs(run, slug, spec, inp, res, args.rank_window)
        mats.append(res.X)
    S, P = mats[0].shape
    rmax = min(S, P)
    if args.rank > rmax:
        raise LLSError(f"--rank {args.rank} exceeds min(S, P) = {rmax} (rows x columns {S}x{P})")
    ranks = sorted({r for r in (args.rank, 5, 10, 20) if 1 <= r <= rmax})
    ang = _angles_for(mats[0], mats[1], ranks, args.seed)
    result = {"models": args.model, "shape": [S, P], "rank": args.rank, "angles": ang,
              "slopes": {k: {"raw": v["raw"]["slope"], "column_centred": v["column_centred"]["slope"]}
                         for k, v in fits.items()},
              "columns_selected_with": args.model[0], "rows_requested": n_requested,
              "rows_used": [s.id for s in inp.systems]}
    run.write_json("angles.json", result)
    _plot_spectra(run, "spectra.png", fits)
    _plot_angles(run, "angles.png", ang, args.rank, args.model)
    a = ang["raw"][str(args.rank)]
    c = ang["column_centred"][str(args.rank)]
    summary = {"models": args.model, "shape": [S, P], "rank": args.rank, "mean_cos": a["mean_cos"],
               "mean_baseline": a["mean_baseline"], "overlap": a["overlap"],
               "mean_cos_centred": c["mean_cos"], "overlap_centred": c["overlap"], "slopes": result["slopes"],
               "out": str(run.root)}
    emit_summary(summary, args.json,
                 f"top-{args.rank} row subspaces of {args.model[0]} vs {args.model[1]} (X {S}x{P}): "
                 f"mean cos {a['mean_cos']:.3f} vs random {a['mean_baseline']:.3f} (overlap {a['overlap']:.2f}); "
                 f"column-centred {c['mean_cos']:.3f} vs {c['mean_baseline']:.3f}. Results in {run.root}")
    return 0


def _plot_angles(run: Any, name: str, ang: dict, r: int, models: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("raw", "column_centred")):
        d = ang[key][str(r)]
        k = np.arange(1, len(d["cosines"]) + 1)
        ax.plot(k, d["cosines"], "o-", label=f"{models[0]} vs {models[1]}")
        ax.plot(k, d["baseline"], "s--", color="gray", label="random Gaussian baseline")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("principal angle index")
        ax.set_ylabel("cosine")
        ax.set_title(f"top-{r} row subspaces ({key.replace('_', '-')})")
        ax.legend(fontsize=8)
    run.save_figure(name, fig)


# ----------------------------------------------------------------------------------------------- pair-check


def _pair_matrix(spec: str, args: Any, systems: list, pairs_sel: list, model_tok=None):
    from empirical.logprob_matrix import pair_columns
    from empirical.pair_check import margin_shifts
    from lls_common.errors import LLSError

    res = _matrix(spec, args, [None] + systems, pair_columns(pairs_sel), model_tok)
    try:
        return margin_shifts(res.X, res.n_tokens), res
    except ValueError as exc:
        raise LLSError(str(exc)) from None


def _system_prompt_list(args: Any) -> list[str]:
    from empirical.systems import load_systems
    from lls_common.errors import LLSError

    out = list(args.system_prompt or [])
    if args.system_prompts:
        try:
            out += [s.text for s in load_systems(args.system_prompts, include_empty=False)]
        except ValueError as exc:
            raise LLSError(str(exc)) from None
    if not out:
        raise LLSError("give --system-prompt TEXT (repeatable) or --system-prompts FILE")
    if any(not s.strip() for s in out):
        raise LLSError("empty --system-prompt")
    if len(set(out)) != len(out):
        raise LLSError("duplicate system prompts")
    return out


def _run_pair_check(args: Any) -> int:
    import gc

    import numpy as np

    from empirical.pair_check import margin_projection, pair_check, subspace_overlap
    from lls_common.io import RunDir, LLSError, emit_summary

    run = RunDir(args.out)
    systems = _system_prompt_list(args)
    pairs = load_data(args.data, args.skip_bad)
    tok_t = _load_tokenizer(args.teacher)
    sel = pair_inputs(pairs, tok_t, n_pairs=args.n_pairs, seed=args.seed, truncate=args.truncate,
                      prompt_tokens=tuple(args.prompt_tokens))
    shifts, libs = {}, {}
    lib_inp = None
    if args.library_systems:
        lib_inp = library_inputs(pairs, tok_t, n_systems=args.library_systems, n_pairs=args.library_pairs,
                                 systems_file=None, seed=args.seed)
    lib_res = []
    for spec in (args.teacher, args.student):
        mt = None if args.cached_only else _load_model(spec, args.dtype)
        shifts[spec], _ = _pair_matrix(spec, args, systems, sel, mt)
        if lib_inp is not None:
            lib_res.append(_matrix(spec, args, [s.text for s in lib_inp.systems], lib_inp.columns, mt))
        del mt
        gc.collect()
    if lib_inp is not None:
        if args.cached_only:
            lib_inp, lib_res = _keep_rows(lib_inp, lib_res)
        libs = {args.teacher: lib_res[0].X, args.student: lib_res[1].X}
    try:
        chk = pair_check(shifts[args.teacher], shifts[args.student], systems, gamma=args.gamma, seed=args.seed)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    sub = None
    if lib_inp is not None:
        r = min(args.rank, *libs[args.teacher].shape)
        sub = {"raw": subspace_overlap(libs[args.teacher], libs[args.student], r, seed=args.seed),
               "column_centred": subspace_overlap(libs[args.teacher], libs[args.student], r, seed=args.seed,
                                                  center=True),
               "shape": list(libs[args.teacher].shape)}
    vecs = np.concatenate([shifts[args.teacher].rho, shifts[args.student].rho])
    proj = margin_projection(vecs) if vecs.shape[0] >= 2 else None
    result = {"teacher": args.teacher, "student": args.student, "n_pairs": len(sel), "truncate": args.truncate,
              "gamma": args.gamma, "thresholds": "Pearson of margin shifts: >=0.5 strong, >=0.2 moderate, "
              ">=0.05 weak, else none; CI containing 0 -> none (heuristic, from the paper's Table 1)",
              "rows": chk.rows, "subspace": sub,
              "rho_teacher": shifts[args.teacher].rho, "rho_student": shifts[args.student].rho,
              "projection": proj, "pair_ids": [p.id for p in sel]}
    run.write_json("pair-check.json", result)
    _plot_pair_check(run, result, systems)
    lines = [f"pair-check {args.teacher} -> {args.student} on {len(sel)} held-out pairs",
             f"{'system prompt':40s} {'pearson':>8s} {'95% CI':>17s} {'spearman':>8s} {'specific':>8s} "
             f"{'S>0|sel':>8s} {'S>0|all':>8s}  verdict"]
    for row in chk.rows:
        ci = row.get("pearson_ci") or (float("nan"), float("nan"))
        lines.append(f"{row['system_prompt'][:40]:40s} {row['pearson']:8.3f} [{ci[0]:6.3f}, {ci[1]:6.3f}] "
                     f"{row['spearman']:8.3f} {row.get('pearson_specific', float('nan')):8.3f} "
                     f"{row['student_positive_on_selected']:8.2f} {row['student_positive_overall']:8.2f}  "
                     f"{row['verdict']}")
    lines.append("specific = Pearson of (shift - mean shift over the given prompts); S>0|sel = share of the "
                 f"teacher's top-{args.gamma:g} selection where the student's own shift is positive")
    if sub is not None:
        lines.append(f"subspace overlap (top-{sub['raw']['r']}, X {sub['shape'][0]}x{sub['shape'][1]}): mean cos "
                     f"{sub['raw']['mean_cos']:.3f} vs random {sub['raw']['mean_baseline']:.3f} -> overlap "
                     f"{sub['raw']['overlap']:.2f}; column-centred {sub['column_centred']['overlap']:.2f}")
    summary = {"teacher": args.teacher, "student": args.student, "n_pairs": len(sel),
               "rows": [{k: r.get(k) for k in ("system_prompt", "pearson", "spearman", "cosine", "pearson_specific",
                                                "verdict", "student_positive_on_selected",
                                                "student_positive_overall")} for r in chk.rows],
               "subspace_overlap": None if sub is None else sub["raw"]["overlap"], "out": str(run.root)}
    emit_summary(summary, args.json, "\n".join(lines))
    return 0


def _short(text: str) -> str:
    """Short label for a system prompt ("You really love owls. ..." -> "owls.")."""
    words = text.split()
    if text.startswith("You really love ") and len(words) > 3:
        return words[3].rstrip(".")
    return text[:14]


def _plot_pair_check(run: Any, result: dict, systems: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    K = len(systems)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    rt, rs = np.asarray(result["rho_teacher"]), np.asarray(result["rho_student"])
    for k in range(K):
        axes[0].scatter(rt[k], rs[k], s=8, alpha=0.6,
                        label=f"{systems[k][:30]}… r={result['rows'][k]['pearson']:.2f}")
    axes[0].axhline(0, color="gray", lw=0.5)
    axes[0].axvline(0, color="gray", lw=0.5)
    axes[0].set_xlabel(f"teacher ρ_T,s ({result['teacher']})")
    axes[0].set_ylabel(f"student ρ_S,s ({result['student']})")
    axes[0].set_title("system-prompt margin shifts on held-out pairs")
    if K <= 10:
        axes[0].legend(fontsize=6)
    proj = result["projection"]
    if proj is not None:
        proj = np.asarray(proj)
        axes[1].scatter(proj[:K, 0], proj[:K, 1], marker="o", label="teacher")
        axes[1].scatter(proj[K:, 0], proj[K:, 1], marker="^", label="student")
        for k in range(K):
            axes[1].plot([proj[k, 0], proj[K + k, 0]], [proj[k, 1], proj[K + k, 1]], "-", color="gray", lw=0.6)
            axes[1].annotate(_short(systems[k]), proj[k], fontsize=7)
            axes[1].annotate(_short(systems[k]), proj[K + k], fontsize=7)
        axes[1].set_title("margin vectors on their top-2 singular vectors (Fig. 19 view)")
        axes[1].legend(fontsize=8)
    run.save_figure("pair-check.png", fig)


# ----------------------------------------------------------------------------------------------- detect


def _run_detect(args: Any) -> int:
    import numpy as np

    from empirical import data
    from empirical.detect import detect_trait
    from empirical.logprob_matrix import pair_columns
    from empirical.pair_check import margin_projection, margin_shifts
    from empirical.systems import load_systems
    from lls_common.io import RunDir, LLSError, emit_summary

    run = RunDir(args.out)
    try:
        cands = load_systems(args.candidates, include_empty=False)
    except ValueError as exc:
        raise LLSError(f"--candidates: {exc}") from None
    if len(cands) < 1:
        raise LLSError("--candidates: no system prompts")
    suspect = load_data(args.data, args.skip_bad)
    ref_all = load_data(args.reference, args.skip_bad)
    model, tok = (None, _load_tokenizer(args.model)) if args.cached_only else _load_model(args.model, args.dtype)
    ref = pair_inputs(ref_all, tok, n_pairs=args.n_pairs, seed=args.seed, truncate=args.truncate,
                      prompt_tokens=tuple(args.prompt_tokens))
    if len(suspect) > len(ref):
        raise LLSError(f"suspect dataset ({len(suspect)} pairs) is larger than the reference ({len(ref)})")
    # suspect pairs that are (text-identical) reference pairs reuse the reference columns
    key = lambda p: (tuple((m["role"], m["content"]) for m in p.prompt), p.chosen, p.rejected)  # noqa: E731
    ref_index = {key(p): i for i, p in enumerate(ref)}
    extra = [p for p in suspect if key(p) not in ref_index]
    ids = {p.id for p in ref}
    extra = [data.PrefPair(p.id if p.id not in ids else f"suspect:{p.id}", p.prompt, p.chosen, p.rejected, p.where)
             for p in extra]
    allp = ref + extra
    all_index = {key(p): i for i, p in enumerate(allp)}
    texts = [c.text for c in cands]
    res = _matrix(args.model, args, [None] + texts, pair_columns(allp), (model, tok))
    try:
        ms = margin_shifts(res.X, res.n_tokens)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    s_idx = np.array([all_index[key(p)] for p in suspect])
    w_ref, w_sus = ms.weights[:, : len(ref)], ms.weights[:, s_idx]
    names = [c.text for c in cands]
    try:
        det = detect_trait(w_sus, w_ref, names, n_draws=args.n_draws, alpha=args.alpha, seed=args.seed)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    proj = margin_projection(ms.rho[:, : len(ref)]) if len(cands) >= 2 else None
    result = {"model": args.model, "data": args.data, "reference": args.reference, "n_suspect": len(suspect),
              "n_reference": len(ref), "n_suspect_outside_reference": len(extra), "n_draws": args.n_draws,
              "alpha": args.alpha, "correction": "Holm",
              "statistics": {"raw": "z of the mean w_c/N_i (significant: is a trait planted at all?)",
                             "specific": "z of the mean common-factor residual w_c - beta_c m, m = mean over the "
                                         "candidates (rank, top, significant_specific: which one?)"},
              "table": det.table, "top": det.top, "top_raw": det.top_raw, "significant": det.significant,
              "significant_specific": det.significant_specific, "candidate_projection": proj}
    run.write_json("detect.json", result)
    _plot_detect(run, det, proj, names)
    K = len(names)
    lines = [f"detect on {args.data}: {len(suspect)} pairs vs {args.n_draws} random same-size subsets of "
             f"{len(ref)} reference pairs ({args.model}); Holm over {K} candidates",
             f"{'rank':>4s} {'z_spec':>7s} {'p_holm':>8s} {'z_raw':>7s} {'p_holm':>8s} sig  candidate"]
    for r in det.table:
        zs = "" if r["z_specific"] is None else f"{r['z_specific']:7.2f} {r['p_specific_holm']:8.4f}"
        lines.append(f"{r['rank']:4d} {zs:>16s} {r['z']:7.2f} {r['p_holm']:8.4f} "
                     f"{'yes' if r['significant'] else ' no'}  {r['candidate'][:70]}")
    first = det.table[0]
    if det.significant:
        lines.append(f"trait planted (raw test): {len(det.significant)} of {K} candidates significant")
    else:
        lines.append("trait planted (raw test): no candidate significant -- no evidence of a planted trait; the "
                     "ranking below is not meaningful")
    if first["z_specific"] is None:
        lines.append(f"first (raw z; one candidate, nothing to contrast): {first['candidate'][:70]}")
    else:
        verdict = ("significant against the other candidates" if first["significant_specific"] else
                   "not claimed: the raw test detected no trait" if first["p_specific_holm"] < args.alpha else
                   "not significant against the other candidates")
        lines.append(f"first by the candidate-specific statistic: {first['candidate'][:70]} (z_spec "
                     f"{first['z_specific']:.2f}, Holm p {first['p_specific_holm']:.4f}, {verdict}); first by raw z: "
                     f"{det.top_raw[:70]}")
    summary = {"top": det.top, "top_raw": det.top_raw, "significant": det.significant,
               "significant_specific": det.significant_specific,
               "table": [{k: r[k] for k in ("rank", "candidate", "z_specific", "p_specific_mc", "p_specific_holm",
                                            "significant_specific", "rank_raw", "z", "p_mc", "p_holm",
                                            "significant")} for r in det.table], "out": str(run.root)}
    emit_summary(summary, args.json, "\n".join(lines))
    return 0


def _plot_detect(run: Any, det: Any, proj: Any, names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    t = det.table  # ranking order (specific z)
    y = np.arange(len(t))
    h = 0.4
    axes[0].barh(y - h / 2, [r["z"] for r in t], height=h, label="raw: mean w_c/N_i",
                 color=["tab:red" if r["significant"] else "tab:gray" for r in t])
    axes[0].barh(y + h / 2, [r["z_specific"] or 0.0 for r in t], height=h, label="specific: common factor removed",
                 color=["tab:blue" if r["significant_specific"] else "tab:cyan" for r in t])
    axes[0].set_yticks(y, [r["candidate"][:40] for r in t], fontsize=6)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("z vs random subsets (dark: Holm-significant)")
    axes[0].set_title("inverse LLS: candidates, ranked by the specific z")
    axes[0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    if proj is not None:
        proj = np.asarray(proj)
        axes[1].scatter(proj[:, 0], proj[:, 1])
        for k, n in enumerate(names):
            axes[1].annotate(_short(n), proj[k], fontsize=6)
        axes[1].set_title("candidate margin vectors, top-2 singular vectors")
    run.save_figure("detect.png", fig)


# ----------------------------------------------------------------------------------------------- register


def register(sub: Any) -> None:
    from lls_cli.args import add_output_args

    p = sub.add_parser("spectrum", help="singular-value spectrum of a log-prob matrix X_M (power-law slope)",
                       description="X_M[s, (p, r)] = log Pr_M[r|s,p] over a system-prompt library x prompt-response "
                                   "pairs; singular values on log-log axes and the fitted power-law slope.")
    p.add_argument("--model", required=True, help="registry name, local folder, file.gguf or hub id")
    _common_args(p, 256)
    _library_args(p)
    p.add_argument("--rank-window", type=int, nargs=2, default=None, metavar=("LO", "HI"),
                   help="1-based inclusive ranks for the fit (default 2 .. 0.75 min(S, P))")
    add_output_args(p, default_out="lls-spectrum")
    p.set_defaults(func=_run_spectrum)

    p = sub.add_parser("angles", help="principal angles between two models' top-r row subspaces (Fig. 18)",
                       description="Same system prompts (rows) and the same (p, r) texts (columns, selected with "
                                   "the first model's tokenizer) for both models; cosines vs a random baseline.")
    p.add_argument("--model", action="append", required=True, help="give twice: --model A --model B")
    _common_args(p, 256)
    _library_args(p)
    p.add_argument("--rank", type=int, default=10, help="r of the top-r subspaces (default 10)")
    p.add_argument("--rank-window", type=int, nargs=2, default=None, metavar=("LO", "HI"))
    add_output_args(p, default_out="lls-angles")
    p.set_defaults(func=_run_angles)

    p = sub.add_parser("pair-check", help="pre-training estimate of how well an LLS dataset transfers T -> S",
                       description="Correlation of teacher and student system-prompt margin shifts on held-out "
                                   "pairs, selection agreement, and subspace overlap of their X matrices.")
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--system-prompt", action="append", default=None, help="repeatable")
    p.add_argument("--system-prompts", default=None, metavar="FILE", help="more system prompts from a file")
    _common_args(p, 64)
    p.add_argument("--truncate", type=int, default=20, help="response truncation, teacher tokens (default 20)")
    p.add_argument("--prompt-tokens", type=int, nargs=2, default=[8, 64], metavar=("LO", "HI"))
    p.add_argument("--gamma", type=float, default=0.25, help="quantile of the teacher selection (default 0.25)")
    p.add_argument("--library-systems", type=int, default=40,
                   help="rows of the library matrices for the subspace overlap (0 = skip; default 40)")
    p.add_argument("--library-pairs", type=int, default=64, help="columns of the library matrices (default 64)")
    p.add_argument("--rank", type=int, default=10)
    add_output_args(p, default_out="lls-pair-check")
    p.set_defaults(func=_run_pair_check)

    p = sub.add_parser("detect", help="inverse LLS: which candidate system-prompt trait does a dataset carry?",
                       description="For each candidate, the dataset's mean normalised LLS weight (is a trait "
                                   "planted?) and its candidate-specific part, the residual after removing the "
                                   "candidates' common factor (which one? ranks by this), each against random "
                                   "same-size subsets of a reference dataset (z, Monte-Carlo p, Holm correction).")
    p.add_argument("--model", required=True)
    p.add_argument("--candidates", required=True, metavar="FILE", help="candidate system prompts")
    p.add_argument("--reference", required=True, metavar="FILE", help="reference preference data (null)")
    _common_args(p, 256)
    p.add_argument("--truncate", type=int, default=None, help="truncate reference responses (teacher tokens)")
    p.add_argument("--prompt-tokens", type=int, nargs=2, default=[8, 64], metavar=("LO", "HI"))
    p.add_argument("--n-draws", type=int, default=20000)
    p.add_argument("--alpha", type=float, default=0.05)
    add_output_args(p, default_out="lls-detect")
    p.set_defaults(func=_run_detect)
