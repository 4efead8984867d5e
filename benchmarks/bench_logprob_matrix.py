"""Benchmark: log-prob matrix rows with prefix reuse vs recomputing the system prompt for every pair.

X[s, j] = log Pr[r_j | s, p_j] for S system prompts x P HH-RLHF pairs (paper bounds: prompt and
response 8-64 tokens), SmolLM2-135M-Instruct, fp32, on this machine's CPU threads. Three methods on the
same rows:

* prefix   -- empirical.lowrank.logprob_matrix.logprob_row: the system block runs once, its KV cache is shared by
              every pair (the pipeline's method);
* batched  -- the same engine (empirical.engine.batching) with ``share_prefix=False``: batched and head-restricted,
              but the system prompt is recomputed inside every sequence;
* naive    -- one full forward per (s, p, r), full-vocabulary log-softmax (scoring's naive reference).

System-prompt settings (``--join``): the library's own prompts (join 1) and prompts made of J library
prompts joined by spaces (join 4, 12, ...), so the shared prefix K grows while the pairs stay the same.
Prefix reuse removes K of the K + L tokens of each sequence (L = the pair's own tokens), so its gain over
the batched recompute is bounded by about (K + L) / L; the script prints that bound beside each measured
speed-up.

Usage:  python benchmarks/bench_logprob_matrix.py [--pairs 32] [--systems 3] [--join 1 4 12] [--batch-tokens 2048]
                                                   [--threads 2] [--json]
Prints seconds, pairs/s, speed-ups and the max |difference| between methods; exits non-zero when any
difference exceeds 1e-4 x max(1, n/100) nats (n = the response's scored tokens).
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
    ap.add_argument("--join", type=int, nargs="+", default=[1, 4, 12],
                    help="library prompts joined into one system prompt, one setting each (default 1 4 12)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-tokens", type=int, default=2048,
                    help="padded tokens per forward batch, the same for the prefix and the batched method")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    from empirical.engine import models
    from empirical.lowrank.lowrank import library_inputs, load_data
    from empirical.lowrank.logprob_matrix import _encode_row, logprob_row, logprob_row_naive, logprob_row_recompute

    torch.set_num_threads(args.threads)
    model, tok = models.load(args.model)
    pairs = load_data(args.data, skip_bad=True)
    inp = library_inputs(pairs, tok, n_systems=args.systems + 1, n_pairs=args.pairs, systems_file=None, seed=0)
    cols = inp.columns
    settings = {}
    for j in args.join:
        if j == 1:
            settings["library"] = [s.text for s in inp.systems[1:]]
            continue
        lib = [s.text for s in library_inputs(pairs, tok, n_systems=j * args.systems + 1, n_pairs=1,
                                              systems_file=None, seed=j).systems[1:]]
        settings[f"join {j}"] = [" ".join(lib[j * i: j * i + j]) for i in range(args.systems)]
    suffix = np.mean([len(tok(c.prompt[0]["content"])["input_ids"]) + len(tok(c.response)["input_ids"]) for c in cols])
    logprob_row(model, tok, inp.systems[1].text, cols[:4])  # warm-up
    report = {"model": args.model, "pairs": len(cols), "threads": args.threads, "batch_tokens": args.batch_tokens,
              "mean_prompt_plus_response_tokens": float(suffix), "settings": {}}
    for label, systems in settings.items():
        t = {"prefix": 0.0, "batched": 0.0, "naive": 0.0}
        diffs, Ks, tokens_all, tokens_own = [], [], 0, 0
        for s in systems:
            t0 = time.perf_counter()
            a, ntok, K = logprob_row(model, tok, s, cols, batch_tokens=args.batch_tokens)
            tol = np.maximum(1.0, ntok / 100) * 1e-4
            t["prefix"] += time.perf_counter() - t0
            Ks.append(K)
            lens = [len(e.context) + len(e.completions[0]) for e in _encode_row(model, tok, s, cols)]
            tokens_all += sum(lens)
            tokens_own += sum(n - K for n in lens)
            t0 = time.perf_counter()
            b = logprob_row_recompute(model, tok, s, cols, batch_tokens=args.batch_tokens)
            t["batched"] += time.perf_counter() - t0
            diffs.append(float((np.abs(a - b) / tol).max()))
            if not args.skip_naive:
                t0 = time.perf_counter()
                c = logprob_row_naive(model, tok, s, cols)
                t["naive"] += time.perf_counter() - t0
                diffs.append(float((np.abs(a - c) / tol).max()))
        n = len(systems) * len(cols)
        r = {"rows": len(systems), "mean_prefix_tokens": float(np.mean(Ks)), "max_abs_diff_over_tolerance": max(diffs),
             "seconds": t, "cells_per_s": {k: (n / v if v else None) for k, v in t.items()},
             "speedup_vs_batched": t["batched"] / t["prefix"],
             "token_bound_vs_batched": tokens_all / tokens_own,
             "speedup_vs_naive": (t["naive"] / t["prefix"]) if t["naive"] else None}
        report["settings"][label] = r
    worst = max(r["max_abs_diff_over_tolerance"] for r in report["settings"].values())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print(report, suffix)
    if worst > 1:
        raise SystemExit(f"prefix reuse differs from the recompute by {worst:.2f} x the tolerance 1e-4 x max(1, n/100)")


def _print(report: dict, suffix: float) -> None:
    print(f"{report['model']}, {report['pairs']} HH pairs (mean prompt+response {suffix:.1f} tokens), "
          f"{report['threads']} threads")
    for label, r in report["settings"].items():
        sv = r["speedup_vs_naive"]
        print(f"[{label} system prompts, mean shared prefix {r['mean_prefix_tokens']:.0f} tokens, {r['rows']} rows] "
              f"prefix {r['seconds']['prefix']:.1f}s | batched recompute {r['seconds']['batched']:.1f}s "
              f"({r['speedup_vs_batched']:.2f}x; token bound {r['token_bound_vs_batched']:.2f}x) | naive {r['seconds']['naive']:.1f}s "
              f"({'n/a' if sv is None else f'{sv:.2f}x'}) | max |diff|/tolerance {r['max_abs_diff_over_tolerance']:.2f}")


if __name__ == "__main__":
    main()
