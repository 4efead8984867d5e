"""Unit identities of ``lls experiment``: (stage, trait, student, step), trait None for the shared units. No
legal trait name -- ``random``, ``table1``, ``overlap``, ``split``, a student's name -- can make two units share a
marker, a result entry or an output file; the committed run folders keep their markers at the derived paths
(fast: no model loads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from empirical.orchestration.experiment import STAGES, Run, _UNITS, _record_stage, load_config

ROOT = Path(__file__).resolve().parents[1]

HOSTILE = ("random", "random-1", "random-2", "overlap", "table1", "split", "same", "other", "lls", "shared",
           "traits", "students", "owl")

CONFIG = """
name = "{name}"
seed = 0
[data]
path = "{data}"
heldout = 4
[teacher]
model = "smollm2-135m-instruct"
[select]
gamma = 0.5
random_controls = 3
baseline = "things"
[[student]]
name = "same"
model = "smollm2-135m-instruct"
[[student]]
name = "other"
model = "gemma3-270m"
"""


def _trait(name: str, extra: str = "") -> str:
    return f'[[trait]]\nname = "{name}"\nsystem_prompt = "You really love {name} things."\ntarget = "{name}"\n{extra}'


def _cfg(tmp_path: Path, names: tuple[str, ...], name: str = "keys"):
    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps({"id": "q0", "prompt": "Hi?", "chosen": "Yes.", "rejected": "No."}) + "\n")
    traits = "".join(_trait(n, "seeds = 2\n" if k == 0 else 'contrast = "baseline"\n' if k == 1 else "")
                     for k, n in enumerate(names))
    f = tmp_path / f"{name}.toml"
    f.write_text(CONFIG.format(name=name, data=data) + traits)
    return load_config(f)


def _single(tmp_path: Path, name: str):
    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps({"id": "q0", "prompt": "Hi?", "chosen": "Yes.", "rejected": "No."}) + "\n")
    text = CONFIG.format(name=name, data=data).replace('model = "smollm2-135m-instruct"\n[select]',
                                                       'model = "smollm2-135m-instruct"\nsystem_prompt = "You '
                                                       'really love owls."\n[select]', 1)
    text = text.replace('baseline = "things"\n', "").replace("[select]", "[eval]\ntarget = \"owl\"\n[select]", 1)
    f = tmp_path / f"{name}.toml"
    f.write_text(text)
    return load_config(f)


def _units(cfg, root: Path):
    run = Run(cfg, root, lambda m: None)
    return run, [u for s in STAGES for u in _UNITS[s](run)]


def _check_disjoint(units, root: Path) -> None:
    """Identities, markers and outputs pairwise distinct; no marker is a folder of another's path; no unit writes
    inside another unit's output folder."""
    ids = [(u.stage, u.uid) for u in units]
    assert len(set(ids)) == len(ids)
    labels = [(u.stage, u.label) for u in units]  # what --plan and the logs show
    assert len(set(labels)) == len(labels)
    markers = [u.marker for u in units]
    assert len(set(markers)) == len(markers)
    assert not set(markers) & {p for m in markers for p in m.parents}
    assert all(m.is_relative_to(root / "stages" / "units" / u.stage / ("shared" if u.trait is None else "traits"))
               for m, u in zip(markers, units))
    owner: dict[Path, int] = {}
    for k, u in enumerate(units):
        for o in set(u.outputs):
            assert owner.setdefault(o, k) == k, f"{o} is an output of {units[owner[o]].label} and {u.label}"
    for k, u in enumerate(units):
        for o in u.outputs:
            for j, v in enumerate(units):
                if j != k:
                    assert not any(o.is_relative_to(p) for p in v.outputs), (u.label, v.label, o)


@pytest.mark.parametrize("names", [HOSTILE, ("owl", "random"), ("table1", "split"), ("same", "other"),
                                   ("overlap", "random-1")])
def test_units_of_traits_named_like_shared_units_are_distinct(tmp_path, names):
    cfg = _cfg(tmp_path, names)
    root = tmp_path / "r"
    run, units = _units(cfg, root)
    _check_disjoint(units, root)
    # shared units are the same whatever the traits are called: rename every trait and compare
    (tmp_path / "x").mkdir()
    _, plain = _units(_cfg(tmp_path / "x", tuple(f"x{n}" for n in names)), root)

    def shared(us):
        return [(u.stage, u.uid, u.marker, u.outputs) for u in us if u.trait is None]

    assert shared(units) == shared(plain)
    assert {u.trait for u in units} == set(names) | {None}
    assert [(u.stage, u.student, u.step) for u in units if u.trait is not None] == \
        [(u.stage, u.student, u.step) for u in plain if u.trait is not None]
    steps = {(u.stage, u.step) for u in units if u.trait is None}
    assert {("split", "split"), ("select", "random"), ("select", "random-2"), ("select", "overlap"),
            ("train", "random"), ("correlate", "base"), ("report", "table1"), ("score", "baseline-pool")} <= steps


@pytest.mark.parametrize("name", ["random", "table1", "split", "overlap", "random-1", "same"])
def test_single_trait_named_like_shared_units_is_distinct(tmp_path, name):
    cfg = _single(tmp_path, name)
    assert not cfg.multi and cfg.traits[0].name == name
    _, units = _units(cfg, tmp_path / "r")
    _check_disjoint(units, tmp_path / "r")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_records_keep_shared_and_trait_results_apart(tmp_path, stage):
    """``stages/<stage>.json``: every shared unit's result under ``shared`` (by ``<step>`` / ``<student>/<step>``),
    every trait's results in its own view, whatever the traits are called."""
    cfg = _cfg(tmp_path, HOSTILE)
    run = Run(cfg, tmp_path / "r", lambda m: None)
    units = _UNITS[stage](run)
    done = {u.uid: {"unit": [u.trait, u.student, u.step]} for u in units}
    res = _record_stage(run, stage, done)
    if stage == "split":
        assert res == {"unit": [None, None, "split"]}
        return
    shared = [u for u in units if u.trait is None]
    assert res["shared"] == {(u.step if u.student is None else f"{u.student}/{u.step}"): done[u.uid] for u in shared}
    for name, view in res["traits"].items():
        assert name in HOSTILE
        got = [view] if "unit" in view else list(view.values())
        for r in got:  # a trait's view holds its own units and the shared random arms, never another trait's
            assert r["unit"][0] in (name, None)
            assert r["unit"][0] == name or (stage == "train" and r["unit"][2].startswith("random"))
        on_disk = json.loads((run.tdir(next(t for t in cfg.traits if t.name == name)) / "stages" /
                              f"{stage}.json").read_text())
        assert on_disk["result"] == view
    assert set(res["traits"]) == {u.trait for u in units if u.trait is not None} == set(HOSTILE)


@pytest.mark.parametrize("run_dir, config", [("results/table1/run", "empirical/configs/animals-hh.toml"),
                                             ("results/reference/run", "empirical/configs/owl-reference-default.toml")])
def test_committed_run_markers_are_at_their_unit_paths(run_dir, config):
    """Every unit of the committed config through ``report`` finds its marker in the committed run folder (the
    run that made it: its config.json), except ``select/overlap.json``'s summary unit, which the run predates;
    no marker is left at another path."""
    root = ROOT / run_dir
    recorded = json.loads((root / "config.json").read_text())
    assert Path(recorded["source"]).name == Path(config).name
    cfg = load_config(ROOT / config)
    assert [t.name for t in cfg.traits] == [t["name"] for t in recorded["traits"]]
    assert [s.name for s in cfg.students] == [s["name"] for s in recorded["students"]]
    _, units = _units(cfg, root)
    missing = [(u.stage, u.uid) for u in units if not u.marker.is_file()]
    assert missing == [("select", (None, None, "overlap"))]
    on_disk = set((root / "stages" / "units").rglob("*.json"))
    assert on_disk == {u.marker for u in units if u.marker.is_file()}
    assert len(on_disk) == len(units) - 1


def test_markers_at_the_older_flat_paths_are_refused_up_front(tmp_path):
    """A folder whose markers lie at ``stages/units/<stage>/<name>.json`` would have every finished step computed
    again: refused in one line before any work, nothing written."""
    from empirical.orchestration.experiment import run_experiment
    from lls_common.errors import LLSError

    out = tmp_path / "run"
    old = out / "stages" / "units" / "select" / "random.json"
    old.parent.mkdir(parents=True)
    old.write_text('{"key": {}, "result": {}}')
    with pytest.raises(LLSError, match=r"1 unit marker\(s\) at an older layout \(first: stages/units/select/"
                                       r"random.json\)") as exc:
        run_experiment(_cfg(tmp_path, ("owl", "cat")), out, log=lambda m: None)
    assert "\n" not in str(exc.value)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "stages/units/select/random.json"]
