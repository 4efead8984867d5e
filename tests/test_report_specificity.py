"""``lls specificity`` on run folders: a synthetic many-trait run with a planted trait-specific effect (found),
without one (p uniform over seeds), the refusals, behaviour from the probe's distribution, subset overlap, the
report section, and the committed ten-animal run checked against an independent numpy computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sst

from empirical.report.specificity import run_specificity
from lls_cli import main

ROOT = Path(__file__).resolve().parents[1]
TABLE1 = ROOT / "results" / "table1" / "run"


def _run(root: Path, *, traits=("owl", "dog", "cat", "lion", "tiger", "bear"), n=150, specific=0.0, seed=0, control_shared=True,
         behaviour=False, ids=True) -> Path:
    """A finished many-trait run: teacher shifts r(A) = c + 0.3·s_A (nearly one direction, as the animal
    prompts'), a same-teacher student and an other-family student whose own z_s shares the teacher's specific
    parts; each LLS student z_M(A) = c + specific·s_A·(3) + noise; one shared random control."""
    rng = np.random.default_rng(seed)
    K = len(traits)
    c, s = rng.normal(size=n), rng.normal(size=(K, n))
    teacher = c + 0.3 * s
    rnd = rng.normal(size=n)
    config = {"name": "spec-test", "teacher": {"model": "teacher-model"},
              "students": [{"name": "same", "model": "teacher-model"}, {"name": "other", "model": "other-model"}],
              "traits": [{"name": t, "target": t} for t in traits]}
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps(config))
    for k, t in enumerate(traits):
        for student in ("same", "other"):
            zm = c + 3 * specific * s[k] + rng.normal(size=n)
            ctrl = rnd if control_shared else rng.normal(size=n)
            out = {"n": n, "z_s": teacher[k].tolist(), "student": dict(same="teacher-model", other="other-model")[student],
                   "teacher": "teacher-model",
                   "arms": {"lls": {"z_M": {"12": zm.tolist()}, "final": {}},
                            "random": {"z_M": {"10": ctrl.tolist()}, "final": {}}}}
            if ids:
                out["ids"] = [f"p{i}" for i in range(n)]
            if student == "other":
                out["z_s"] = (0.5 * c + 0.6 * s[k] + rng.normal(size=n)).tolist()  # its own shift: shares s_k
                out["z_T"] = teacher[k].tolist()
                out["arms"]["lls"]["final"] = {"z_T": {}}
            d = root / "traits" / t / "students" / student
            d.mkdir(parents=True)
            (d / "correlate.json").write_text(json.dumps(out))
            if behaviour:
                cands = list(traits) + ["dolphin"]
                p = np.full(len(cands), 1.0)
                p[k] += 2.0 * specific  # the student names its own trait more
                dist = np.tile(p / p.sum(), (4, 1))
                ev = {"conditions": {"lls": {"probe": {"target": t, "candidates": cands, "p_target": dist[0, k],
                                                       "distribution": dist.tolist()}}}}
                (d / "eval.json").write_text(json.dumps(ev))
        sel = root / "traits" / t / "select"
        sel.mkdir(parents=True)
        (sel / "summary.json").write_text(json.dumps({"selected_ids": [f"p{i}" for i in range(k, k + 10)]}))
    return root


def test_a_planted_specific_effect_is_found(tmp_path, capsys):
    root = _run(tmp_path / "run", specific=0.5, behaviour=True)
    assert main(["specificity", "--run", str(root), "--json", "--n-boot", "300"]) == 0
    out = json.loads(capsys.readouterr().out)
    for s in ("same", "other"):
        v = out["students"][s]
        assert v["centred_p"] < 0.01 and v["raw_p"] < 0.05
        assert v["centred_gap_ci"][0] > 0 and v["kappa_ci"][0] > 0
        assert v["permutation"] == {"method": "exact", "n_permutations": 720}
        assert v["positive_control"]["source"] == "other's own z_s vs the teacher's z_T"
        assert v["positive_control"]["centred_p"] < 0.05
        assert v["behaviour_centred_p"] == pytest.approx(1 / 720)
    spec = json.loads((root / "specificity.json").read_text())
    assert spec["students"]["same"]["cells"]["control_shared"] is True
    assert spec["overlap"]["available"] and spec["overlap"]["common_to_all"] == 5 and spec["overlap"]["union"] == 15
    assert set(spec["provenance"]["inputs"]) >= {"traits/owl/students/same/correlate.json",
                                                 "traits/owl/select/summary.json"}
    assert (root / "specificity-same.png").is_file() and (root / "specificity-other.png").is_file()


def test_without_a_specific_effect_p_is_uniform_over_seeds(tmp_path):
    ps = []
    for seed in range(60):
        spec = run_specificity(_run(tmp_path / f"r{seed}", specific=0.0, seed=seed, n=60), n_boot=20, seed=seed)
        ps += [spec["students"][s]["test"]["centred"]["permutation"]["p"] for s in ("same", "other")]
    ps = np.array(ps)
    assert np.mean(ps <= 0.25) <= 0.25 + 3 * np.sqrt(0.25 * 0.75 / ps.size)
    assert sst.kstest(ps, "uniform").pvalue > 0.001  # exact p on 720 relabellings: a fine grid


def test_the_shared_control_makes_the_cells_one_measurement(tmp_path):
    shared = run_specificity(_run(tmp_path / "a", control_shared=True, n=200), n_boot=400)
    own = run_specificity(_run(tmp_path / "b", control_shared=False, n=200), n_boot=400)
    assert shared["students"]["same"]["cells"]["control_shared"] is True
    assert own["students"]["same"]["cells"]["control_shared"] is False
    assert shared["students"]["same"]["cells"]["n_eff"] < own["students"]["same"]["cells"]["n_eff"]


@pytest.mark.parametrize("damage, message", [
    ("one_trait", "1 trait(s) (owl); trait specificity needs a run with 2 or more traits"),
    ("missing_student", "student 'other' has no correlate.json for trait 'dog'"),
    ("short_vector", "vectors of different lengths"),
    ("other_ids", "held-out pair ids differ"),
])
def test_refusals_are_one_line_and_write_nothing(tmp_path, capsys, damage, message):
    traits = ("owl",) if damage == "one_trait" else ("owl", "dog", "cat")
    root = _run(tmp_path / "run", traits=traits)
    f = root / "traits" / "dog" / "students" / "other" / "correlate.json"
    if damage == "missing_student":
        f.unlink()
    elif damage in ("short_vector", "other_ids"):
        d = json.loads(f.read_text())
        if damage == "short_vector":
            d.update(n=149, ids=d["ids"][:-1], z_s=d["z_s"][:-1], z_T=d["z_T"][:-1])
            d["arms"] = {a: {"z_M": {k: v[:-1] for k, v in arm["z_M"].items()}, "final": arm["final"]}
                         for a, arm in d["arms"].items()}
        else:
            d["ids"] = [f"q{i}" for i in range(150)]
        f.write_text(json.dumps(d))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(["specificity", "--run", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


@pytest.mark.skipif(not TABLE1.is_dir(), reason="the committed ten-animal run is not in this checkout")
def test_committed_ten_animal_run_matches_an_independent_computation(tmp_path, capsys):
    assert main(["specificity", "--run", str(TABLE1), "--out", str(tmp_path), "--json", "--n-boot", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    T = [t["name"] for t in json.loads((TABLE1 / "config.json").read_text())["traits"]]
    for student, ref in (("smollm2", "z_s"), ("gemma3", "z_T")):
        J = [json.loads((TABLE1 / "traits" / t / "students" / student / "correlate.json").read_text()) for t in T]
        R = np.array([j[ref] for j in J])
        Z = np.array([max(j["arms"]["lls"]["z_M"].items(), key=lambda kv: int(kv[0]))[1] for j in J])
        Zc, Rc = Z - Z.mean(axis=0), R - R.mean(axis=0)
        C = np.corrcoef(np.vstack([Zc, Rc]))[:10, 10:]
        v = out["students"][student]
        assert v["centred_diagonal"] == pytest.approx(np.trace(C) / 10, abs=1e-9)
        assert v["centred_off_diagonal"] == pytest.approx((C.sum() - np.trace(C)) / 90, abs=1e-9)
        assert v["K"] == 10 and v["n"] == 200
        assert v["permutation"] == {"method": "monte-carlo", "n_permutations": 9999}
    assert out["students"]["smollm2"]["positive_control"]["source"] == "gemma3's own z_s vs the teacher's z_T"


def test_the_runs_overlap_json_is_read_with_every_form(tmp_path):
    from empirical.report.specificity import specificity_markdown
    from lls_theory.selection import subset_overlap

    root = _run(tmp_path / "run")
    sets = {t: [f"p{i}" for i in range(k, k + 10)] for k, t in enumerate(("owl", "dog", "cat", "lion", "tiger", "bear"))}
    plain = {t: [f"p{i}" for i in range(10)] for t in sets}
    (root / "select").mkdir()
    (root / "select" / "overlap.json").write_text(json.dumps(
        {"forms": {"selected": subset_overlap(sets), "plain": subset_overlap(plain)}}))
    spec = run_specificity(root, n_boot=20)
    assert spec["overlap"]["source"] == "select/overlap.json" and spec["overlap"]["common_to_all"] == 5
    assert spec["overlap"]["forms"]["plain"]["mean_offdiag_overlap"] == 1.0
    md = "\n".join(specificity_markdown(spec))
    assert "- `plain`: mean pairwise overlap 1.00, common to all 10, union 10." in md


def test_traits_selected_in_two_forms_are_tested_apart_with_the_others_as_controls(tmp_path):
    """Four contrastively selected traits and three plain controls: each form gets its own K×K test, and the
    control comparison reads exactly the stated means of the stored vectors."""
    from empirical.report.specificity import specificity_markdown

    animals, controls = ["owl", "dog", "cat", "lion"], ["football", "french", "evil"]
    root = _run(tmp_path / "run", traits=tuple(animals + controls), specific=0.5)
    cfg = json.loads((root / "config.json").read_text())
    cfg["select"] = {"contrast": "others"}
    for t in cfg["traits"]:
        if t["name"] in controls:
            t["contrast"] = "none"
    (root / "config.json").write_text(json.dumps(cfg))
    spec = run_specificity(root, n_perm=999, n_boot=200)
    groups = spec["by_selection"]
    assert groups["others"]["traits"] == animals and groups["none"]["traits"] == controls
    g = groups["others"]["students"]["same"]
    assert g["test"]["K"] == 4 and g["controls"]["traits"] == controls

    def vec(t, key, arm=None):
        d = json.loads((root / "traits" / t / "students" / "same" / "correlate.json").read_text())
        return np.asarray(d[key] if arm is None else next(iter(d["arms"][arm]["z_M"].values())))

    own = np.mean([sst.pearsonr(vec(a, "z_s"), vec(a, None, "lls"))[0] for a in animals])
    ctrl = np.mean([sst.pearsonr(vec(a, "z_s"), vec(c, None, "lls"))[0] for a in animals for c in controls])
    assert g["controls"]["target_level"] == pytest.approx(own)
    assert g["controls"]["control_level"] == pytest.approx(ctrl)
    assert g["controls"]["half_rule"] == (ctrl > own / 2)
    # the planted specific effect shows within the contrastive group; every student of this world shares the
    # common direction c, so the controls reach c's part of the level: Pearson 1/sqrt(4.25 * 1.09) = 0.46
    # against the own students' 1.45/sqrt(4.25 * 1.09) = 0.67
    assert g["test"]["centred"]["diagonal"] > 0.1 and g["test"]["centred"]["permutation"]["p"] < 0.05
    assert g["controls"]["ratio"] == pytest.approx(1 / 1.45, abs=0.12)
    text = "\n".join(specificity_markdown(spec))
    assert "### By selection form" in text and "football, french, evil" in text
    # one form only: no per-form section
    assert "by_selection" not in run_specificity(_run(tmp_path / "one"), n_perm=99, n_boot=50)


def test_cli_summary_gives_each_selection_form(tmp_path, capsys):
    animals, controls = ["owl", "dog", "cat"], ["football", "french"]
    root = _run(tmp_path / "run", traits=tuple(animals + controls), specific=0.5)
    cfg = json.loads((root / "config.json").read_text())
    cfg["select"] = {"contrast": "others"}
    for t in cfg["traits"]:
        t["contrast"] = "none" if t["name"] in controls else None
    (root / "config.json").write_text(json.dumps(cfg))
    assert main(["specificity", "--run", str(root), "--json", "--n-boot", "100"]) == 0
    out = json.loads(capsys.readouterr().out)["by_selection"]
    spec = json.loads((root / "specificity.json").read_text())["by_selection"]
    assert set(out) == {"others", "none"}
    v, ref = out["others"]["students"]["same"], spec["others"]["students"]["same"]
    assert v["control_traits"] == controls and v["control_level"] == ref["controls"]["control_level"]
    assert v["half_rule"] == ref["controls"]["half_rule"] and v["centred_p"] == ref["test"]["centred"]["permutation"]["p"]
