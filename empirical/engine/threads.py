"""CPU compute threads for the model commands: as many as there are free cores.

Torch's default is one intra-op thread per core. On a machine where other processes hold cores, those
threads are preempted and every parallel region waits for its slowest thread: measured on the 2-core
machine, ``lls score`` with one other busy process took 3.6x its idle time at 2 threads but 2x at 1 thread
(what losing a core should cost). So, unless the user chose (``OMP_NUM_THREADS`` in the environment, or an
explicit count), the thread count is

    threads = max(1, cores - round(busy))

with ``cores`` the cores this process may run on (its CPU affinity) and ``busy`` the other processes
running now: the median of five samples (50 ms apart) of the kernel's runnable-task count minus this
process (``/proc/loadavg``; the 1-minute load average where that file does not exist). It is chosen once,
when the first model loads on the CPU (:func:`configure`), and recorded in every output that records the
model's placement (:func:`empirical.engine.models.placement`).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

__all__ = ["auto_threads", "busy_cores", "usable_cores", "configure", "record"]

_RECORD: dict[str, Any] | None = None


def auto_threads(cores: int, busy: float) -> int:
    """``max(1, cores - round(busy))`` (half up): the free cores, at least one. ``cores >= 1``, ``busy >= 0``."""
    if cores < 1 or not busy >= 0:
        raise ValueError(f"cores must be >= 1 and busy >= 0, got {cores}, {busy}")
    return max(1, cores - int(busy + 0.5))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; ``os.cpu_count()`` where affinity is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _runnable() -> int | None:
    try:
        with open("/proc/loadavg") as fh:
            return int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def busy_cores(samples: int = 5, interval: float = 0.05) -> float:
    """Other processes running now: the median over ``samples`` reads of the runnable-task count minus this
    process; the 1-minute load average where ``/proc/loadavg`` is unreadable."""
    reads = []
    for k in range(samples):
        r = _runnable()
        if r is None:
            return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        reads.append(max(0, r - 1))
        if k + 1 < samples:
            time.sleep(interval)
    return float(statistics.median(reads))


def configure(threads: int | None = None) -> dict[str, Any]:
    """Set torch's intra-op threads once per process and return the record: ``{"threads": n, "source": s,
    "cores": c, "busy": b}`` with ``s`` = ``"given"`` (``threads``), ``"OMP_NUM_THREADS"`` (the environment
    chose; torch already follows it) or ``"free cores"`` (:func:`auto_threads`). Later calls without
    ``threads`` return the first record."""
    global _RECORD
    import torch

    if threads is None and _RECORD is not None:
        return _RECORD
    cores = usable_cores()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
        _RECORD = {"threads": threads, "source": "given", "cores": cores, "busy": None}
    elif os.environ.get("OMP_NUM_THREADS"):
        _RECORD = {"threads": torch.get_num_threads(), "source": "OMP_NUM_THREADS", "cores": cores, "busy": None}
    else:
        busy = busy_cores()
        n = auto_threads(cores, busy)
        torch.set_num_threads(n)
        _RECORD = {"threads": n, "source": "free cores", "cores": cores, "busy": busy}
    return _RECORD


def record() -> dict[str, Any]:
    """The thread setting in force: :func:`configure`'s record, or torch's own when it was never called."""
    if _RECORD is not None and _RECORD["threads"] == _torch_threads():
        return _RECORD
    return {"threads": _torch_threads(), "source": "torch", "cores": usable_cores(), "busy": None}


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
