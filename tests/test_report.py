"""Table 1 and the Figure-19 view of a (many-trait) experiment run, rebuilt from JSON alone.

A fake finished run (3 traits × 2 students: the teacher's own model, which has only z_s, and another model,
which also has the teacher's z_T) is written with numpy; every number of the report is then checked against an
independent computation from the same vectors (numpy's corrcoef, arccos of normalised dot products, the
eigenvalues of the Gram matrix), not against the code under test.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from lls_common.errors import LLSError

TRAITS = ("owl", "dog", "french")
STUDENTS = {"same": "teacher-model", "other": "other-model"}
N = 60
STEPS = (4, 8)


def _pearson(x, y) -> float:
    return float(np.corrcoef(x, y)[0, 1])


def _rep(x, y, half=0.1):
    r = _pearson(x, y)
    cos = float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
    return {"n": len(x), "pearson": r, "pearson_ci": [r - half, r + half], "pearson_p": 0.01, "cosine": cos,
            "cosine_ci": [cos - half, cos + half], "cosine_p": 0.01, "spearman": r, "spearman_ci": [r - half, r + half]}


def _correlate(rng, student: str, diff_ci: tuple[float, float]) -> dict:
    z_s = rng.standard_normal(N)
    z_T = rng.standard_normal(N) if student == "other" else None
    ref = z_T if z_T is not None else z_s
    arms = {}
    for arm, w in (("lls", 0.8), ("random", 0.1)):
        zm = {str(st): (w * st / STEPS[-1]) * ref + rng.standard_normal(N) for st in STEPS}
        refs = {"z_s": z_s} | ({"z_T": z_T} if z_T is not None else {})
        arms[arm] = {"run": f"{student}/{arm}", "z_M": {k: v.tolist() for k, v in zm.items()},
                     "checkpoints": [{"step": st, "mean_z_M": 0.0, "frac_z_M_pos": 0.5,
                                      "vs": {k: _rep(v, zm[str(st)]) for k, v in refs.items()}} for st in STEPS],
                     "final": {k: _rep(v, zm[str(STEPS[-1])]) for k, v in refs.items()}}
    con = {}
    for k in arms["lls"]["final"]:
        d = arms["lls"]["final"][k]["pearson"] - arms["random"]["final"][k]["pearson"]
        dc = arms["lls"]["final"][k]["cosine"] - arms["random"]["final"][k]["cosine"]
        con[k] = {"pearson": {"diff": d, "ci": list(diff_ci), "p": 0.02},
                  "cosine": {"diff": dc, "ci": list(diff_ci), "p": 0.02}}
    out = {"n": N, "ids": [f"p{i}" for i in range(N)], "z_s": z_s.tolist(), "arms": arms, "lls_minus_random": con,
           "student": STUDENTS[student], "teacher": STUDENTS["same"], "system_prompt": "You really love them."}
    if z_T is not None:
        out["z_T"] = z_T.tolist()
        out["teacher_vs_student"] = _rep(z_T, z_s)
    return out


# the paired-difference CI per (trait, student): 3 exclude 0 for "same" (2 above, 1 below), 1 for "other"
DIFF_CI = {("owl", "same"): (0.1, 0.3), ("dog", "same"): (0.05, 0.2), ("french", "same"): (-0.3, -0.1),
           ("owl", "other"): (-0.1, 0.2), ("dog", "other"): (0.01, 0.2), ("french", "other"): (-0.2, 0.1)}


@pytest.fixture()
def fake_run(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    root = tmp_path / "run"
    config = {"name": "animals-test", "seed": 0, "multi": True,
              "teacher": {"model": STUDENTS["same"], "dtype": "float32"},
              "students": [{"name": s, "model": m} for s, m in STUDENTS.items()],
              "traits": [{"name": t, "system_prompt": f"You love {t}.", "target": t, "language": None}
                         for t in TRAITS]}
    root.mkdir()
    (root / "config.json").write_text(json.dumps(config))
    for t in TRAITS:
        for s in STUDENTS:
            d = root / "traits" / t / "students" / s
            d.mkdir(parents=True)
            (d / "correlate.json").write_text(json.dumps(_correlate(rng, s, DIFF_CI[(t, s)])))
    # behaviour for one trait only (eval is optional per trait)
    ev = {"settings": {"prompts": ["a", "b"], "samples": 5, "temperature": 1.0, "max_new_tokens": 8},
          "conditions": {c: {"mention": {"k": k, "n": 10, "rate": k / 10, "ci": [0.0, min(1.0, k / 10 + 0.3)]},
                             "probe": {"p_target": 0.1}} for c, k in (("base", 0), ("system", 4), ("lls", 1),
                                                                      ("random", 0))},
          "vs_base": {}}
    for s in STUDENTS:
        (root / "traits" / "owl" / "students" / s / "eval.json").write_text(json.dumps(ev))
    return root


def _vectors(root: Path, trait: str, student: str):
    c = json.loads((root / "traits" / trait / "students" / student / "correlate.json").read_text())
    ref = np.array(c["z_T"] if "z_T" in c else c["z_s"])
    final = str(max(STEPS))
    return ref, np.array(c["arms"]["lls"]["z_M"][final]), np.array(c["arms"]["random"]["z_M"][final])


def test_table1_numbers_match_an_independent_computation(fake_run: Path):
    from empirical.report.table1 import load_run, table1

    run = load_run(fake_run)
    assert run.traits == list(TRAITS) and run.students == list(STUDENTS)
    tab = table1(run)
    rows = {r["student"]: r for r in tab["rows"]}
    assert rows["same"]["ref"] == "z_s" and rows["other"]["ref"] == "z_T"
    assert rows["same"]["kind"] == "same" and rows["other"]["kind"] == "cross"
    for s in STUDENTS:
        lls_vals, rnd_vals = [], []
        for t in TRAITS:
            ref, zl, zr = _vectors(fake_run, t, s)
            cell = rows[s]["cells"][t]
            assert cell["lls"]["pearson"] == pytest.approx(_pearson(ref, zl), abs=1e-12)
            assert cell["random"]["pearson"] == pytest.approx(_pearson(ref, zr), abs=1e-12)
            assert cell["diff"]["diff"] == pytest.approx(_pearson(ref, zl) - _pearson(ref, zr), abs=1e-12)
            assert cell["diff"]["ci"] == list(DIFF_CI[(t, s)])
            lls_vals.append(_pearson(ref, zl))
            rnd_vals.append(_pearson(ref, zr))
        summ = rows[s]["summary"]
        assert summ["mean_lls"] == pytest.approx(np.mean(lls_vals), abs=1e-12)
        assert summ["mean_random"] == pytest.approx(np.mean(rnd_vals), abs=1e-12)
        excl = [DIFF_CI[(t, s)] for t in TRAITS if DIFF_CI[(t, s)][0] > 0 or DIFF_CI[(t, s)][1] < 0]
        assert summ["n_diff_excludes_0"] == len(excl)
    assert rows["same"]["summary"]["n_diff_above_0"] == 2 and rows["same"]["summary"]["n_diff_below_0"] == 1
    # the paper's numbers: owls and dogs have columns, "french" has none
    assert rows["same"]["cells"]["owl"]["paper"] == 0.537 and rows["other"]["cells"]["dog"]["paper"] == 0.049
    assert rows["same"]["cells"]["french"]["paper"] is None


def test_fig19_angles_and_projection(fake_run: Path):
    from empirical.report.table1 import fig19, load_run

    f19 = fig19(load_run(fake_run))
    for s in STUDENTS:
        d = f19[s]
        K = len(TRAITS)
        units = []
        for k, t in enumerate(TRAITS):
            ref, zl, _ = _vectors(fake_run, t, s)
            cos = zl @ ref / np.linalg.norm(zl) / np.linalg.norm(ref)
            assert d["angles_deg"][t] == pytest.approx(math.degrees(math.acos(cos)), abs=1e-9)
            units.append((zl / np.linalg.norm(zl), ref / np.linalg.norm(ref)))
        U = np.vstack([u[0] for u in units] + [u[1] for u in units])  # z_M rows first, then references
        # oracle: the Gram matrix of the 2-D coordinates is the best rank-2 approximation of U U^T
        w, V = np.linalg.eigh(U @ U.T)
        top = np.argsort(w)[::-1][:2]
        gram2 = (V[:, top] * w[top]) @ V[:, top].T
        xy = np.array(d["xy"])
        assert xy.shape == (2 * K, 2)
        np.testing.assert_allclose(xy @ xy.T, gram2, atol=1e-9)
        assert d["explained"] == pytest.approx(w[top].sum() / w.sum(), abs=1e-12)


def test_run_report_writes_every_figure_and_table(fake_run: Path):
    from empirical.report import write_run_report

    out = write_run_report(fake_run)
    for f in ("table1.png", "fig19.png", "trajectory-same.png", "trajectory-other.png", "report.md", "table1.json"):
        assert (fake_run / f).is_file() and (fake_run / f).stat().st_size > 0, f
    for t in TRAITS:
        assert (fake_run / "traits" / t / "report.md").is_file()
        assert (fake_run / "traits" / t / "table1.png").is_file()
    assert (fake_run / "traits" / "owl" / "mention.png").is_file()
    assert not (fake_run / "traits" / "dog" / "mention.png").exists()  # no eval for dog
    assert "fig19.png" in out["figures"] and "report.md" in out["reports"]
    md = (fake_run / "report.md").read_text()
    ref, zl, _ = _vectors(fake_run, "dog", "other")
    assert f"**{_pearson(ref, zl):.2f}**" in md
    assert "CI excludes 0 for 3 of 3 (2 above, 1 below)" in md
    stored = json.loads((fake_run / "table1.json").read_text())
    assert stored["table1"]["rows"][0]["student"] == "same"


def test_stale_json_is_refused(fake_run: Path):
    from empirical.report.table1 import load_run, table1

    f = fake_run / "traits" / "dog" / "students" / "same" / "correlate.json"
    c = json.loads(f.read_text())
    c["arms"]["lls"]["final"]["z_s"]["pearson"] += 0.05
    f.write_text(json.dumps(c))
    with pytest.raises(LLSError, match=r"dog/students/same/correlate.json: arms.lls.final.z_s.pearson"):
        table1(load_run(fake_run))


def test_cli_report_and_errors(fake_run: Path, tmp_path: Path, capsys):
    from lls_cli import main

    for t in TRAITS[1:]:  # one trait folder is enough here (and renders faster)
        shutil.rmtree(fake_run / "traits" / t)
    assert main(["report", "--run", str(fake_run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "table1.png" in summary["figures"]
    assert main(["figures", "--run", str(tmp_path / "missing")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", "--run", str(empty)]) == 2
    assert "no students/<name>/correlate.json" in capsys.readouterr().err


@pytest.mark.slow
def test_committed_single_trait_run_renders_as_before(tmp_path: Path):
    """The committed one-trait result (results/e2e/run) still renders, with the numbers of its JSON."""
    src = Path(__file__).resolve().parent.parent / "results" / "e2e" / "run"
    if not (src / "students").is_dir():
        pytest.skip("no committed e2e result")
    run = tmp_path / "run"
    shutil.copytree(src, run, ignore=shutil.ignore_patterns("*.png", "report.md", "summary.json"))
    from empirical.report import write_run_report

    out = write_run_report(run)
    assert set(out["figures"]) >= {"table1.png", "mention.png", "trajectory-smollm2.png", "trajectory-gemma3.png"}
    md = (run / "report.md").read_text()
    for s in ("smollm2", "gemma3"):
        c = json.loads((run / "students" / s / "correlate.json").read_text())
        ref = np.array(c["z_T"] if "z_T" in c else c["z_s"])
        zm = np.array(c["arms"]["lls"]["z_M"][str(c["arms"]["lls"]["checkpoints"][-1]["step"])])
        assert f"**{_pearson(ref, zm):.2f}**" in md


def test_write_report_with_the_experiment_view_and_stage_json(fake_run: Path, tmp_path: Path):
    """The per-trait report as ``lls experiment`` calls it: a settings view object, stage JSON beside it."""
    from types import SimpleNamespace

    from empirical.report import write_report

    T = fake_run / "traits" / "dog"
    (T / "stages").mkdir()
    stages = {"split": {"n_records": 100, "n_bad": 1, "dropped": {}, "n_usable": 99, "n_heldout": N, "n_pool": 39},
              "select": {"n_positive": 20, "n_selected": 5, "weight_lls": {"mean": 0.3}, "weight_all": {"mean": 0.0},
                         "weight_random": {"mean": -0.01}},
              "train": {"same/lls": {"n_pairs": 5, "steps": 8, "wall_s_this_call": 3.0, "pairs_per_s_this_call": 1.7}}}
    for k, v in stages.items():
        (T / "stages" / f"{k}.json").write_text(json.dumps({"key": {}, "result": v}))
    view = SimpleNamespace(name="animals-test/dog", teacher=STUDENTS["same"], system_prompt="You love dogs.",
                           students=[SimpleNamespace(name=s, model=m) for s, m in STUDENTS.items()], target=None,
                           language=None, seed=0, data="x.jsonl", truncate=20, quantile=0.1, beta=0.1, lr=5e-4,
                           lora_rank=8, lora_alpha=16, epochs=1, repeat=1, batch_size=4, grad_accum=1, checkpoints=2)
    out = write_report(T, view)
    md = (T / "report.md").read_text()
    assert "## Data and selection" in md and "## Training" in md and "| same/lls | 5 | 8 | 3 | 1.70 |" in md
    assert f"paper {0.565:.2f}" in md  # trait "dog" named by its folder maps to the paper's dogs column (same teacher)
    assert "Not measured for this trait" in md and "mention.png" not in out["figures"]


def test_a_zero_margin_vector_is_skipped_not_fatal(fake_run: Path):
    """An LLS student that did not move (z_M = 0: no direction, Pearson undefined) leaves the rest intact."""
    from empirical.report.table1 import fig19, load_run, table1

    f = fake_run / "traits" / "dog" / "students" / "other" / "correlate.json"
    c = json.loads(f.read_text())
    last = str(max(STEPS))
    c["arms"]["lls"]["z_M"][last] = [0.0] * N
    for ref in c["arms"]["lls"]["final"]:
        c["arms"]["lls"]["final"][ref]["pearson"] = None  # NaN is stored as null
    f.write_text(json.dumps(c))
    run = load_run(fake_run)
    f19 = fig19(run)
    assert f19["other"]["skipped"] == ["dog"] and f19["other"]["traits"] == ["owl", "french"]
    assert len(f19["other"]["xy"]) == 4 and f19["same"]["skipped"] == []
    row = next(r for r in table1(run)["rows"] if r["student"] == "other")
    assert math.isnan(row["cells"]["dog"]["lls"]["pearson"])
    others = [_pearson(*_vectors(fake_run, t, "other")[:2]) for t in ("owl", "french")]
    assert row["summary"]["mean_lls"] == pytest.approx(np.mean(others), abs=1e-12)


def test_eval_without_mention_results_probe_only(fake_run: Path):
    """``[eval] mention = false`` (animals-hh): eval.json conditions carry ``probe`` only; the per-trait reports,
    Table 1 and the summary are written, the probe shown, no mention figure, no mention numbers invented."""
    from empirical.report import write_run_report

    ev = {"settings": {"prompts": ["a", "b"], "samples": 5, "temperature": 1.0, "max_new_tokens": 8},
          "conditions": {c: {"probe": {"p_target": p}} for c, p in (("base", 0.11), ("system", 0.52),
                                                                   ("lls", 0.23), ("random", 0.12))},
          "vs_base": {}, "reference": "auto"}
    for t in TRAITS:
        for s in STUDENTS:
            (fake_run / "traits" / t / "students" / s / "eval.json").write_text(json.dumps(ev))
    write_run_report(fake_run)
    for t in TRAITS:
        assert not (fake_run / "traits" / t / "mention.png").exists()
        md = (fake_run / "traits" / t / "report.md").read_text()
        assert "| system | – | – | – | 0.520 |" in md
        summ = json.loads((fake_run / "traits" / t / "summary.json").read_text())
        beh = summ["behaviour"]
        assert all(c.get("mention_rate") is None and c["p_target"] is not None for b in beh.values() for c in b.values())
    assert (fake_run / "report.md").is_file() and (fake_run / "table1.json").is_file()


def test_many_trait_report_has_the_specificity_section(fake_run: Path):
    from empirical.report import write_run_report

    out = write_run_report(fake_run)
    assert {"specificity-same.png", "specificity-other.png"} <= set(out["figures"])
    md = (fake_run / "report.md").read_text()
    assert "## Trait specificity" in md and "![specificity other](specificity-other.png)" in md
    # each trait has its own random student here: the cells share the pairs, not a control
    assert "independent cell(s) (they share the held-out pairs)" in md
    spec = json.loads((fake_run / "specificity.json").read_text())
    assert spec["traits"] == list(TRAITS) and spec["students"]["same"]["cells"]["control_shared"] is False
    tab = json.loads((fake_run / "table1.json").read_text())["table1"]
    assert tab["rows"][0]["independence"]["n_eff"] == spec["students"]["same"]["cells"]["n_eff"]


def test_a_partial_many_trait_run_reports_and_says_why_specificity_is_missing(fake_run: Path):
    from empirical.report import write_run_report

    (fake_run / "traits" / "dog" / "students" / "other" / "correlate.json").unlink()
    write_run_report(fake_run)
    md = (fake_run / "report.md").read_text()
    assert "Not measured: student 'other' has no correlate.json for trait 'dog'" in md
    assert not (fake_run / "specificity.json").exists()
