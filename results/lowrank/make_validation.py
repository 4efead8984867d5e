"""Validation of `lls detect` (and inputs for its CLI demo) from the cached pair matrices.

Pools: the first 64, 256 and 448 HH-RLHF pairs of the committed pair matrices (single-turn, prompt 8-64
tokens, responses >= 8 tokens truncated to 20 SmolLM2 tokens; each pool is the start of the next; rows = no
system prompt + the paper's 10 animals). Gemma-3-270M's rows were computed by `lls pair-check --n-pairs N` on the
same pairs (the commands in report.md); a detector whose rows are missing is skipped and says so.
For each animal a: the LLS subset (Algorithm 1, teacher SmolLM2, gamma) is built from the pool, then
`detect_trait` ranks the 10 candidates with (i) SmolLM2 (the teacher) and (ii) Gemma-3-270M (a model that
did not build the subset). Random subsets of the same size are the negative control.
Both statistics of `detect_trait` are reported: the raw mean-weight z (legacy keys: top1_correct,
mean_target_rank, all_targets_significant, random_any_significant; this was `lls detect`'s ranking before the
candidate-specific statistic) and the common-factor-residual z that `lls detect` now ranks by (`*_specific`).

Run from the repository root after the matrices are cached (``--compute`` computes the teacher's missing
rows first; a pool whose matrix is missing is otherwise skipped and says so):
    python results/lowrank/make_validation.py [--compute]
Writes results/lowrank/detect-validation.json and results/lowrank/subsets/{owl-lls,random}.jsonl.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lls_cli.commands.lowrank import load_data, pair_inputs
from empirical.detect import common_factor_residuals, detect_trait
from empirical.logprob_matrix import compute_matrix, pair_columns
from empirical.pair_check import margin_shifts
from empirical.systems import ANIMALS, animal_prompt
from lls_common.io import atomic_write_json, atomic_write_jsonl
from lls_theory.selection import select_top

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "cache"
DATA = "/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz"
TEACHER, OTHER = "smollm2-135m-instruct", "gemma3-270m"
GAMMA, N_RANDOM, N_DRAWS = 0.25, 20, 20000
POOLS = (64, 256, 448)  # pool sizes validated (448 of the 476 pairs within the bounds); the larger pools need
# `--compute` once (SmolLM2 only, about 10 min each on 2 cores)
DEMO_POOL = 64  # the pool of the committed CLI demo subsets (detect-owl/, detect-random/: --n-pairs 64)


def _weights(spec: str, pool: list, systems: list, compute: bool = False) -> np.ndarray | None:
    """Length-normalised LLS weights (10, pool) of ``spec`` from the row cache; ``compute`` fills missing rows."""
    res = compute_matrix(None, None, systems, pair_columns(pool), store=CACHE, model_name=spec, only_cached=True)
    if not all(res.cached):
        if not compute:
            return None
        from empirical import models

        model, tok = models.load(spec)
        res = compute_matrix(model, tok, systems, pair_columns(pool), store=CACHE, model_name=spec, progress=True)
    return margin_shifts(res.X, res.n_tokens).weights


def _z_exact(x: np.ndarray, idx: np.ndarray) -> float:
    """z of mean(x[idx]) against uniform same-size subsets of x (exact mean and sd, finite population)."""
    n, N = idx.size, x.size
    return float((x[idx].mean() - x.mean()) / (x.std(ddof=1) / np.sqrt(n) * np.sqrt((N - n) / (N - 1))))


def _p_first(mu: float, K: int, rng: np.random.Generator, m: int = 100_000) -> float:
    """P(mu + Z_0 > max(Z_1 .. Z_{K-1})), Z iid N(0, 1): chance the target ranks first (approximation)."""
    Z = rng.standard_normal((m, K))
    return float(np.mean(mu + Z[:, 0] > Z[:, 1:].max(axis=1)))


def _validate(t: np.ndarray, w: np.ndarray, seed0: int) -> tuple[dict, list]:
    """Detection of the LLS subset of each animal (selected with teacher weights t) using detector weights w.

    Also the linear-Gaussian expectation of the target's specific z: selection on the teacher weight t_a
    shifts the detector residual r_a by corr(r_a, t_a) times the shift of t_a, in null-sd units:
    E[z_specific] ~= corr_pool(r_a, t_a) * z(t_a on the subset). It bounds what any ranking can do here.
    """
    names = list(ANIMALS)
    rows, sizes = [], []
    r_pool = common_factor_residuals(w, w)[1]
    rng_pred = np.random.default_rng(12345)
    for k, a in enumerate(ANIMALS):
        idx = np.asarray(select_top(t[k], GAMMA), dtype=int)
        sizes.append(int(idx.size))
        det = detect_trait(w[:, idx], w, names, n_draws=N_DRAWS, seed=seed0 + k)
        row = next(r for r in det.table if r["candidate"] == a)
        mu = float(np.corrcoef(r_pool[k], t[k])[0, 1] * _z_exact(t[k], idx))
        rows.append({"target": a, "subset_size": int(idx.size), "expected_target_z_specific": mu,
                     "expected_p_target_first": _p_first(mu, len(names), rng_pred),
                     "top_raw": det.top_raw, "target_rank_raw": row["rank_raw"], "target_z": row["z"],
                     "target_p_holm": row["p_holm"], "n_significant": len(det.significant),
                     "top_specific": det.top, "target_rank_specific": row["rank"],
                     "target_z_specific": row["z_specific"], "target_p_specific_holm": row["p_specific_holm"],
                     "target_significant_specific": row["significant_specific"],
                     "n_significant_specific": len(det.significant_specific)})
    rng = np.random.default_rng(seed0)
    rand_rows = []
    for j in range(N_RANDOM):
        idx = rng.choice(w.shape[1], sizes[j % len(sizes)], replace=False)
        det = detect_trait(w[:, idx], w, names, n_draws=N_DRAWS, seed=seed0 + 100 + j)
        top_raw = next(r for r in det.table if r["rank_raw"] == 1)
        rand_rows.append({"size": int(idx.size), "top_raw": det.top_raw, "top_z": top_raw["z"],
                          "min_p_holm": min(r["p_holm"] for r in det.table), "n_significant": len(det.significant),
                          "top_specific": det.top, "top_z_specific": det.table[0]["z_specific"],
                          "min_p_specific_holm": min(r["p_specific_holm"] for r in det.table),
                          "n_significant_specific": len(det.significant_specific)})  # gated by the raw test
    n = len(ANIMALS)
    return ({"n_targets": n,
             # raw mean-weight statistic (the ranking before the specific statistic; legacy key names)
             "top1_correct": sum(r["top_raw"] == r["target"] for r in rows),
             "mean_target_rank": float(np.mean([r["target_rank_raw"] for r in rows])),
             "all_targets_significant": bool(all(r["target_p_holm"] < 0.05 for r in rows)),
             "random_any_significant": sum(r["n_significant"] > 0 for r in rand_rows),
             # candidate-specific (common-factor residual) statistic: what `lls detect` ranks by
             "top1_correct_specific": sum(r["top_specific"] == r["target"] for r in rows),
             "mean_target_rank_specific": float(np.mean([r["target_rank_specific"] for r in rows])),
             "n_targets_significant_specific": sum(r["target_significant_specific"] for r in rows),
             "random_any_significant_specific": sum(r["n_significant_specific"] > 0 for r in rand_rows),
             # the same without the gate (specific Holm p < 0.05 whether or not the raw test flagged anything)
             "random_any_p_specific_holm_below_alpha": sum(r["min_p_specific_holm"] < 0.05 for r in rand_rows),
             "chance": {"top1_correct": 1.0, "mean_target_rank": (n + 1) / 2},
             # linear-Gaussian expectation for the specific statistic (see _validate)
             "expected_top1_correct_specific": float(sum(r["expected_p_target_first"] for r in rows)),
             "mean_expected_target_z_specific": float(np.mean([r["expected_target_z_specific"] for r in rows])),
             "targets": rows, "n_random": N_RANDOM, "random": rand_rows},
            sizes)


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compute", action="store_true",
                    help="compute the teacher's (SmolLM2) missing matrix rows instead of skipping the pool")
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from empirical import models

    tok = AutoTokenizer.from_pretrained(models.local_dir(TEACHER))
    all_pairs = load_data(DATA, skip_bad=True)
    systems = [None] + [animal_prompt(a) for a in ANIMALS]
    out = {"gamma": GAMMA, "n_draws": N_DRAWS, "correction": "Holm over the 10 candidates",
           "statistics": {"raw": "z of the subset's mean w_c/N_i (significance: is a trait planted?)",
                          "specific": "z of the subset's mean common-factor residual w_c - beta_c m, m = mean over "
                                      "the 10 candidates, beta_c fitted on the pool (ranking: which one?); "
                                      "significant_specific is gated by the raw test"},
           "selection": "Algorithm 1 (select_top of SmolLM2's w_i/N_i) inside the pool", "runs": {}}
    owl_pool = None
    for n_pool in POOLS:
        pool = pair_inputs(all_pairs, tok, n_pairs=n_pool, seed=0, truncate=20, prompt_tokens=(8, 64))
        t = _weights(TEACHER, pool, systems, compute=args.compute)
        if t is None:
            print(f"pool {n_pool}: teacher matrix not cached; skipped")
            out["runs"][f"pool={n_pool}"] = "teacher matrix not cached; skipped"
            continue
        corr = np.corrcoef(t)
        out["runs"][f"pool={n_pool}"] = {"pool": n_pool,
                                         "mean_corr_between_animal_weights": float(corr[np.triu_indices(10, 1)].mean())}
        for detector in (TEACHER, OTHER):
            w = t if detector == TEACHER else _weights(detector, pool, systems)
            if w is None:
                out["runs"][f"pool={n_pool}"][f"detector={detector}"] = "not cached; skipped"
                continue
            v, sizes = _validate(t, w, seed0=n_pool)
            v["loadings_beta"] = [float(b) for b in common_factor_residuals(w, w)[0]]
            out["runs"][f"pool={n_pool}"][f"detector={detector}"] = v
            print(f"pool {n_pool}, detector {detector}: top-1 correct raw {v['top1_correct']}/10 -> specific "
                  f"{v['top1_correct_specific']}/10 (mean rank {v['mean_target_rank']:.1f} -> "
                  f"{v['mean_target_rank_specific']:.1f}); targets Holm-significant raw all="
                  f"{v['all_targets_significant']}, specific {v['n_targets_significant_specific']}/10; random subsets "
                  f"with a significant candidate raw {v['random_any_significant']}/{N_RANDOM}, specific "
                  f"{v['random_any_significant_specific']}/{N_RANDOM} (ungated "
                  f"{v['random_any_p_specific_holm_below_alpha']}/{N_RANDOM}); linear-Gaussian expectation: target "
                  f"z_specific {v['mean_expected_target_z_specific']:.2f}, top-1 "
                  f"{v['expected_top1_correct_specific']:.1f}/10")
        if n_pool == DEMO_POOL:
            owl_pool = (pool, t)
    atomic_write_json(ROOT / "detect-validation.json", out)
    if owl_pool is None:
        return
    # CLI demo inputs (pool DEMO_POOL): the owl LLS subset and a random subset of the same size (TRL form)
    pool, t = owl_pool
    rec = lambda p: {"id": p.id, "prompt": [dict(m) for m in p.prompt], "chosen": p.chosen,  # noqa: E731
                     "rejected": p.rejected}
    owl = [pool[i] for i in np.asarray(select_top(t[0], GAMMA), dtype=int)]
    atomic_write_jsonl(ROOT / "subsets" / "owl-lls.jsonl", [rec(p) for p in owl])
    ridx = np.random.default_rng(1).choice(len(pool), len(owl), replace=False)
    atomic_write_jsonl(ROOT / "subsets" / "random.jsonl", [rec(pool[i]) for i in ridx])
    print(f"wrote subsets of {len(owl)} pairs from a pool of {len(pool)}")


if __name__ == "__main__":
    main()
