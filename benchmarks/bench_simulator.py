"""Simulator benchmark: batched Δ-approximate DPO solve (simulations.train.solve_to_delta).

Prints wall time for T trials at (m, d) — target 1,000 trials at m = 2,000, d = 32, Δ = 1e-4 — and
time vs m and vs d, with peak RSS. Trials are processed in chunks over the trials axis (memory
O(chunk·m·d)). Instances are separable LLS-like sets: Gaussian φ_i flipped so that ⟨u, φ_i⟩ > 0.

    python benchmarks/bench_simulator.py [--trials 1000] [--chunk 100]
"""

import argparse
import resource
import time

import numpy as np

from simulations.train import solve_to_delta


def instances(rng, T, m, d):
    Phi = rng.standard_normal((T, m, d)) / np.sqrt(d)
    u = rng.standard_normal((T, d))
    s = np.sign(np.einsum("tmd,td->tm", Phi, u))
    return Phi * s[..., None]


def bench(T, m, d, delta=1e-4, beta=0.1, chunk=100, seed=0):
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    cert = 0
    for start in range(0, T, chunk):
        n = min(chunk, T - start)
        Phi = instances(rng, n, m, d)
        res = solve_to_delta(Phi, np.ones((n, m), dtype=bool), beta, delta)
        cert += int(res.certified.sum())
    return time.perf_counter() - t0, cert


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--sweep-trials", type=int, default=20, help="trials per point of the m and d sweeps")
    a = ap.parse_args()
    t, c = bench(a.trials, 2000, 32, chunk=a.chunk)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"target: {a.trials} trials, m=2000, d=32, Δ=1e-4: {t:.1f} s (instance generation included), "
          f"{c}/{a.trials} certified, peak RSS {rss:.0f} MiB")
    for m in (250, 500, 1000, 2000):
        t, _ = bench(a.sweep_trials, m, 32, chunk=a.chunk)
        print(f"  m={m:5d} d=32: {t:.2f} s / {a.sweep_trials} trials")
    for d in (8, 16, 32):
        t, _ = bench(a.sweep_trials, 2000, d, chunk=a.chunk)
        print(f"  m=2000 d={d:3d}: {t:.2f} s / {a.sweep_trials} trials")


if __name__ == "__main__":
    main()
