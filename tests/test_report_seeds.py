"""Reports of runs with several training seeds: Table-1 cells become seed means whose CIs include the seeds,
the Training-seeds section lists every seed, and a stale seed summary is refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from empirical.stages.correlate import seed_summary
from lls_common.errors import LLSError
from lls_theory.stats import pearson


def _run(root: Path, n: int = 80, lls_seeds: int = 2, random_seeds: int = 3) -> Path:
    rng = np.random.default_rng(0)
    traits = ("owl", "dog")
    config = {"name": "seeds", "teacher": {"model": "m"}, "students": [{"name": "same", "model": "m"}],
              "traits": [{"name": t, "target": t} for t in traits]}
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    rnd = [rng.normal(size=n) for _ in range(random_seeds)]
    for t in traits:
        z_s = rng.normal(size=n)
        arms = {}
        for k in range(lls_seeds):
            arms["lls" if k == 0 else f"lls-{k}"] = 0.5 * z_s + rng.normal(size=n)
        for k, z in enumerate(rnd):
            arms["random" if k == 0 else f"random-{k}"] = z
        res = {"n": n, "z_s": z_s.tolist(), "student": "m", "teacher": "m", "ids": [f"p{i}" for i in range(n)],
               "arms": {a: {"z_M": {"12": z.tolist()},
                            "final": {"z_s": {"pearson": pearson(z_s, z), "pearson_ci": [0.0, 0.5]}},
                            "checkpoints": [{"step": 12, "vs": {"z_s": {"pearson": pearson(z_s, z),
                                                                         "pearson_ci": [0.0, 0.5]}}}]}
                        for a, z in arms.items()}}
        res["lls_minus_random"] = {"z_s": {"pearson": {"diff": pearson(z_s, arms["lls"]) - pearson(z_s, arms["random"]),
                                                       "ci": [-0.1, 0.6], "p": 0.01}}}
        res["seeds"] = seed_summary(res, n_boot=200)
        d = root / "traits" / t / "students" / "same"
        d.mkdir(parents=True)
        (d / "correlate.json").write_text(json.dumps(res))
    return root


def test_table1_cells_are_seed_means_with_seed_cis(tmp_path):
    from empirical.report import write_many_trait_report
    from empirical.report.table1 import load_run, table1

    root = _run(tmp_path / "run")
    tab = table1(load_run(root))
    for t in ("owl", "dog"):
        res = json.loads((root / "traits" / t / "students" / "same" / "correlate.json").read_text())
        c = tab["rows"][0]["cells"][t]
        z_s = np.asarray(res["z_s"])
        per = lambda names: [pearson(z_s, np.asarray(res["arms"][a]["z_M"]["12"])) for a in names]  # noqa: E731
        assert c["lls"]["pearson"] == pytest.approx(np.mean(per(["lls", "lls-1"])))
        assert c["random"]["per_seed"] == pytest.approx(per(["random", "random-1", "random-2"]))
        assert c["lls"]["ci_includes"] == c["random"]["ci_includes"] == "pairs and training seeds"
        assert c["diff"]["diff"] == pytest.approx(c["lls"]["pearson"] - c["random"]["pearson"])
        assert c["diff"]["n_seeds"] == [2, 3] and c["diff"]["ci"] == res["seeds"]["lls_minus_random"]["z_s"]["ci"]
    write_many_trait_report(root)
    text = (root / "report.md").read_text()
    assert "## Training seeds" in text and "(3 seeds)" in text and "two-stage bootstrap" in text


def test_one_seed_reports_as_before(tmp_path):
    from empirical.report.table1 import load_run, table1, table1_markdown

    root = _run(tmp_path / "run", lls_seeds=1, random_seeds=1)
    for f in root.glob("traits/*/students/same/correlate.json"):
        res = json.loads(f.read_text())
        del res["seeds"]
        f.write_text(json.dumps(res))
    tab = table1(load_run(root))
    assert "n_seeds" not in tab["rows"][0]["cells"]["owl"]["lls"]
    assert "seeds" not in "\n".join(table1_markdown(tab))


def test_a_stale_seed_summary_is_refused(tmp_path):
    from empirical.report.table1 import load_run, table1

    root = _run(tmp_path / "run")
    f = root / "traits" / "dog" / "students" / "same" / "correlate.json"
    res = json.loads(f.read_text())
    res["seeds"]["arms"]["random"]["z_s"]["mean"] += 0.01
    f.write_text(json.dumps(res))
    with pytest.raises(LLSError, match=r"dog/students/same/correlate.json: seeds.arms.random.z_s.mean"):
        table1(load_run(root))
