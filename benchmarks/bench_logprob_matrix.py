"""Benchmark: log-prob matrix rows with prefix reuse vs recomputing the system prompt for every pair.

X[s, j] = log Pr[r_j | s, p_j] for S system prompts x P HH-RLHF pairs (paper bounds: prompt and
response 8-64 tokens), SmolLM2-135M-Instruct, fp32, on this machine's CPU threads. Three methods on the
same rows:

* prefix   -- empirical.logprob_matrix.logprob_row: the system block runs once, its KV cache is shared by
              every pair (the pipeline's method);
* batched  -- empirical.scoring.score_completions with the system prompt: batched and head-restricted,
              but the system prompt is recomputed inside every sequence;
* naive    -- one full forward per (s, p, r), full-vocabulary log-softmax (scoring's naive reference).

Two system-prompt settings: the library's prompts (typically 15-40 tokens) and "long" prompts (four
library prompts joined, ~100-150 tokens), where the share of shared prefix is larger.

Usage:  python benchmarks/bench_logprob_matrix.py [--pairs 32] [--systems 3] [--threads 2] [--json]
Prints seconds, pairs/s, speed-ups and the max |difference| between methods (must be < 1e-4).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--data", default="/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--systems", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from empirical import models
    from empirical.commands.lowrank import library_inputs, load_data
    from empirical.logprob_matrix import logprob_row, logprob_row_naive, logprob_row_recompute

    torch.set_num_threads(args.threads)
    model, tok = models.load(args.model)
    pairs = load_data(args.data, skip_bad=True)
    inp = library_inputs(pairs, tok, n_systems=args.systems + 1, n_pairs=args.pairs, systems_file=None, seed=0)
    short = [s.text for s in inp.systems[1:]]
    lib = [s.text for s in library_inputs(pairs, tok, n_systems=4 * args.systems + 1, n_pairs=1,
                                          systems_file=None, seed=1).systems[1:]]
    long = [" ".join(lib[4 * i: 4 * i + 4]) for i in range(args.systems)]
    cols = inp.columns
    suffix = np.mean([len(tok(c.prompt[0]["content"])["input_ids"]) + len(tok(c.response)["input_ids"]) for c in cols])
    logprob_row(model, tok, short[0], cols[:4])  # warm-up
    report = {"model": args.model, "pairs": len(cols), "threads": args.threads,
              "mean_prompt_plus_response_tokens": float(suffix), "settings": {}}
    for label, systems in (("library", short), ("long", long)):
        t = {"prefix": 0.0, "batched": 0.0, "naive": 0.0}
        diffs, Ks = [], []
        for s in systems:
            t0 = time.perf_counter()
            a, _, K = logprob_row(model, tok, s, cols)
            t["prefix"] += time.perf_counter() - t0
            Ks.append(K)
            t0 = time.perf_counter()
            b = logprob_row_recompute(model, tok, s, cols)
            t["batched"] += time.perf_counter() - t0
            diffs.append(float(np.abs(a - b).max()))
            if not args.skip_naive:
                t0 = time.perf_counter()
                c = logprob_row_naive(model, tok, s, cols)
                t["naive"] += time.perf_counter() - t0
                diffs.append(float(np.abs(a - c).max()))
        n = len(systems) * len(cols)
        r = {"rows": len(systems), "mean_prefix_tokens": float(np.mean(Ks)), "max_abs_diff": max(diffs),
             "seconds": t, "cells_per_s": {k: (n / v if v else None) for k, v in t.items()},
             "speedup_vs_batched": t["batched"] / t["prefix"],
             "speedup_vs_naive": (t["naive"] / t["prefix"]) if t["naive"] else None}
        report["settings"][label] = r
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.model}, {len(cols)} HH pairs (mean prompt+response {suffix:.1f} tokens), {args.threads} threads")
    for label, r in report["settings"].items():
        sv = r["speedup_vs_naive"]
        print(f"[{label} system prompts, mean shared prefix {r['mean_prefix_tokens']:.0f} tokens, {r['rows']} rows] "
              f"prefix {r['seconds']['prefix']:.1f}s | batched recompute {r['seconds']['batched']:.1f}s "
              f"({r['speedup_vs_batched']:.2f}x) | naive {r['seconds']['naive']:.1f}s "
              f"({'n/a' if sv is None else f'{sv:.2f}x'}) | max |diff| {r['max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()
