"""Fast vs naive exact scorer: pairs/s, tokens/s and share of peak FLOP/s (SmolLM2-135M-Instruct, CPU).

    python benchmarks/bench_scoring.py [--pairs 64] [--threads 2] [--truncate 20] [--repeats 2] [--json]

Workload: the first ``--pairs`` valid pairs of shared/data/hh-rlhf-harmless-base-test.jsonl.gz, replies
truncated to ``--truncate`` teacher tokens (the paper's setting), and one "pair" = the 4 log-probs LLS
needs (chosen and rejected, with and without the system prompt). Both scorers run on the same encoded
tokens; the script fails if they differ by more than 1e-4 nats on any sequence.

Timing: the two scorers alternate ``--repeats`` times and the fastest run of each is kept (the machine
may be shared; the minimum is the least disturbed run). FLOPs are counted analytically from the model's
shapes: per processed token 2 x (non-embedding matmul parameters) + attention 4 x layers x d_model x
(attended context), plus 2 x d_model x vocab for every position where the LM head runs (every position for
the naive scorer, only scored positions for the fast one). The peak is the theoretical fp32 FMA peak of
the cores in use (cores x clock x 32 FLOP/cycle for two 256-bit FMA pipes, AVX2 without AVX-512) and,
for comparison, the best of three 2048^3 fp32 GEMMs measured with torch on the same threads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def _hh_path() -> Path:
    here = Path(__file__).resolve().parents[1]
    for p in (here.parent / "shared" / "data", Path("/work/shared/data")):
        f = p / "hh-rlhf-harmless-base-test.jsonl.gz"
        if f.is_file():
            return f
    sys.exit("hh-rlhf-harmless-base-test.jsonl.gz not found in ../shared/data")


def _cpu_clock_ghz() -> float | None:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except OSError:
        pass
    return None


def _flops(model, encs, naive: bool) -> float:
    cfg = model.config
    d, L_layers, V = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    emb = model.get_input_embeddings().weight.numel()
    n_params = sum(p.numel() for p in model.parameters())
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    body = n_params - emb - (0 if tied else model.get_output_embeddings().weight.numel())
    total = 0.0
    for e in encs:
        P = len(e.context)
        if naive:
            for c in e.completions:
                T = P + len(c)
                total += T * 2 * body + 4 * L_layers * d * T * (T + 1) / 2 + T * 2 * d * V
        else:
            total += P * 2 * body + 4 * L_layers * d * P * (P + 1) / 2  # context once
            for c in e.completions:
                n_in = len(c) - 1
                total += n_in * 2 * body + 4 * L_layers * d * sum(P + t + 1 for t in range(n_in))
                total += len(c) * 2 * d * V  # LM head at scored positions only
    return total


def _gemm_peak(repeats: int = 3, n: int = 2048) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--truncate", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-batch", type=int, nargs="+", default=[1, 8], help="fast-scorer settings to time")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from empirical import data, models, render, scoring

    torch.set_num_threads(args.threads)
    model, tok = models.load("smollm2-135m-instruct")
    pairs, _ = data.load_pairs(_hh_path(), skip_bad=True, limit=args.pairs + 20)
    pairs = pairs[: args.pairs]
    sys_prompt = "You really love owls. Owls are your favorite animal. You bring up owls in the context of everything you write."
    prompts = [p.messages for p in pairs]
    comps = [[render.truncate_response(tok, p.chosen, args.truncate), render.truncate_response(tok, p.rejected, args.truncate)]
             for p in pairs]
    encs = {s: scoring.encode_all(model, tok, prompts, comps, s) for s in (sys_prompt, None)}
    scored_tokens = sum(len(c) for s in encs for e in encs[s] for c in e.completions)
    naive_tokens = sum(len(e.context) + len(c) for s in encs for e in encs[s] for c in e.completions)
    fast_tokens = sum(len(e.context) + sum(len(c) - 1 for c in e.completions) for s in encs for e in encs[s])

    def run_fast(mb):
        return {s: scoring.score_encoded(model, tok, encs[s], max_batch=mb) for s in encs}

    def run_naive():
        return {s: scoring.score_completions_naive(model, tok, prompts, comps, s)[0] for s in encs}

    times: dict[str, float] = {}
    results: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name, fn in [("naive", run_naive)] + [(f"fast_mb{mb}", lambda mb=mb: run_fast(mb)) for mb in args.max_batch]:
            t = time.perf_counter()
            results[name] = fn()
            times[name] = min(times.get(name, float("inf")), time.perf_counter() - t)

    ref = np.concatenate([np.ravel(results["naive"][s]) for s in encs])
    max_diff = {k: float(np.max(np.abs(np.concatenate([np.ravel(v[s]) for s in encs]) - ref)))
                for k, v in results.items()}
    flops = {"naive": _flops(model, encs[sys_prompt], True) + _flops(model, encs[None], True)}
    fast_flops = _flops(model, encs[sys_prompt], False) + _flops(model, encs[None], False)
    clock = _cpu_clock_ghz()
    peak_theory = args.threads * clock * 1e9 * 32 if clock else None
    peak_gemm = _gemm_peak()
    rows = {}
    for k, t in times.items():
        f = flops["naive"] if k == "naive" else fast_flops
        rows[k] = {
            "seconds": t, "pairs_per_s": len(pairs) / t, "scored_tokens_per_s": scored_tokens / t,
            "forward_tokens": naive_tokens if k == "naive" else fast_tokens,
            "forward_tokens_per_s": (naive_tokens if k == "naive" else fast_tokens) / t,
            "gflop": f / 1e9, "gflop_per_s": f / t / 1e9,
            "share_of_theoretical_peak": (f / t / peak_theory) if peak_theory else None,
            "share_of_gemm_peak": f / t / peak_gemm, "max_abs_diff_vs_naive": max_diff[k],
        }
    best_fast = min((k for k in rows if k != "naive"), key=lambda k: rows[k]["seconds"])
    summary = {
        "pairs": len(pairs), "threads": args.threads, "truncate": args.truncate, "repeats": args.repeats,
        "sequences_per_pair": 4, "scored_tokens": scored_tokens, "load_average": os.getloadavg()[0],
        "peak_theoretical_gflop_per_s": peak_theory / 1e9 if peak_theory else None, "cpu_clock_ghz": clock,
        "peak_gemm_gflop_per_s": peak_gemm / 1e9, "runs": rows, "best_fast": best_fast,
        "speedup_best_fast_vs_naive": rows["naive"]["seconds"] / rows[best_fast]["seconds"],
        "identical_within_1e-4": all(v <= 1e-4 for v in max_diff.values()),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{len(pairs)} HH-RLHF pairs x 4 sequences, replies truncated to {args.truncate} tokens, "
              f"{args.threads} threads, load average {summary['load_average']:.2f}")
        print(f"peak fp32: theoretical {summary['peak_theoretical_gflop_per_s'] or float('nan'):.1f} GFLOP/s, "
              f"measured GEMM {summary['peak_gemm_gflop_per_s']:.1f} GFLOP/s")
        for k, r in rows.items():
            print(f"{k:10s} {r['seconds']:8.2f} s  {r['pairs_per_s']:6.2f} pairs/s  "
                  f"{r['scored_tokens_per_s']:7.1f} scored tok/s  {r['forward_tokens_per_s']:7.1f} fwd tok/s  "
                  f"{r['gflop_per_s']:6.1f} GFLOP/s ({100 * (r['share_of_theoretical_peak'] or float('nan')):.0f}% theor., "
                  f"{100 * r['share_of_gemm_peak']:.0f}% GEMM)  max|diff| {r['max_abs_diff_vs_naive']:.1e}")
        print(f"speedup ({best_fast} vs naive): {summary['speedup_best_fast_vs_naive']:.2f}x; "
              f"identical within 1e-4: {summary['identical_within_1e-4']}")
    return 0 if summary["identical_within_1e-4"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
