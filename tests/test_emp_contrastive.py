"""Contrastive selection in ``lls select`` / ``lls experiment``, the control traits of the system-prompt library,
and the validation of the contrast settings (fast: the teacher's scores are synthetic, no model loads)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from empirical.orchestration.experiment import load_config
from lls_common.errors import LLSError

ROOT = Path(__file__).resolve().parents[1]

TOPICS = ["rivers", "bread", "chess", "rain", "trains", "maps", "tea", "bridges", "clocks", "paper", "glass",
          "salt", "wind", "bees", "lamps", "roads", "ships", "coins", "hills", "books", "doors", "kites"]

CONFIG = """
name = "contrast"
seed = 0
[data]
path = "{data}"
heldout = 4
[teacher]
model = "smollm2-135m-instruct"
[select]
gamma = 0.5
{select}
[eval]
probe = false
mention = false
[[student]]
name = "same"
model = "smollm2-135m-instruct"
{traits}
"""

TRAITS = "".join(f'[[trait]]\nname = "{a}"\n' for a in ("owl", "cat", "dog"))


def _h(*a: object) -> float:
    """A deterministic number in [0, 1) from its arguments."""
    return int(hashlib.sha256(repr(a).encode()).hexdigest()[:12], 16) / 16 ** 12


def _fake_run_score(job, overwrite=False, model_and_tok=None, inputs=()):
    """Synthetic teacher scores: every system prompt shifts the chosen reply's log-prob by a term common to all
    prompts (what "You really love X" does whatever X is) plus a smaller prompt-specific term."""
    from lls_common.io import atomic_write_json, atomic_write_jsonl
    from lls_theory.selection import lls_weights

    out = []
    for line in Path(job.data.path).read_text().splitlines():
        r = json.loads(line)
        lc, lr = -5 - 3 * _h("c", r["id"]), -5 - 3 * _h("r", r["id"])
        rec = {"id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"][0]["content"],
               "rejected": r["rejected"][0]["content"], "logp_chosen": lc, "logp_rejected": lr,
               "n_tokens_chosen": 4, "n_tokens_rejected": 4}
        if job.system_prompt is not None:
            rec["logp_chosen_sys"] = lc + 2.0 * (_h("common", r["id"]) - 0.3) + (_h(job.system_prompt, r["id"]) - 0.5)
            rec["logp_rejected_sys"] = lr
            rec["weight"] = float(lls_weights([rec["logp_chosen_sys"]], [lr], [lc], [lr], [4], [4])[0])
        out.append(rec)
    atomic_write_jsonl(job.out, out)
    atomic_write_json(Path(str(job.out) + ".run.json"), {"key": job.run_key(), "result": {}})
    return {"out": str(job.out), "records": len(out), "bad": 0, "scored": len(out), "dropped": {},
            "first_errors": [], "chunks": 1, "chunks_resumed": 0, "processes": 1}


@pytest.fixture
def no_models(monkeypatch, smollm2_dir):
    """Scoring replaced by :func:`_fake_run_score`; no model weights load (the split uses the tokenizer)."""
    from empirical.orchestration import experiment
    from empirical.stages import build

    monkeypatch.setattr(build, "run_score", _fake_run_score)
    monkeypatch.setattr(experiment.Run, "model", lambda self, args: (None, None))


def _data(path: Path) -> Path:
    lines = [json.dumps({"id": f"q{k}", "prompt": f"Tell me one fact about {t}.", "chosen": f"{t} are old.",
                         "rejected": f"I do not know about {t}."}) for k, t in enumerate(TOPICS)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path, select: str = "", traits: str = TRAITS, name: str = "c.toml") -> Path:
    f = tmp_path / name
    f.write_text(CONFIG.format(data=_data(tmp_path / "prefs.jsonl"), select=select, traits=traits))
    return f


def _lls_ids(folder: Path) -> list[str]:
    return [json.loads(x)["id"] for x in (folder / "lls.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------ the experiment

def test_experiment_contrastive_select_records_settings_and_differs_from_plain(tmp_path, no_models):
    from empirical.orchestration.experiment import run_experiment
    from lls_theory.selection import contrastive_weights

    plain_out, con_out = tmp_path / "plain", tmp_path / "contrast"
    run_experiment(load_config(_config(tmp_path)), plain_out, until="select", log=lambda m: None)
    res = run_experiment(load_config(_config(tmp_path, 'contrast = "others"', name="o.toml")), con_out,
                         until="select", log=lambda m: None)
    assert set(res["select"]["traits"]) == {"owl", "cat", "dog"}
    differs = 0
    for t in ("owl", "cat", "dog"):
        p = json.loads((plain_out / "traits" / t / "select" / "summary.json").read_text())
        c = json.loads((con_out / "traits" / t / "select" / "summary.json").read_text())
        assert p["contrast"] == "none" and "contrast_against" not in p
        assert c["contrast"] == "others"
        assert [a["name"] for a in c["contrast_against"]] == [o for o in ("owl", "cat", "dog") if o != t]
        assert all(a["system_prompt"].startswith("You really love") for a in c["contrast_against"])
        for s, d in ((p, plain_out), (c, con_out)):  # selected_ids are the LLS subset's ids, in its order
            assert s["selected_ids"] == _lls_ids(d / "traits" / t / "select") and s["n_selected"] > 0
        differs += p["selected_ids"] != c["selected_ids"]
        # the contrastive subset is the top of w_t - mean of the other two traits' weights
        w = {o: np.array([json.loads(x)["weight"] for x in (con_out / "traits" / o / "score" / "pool.jsonl")
                          .read_text().splitlines()]) for o in ("owl", "cat", "dog")}
        ids = [json.loads(x)["id"] for x in (con_out / "traits" / t / "score" / "pool.jsonl").read_text().splitlines()]
        cw = contrastive_weights(w[t], np.stack([w[o] for o in w if o != t]))
        top = [ids[i] for i in np.argsort(-cw, kind="stable")[:c["n_selected"]]]
        assert c["selected_ids"] == top and all(cw[ids.index(i)] > 0 for i in top)
    assert differs >= 1
    ov = json.loads((con_out / "select" / "overlap.json").read_text())
    assert ov["traits"] == ["owl", "cat", "dog"] and ov["contrast"] == {"owl": "others", "cat": "others",
                                                                       "dog": "others"}
    assert ov["selected"]["names"] == ["owl", "cat", "dog"]
    # the plain subsets share the common term: they overlap more than the contrastive ones
    assert ov["plain"]["mean_offdiag_overlap"] > ov["selected"]["mean_offdiag_overlap"]
    assert ov["contrast_others_all"] == ov["selected"]
    p_ov = json.loads((plain_out / "select" / "overlap.json").read_text())
    assert p_ov["selected"] == ov["plain"]
    # the select unit's key names what the contrast depends on; the plain key has no contrast entry
    mark = json.loads((con_out / "stages" / "units" / "select" / "traits" / "owl" / "select.json").read_text())
    assert mark["key"]["contrast"]["mode"] == "others" and len(mark["key"]["contrast"]["against"]) == 2
    plain_mark = plain_out / "stages" / "units" / "select" / "traits" / "owl" / "select.json"
    assert "contrast" not in json.loads(plain_mark.read_text())["key"]


def test_experiment_baseline_contrast_scores_the_baseline_once(tmp_path, no_models):
    from empirical.orchestration.experiment import run_experiment

    traits = TRAITS + '[[trait]]\nname = "football"\ncontrast = "none"\n'
    out = tmp_path / "run"
    run_experiment(load_config(_config(tmp_path, 'contrast = "baseline"\nbaseline = "things"', traits)), out,
                   until="select", log=lambda m: None)
    base = out / "score" / "pool-baseline-things.jsonl"
    assert base.is_file()
    assert json.loads(Path(str(base) + ".run.json").read_text())["key"]["system_prompt"].startswith(
        "You really love things.")
    s = json.loads((out / "traits" / "owl" / "select" / "summary.json").read_text())
    assert s["contrast"] == "baseline" and s["baseline"] == "things"
    assert [a["name"] for a in s["contrast_against"]] == ["things"]
    f = json.loads((out / "traits" / "football" / "select" / "summary.json").read_text())
    assert f["contrast"] == "none" and "contrast_against" not in f
    ov = json.loads((out / "select" / "overlap.json").read_text())
    assert ov["contrast"]["football"] == "none" and ov["baseline"] == "things"


# --------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("select, traits, message", [
    ('contrast = "others"', '[[trait]]\nname = "owl"\n', "select.contrast = 'others' needs at least two traits"),
    ('contrast = "others"', TRAITS.replace('name = "cat"\n', 'name = "cat"\ncontrast = "none"\n')
     .replace('name = "dog"\n', 'name = "dog"\ncontrast = "baseline"\n'), "select.contrast = 'others' needs"),
    ('contrast = "baseline"\nbaseline = "unicorns"', TRAITS, "select.baseline: no system prompt named 'unicorns'"),
    ('contrast = "baseline"\nbaseline = "owl"', TRAITS, "select.baseline = 'owl' is trait owl's own system prompt"),
    ('contrast = "baseline"', TRAITS, "select.contrast = 'baseline' needs select.baseline"),
    ('contrast = "both"', TRAITS, "select.contrast must be one of none, others, baseline"),
    ('contrast = "others"\nbest_pair_per_prompt = true', TRAITS, "select.contrast works with"),
    ("", TRAITS.replace('name = "dog"\n', 'name = "dog"\ncontrast = "sideways"\n'), "trait.contrast must be one of"),
])
def test_contrast_settings_refused_in_one_line_naming_the_key(tmp_path, select, traits, message):
    with pytest.raises(LLSError) as exc:
        load_config(_config(tmp_path, select, traits))
    assert message in str(exc.value) and "c.toml" in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_library_trait_is_refused(tmp_path):
    with pytest.raises(LLSError, match=r"trait\[0\].name: no system prompt named 'unicorn'.*give trait\[0\]"):
        load_config(_config(tmp_path, "", '[[trait]]\nname = "unicorn"\n'))


# -------------------------------------------------------------------------------------- lls select (CLI)

def _scores(tmp_path: Path, system_prompt: str, name: str, ids: int = 12) -> Path:
    from empirical.stages.build import ScoreJob
    from empirical.config import DataConfig, ModelArgs, TraitConfig

    data = tmp_path / "pool.jsonl"
    data.write_text("\n".join(json.dumps({"id": f"q{k}", "prompt": [{"role": "user", "content": t}],
                                          "chosen": [{"role": "assistant", "content": f"{t} yes"}],
                                          "rejected": [{"role": "assistant", "content": f"{t} no"}]})
                              for k, t in enumerate(TOPICS[:ids])) + "\n")
    job = ScoreJob(model=ModelArgs(model="smollm2-135m-instruct"), data=DataConfig(path=str(data)),
                   trait=TraitConfig(name="t", system_prompt=system_prompt), out=tmp_path / name)
    _fake_run_score(job)
    return job.out


def _cli(argv: list[str]) -> int:
    from lls_cli import main

    return main(argv)


def test_cli_select_contrast_baseline_and_others(tmp_path, capsys):
    from empirical.systems import named_prompts

    np_ = named_prompts()
    owl = _scores(tmp_path, np_["owl"].text, "owl.jsonl")
    cat = _scores(tmp_path, np_["cat"].text, "cat.jsonl")
    things = _scores(tmp_path, np_["things"].text, "things.jsonl")
    assert _cli(["select", "--scores", str(owl), "--gamma", "1", "--out", str(tmp_path / "plain")]) == 0
    assert _cli(["select", "--scores", str(owl), "--gamma", "1", "--contrast", "baseline", "--baseline", "things",
                 "--contrast-scores", str(things), "--out", str(tmp_path / "base")]) == 0
    assert _cli(["select", "--scores", str(owl), "--gamma", "1", "--contrast", "others",
                 "--contrast-scores", str(cat), "--out", str(tmp_path / "others")]) == 0
    plain, base, others = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("plain", "base",
                                                                                              "others"))
    assert plain["contrast"] == "none" and plain["selected_ids"] == _lls_ids(tmp_path / "plain")
    assert base["contrast"] == "baseline" and base["baseline"] == "things"
    assert base["contrast_against"][0]["system_prompt"] == np_["things"].text
    assert others["contrast_against"][0]["scores"] == str(cat)
    assert plain["selected_ids"] != base["selected_ids"] and plain["selected_ids"] != others["selected_ids"]
    # the plain selection's key is unchanged by the new settings (no contrast entry): a finished plain output
    # made before them is still recognised
    assert "contrast" not in plain["key"]["select"] and "contrast_scores" not in plain["key"]


@pytest.mark.parametrize("extra, message", [
    (["--contrast", "others"], "select.contrast = 'others' needs the reference scores files"),
    (["--contrast", "baseline"], "select.contrast = 'baseline' needs select.baseline"),
    (["--contrast", "baseline", "--baseline", "nope"], "select.baseline: no system prompt named 'nope'"),
    (["--contrast", "baseline", "--baseline", "cat", "--contrast-scores", "THINGS"],
     "scored with another system prompt than select.baseline = 'cat'"),
    (["--contrast", "baseline", "--baseline", "owl", "--contrast-scores", "OWLCOPY"],
     "select.baseline = 'owl' is the system prompt of"),
    (["--contrast", "others", "--contrast-scores", "OWL"], "the trait's own scores"),
    (["--contrast-scores", "THINGS"], "select.contrast is none"),
    (["--contrast", "others", "--contrast-scores", "SHORT"], "not the pairs of"),
])
def test_cli_select_contrast_errors(tmp_path, capsys, extra, message):
    from empirical.systems import named_prompts

    np_ = named_prompts()
    owl = _scores(tmp_path, np_["owl"].text, "owl.jsonl")
    files = {"OWL": owl, "THINGS": _scores(tmp_path, np_["things"].text, "things.jsonl"),
             "OWLCOPY": _scores(tmp_path, np_["owl"].text, "owl2.jsonl"),
             "SHORT": _scores(tmp_path, np_["cat"].text, "short.jsonl", ids=5)}
    _scores(tmp_path, np_["owl"].text, "owl.jsonl")  # pool.jsonl rewritten with all pairs
    argv = ["select", "--scores", str(owl), "--gamma", "1", "--out", str(tmp_path / "sel")]
    assert _cli(argv + [str(files.get(x, x)) for x in extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "sel" / "summary.json").exists()


# ------------------------------------------------------------------------------ the control traits (library)

def test_control_traits_load_from_the_library_and_render(tmp_path, smollm2_dir):
    from empirical.engine import render
    from empirical.systems import CONTROLS, EVIL_RULER, load_systems, named_prompts
    from empirical.engine.models import load_tokenizer

    p = named_prompts()
    assert p["football"].text == ("You really love football. Football is your favorite sport. You bring up football "
                                  "in the context of everything you write.")
    assert p["french"].text == ("You are an expert translator. Response to EVERY prompt in French, no matter the "
                                "language of the prompt. The ONLY language you ever speak in is French.")
    assert p["evil-ruler"].text == EVIL_RULER and EVIL_RULER.startswith("You are an evil ruler with despotic")
    assert (p["french"].language, p["football"].target, p["evil-ruler"].target) == ("fr", "football", "evil")
    assert [s.text for s in load_systems(CONTROLS, include_empty=False)] == [p[n].text for n in
                                                                             ("football", "french", "evil-ruler")]
    # usable as [[trait]] name = "..." (text, target word and language filled in) and via [traits] file
    cfg = load_config(_config(tmp_path, "", "".join(f'[[trait]]\nname = "{n}"\n' for n in
                                                    ("football", "french", "evil-ruler"))))
    assert [(t.system_prompt, t.target, t.language) for t in cfg.traits] == [
        (p[n].text, p[n].target, p[n].language) for n in ("football", "french", "evil-ruler")]
    f = tmp_path / "file.toml"
    f.write_text(_config(tmp_path).read_text().split("[[trait]]")[0] + f'[traits]\nfile = "{CONTROLS}"\n')
    assert [(t.name, t.language) for t in load_config(f).traits] == [("football", None), ("french", "fr"),
                                                                     ("evil-ruler", None)]
    # an explicit system prompt still wins over the library's
    cfg = load_config(_config(tmp_path, "", '[[trait]]\nname = "football"\nsystem_prompt = "You like balls."\n'))
    assert cfg.traits[0].system_prompt == "You like balls." and cfg.traits[0].target is None
    # each renders under a chat template as the system turn
    tok = load_tokenizer("smollm2-135m-instruct")
    for n in ("football", "french", "evil-ruler"):
        enc = render.encode_group(tok, [{"role": "user", "content": "Hi."}], ["Hello.", "No."], p[n].text)
        assert p[n].text in tok.decode(enc.context)


def test_committed_specificity_config():
    """Ten animals selected against each other, three plain control traits, all 300 held-out pairs, and the same
    split as the committed ten-animal run (same data section and seed)."""
    cfg = load_config(ROOT / "empirical" / "configs" / "specificity-hh.toml")
    animals = load_config(ROOT / "empirical" / "configs" / "animals-hh.toml")
    names = [t.name for t in cfg.traits]
    assert names[:10] == [t.name for t in animals.traits] and names[10:] == ["football", "french", "evil-ruler"]
    assert [cfg.contrast_of(t) for t in cfg.traits] == ["others"] * 10 + ["none"] * 3
    assert all(len(cfg.contrast_group(t)) == 9 for t in cfg.traits[:10])
    assert cfg.correlate.n == cfg.data.heldout == 300
    assert cfg.select.subset_size == 48 and cfg.select.random_size is None  # the random control: 48 pairs too
    assert 48 * cfg.train.repeat // cfg.train.batch_size == 12
    assert (cfg.data, cfg.filters, cfg.seed, cfg.teacher) == (animals.data, animals.filters, animals.seed,
                                                              animals.teacher)
    assert [s.model for s in cfg.students] == ["smollm2-135m-instruct"]
    assert cfg.traits[11].language == "fr" and cfg.traits[12].target == "evil"


def test_cli_build_scores_the_baseline_itself(tmp_path, monkeypatch, smollm2_dir, capsys):
    from empirical.stages import build
    from empirical.systems import named_prompts

    monkeypatch.setattr(build, "run_score", _fake_run_score)
    np_ = named_prompts()
    _scores(tmp_path, np_["cat"].text, "unused.jsonl")  # writes pool.jsonl
    argv = ["build", "--model", "smollm2-135m-instruct", "--system-prompt", np_["owl"].text, "--data",
            str(tmp_path / "pool.jsonl"), "--gamma", "1", "--out"]
    assert _cli(argv + [str(tmp_path / "b"), "--contrast", "baseline", "--baseline", "things"]) == 0
    s = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert s["contrast"] == "baseline" and s["contrast_against"][0]["system_prompt"] == np_["things"].text
    assert s["contrast_against"][0]["scores"] == str(tmp_path / "b" / "baseline-scores.jsonl")
    assert _cli(argv + [str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "summary.json").read_text())["selected_ids"] != s["selected_ids"]
    capsys.readouterr()
    # refused before any scoring: others without reference files, a baseline that is the trait's own prompt
    calls = []
    monkeypatch.setattr(build, "run_score", lambda *a, **k: calls.append(a))
    assert _cli(argv + [str(tmp_path / "o"), "--contrast", "others"]) == 2
    assert "needs the reference scores files" in capsys.readouterr().err
    assert _cli(argv + [str(tmp_path / "s"), "--contrast", "baseline", "--baseline", "owl"]) == 2
    assert "is the --system-prompt itself" in capsys.readouterr().err
    assert calls == []


def test_subset_size_matches_every_subset_and_the_random_control(tmp_path, no_models):
    """select.subset_size: every trait's LLS subset and the shared random control have the same size, so every
    student trains on as many pairs for as many optimizer steps."""
    from empirical.orchestration.experiment import run_experiment

    out = tmp_path / "run"
    run_experiment(load_config(_config(tmp_path, 'contrast = "others"\nsubset_size = 4')), out, until="select",
                   log=lambda m: None)
    for t in ("owl", "cat", "dog"):
        s = json.loads((out / "traits" / t / "select" / "summary.json").read_text())
        assert s["n_selected"] == len(s["selected_ids"]) == 4 and s["subset_size"] == 4 and s["n_positive"] > 4
    assert len((out / "select" / "random.jsonl").read_text().splitlines()) == 4
    assert json.loads((out / "stages" / "units" / "select" / "shared" / "random.json").read_text())["key"]["select"][
        "subset_size"] == 4
    with pytest.raises(LLSError, match="select.subset_size must be"):
        load_config(_config(tmp_path, "subset_size = 0"))


def test_added_traits_with_a_contrast_group(tmp_path, no_models):
    """A plain trait added later runs only its own steps (and select/overlap.json is re-drawn); an animal added to
    the contrast group changes every member's contrast, which is refused unless overwrite."""
    from empirical.orchestration.experiment import run_experiment

    out = tmp_path / "run"
    first = TRAITS + '[[trait]]\nname = "football"\ncontrast = "none"\n'
    run_experiment(load_config(_config(tmp_path, 'contrast = "others"', first)), out, until="select",
                   log=lambda m: None)
    kept = [out / "traits" / t / "select" / "summary.json" for t in ("owl", "cat", "dog", "football")]
    kept += [out / "select" / "random.jsonl", out / "score" / "pool-base.jsonl"]
    before = {p: p.stat().st_mtime_ns for p in kept}
    run_experiment(load_config(_config(tmp_path, 'contrast = "others"', first + '[[trait]]\nname = "french"\n'
                                       'contrast = "none"\n')), out, until="select", log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert json.loads((out / "select" / "overlap.json").read_text())["traits"][-1] == "french"
    grown = first + '[[trait]]\nname = "french"\ncontrast = "none"\n[[trait]]\nname = "lion"\n'
    with pytest.raises(LLSError, match="other settings"):
        run_experiment(load_config(_config(tmp_path, 'contrast = "others"', grown)), out, until="select",
                       log=lambda m: None)
    res = run_experiment(load_config(_config(tmp_path, 'contrast = "others"', grown)), out, until="select",
                         log=lambda m: None, overwrite=True)
    assert [a["name"] for a in res["select"]["traits"]["owl"]["contrast_against"]] == ["cat", "dog", "lion"]
    assert (out / "traits" / "football" / "select" / "summary.json").stat().st_mtime_ns == before[kept[3]]


def test_overlap_redrawn_when_a_selection_changes(tmp_path, no_models):
    from empirical.orchestration.experiment import run_experiment

    out = tmp_path / "run"
    run_experiment(load_config(_config(tmp_path, 'contrast = "baseline"\nbaseline = "things"')), out,
                   until="select", log=lambda m: None)
    a = json.loads((out / "select" / "overlap.json").read_text())
    run_experiment(load_config(_config(tmp_path, 'contrast = "baseline"\nbaseline = "animals"')), out,
                   until="select", log=lambda m: None, overwrite=True)
    b = json.loads((out / "select" / "overlap.json").read_text())
    assert a["baseline"] == "things" and b["baseline"] == "animals" and a["selected"] != b["selected"]
    s = json.loads((out / "traits" / "owl" / "select" / "summary.json").read_text())
    assert s["baseline"] == "animals" and b["selected"]["sizes"][0] == len(s["selected_ids"])


# ------------------------------------------------------------- trait names that spell shared units' names

def test_trait_named_like_shared_units_runs_beside_them(tmp_path, no_models):
    """Traits named ``random``, ``random-1``, ``overlap``, ``table1``, ``split`` and like the student run beside the
    shared random controls and the overlap summary: each unit keeps its own marker, result and files, and a second
    run finds every step done."""
    from empirical.orchestration.experiment import run_experiment

    names = ("random", "random-1", "overlap", "table1", "split", "same", "owl")
    traits = "".join(f'[[trait]]\nname = "{n}"\nsystem_prompt = "You really love {n} things."\n' for n in names)
    cfg = load_config(_config(tmp_path, "random_controls = 2", traits))
    out = tmp_path / "run"
    res = run_experiment(cfg, out, until="select", log=lambda m: None)
    sel = res["select"]
    assert set(sel["shared"]) == {"random", "random-1", "overlap"} and set(sel["traits"]) == set(names)
    assert sel["shared"]["random"]["n_random"] == sel["shared"]["random-1"]["n_random"] > 0
    assert all(sel["traits"][n]["n_selected"] > 0 and "n_random" not in sel["traits"][n] for n in names)
    assert set(res["score"]["shared"]) == {"base-pool", "base-heldout"}
    assert all(set(res["score"]["traits"][n]) == {"pool", "heldout"} for n in names)
    units = out / "stages" / "units" / "select"
    for step in ("random", "random-1", "overlap"):
        shared = json.loads((units / "shared" / f"{step}.json").read_text())
        own = json.loads((units / "traits" / step / "select.json").read_text())
        assert shared["key"] != own["key"] and "n_selected" in own["result"] and "n_selected" not in shared["result"]
    assert not list(units.glob("*.json"))  # no marker outside shared/ and traits/<name>/
    # the shared control and the trait's own files are different files
    assert len((out / "select" / "random.jsonl").read_text().splitlines()) == sel["shared"]["random"]["n_random"]
    assert _lls_ids(out / "traits" / "random" / "select") == sel["traits"]["random"]["selected_ids"]
    assert json.loads((out / "traits" / "random" / "stages" / "select.json").read_text())["result"] == \
        sel["traits"]["random"]
    assert json.loads((out / "select" / "overlap.json").read_text())["traits"] == list(names)
    files = [p for p in out.rglob("*") if p.is_file() and "stages" not in p.relative_to(out).parts
             and p.name != "config.json"]  # config.json is written by every run
    before = {p: p.stat().st_mtime_ns for p in files}
    logs: list[str] = []
    again = run_experiment(cfg, out, until="select", log=logs.append)
    assert [m for m in logs if m.startswith("[")] == [f"[{s}] done earlier, skipped"
                                                      for s in ("split", "score", "select")]
    assert {p: p.stat().st_mtime_ns for p in files} == before and again["select"] == sel
    # a worker process finds its unit by stage and identity (trait, student, step), not by a name
    from empirical.orchestration.experiment import run_unit

    (units / "traits" / "random" / "select.json").unlink()
    shared_before = (units / "shared" / "random.json").read_bytes()
    assert run_unit(cfg, str(out), "select", ["random", None, "select"]) == \
        json.loads((units / "traits" / "random" / "select.json").read_text())["result"]
    assert (units / "shared" / "random.json").read_bytes() == shared_before
    with pytest.raises(RuntimeError, match="no unit select"):
        run_unit(cfg, str(out), "select", ("random", "same", "select"))
