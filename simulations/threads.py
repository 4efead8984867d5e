"""Thread policy of the simulator: how many BLAS threads a simulator process uses.

Policy (measured; see benchmarks/bench_simulator.py and /tmp/notes/simulator.md):

* The simulator's work is many small, memory-bound BLAS calls (per-trial (m, d) matrices with
  d ≤ 32). On a shared machine a second BLAS thread per process mostly waits on the first, so the
  default is **1 BLAS thread per process**.
* A user who sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` or
  ``BLIS_NUM_THREADS`` keeps that setting (we do not override it).
* An explicit ``threads=N`` (e.g. the benchmark's ``--threads``) wins over both.

The limit is applied with ``threadpoolctl`` around the work (a context manager), so it also holds
for BLAS libraries loaded after the environment was read. Without ``threadpoolctl`` installed the
limit is a no-op and :func:`describe` says so.
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["THREAD_ENV_VARS", "resolve_threads", "blas_threads", "describe"]

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
DEFAULT_THREADS = 1


def _env_setting() -> tuple[str, str] | None:
    for name in THREAD_ENV_VARS:
        val = os.environ.get(name, "").strip()
        if val:
            return name, val
    return None


def resolve_threads(threads: int | None | str = "auto") -> tuple[int | None, str]:
    """The BLAS thread limit to apply and why: (n or None for "leave as is", reason).

    ``threads``: a positive int (explicit), ``"auto"`` (the policy: 1 unless an env var is set) or
    None (no limit at all).
    """
    if threads is None:
        return None, "no limit requested"
    if threads == "auto":
        env = _env_setting()
        if env is not None:
            return None, f"{env[0]}={env[1]} set by the user (left as is)"
        return DEFAULT_THREADS, f"default policy: {DEFAULT_THREADS} thread per process"
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, 'auto' or None, got {threads!r}")
    return threads, f"explicit: {threads}"


@contextlib.contextmanager
def blas_threads(threads: int | None | str = "auto"):
    """Context manager limiting BLAS threads per :func:`resolve_threads`; yields the reason string."""
    n, why = resolve_threads(threads)
    if n is None:
        yield why
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a declared dependency
        yield why + " (threadpoolctl not installed: not applied)"
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield why


def describe() -> str:
    """One line: each loaded BLAS/OpenMP library and its current thread count, plus the env vars set."""
    env = ", ".join(f"{k}={os.environ[k]}" for k in THREAD_ENV_VARS if os.environ.get(k)) or "no thread env vars set"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"threadpoolctl not installed; {env}; {os.cpu_count()} CPUs"
    libs = [f"{i.get('internal_api')} {i.get('version') or ''} ({i.get('user_api')}, {i.get('threading_layer', '-')}): "
            f"{i.get('num_threads')} thread(s)" for i in threadpool_info()]
    return f"{'; '.join(libs) or 'no BLAS loaded'}; {env}; {os.cpu_count()} CPUs"
