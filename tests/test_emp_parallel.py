"""``lls experiment --jobs N`` / ``--executor``: units in worker processes or submitit jobs give the same result
folder as one after another; a run whose worker is killed mid-way resumes to the same folder; bad options are
one-line errors before any work."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lls_cli import main
from test_emp_experiment import _multi

ROOT = Path(__file__).resolve().parents[1]
TIMING = re.compile(r"(^|_)(wall|seconds|elapsed|per_s|per_second|runtime|threads)(_|$)")  # how it ran, not what


def _normalise(obj, root: str, tmp: str):
    if isinstance(obj, dict):  # PEFT writes target_modules from a set: its order follows the hash seed
        return {k: sorted(v) if k == "target_modules" and isinstance(v, list) else _normalise(v, root, tmp)
                for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [_normalise(v, root, tmp) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<run>").replace(tmp, "<tmp>")
    return obj


def _folder(root: Path) -> dict[str, object]:
    """Every result of a run folder: JSON (timings dropped, the run's and the test's paths replaced), JSONL and adapter
    weights byte for byte. Figures and logs are left out (drawn from the JSON; timestamps)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if not p.is_file() or "submitit" in rel or p.suffix in (".png", ".log", ".lock"):
            continue
        if p.suffix == ".json":
            if p.name in ("trainer_state.json",):  # TRL's own log: wall times
                continue
            rec = _normalise(json.loads(p.read_text()), str(root), str(root.parent))
            if rel.startswith("stages/units/"):  # digests of input folders cover their logs (wall times)
                rec = {k: v for k, v in rec.items() if k not in ("inputs", "outputs")}
            out[rel] = rec
        elif p.name == "log.jsonl":  # the trainer's log: losses compared, its wall times not
            out[rel] = [_normalise(json.loads(x), str(root), str(root.parent)) for x in p.read_text().splitlines()]
        elif p.suffix in (".jsonl", ".safetensors"):
            out[rel] = p.read_bytes()
    return out


def _assert_same(got: dict[str, object], want: dict[str, object]) -> None:
    assert set(got) == set(want)
    for rel in want:
        assert got[rel] == want[rel], rel


def _run(tmp_path: Path, name: str, *extra: str) -> Path:
    out = tmp_path / name
    assert main(["experiment", "--config", str(_multi(tmp_path)), "--out", str(out), "--until", "correlate",
                 "--threads", "1", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def sequential(smollm2_dir, tmp_path_factory):
    import torch

    tmp = tmp_path_factory.mktemp("seq")
    threads, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the workers' thread count (models.load keeps it): the same bits
    torch.set_num_threads(1)
    try:
        out = tmp / "run"
        assert main(["experiment", "--config", str(_multi(tmp)), "--out", str(out), "--until", "correlate"]) == 0
    finally:
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    return _folder(out)


@pytest.mark.model
@pytest.mark.slow
def test_two_workers_give_the_sequential_folder(sequential, tmp_path):
    _assert_same(_folder(_run(tmp_path, "par", "--jobs", "2")), sequential)


@pytest.mark.model
@pytest.mark.slow
def test_submitit_local_executor_gives_the_sequential_folder(sequential, tmp_path):
    pytest.importorskip("submitit")
    out = _run(tmp_path, "sub", "--executor", "submitit-local", "--jobs", "2")
    assert (out / "stages" / "submitit").is_dir()  # submitit's job folders and logs
    _assert_same(_folder(out), sequential)


@pytest.mark.model
@pytest.mark.slow
def test_a_worker_killed_mid_training_resumes_to_the_same_folder(sequential, tmp_path):
    cfg, out = _multi(tmp_path), tmp_path / "killed"
    cmd = [sys.executable, "-m", "lls_cli", "experiment", "--config", str(cfg), "--out", str(out), "--until",
           "correlate", "--jobs", "2", "--threads", "1"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = out / "traits" / "owl" / "students" / "same" / "lls"
    deadline = time.time() + 600
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert children
    for pid in children:  # SIGKILL the workers mid-training: the pool breaks, the command fails
        os.kill(int(pid), signal.SIGKILL)
    proc.wait(timeout=300)
    assert proc.returncode != 0
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, timeout=1200)
    _assert_same(_folder(out), sequential)


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs must be an integer >= 1"),
    (["--devices", "gpu0"], "--devices: 'gpu0' is not a device"),
    (["--slurm", "partition"], "--slurm 'partition': give KEY=VALUE"),
    (["--threads", "0"], "--threads must be an integer >= 1"),
])
def test_bad_parallel_options_are_one_line_errors(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["experiment", "--config", str(_multi(tmp_path)), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists()


@pytest.mark.model
@pytest.mark.slow
def test_plan_lists_units_and_estimates_before_and_after_work(smollm2_dir, tmp_path, monkeypatch):
    from empirical.orchestration import plan as plan_mod
    from empirical.orchestration.experiment import load_config, run_experiment

    monkeypatch.setattr(plan_mod, "_rates_file", lambda: tmp_path / "rates.json")
    cfg, out = load_config(_multi(tmp_path)), tmp_path / "run"
    p = plan_mod.plan_experiment(cfg, out, log=lambda m: None)
    assert not out.exists()  # a plan writes nothing in the run folder
    assert all(v["done"] == 0 and v["todo"] == v["units"] for v in p["stages"].values())
    assert p["stages"]["train"]["units"] == 3  # owl, cat and the shared random student
    assert p["estimate_s"] > 0 and p["stages"]["train"]["estimate_s"] > 0 and p["stages"]["score"]["estimate_s"] > 0
    assert len(p["assumptions"]) == 2  # LLS subset sizes before selection
    rates = json.loads((tmp_path / "rates.json").read_text())
    assert len(rates) == 1 and next(iter(rates.values()))["forward"] > 0
    run_experiment(cfg, out, until="select", log=lambda m: None)
    q = plan_mod.plan_experiment(cfg, out, log=lambda m: None)
    assert [q["stages"][s]["todo"] for s in ("split", "score", "select")] == [0, 0, 0]
    assert q["stages"]["train"]["todo"] == 3 and not q["assumptions"]  # sizes read from the selections
    assert q["estimate_s"] < p["estimate_s"]
    assert "remaining: " in plan_mod.plan_text(q)
