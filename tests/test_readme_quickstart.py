"""The README's quick-start commands, read from the README itself and run as a user types them, offline: the
hub dataset replaced by the local copy of the same file, sizes shrunk so the run takes minutes, training cut
with --max-steps, sampling with --samples/--max-new-tokens. Commands that need the Gemma model (not installed in CI) or hours of work are listed and
skipped by name, so a new quick-start line is run unless it is added to that list on purpose."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"

# substitutions that keep each command what it is but small (the pattern must occur, or the test fails)
SHRINK = [
    (r"--heldout 300", "--heldout 6"),
    (r"--pool 200", "--pool 40"),
]
SKIP = {  # (a word of the command line, why)
    "gemma3-270m": "needs the Gemma-3-270M weights, which CI does not install",
    "--config empirical/configs/animals-hh.toml": "the ten-animal study: hours of training (its units are tested "
                                                   "on a miniature in test_emp_experiment / test_emp_parallel)",
    "lls specificity --run runs/animals": "needs the finished ten-animal run; run here on results/table1/run",
}


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line:
                cmds.append(line)
    return cmds


def test_the_quickstart_has_the_four_uses():
    cmds = " ".join(_quickstart_commands())
    for word in ("lls demo", "lls check-proof", "lls split", "lls build", "lls train", "lls correlate", "lls eval",
                 "lls experiment", "lls pair-check", "lls specificity"):
        assert word in cmds


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.skipif(not HH.is_file(), reason="needs the local copy of HH-RLHF harmless-base test")
def test_quickstart_commands_run_as_written_offline(tmp_path):
    for name in ("empirical", "simulations", "results"):  # the paths the commands name, relative to a clone
        (tmp_path / name).symlink_to(ROOT / name)
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1",
           "PYTHONPATH": str(ROOT)}
    ran, skipped = [], []
    for cmd in _quickstart_commands():
        if cmd.startswith("HH="):
            env["HH"] = f"--data {HH}"  # the README's offline variant: the same file, local
            continue
        why = next((w for k, w in SKIP.items() if k in cmd), None)
        if why:
            skipped.append(cmd)
            continue
        for pattern, small in SHRINK:
            cmd = re.sub(pattern, small, cmd)
        if cmd.startswith("lls train "):
            cmd += " --max-steps 2"
        if cmd.startswith("lls eval "):
            cmd += " --samples 2 --max-new-tokens 8"
        argv = [a for part in shlex.split(cmd) for a in (env["HH"].split() if part == "$HH" else [part])]
        p = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, f"{cmd}\n{p.stderr[-3000:]}"
        ran.append(cmd)
    assert len(ran) >= 9, ran
    assert (tmp_path / "runs" / "owl" / "lls.jsonl").is_file() and (tmp_path / "runs" / "owl" / "correlate").is_dir()
    p = subprocess.run(["lls", "specificity", "--run", str(ROOT / "results" / "table1" / "run"), "--out",
                        str(tmp_path / "spec"), "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert len(skipped) == 5, skipped  # pair-check with Gemma, the three animals-hh lines, specificity on them
