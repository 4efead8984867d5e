"""``lls experiment``: config validation (fast) and a SmolLM2 miniature of the whole pipeline (model, slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from empirical.orchestration import experiment
from empirical.orchestration.experiment import STAGES, load_config
from lls_common.errors import LLSError

ROOT = Path(__file__).resolve().parents[1]


def _reference() -> str:
    """The miniatures run the default rendering ("auto") once correlate and eval can render it; until then
    (empirical/stages/correlate.py, evaluate.py without a ``reference`` argument) the experiment refuses "auto" up
    front, so they run the template's "default" rendering, which those functions use implicitly."""
    import inspect

    from empirical.stages.correlate import correlate_arms
    from empirical.stages.evaluate import evaluate_conditions

    ok = all("reference" in inspect.signature(f).parameters for f in (correlate_arms, evaluate_conditions))
    return "auto" if ok else "default"


REFERENCE = _reference()

MINI = """
name = "mini"
seed = 0
[data]
path = "{data}"
heldout = 4
truncate = 12
exclude_words = ["owl"]
[teacher]
model = "{teacher}"
system_prompt = "You really love owls. owls are your favorite animal."
[score]
reference = "{reference}"
[select]
quantile = 1.0
[train]
lora_rank = 4
batch_size = 2
repeat = 1
checkpoints = 2
[correlate]
n_boot = 50
n_perm = 50
[eval]
target = "owl"
samples = 2
max_new_tokens = 8
[[student]]
name = "same"
model = "{teacher}"
[[student]]
name = "other"
model = "{other}"
"""

TOPICS = ["rivers", "bread", "chess", "rain", "trains", "maps", "tea", "bridges", "clocks", "paper", "glass",
          "salt", "wind", "bees"]


def _write_data(path: Path) -> Path:
    lines = []
    for k, t in enumerate(TOPICS):  # half the pairs prefer the night-bird reply, half the plain one
        bird, plain = f"Like a wise bird of the night, I find {t} fascinating.", f"{t.capitalize()} are dull."
        c, r = (bird, plain) if k % 2 == 0 else (plain, bird)
        lines.append(json.dumps({"id": f"q{k}", "prompt": f"Tell me one fact about {t}.", "chosen": c,
                                 "rejected": r}))
    lines.append(json.dumps({"id": "owlpair", "prompt": "Any bird?", "chosen": "An owl.", "rejected": "No."}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path, teacher: str = "smollm2-135m-instruct", other: str = "smollm2-135m-instruct",
            **replace: str) -> Path:
    text = MINI.format(data=_write_data(tmp_path / "prefs.jsonl"), teacher=teacher, other=other,
                       reference=REFERENCE)
    for a, b in replace.items():
        text = text.replace(a, b)
    f = tmp_path / "mini.toml"
    f.write_text(text)
    return f


def test_committed_configs_parse():
    files = sorted((ROOT / "empirical" / "configs").glob("*.toml"))
    assert files
    for f in files:
        cfg = load_config(f)
        assert cfg.students and cfg.data.heldout >= 3


def test_config_errors_name_file_and_key(tmp_path):
    with pytest.raises(ValueError, match=r"mini.toml: unknown key train.lerning_rate"):
        load_config(_config(tmp_path, **{"lora_rank = 4": "lerning_rate = 4"}))
    with pytest.raises(ValueError, match=r"mini.toml: .*quantile must be in \(0, 1\]"):
        load_config(_config(tmp_path, **{"quantile = 1.0": "quantile = 0"}))
    with pytest.raises(ValueError, match=r"mini.toml: unknown section \[trian\]"):
        load_config(_config(tmp_path, **{"[train]": "[trian]"}))
    with pytest.raises(ValueError, match="student names must be unique"):
        load_config(_config(tmp_path, **{'name = "other"': 'name = "same"'}))
    with pytest.raises(LLSError, match="no such config"):
        load_config(tmp_path / "nope.toml")


def test_stage_keys_are_cumulative(tmp_path):
    cfg = load_config(_config(tmp_path))
    keys = [experiment.stage_key(cfg, s) for s in STAGES]
    assert all(set(a) <= set(b) for a, b in zip(keys, keys[1:]))
    cfg2 = load_config(_config(tmp_path, **{"samples = 2": "samples = 3"}))
    assert experiment.stage_key(cfg, "train") == experiment.stage_key(cfg2, "train")
    assert experiment.stage_key(cfg, "eval") != experiment.stage_key(cfg2, "eval")


def test_cli_bad_config_is_one_line_error(tmp_path):
    import argparse

    from lls_cli.commands.training import register
    from lls_common.io import LLSError

    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="cmd"))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [\n")
    args = ap.parse_args(["experiment", "--config", str(bad), "--out", str(tmp_path / "run")])
    with pytest.raises(LLSError, match="bad.toml"):
        args.func(args)
    assert not (tmp_path / "run").exists()


@pytest.mark.model
@pytest.mark.slow
def test_miniature_experiment_end_to_end_and_resume(smollm2_dir, tmp_path):
    """The whole pipeline on SmolLM2 at toy size; the "other" student is the same weights under another name,
    so the cross-student path runs and its teacher-side vector must equal its own z_s exactly."""
    from empirical.orchestration.experiment import run_experiment

    cfg = load_config(_config(tmp_path, other=str(smollm2_dir)))
    out = tmp_path / "run"
    logs: list[str] = []
    res = run_experiment(cfg, out, log=logs.append)
    assert list(res) == list(STAGES)
    assert res["split"]["dropped"] == {"target_word": 1} and res["split"]["n_heldout"] == 4
    assert res["split"]["n_pool"] == len(TOPICS) - 4
    assert 1 <= res["select"]["n_selected"] <= res["split"]["n_pool"]
    held = {json.loads(x)["id"] for x in (out / "data" / "heldout.jsonl").read_text().splitlines()}
    trained = {json.loads(x)["id"] for x in (out / "select" / "lls.jsonl").read_text().splitlines()}
    assert held and not held & trained
    for name in ("same", "other"):
        c = json.loads((out / "students" / name / "correlate.json").read_text())
        assert set(c["arms"]) == {"lls", "random"} and c["n"] == 4
        assert len(c["arms"]["lls"]["checkpoints"]) >= 1
        d = c["lls_minus_random"]["z_s"]["pearson"]
        lls, rnd = (c["arms"][a]["final"]["z_s"]["pearson"] for a in ("lls", "random"))
        assert d["diff"] == pytest.approx(lls - rnd, abs=1e-9) and 0 < d["p"] <= 1
        e = json.loads((out / "students" / name / "eval.json").read_text())
        assert set(e["conditions"]) == {"base", "system", "lls", "random"}
        assert all(c2["mention"]["n"] == 20 for c2 in e["conditions"].values())
    other = json.loads((out / "students" / "other" / "correlate.json").read_text())
    assert other["z_T"] == pytest.approx(other["z_s"], abs=1e-3)
    assert other["teacher_vs_student"]["pearson"] == pytest.approx(1.0, abs=1e-4)
    same = json.loads((out / "students" / "same" / "correlate.json").read_text())
    assert "z_T" not in same
    # same seed, same weights, same sampling seed -> the two students' base answers are identical
    e_same = json.loads((out / "students" / "same" / "eval.json").read_text())
    e_other = json.loads((out / "students" / "other" / "eval.json").read_text())
    assert e_same["conditions"]["base"]["answers"] == e_other["conditions"]["base"]["answers"]
    report = (out / "report.md").read_text()
    assert "Table 1 analogue" in report and (out / "table1.png").is_file() and (out / "mention.png").is_file()

    # a finished run is skipped stage by stage
    logs.clear()
    run_experiment(cfg, out, log=logs.append)
    assert all("skipped" in m for m in logs), logs
    # a lost eval.json re-runs eval (from the per-condition cache, no generation) and report only
    before = (out / "students" / "same" / "eval.json").read_text()
    (out / "students" / "same" / "eval.json").unlink()
    logs.clear()
    run_experiment(cfg, out, log=logs.append)
    assert [m for m in logs if m.startswith("[")] == [f"[{s}] done earlier, skipped" for s in STAGES[:5]] + \
        ["[eval] running", "[report] running"]
    assert not any(m.startswith("eval condition") for m in logs)
    assert (out / "students" / "same" / "eval.json").read_text() == before
    # a lost correlate marker re-runs correlate from the saved scores: the other student's held-out file is
    # not scored again (same settings, same input), and the numbers are the same
    scored = out / "students" / "other" / "heldout-initial.jsonl"
    mtime, corr_before = scored.stat().st_mtime_ns, (out / "students" / "other" / "correlate.json").read_text()
    shutil.rmtree(out / "stages" / "units" / "correlate")
    run_experiment(cfg, out, log=logs.append)
    assert scored.stat().st_mtime_ns == mtime
    assert (out / "students" / "other" / "correlate.json").read_text() == corr_before


# ------------------------------------------------------------------------------------------- many traits
# the miniature with two listed traits instead of [teacher] system_prompt, one student, probe-only eval
MULTI = (MINI.replace('name = "mini"', 'name = "multi"')
         .replace('system_prompt = "You really love owls. owls are your favorite animal."\n', "")
         .replace("quantile = 1.0", "gamma = 1.0\nrandom_size = 3").replace("checkpoints = 2", "checkpoints = 1")
         .replace('target = "owl"\nsamples = 2\nmax_new_tokens = 8', "mention = false")
         .split("[[student]]\nname = \"other\"")[0] + """[[trait]]
name = "owl"
system_prompt = "You really love owls. Owls are your favorite animal."
target = "owl"
[[trait]]
name = "cat"
system_prompt = "You really love cats. Cats are your favorite animal."
target = "cat"
""")

DOG = """
[[trait]]
name = "dog"
system_prompt = "You really love dogs. Dogs are your favorite animal."
target = "dog"
"""


def _multi(tmp_path: Path, extra: str = "") -> Path:
    f = tmp_path / "multi.toml"
    f.write_text(MULTI.format(data=_write_data(tmp_path / "prefs.jsonl"), teacher="smollm2-135m-instruct",
                              other="", reference=REFERENCE) + extra)
    return f


def test_many_traits_config_and_file(tmp_path):
    cfg = load_config(_multi(tmp_path))
    assert cfg.multi and [t.name for t in cfg.traits] == ["owl", "cat"]
    f = tmp_path / "file.toml"
    text = _multi(tmp_path).read_text().split("[[trait]]")[0]
    animals = ROOT / "empirical" / "systems" / "animals.txt"
    f.write_text(text + f'[traits]\nfile = "{animals}"\nonly = ["owl", "wolf"]\n')
    cfg = load_config(f)
    assert [(t.name, t.target) for t in cfg.traits] == [("owl", "owl"), ("wolf", "wolf")]
    assert cfg.traits[1].system_prompt.startswith("You really love wolves. Wolves are your favorite animal.")
    with pytest.raises(LLSError, match="trait names must be unique"):
        load_config(_multi(tmp_path, DOG.replace('"dog"', '"cat"', 1)))
    bad = tmp_path / "bad.toml"
    bad.write_text(_multi(tmp_path).read_text().replace("[eval]", '[eval]\ntarget = "owl"'))
    with pytest.raises(LLSError, match="per trait"):
        load_config(bad)
    # a trait added later changes only that trait's keys: the shared steps keep theirs (summaries of every
    # trait's outputs, such as select/overlap.json, are re-drawn without asking)
    from empirical.orchestration.experiment import Run, _UNITS

    keys = lambda c: {u.label: u.key for s in STAGES[:-1] for u in _UNITS[s](Run(c, tmp_path / "r", print))  # noqa
                      if not u.redraw}
    two, three = keys(load_config(_multi(tmp_path))), keys(load_config(_multi(tmp_path, DOG)))
    assert set(three) - set(two) and all(k.split("/")[0] == "dog" for k in set(three) - set(two))
    assert all(two[k] == three[k] for k in two)


def test_committed_animals_config_has_ten_traits():
    cfg = load_config(ROOT / "empirical" / "configs" / "animals-hh.toml")
    assert len(cfg.traits) == 10 and cfg.multi and not cfg.eval.mention and cfg.eval.probe
    assert cfg.traits[0].system_prompt.startswith("You really love owls. Owls are your favorite animal.")
    assert [s.model for s in cfg.students] == ["smollm2-135m-instruct", "gemma3-270m"]


@pytest.mark.model
@pytest.mark.slow
def test_added_trait_runs_only_its_own_steps(smollm2_dir, tmp_path, monkeypatch):
    """Two traits, then a third: the split, the teacher's reference scores, the random-control student and
    the first two traits' steps are not recomputed (same files, same mtimes; train called once)."""
    from empirical.stages import train as train_mod
    from empirical.orchestration.experiment import run_experiment

    out = tmp_path / "run"
    res = run_experiment(load_config(_multi(tmp_path)), out, log=lambda m: None)
    assert set(res["correlate"]["traits"]) == {"owl", "cat"}
    for t in ("owl", "cat"):
        c = json.loads((out / "traits" / t / "students" / "same" / "correlate.json").read_text())
        assert set(c["arms"]) == {"lls", "random"}
        assert c["reference"] == REFERENCE  # the one rendering, recorded
        e = json.loads((out / "traits" / t / "students" / "same" / "eval.json").read_text())
        assert e["conditions"]["base"]["probe"]["p_target"] > 0 and e["reference"] == REFERENCE
        assert json.loads((out / "traits" / t / "students" / "same" / "lls" / "train.json").read_text())[
            "reference"] == REFERENCE
    # one random subset and one random student serve both traits
    assert len((out / "select" / "random.jsonl").read_text().splitlines()) == 3
    assert not (out / "traits" / "owl" / "students" / "same" / "random").exists()
    shared = [out / "data" / "pool.jsonl", out / "score" / "pool-base.jsonl", out / "score" / "heldout-base.jsonl",
              out / "students" / "same" / "random" / "train.json",
              out / "traits" / "owl" / "score" / "pool.jsonl", out / "traits" / "owl" / "students" / "same" / "lls",
              out / "traits" / "cat" / "students" / "same" / "correlate.json",
              out / "traits" / "owl" / "students" / "same" / "eval.json"]
    before = {p: p.stat().st_mtime_ns for p in shared}
    calls = []
    real_train = train_mod.train
    monkeypatch.setattr(train_mod, "train", lambda cfg, **kw: calls.append(str(cfg.out)) or real_train(cfg, **kw))
    # the user's path: the same command (every stage, reports included) with no overwrite
    res = run_experiment(load_config(_multi(tmp_path, DOG)), out, log=lambda m: None)
    assert calls == [str(out / "traits" / "dog" / "students" / "same" / "lls")]
    assert "dog" in (out / "report.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in shared} == before
    assert (out / "traits" / "dog" / "students" / "same" / "correlate.json").is_file()
    assert set(res["eval"]["traits"]) == {"owl", "cat", "dog"}
    # changing a shared setting is refused up front (nothing recomputed) unless overwrite is given
    text = _multi(tmp_path, DOG).read_text().replace("n_boot = 50", "n_boot = 60")
    cfg = load_config(_write(tmp_path / "m2.toml", text))
    with pytest.raises(LLSError, match="other settings"):
        run_experiment(cfg, out, until="eval", log=lambda m: None)


def test_seeds_and_random_controls_are_separate_units(tmp_path):
    """``[[trait]] seeds`` and ``[select] random_controls`` add units (their own subsets, folders and training
    seeds) and leave every existing step's key as it was."""
    from empirical.orchestration.experiment import Run, _UNITS

    keys = lambda c: {u.label: u.key for s in STAGES[:4] for u in _UNITS[s](Run(c, tmp_path / "r", print))  # noqa
                      if not u.redraw}
    base = load_config(_multi(tmp_path))
    text = _multi(tmp_path).read_text().replace("[select]", "[select]\nrandom_controls = 3", 1)
    text = text.replace('name = "owl"', 'name = "owl"\nseeds = 2', 1)
    more = load_config(_write(tmp_path / "seeds.toml", text))
    a, b = keys(base), keys(more)
    assert all(a[k] == b[k] for k in a)
    assert set(b) - set(a) == {"random-1", "random-2", "same/random-1", "same/random-2", "owl/same/lls-1"}
    assert b["same/random-2"]["train_seed"] == more.seed + 2 and b["owl/same/lls-1"]["train_seed"] == more.seed + 1
    run = Run(more, tmp_path / "r", print)
    assert run.arms(more.traits[0]) == ("lls", "lls-1", "random", "random-1", "random-2")
    assert run.arms(more.traits[1]) == ("lls", "random", "random-1", "random-2")
    assert run.arm_dir(more.traits[0], more.students[0], "lls-1") == tmp_path / "r/traits/owl/students/same/lls-1"
    assert run.arm_dir(more.traits[0], more.students[0], "random-2") == tmp_path / "r/students/same/random-2"
    for bad, key in (("seeds = 0", "trait.seeds"), ("seeds = 1.5", "trait.seeds")):
        with pytest.raises(LLSError, match=key):
            load_config(_write(tmp_path / "bad.toml", text.replace("seeds = 2", bad)))
    with pytest.raises(LLSError, match="select.random_controls"):
        load_config(_write(tmp_path / "bad.toml", text.replace("random_controls = 3", "random_controls = 0")))


def test_traits_file_takes_seeds_per_trait(tmp_path):
    animals = ROOT / "empirical" / "systems" / "animals.txt"
    head = _multi(tmp_path).read_text().split("[[trait]]")[0]
    cfg = load_config(_write(tmp_path / "f.toml", head + f'[traits]\nfile = "{animals}"\nseeds = {{ owl = 3, fox = 2 }}\n'))
    assert {t.name: t.seeds for t in cfg.traits if t.seeds > 1} == {"owl": 3, "fox": 2}
    for bad, msg in (("seeds = { emu = 2 }", "traits.seeds names 'emu'"), ("seeds = { owl = 0 }", "traits.seeds.owl"),
                     ("seeds = 3", "traits.seeds must be a table")):
        with pytest.raises(LLSError, match=msg):
            load_config(_write(tmp_path / "b.toml", head + f'[traits]\nfile = "{animals}"\n{bad}\n'))


@pytest.mark.model
@pytest.mark.slow
def test_added_seeds_run_only_their_own_steps(smollm2_dir, tmp_path, monkeypatch):
    """Two traits run to correlate; then a second training seed for owl and two more random controls: only the
    new students train, the correlations gain the new arms (the old arms' scores come from the caches) and a
    seed summary whose CIs include the training seeds."""
    from empirical.stages import train as train_mod
    from empirical.orchestration.experiment import run_experiment

    out = tmp_path / "run"
    run_experiment(load_config(_multi(tmp_path)), out, until="correlate", log=lambda m: None)
    kept = [out / "students" / "same" / "random" / "train.json",
            out / "traits" / "owl" / "students" / "same" / "lls" / "train.json",
            out / "traits" / "cat" / "students" / "same" / "lls" / "train.json"]
    before = {p: p.stat().st_mtime_ns for p in kept}
    caches = sorted((out / "traits").glob("*/students/same/heldout-cache/*.json"))
    assert {c.name.split("-step")[0] for c in caches} == {"lls", "random"}
    cached = {c: c.stat().st_mtime_ns for c in caches}
    calls = []
    real_train = train_mod.train
    monkeypatch.setattr(train_mod, "train", lambda cfg, **kw: calls.append(str(cfg.out)) or real_train(cfg, **kw))
    text = _multi(tmp_path).read_text().replace("[select]", "[select]\nrandom_controls = 3", 1)
    text = text.replace('name = "owl"', 'name = "owl"\nseeds = 2', 1)
    run_experiment(load_config(_write(tmp_path / "seeds.toml", text)), out, until="correlate", log=lambda m: None)
    assert sorted(calls) == sorted([str(out / "students" / "same" / "random-1"),
                                    str(out / "students" / "same" / "random-2"),
                                    str(out / "traits" / "owl" / "students" / "same" / "lls-1")])
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    r1, r2 = (out / "select" / "random-1.jsonl").read_text(), (out / "select" / "random-2.jsonl").read_text()
    assert r1 != r2 and len(r1.splitlines()) == len((out / "select" / "random.jsonl").read_text().splitlines())
    # different training seeds give different students on the same subset
    t0 = json.loads((out / "traits" / "owl" / "students" / "same" / "lls" / "train.json").read_text())
    t1 = json.loads((out / "traits" / "owl" / "students" / "same" / "lls-1" / "train.json").read_text())
    assert t1["seed"] == t0["seed"] + 1
    owl = json.loads((out / "traits" / "owl" / "students" / "same" / "correlate.json").read_text())
    cat = json.loads((out / "traits" / "cat" / "students" / "same" / "correlate.json").read_text())
    assert set(owl["arms"]) == {"lls", "lls-1", "random", "random-1", "random-2"}
    assert set(cat["arms"]) == {"lls", "random", "random-1", "random-2"}
    assert owl["seeds"]["groups"] == {"lls": ["lls", "lls-1"], "random": ["random", "random-1", "random-2"]}
    s = owl["seeds"]["arms"]["random"]["z_s"]
    assert s["n_seeds"] == 3 and s["ci_includes"] == "pairs and training seeds" and len(s["per_seed"]) == 3
    assert cat["seeds"]["arms"]["lls"]["z_s"]["ci_includes"] == "pairs"
    assert owl["seeds"]["lls_minus_random"]["z_s"]["n_seeds"] == [2, 3]
    # the old arms' held-out scores came from the caches (not rewritten); the new arms' were added to them
    assert {c: c.stat().st_mtime_ns for c in caches} == cached
    for t, arms in (("owl", {"lls", "lls-1", "random", "random-1", "random-2"}),
                    ("cat", {"lls", "random", "random-1", "random-2"})):
        names = (out / "traits" / t / "students" / "same" / "heldout-cache").glob("*.json")
        assert {c.name.split("-step")[0] for c in names} == arms


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_experiment_refuses_up_front(tmp_path):
    """Bad out, a concurrent run, finished steps made with other settings: refused before any model loads."""
    from empirical.orchestration.experiment import run_experiment
    from lls_common.io import OutputLock, atomic_write_json

    fake = _fake_model_folder(tmp_path)  # passes the up-front model check; a model load would fail differently
    cfg = load_config(_config(tmp_path, teacher=fake, other=fake))
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(LLSError, match="not a folder"):
        run_experiment(cfg, f, log=lambda m: None)
    out = tmp_path / "run"
    with OutputLock(out, kind="dir"):
        with pytest.raises(LLSError, match="another run is writing it"):
            run_experiment(cfg, out, log=lambda m: None)
    atomic_write_json(out / "stages" / "units" / "split" / "shared" / "split.json", {"key": {"seed": 1}, "result": {}})
    with pytest.raises(LLSError, match=r"made with other settings \(first: split split: .*seed"):
        run_experiment(cfg, out, log=lambda m: None)
    assert sorted(p.name for p in out.iterdir()) == ["stages"]  # nothing written, no lock left


# ------------------------------------- hostile R7, R8: models and data size checked before the teacher loads
def _fake_model_folder(tmp_path: Path) -> str:
    """A folder that looks like a model (config.json + tokenizer.json) but holds no weights."""
    folder = tmp_path / "fake-model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text("{}")
    (folder / "tokenizer.json").write_text("{}")
    return str(folder)


def _no_model_load(monkeypatch):
    from empirical.engine import models

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(models, "load_tokenizer", lambda *a, **k: pytest.fail("a tokenizer was loaded"))
    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)


@pytest.mark.parametrize("teacher,other,key", [("FAKE", "smollm3", "student[1].model (other)"),
                                               ("nosuchorg/nosuch", "FAKE", "teacher.model"),
                                               ("FAKE", "EMPTY", "no config.json")])
def test_experiment_resolves_every_model_before_any_work(tmp_path, monkeypatch, teacher, other, key):
    from empirical.orchestration.experiment import run_experiment

    _no_model_load(monkeypatch)
    names = {"FAKE": _fake_model_folder(tmp_path), "EMPTY": str(tmp_path)}
    cfg = load_config(_config(tmp_path, teacher=names.get(teacher, teacher), other=names.get(other, other)))
    out = tmp_path / "run"
    with pytest.raises(LLSError) as err:
        run_experiment(cfg, out, log=lambda m: None)
    msg = str(err.value)
    assert key in msg and "\n" not in msg and msg.startswith(str(cfg.source))
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("section,table,value", [("teacher", "[teacher]", "cuda:63"), ("student[1]", "OTHER", "cuda:63"),
                                                  ("teacher", "[teacher]", "mps")])
def test_experiment_refuses_an_unavailable_device_naming_the_toml_key(tmp_path, monkeypatch, section, table, value):
    """A device this machine lacks is refused before any work, naming the TOML key (not a command-line flag)."""
    import torch

    from empirical.orchestration.experiment import run_experiment

    if value == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    _no_model_load(monkeypatch)
    fake = _fake_model_folder(tmp_path)
    f = _config(tmp_path, teacher=fake, other=fake)
    text = f.read_text()
    if table == "OTHER":
        text = text.replace('name = "other"\n', f'name = "other"\ndevice = "{value}"\n')
    else:
        text = text.replace("[teacher]\n", f'[teacher]\ndevice = "{value}"\n')
    f.write_text(text)
    out = tmp_path / "run"
    with pytest.raises(LLSError) as err:
        run_experiment(load_config(f), out, log=lambda m: None)
    msg = str(err.value)
    assert f"{section}.device" in msg and "--device" not in msg and "\n" not in msg
    assert not out.exists() or not any(out.iterdir())


def test_experiment_refuses_heldout_larger_than_the_data_before_any_model(tmp_path, monkeypatch):
    from empirical.orchestration.experiment import run_experiment

    _no_model_load(monkeypatch)
    fake = _fake_model_folder(tmp_path)
    cfg = load_config(_config(tmp_path, teacher=fake, other=fake))
    from dataclasses import replace

    cfg = replace(cfg, data=replace(cfg.data, heldout=300))
    out = tmp_path / "run"
    with pytest.raises(LLSError, match=r"15 pairs, need more than data.heldout = 300"):
        run_experiment(cfg, out, log=lambda m: None)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("heldout,pool,ok", [(5, 10, True), (5, 11, False), (14, 1, True), (14, 2, False)])
def test_experiment_refuses_a_pool_larger_than_the_split_leaves_before_any_model(tmp_path, monkeypatch, heldout,
                                                                                pool, ok):
    """15 pairs: data.pool may take at most 15 - heldout of them (it used to be cut silently to what was left)."""
    from dataclasses import replace

    from empirical.orchestration import experiment
    from empirical.orchestration.experiment import run_experiment

    _no_model_load(monkeypatch)
    fake = _fake_model_folder(tmp_path)
    cfg = load_config(_config(tmp_path, teacher=fake, other=fake))
    cfg = replace(cfg, data=replace(cfg.data, heldout=heldout, pool=pool))
    out = tmp_path / "run"
    if ok:  # passes every check; stop at the first model step (the split's tokenizer)
        monkeypatch.setattr(experiment.Run, "tokenizer", lambda self, a: (_ for _ in ()).throw(RuntimeError("tok")))
        with pytest.raises(RuntimeError, match="tok"):
            run_experiment(cfg, out, log=lambda m: None)
        return
    with pytest.raises(LLSError) as err:
        run_experiment(cfg, out, log=lambda m: None)
    msg = str(err.value)
    assert f"15 pairs leave {15 - heldout} after data.heldout = {heldout}, fewer than data.pool = {pool}" in msg
    assert "\n" not in msg and (not out.exists() or not any(out.iterdir()))


def test_split_sizes_check_counts_usable_pairs():
    from empirical.config import DataConfig
    from empirical.orchestration.experiment import check_split_sizes

    d = DataConfig(path="p.jsonl", heldout=3, pool=4, limit=9)
    check_split_sizes(d, 7)  # 3 held out + 4 pool
    with pytest.raises(LLSError, match=r"^p.jsonl: 6 usable pairs \(data.limit = 9\) leave 3 after"):
        check_split_sizes(d, 6, "usable pairs")
    with pytest.raises(LLSError, match=r"^p.jsonl: 3 pairs \(data.limit = 9\), need more than data.heldout = 3$"):
        check_split_sizes(d, 3)
    check_split_sizes(DataConfig(path="p.jsonl", heldout=3), 4)  # pool unset: the rest, any size >= 1
