"""Units of ``lls experiment`` in parallel: worker processes on one machine, one unit per GPU, or cluster jobs.

An experiment is a graph of resumable units (:class:`empirical.orchestration.experiment.Unit`): every stage needs the one
before it (split → score → select → train → correlate → eval → report), and within a stage a unit's ``wave``
orders the few that build on another (a trait's scores reuse the reference scores of wave 0). Units of one
stage and wave are independent — trainings of different traits, students and seeds above all — so
:func:`run_units` runs them side by side:

* ``executor="local"``, ``jobs=N``: N worker processes (``spawn``) on this machine, each with
  ``cores // N`` torch threads; with ``devices`` (``cuda:0,cuda:1``), one unit per device, each worker seeing
  only its own GPU (``CUDA_VISIBLE_DEVICES``).
* ``executor="slurm"`` (or ``"submitit-local"``, the same path run as local processes, for tests and laptops):
  one job per unit through `submitit <https://github.com/facebookincubator/submitit>`_, which handles
  submission, logs and results; ``slurm`` options go to ``executor.update_parameters``.

A worker (:func:`empirical.orchestration.experiment.run_unit`) rebuilds the run from the (picklable) config and finds its unit
by stage and identity (``unit.uid``: trait, student, step), so the unit runs exactly the code a sequential run
does, under its own lock (``<marker>.lock``): two workers, or two users' commands, never write one unit. The
result folder is the same as a sequential run's. This module imports nothing of the experiment: the experiment
hands it its callables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lls_common.errors import LLSError

__all__ = ["Parallel", "run_units", "set_threads", "EXECUTORS"]

EXECUTORS = ("local", "submitit-local", "slurm")


@dataclass(frozen=True)
class Parallel:
    """How to run the units of one stage: ``jobs`` workers with ``executor``; ``devices`` one unit per device;
    ``threads`` torch threads per worker;
    ``slurm``: extra ``update_parameters`` for submitit (partition, time, gpus_per_node, ...); ``folder``:
    submitit's log folder (default ``<run>/stages/submitit``)."""

    jobs: int = 1
    executor: str = "local"
    devices: tuple[str, ...] = ()
    threads: int | None = None  # torch threads per worker (default: this machine's cores shared evenly)
    slurm: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1:
            raise LLSError(f"--jobs must be an integer >= 1, got {self.jobs!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise LLSError(f"--threads must be an integer >= 1, got {self.threads!r}")
        if self.executor not in EXECUTORS:
            raise LLSError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        for d in self.devices:
            if not (d == "cpu" or (d.startswith("cuda:") and d[5:].isdigit())):
                raise LLSError(f"--devices: {d!r} is not a device; give cuda:0,cuda:1,... (or cpu)")
        if self.executor != "local":
            try:
                import submitit  # noqa: F401
            except ImportError:
                raise LLSError(f"--executor {self.executor} needs submitit: pip install 'lls-toolkit[cluster]'") \
                    from None

    @property
    def sequential(self) -> bool:
        return self.executor == "local" and self.jobs == 1 and len(self.devices) <= 1

    def workers(self) -> int:
        return max(1, len(self.devices)) if self.devices else self.jobs


def _threads(workers: int) -> int:
    """torch threads per worker: the cores this process may use, shared evenly (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


def set_threads(threads: int | None) -> None:
    """A worker's torch threads (before any model work)."""
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)


def _waves(units: list[Any]) -> list[list[Any]]:
    waves: dict[int, list[Any]] = {}
    for u in units:
        waves.setdefault(getattr(u, "wave", 0), []).append(u)
    return [waves[w] for w in sorted(waves)]


def run_units(run: Any, units: list[Any], par: Parallel, compute: Callable[[Any], Any],
              worker: Callable[..., Any]) -> dict[str, Any]:
    """Run ``units`` (one stage's, not yet finished) with ``par``, wave by wave; ``{unit.uid: result}``.

    ``compute(unit)`` runs one unit in this process (and saves its marker); ``worker(cfg, root, stage, uid,
    threads)`` does the same in another process (a top-level function, so it can be sent there). Sequential
    settings run the units here, in order, each under its lock. A unit that fails stops the stage after the
    units already running finish (their results are kept on disk); the first error is raised.
    """
    from lls_common.io import OutputLock

    if par.sequential:
        out = {}
        for u in units:
            with OutputLock(u.marker, kind="file", name=f"unit {u.stage}/{u.label}"):
                out[u.uid] = compute(u)
        return out
    out = {}
    for wave in _waves(units):
        if par.executor == "local":
            out.update(_local(run, wave, par, worker))
        else:
            out.update(_submitit(run, wave, par, worker))
    return {u.uid: out[u.uid] for u in units}  # the sequential order, so stage records are the same


def _local(run: Any, units: list[Any], par: Parallel, worker: Callable[..., Any]) -> dict[str, Any]:
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    n = min(par.workers(), len(units))
    threads = par.threads or _threads(n)
    ctx = mp.get_context("spawn")
    devices = ctx.Queue()
    for d in par.devices[:n] or [None] * n:
        devices.put(d)
    run.log(f"  {len(units)} unit(s) in {n} worker process(es), {threads} thread(s) each"
            + (f", devices {', '.join(par.devices[:n])}" if par.devices else ""))
    with ProcessPoolExecutor(n, mp_context=ctx, initializer=_claim_device, initargs=(devices,)) as pool:
        futures = {pool.submit(worker, run.cfg, str(run.root), u.stage, u.uid, threads): u for u in units}
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for f in pending:
                f.cancel()
            wait(futures)
            raise failed[0].exception()
    return {futures[f].uid: f.result() for f in futures}


def _claim_device(devices: Any) -> None:
    """Worker initializer: take one device from the queue and see only it."""
    d = devices.get()
    if d and d.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = d[5:]
    elif d == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def _submitit(run: Any, units: list[Any], par: Parallel, worker: Callable[..., Any]) -> dict[str, Any]:
    import submitit

    folder = Path(par.folder) if par.folder else run.root / "stages" / "submitit"
    cluster = "local" if par.executor == "submitit-local" else "slurm"
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    params = {"timeout_min": 24 * 60, **par.slurm}
    if cluster == "slurm":
        params.setdefault("slurm_array_parallelism", par.jobs)
    ex.update_parameters(**params)
    threads = par.threads or (None if cluster == "slurm" else _threads(min(par.jobs, len(units))))
    run.log(f"  {len(units)} unit(s) as submitit {cluster} jobs (logs: {folder})")
    jobs = [(u, ex.submit(worker, run.cfg, str(run.root.resolve()), u.stage, u.uid, threads)) for u in units]
    out, first_error = {}, None
    for u, job in jobs:
        try:
            out[u.uid] = job.result()
        except Exception as exc:  # submitit wraps the worker's traceback; keep the first, wait for the rest
            first_error = first_error or exc
    if first_error is not None:
        raise first_error
    return out
