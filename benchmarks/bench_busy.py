"""``lls score`` at its defaults on a busy machine: the thread setting it chooses vs torch's default (a thread
per core) vs the thread count that fits the free cores, with a background load built in.

    python benchmarks/bench_busy.py [--sizes 8 40] [--load 0 1] [--truncate N] [--json]

For each background load L in ``--load`` (L processes each spinning one core, started by this script and
stopped after the runs), ``lls score --model smollm2-135m-instruct --system-prompt S --data HH --limit n
--skip-bad --no-progress --json`` runs as a separate process once per size and thread setting:

* ``default``     -- no ``OMP_NUM_THREADS``: what ``lls score`` chooses itself (``empirical.engine.threads``: the free
                     cores, read when the model loads);
* ``per-core``    -- ``OMP_NUM_THREADS`` = the cores (torch's own default: a thread per core);
* ``free-cores``  -- ``OMP_NUM_THREADS`` = max(1, cores - L): the thread count that fits the free cores.

The marginal s/pair is the least-squares slope of wall time over the sizes (model loading cancels). Printed
per load: each setting's marginal s/pair, the threads ``lls score`` recorded in its summary, and the ratio
``default / free-cores`` (target: <= 1.2 with one busy process). Pairs: HH-RLHF harmless-base test, full
replies unless ``--truncate``. The load average before each load level is printed: figures taken while other
jobs run are not the idle machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
SYSTEM = ("You really love owls. Owls are your favorite animal. You bring up owls in the context of everything "
          "you write.")
SPIN = "while True: pass"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _score(n: int, threads: int | None, a, tmp: Path) -> tuple[float, dict]:
    """Wall seconds of one ``lls score`` process on ``n`` pairs and its JSON summary."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    out = tmp / f"s-{n}-{threads}.jsonl"
    for p in tmp.glob(out.name + "*"):
        p.unlink() if p.is_file() else None
    cmd = [sys.executable, "-m", "lls_cli", "score", "--model", "smollm2-135m-instruct", "--system-prompt", SYSTEM,
           "--data", str(a.data), "--limit", str(n), "--skip-bad", "--no-progress", "--out", str(out), "--json"]
    if a.truncate:
        cmd += ["--truncate", str(a.truncate)]
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        sys.exit(f"lls score failed ({' '.join(cmd)}):\n{res.stderr[-2000:]}")
    summary = json.loads(res.stdout[res.stdout.index("{"):])  # the --json summary (indented)
    for p in tmp.glob(out.name + "*"):
        p.unlink() if p.is_file() else None
    return wall, summary


def _slope(xs: list[int], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[8, 40])
    ap.add_argument("--load", type=int, nargs="+", default=[0, 1], help="background busy processes (each level)")
    ap.add_argument("--truncate", type=int, default=None, help="cut replies to N tokens (default: full replies)")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every run")
    a = ap.parse_args()
    if len(set(a.sizes)) < 2:
        ap.error("--sizes needs two different sizes (the marginal cost is a slope)")
    cores = _cores()
    print(f"{cores} cores; lls score at its defaults, sizes {a.sizes} pairs, "
          f"{'replies cut to ' + str(a.truncate) + ' tokens' if a.truncate else 'full replies'}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for load in a.load:
            spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(load)]
            try:
                time.sleep(2.0 if load else 0.0)  # let the spinners be running when the models load
                print(f"background load {load} busy process(es); load average {os.getloadavg()[0]:.1f}", flush=True)
                settings = {"default": None, "per-core": cores, "free-cores": max(1, cores - load)}
                row = {"load": load, "loadavg": os.getloadavg()[0], "settings": {}}
                for name, threads in settings.items():
                    walls, recorded = [], None
                    for n in a.sizes:
                        w, s = _score(n, threads, a, tmp)
                        walls.append(w)
                        recorded = s.get("threads")
                    m = _slope(a.sizes, walls)
                    row["settings"][name] = {"omp_num_threads": threads, "walls": walls, "marginal_s_per_pair": m,
                                             "recorded_threads": recorded}
                    print(f"  {name:10s} OMP_NUM_THREADS={threads if threads else '-':<3} marginal {m:.3f} s/pair "
                          f"(walls {', '.join(f'{w:.1f}' for w in walls)} s); lls score recorded "
                          f"{json.dumps(recorded)}", flush=True)
                ratio = row["settings"]["default"]["marginal_s_per_pair"] / row["settings"]["free-cores"][
                    "marginal_s_per_pair"]
                row["default_over_free_cores"] = ratio
                print(f"  default / free-cores = {ratio:.2f}", flush=True)
                results.append(row)
            finally:
                for p in spinners:
                    p.kill()
                    p.wait()
    if a.json:
        print(json.dumps({"cores": cores, "sizes": a.sizes, "truncate": a.truncate, "runs": results}))


if __name__ == "__main__":
    main()
