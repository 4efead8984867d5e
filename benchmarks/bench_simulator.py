"""Simulator benchmark: batched Δ-approximate DPO solve (simulations.train.solve_to_delta).

Target: 1,000 trials at m = 2,000, d = 32 to a certified Δ = 1e-4 in under 5 s, instance generation
included. Also prints time vs m and vs d, peak RSS, the BLAS thread setting (threadpoolctl) and the
load average (the machine may be shared: read the timings with it). Trials are processed in
chunks over the trials axis (memory O(chunk·m·d)). Instances are separable LLS-like sets:
Gaussian φ_i flipped so that ⟨u, φ_i⟩ > 0, generated in ``--dtype`` (float32 by default, by
Box–Muller, :func:`standard_normal_f32`; the certificate L(v) ≤ Δ is always evaluated in float64 on
exactly those values).

    python benchmarks/bench_simulator.py [--trials 1000] [--chunk 100] [--threads N] [--dtype float32]

Thread policy (simulations.threads): ``--threads`` wins; without it the benchmark uses 1 BLAS
thread unless OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS is set.
"""

import argparse
import os
import resource
import time

import numpy as np

from simulations.threads import blas_threads, describe
from simulations.train import solve_to_delta


def standard_normal_f32(rng, shape, scale=1.0):
    """i.i.d. N(0, scale²) float32 of ``shape`` by Box–Muller on float32 uniforms, with numpy's vectorised
    log/sqrt/cos/sin: ≈ 2× faster than ``rng.standard_normal(dtype=np.float32)`` (a scalar ziggurat).
    One uniform pair (u₁, u₂) gives √(−2 log(1 − u₁))·(cos 2πu₂, sin 2πu₂); with u₁ on the 2⁻²⁴ grid
    |z| ≤ √(48 log 2) ≈ 5.77 (the tail beyond has probability 8e-9)."""
    n = int(np.prod(shape))
    h = (n + 1) // 2
    u = rng.random(2 * h, dtype=np.float32)
    r, theta = u[:h], u[h:]
    np.subtract(np.float32(1), r, out=r)
    np.log(r, out=r)
    r *= np.float32(-2 * scale**2)
    np.sqrt(r, out=r)
    theta *= np.float32(2 * np.pi)
    out = np.empty(2 * h, dtype=np.float32)
    np.cos(theta, out=out[:h])
    np.sin(theta, out=out[h:])
    out[:h] *= r
    out[h:] *= r
    return out[:n].reshape(shape)


def instances(rng, T, m, d, dtype=np.float64):
    """(T, m, d) separable instances: Gaussian rows / √d, each flipped to the side of a random u.

    float32: Gaussians by :func:`standard_normal_f32`; float64: numpy's ``standard_normal``."""
    if dtype is np.float32:
        Phi = standard_normal_f32(rng, (T, m, d), scale=1 / np.sqrt(d))
    else:
        Phi = rng.standard_normal((T, m, d))
        Phi *= 1 / np.sqrt(d)
    u = rng.standard_normal((T, d, 1)).astype(dtype)
    s = np.sign(np.matmul(Phi, u))
    s[s == 0] = 1  # an exactly-zero product (≈ 2⁻²⁴ per row in float32) must not zero the row
    Phi *= s
    return Phi


def bench(T, m, d, delta=1e-4, beta=0.1, chunk=100, seed=0, dtype=np.float32):
    """(wall s total, wall s generating, certified count, mean Newton steps, CPU s total)."""
    rng = np.random.default_rng(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    gen, cert, steps = 0.0, 0, 0
    for start in range(0, T, chunk):
        n = min(chunk, T - start)
        g0 = time.perf_counter()
        Phi = instances(rng, n, m, d, dtype)
        gen += time.perf_counter() - g0
        res = solve_to_delta(Phi, np.ones((n, m), dtype=bool), beta, delta)
        cert += int(res.certified.sum())
        steps += int(res.iterations.sum())
    return time.perf_counter() - t0, gen, cert, steps / T, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--sweep-trials", type=int, default=20, help="trials per point of the m and d sweeps (0: skip)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads (default: 1 unless OMP_NUM_THREADS/OPENBLAS_NUM_THREADS/MKL_NUM_THREADS is set)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="instance dtype (default float32)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.trials < 1 or a.chunk < 1 or a.sweep_trials < 0 or (a.threads is not None and a.threads < 1):
        ap.error("--trials, --chunk and --threads must be ≥ 1, --sweep-trials ≥ 0")
    dtype = np.float32 if a.dtype == "float32" else np.float64
    with blas_threads(a.threads if a.threads is not None else "auto") as why:
        print(f"threads: {why}; {describe()}")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
        t, gen, c, steps, cpu = bench(a.trials, 2000, 32, chunk=a.chunk, seed=a.seed, dtype=dtype)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"target: {a.trials} trials, m=2000, d=32, Δ=1e-4, {a.dtype} instances, chunk {a.chunk}: "
              f"{t:.2f} s wall (instance generation {gen:.2f} s, solve {t - gen:.2f} s; CPU {cpu:.2f} s), "
              f"{c}/{a.trials} certified (loss ≤ Δ in float64), {steps:.1f} Newton steps/trial, peak RSS {rss:.0f} MiB")
        if a.sweep_trials:
            for m in (250, 500, 1000, 2000):
                t, _, c, _, _ = bench(a.sweep_trials, m, 32, chunk=a.chunk, seed=a.seed, dtype=dtype)
                print(f"  m={m:5d} d=32: {t:.2f} s / {a.sweep_trials} trials ({c} certified)")
            for d in (8, 16, 32):
                t, _, c, _, _ = bench(a.sweep_trials, 2000, d, chunk=a.chunk, seed=a.seed, dtype=dtype)
                print(f"  m=2000 d={d:3d}: {t:.2f} s / {a.sweep_trials} trials ({c} certified)")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
