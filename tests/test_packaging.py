"""pyproject's stated bounds: the min-versions constraints pin every dependency, and the Python bound matches
what the code imports."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import min_constraints  # noqa: E402


def _names(reqs):
    return {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", r).group(0)).lower() for r in reqs}


def test_min_constraints_pin_every_dependency_at_its_lower_bound(tmp_path):
    proj = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = proj["dependencies"] + proj["optional-dependencies"]["empirical"] + proj["optional-dependencies"]["test"]
    out = tmp_path / "c.txt"
    subprocess.run([sys.executable, str(REPO / "scripts" / "min_constraints.py"), str(out), "--override",
                    "torch==2.13.0"], check=True, capture_output=True)
    pins = out.read_text().split("\n")[:-1]
    assert _names(pins) == _names(reqs)  # every dependency, no other
    for r in reqs:
        name = re.match(r"[A-Za-z0-9._-]+", r).group(0)
        low = re.search(r">=\s*([0-9][^,;\s]*)", r).group(1)
        expected = "torch==2.13.0" if name == "torch" else f"{name}=={low}"
        assert expected in pins, (r, pins)


def test_min_constraints_refuse_a_requirement_without_a_lower_bound(tmp_path):
    py = tmp_path / "pyproject.toml"
    py.write_text('[project]\nname = "x"\ndependencies = ["numpy>=1.24", "scipy"]\n[project.optional-dependencies]\n'
                  'empirical = []\ntest = []\n')
    with pytest.raises(SystemExit, match="scipy.*no lower bound"):
        min_constraints.lower_bound_pins(py, ["empirical", "test"])


def test_the_python_bound_covers_tomllib():
    """The code imports tomllib (Python 3.11+): pyproject may not promise an older Python."""
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert re.fullmatch(r">=\s*3\.(\d+)", spec) and int(re.fullmatch(r">=\s*3\.(\d+)", spec).group(1)) >= 11
    assert "Python ≥ 3.11" in (REPO / "README.md").read_text()
