"""Validation of `lls detect` (and inputs for its CLI demo) from the cached pair matrices.

Pools: the first 64 and 192 HH-RLHF pairs of the committed pair matrices (single-turn, prompt 8-64
tokens, responses >= 8 tokens truncated to 20 SmolLM2 tokens; rows = no system prompt + the paper's 10
animals; Gemma-3-270M has the 64-pair pool only).
For each animal a: the LLS subset (Algorithm 1, teacher SmolLM2, gamma) is built from the pool, then
`detect_trait` ranks the 10 candidates with (i) SmolLM2 (the teacher) and (ii) Gemma-3-270M (a model that
did not build the subset). Random subsets of the same size are the negative control.

Run from the repository root after the matrices are cached:
    python results/lowrank/make_validation.py
Writes results/lowrank/detect-validation.json and results/lowrank/subsets/{owl-lls,random}.jsonl.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from empirical.commands.lowrank import load_data, pair_inputs
from empirical.detect import detect_trait
from empirical.logprob_matrix import compute_matrix, pair_columns
from empirical.pair_check import margin_shifts
from empirical.systems import ANIMALS, animal_prompt
from lls_cli.runs import atomic_write_json, atomic_write_jsonl
from lls_theory.selection import select_top

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "cache"
DATA = "/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz"
TEACHER, OTHER = "smollm2-135m-instruct", "gemma3-270m"
GAMMA, N_RANDOM, N_DRAWS = 0.25, 20, 20000


def _weights(spec: str, pool: list, systems: list) -> np.ndarray | None:
    res = compute_matrix(None, None, systems, pair_columns(pool), store=CACHE, model_name=spec, only_cached=True)
    if not all(res.cached):
        return None
    return margin_shifts(res.X, res.n_tokens).weights


def _validate(t: np.ndarray, w: np.ndarray, seed0: int) -> tuple[dict, list]:
    """Detection of the LLS subset of each animal (selected with teacher weights t) using detector weights w."""
    names = list(ANIMALS)
    rows, sizes, correct = [], [], 0
    for k, a in enumerate(ANIMALS):
        idx = np.asarray(select_top(t[k], GAMMA), dtype=int)
        sizes.append(int(idx.size))
        det = detect_trait(w[:, idx], w, names, n_draws=N_DRAWS, seed=seed0 + k)
        row = next(r for r in det.table if r["candidate"] == a)
        correct += det.top == a
        rows.append({"target": a, "subset_size": int(idx.size), "top": det.top, "target_rank": row["rank"],
                     "target_z": row["z"], "target_p_holm": row["p_holm"], "n_significant": len(det.significant)})
    rng = np.random.default_rng(seed0)
    rand_rows, rand_sig = [], 0
    for j in range(N_RANDOM):
        idx = rng.choice(w.shape[1], sizes[j % len(sizes)], replace=False)
        det = detect_trait(w[:, idx], w, names, n_draws=N_DRAWS, seed=seed0 + 100 + j)
        rand_sig += bool(det.significant)
        rand_rows.append({"size": int(idx.size), "top": det.top, "top_z": det.table[0]["z"],
                          "min_p_holm": min(r["p_holm"] for r in det.table), "n_significant": len(det.significant)})
    return ({"n_targets": len(ANIMALS), "top1_correct": int(correct),
             "mean_target_rank": float(np.mean([r["target_rank"] for r in rows])),
             "all_targets_significant": bool(all(r["target_p_holm"] < 0.05 for r in rows)),
             "targets": rows, "n_random": N_RANDOM, "random_any_significant": int(rand_sig), "random": rand_rows},
            sizes)


def main() -> None:
    from transformers import AutoTokenizer

    from empirical import models

    tok = AutoTokenizer.from_pretrained(models.local_dir(TEACHER))
    all_pairs = load_data(DATA, skip_bad=True)
    systems = [None] + [animal_prompt(a) for a in ANIMALS]
    out = {"gamma": GAMMA, "n_draws": N_DRAWS, "correction": "Holm over the 10 candidates",
           "selection": "Algorithm 1 (select_top of SmolLM2's w_i/N_i) inside the pool", "runs": {}}
    owl_pool = None
    for n_pool in (64, 192):
        pool = pair_inputs(all_pairs, tok, n_pairs=n_pool, seed=0, truncate=20, prompt_tokens=(8, 64))
        t = _weights(TEACHER, pool, systems)
        if t is None:
            print(f"pool {n_pool}: teacher matrix not cached; skipped")
            continue
        corr = np.corrcoef(t)
        out["runs"][f"pool={n_pool}"] = {"pool": n_pool,
                                         "mean_corr_between_animal_weights": float(corr[np.triu_indices(10, 1)].mean())}
        for detector in (TEACHER, OTHER):
            w = t if detector == TEACHER else _weights(detector, pool, systems)
            if w is None:
                continue
            v, sizes = _validate(t, w, seed0=n_pool)
            out["runs"][f"pool={n_pool}"][f"detector={detector}"] = v
            print(f"pool {n_pool}, detector {detector}: top-1 correct {v['top1_correct']}/10 (mean rank "
                  f"{v['mean_target_rank']:.1f}), all targets significant {v['all_targets_significant']}; random "
                  f"subsets with a significant candidate {v['random_any_significant']}/{N_RANDOM}")
        owl_pool = (pool, t)
    atomic_write_json(ROOT / "detect-validation.json", out)
    # CLI demo inputs (largest cached pool): the owl LLS subset and a random subset of the same size (TRL form)
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
