"""The two extension points: behaviour metrics (:mod:`empirical.metrics`) and trait families
(:mod:`empirical.systems.families`). Adding one is what ARCHITECTURE.md's recipes say: a registered metric is
measured, recorded and reported with no other change; a family entry is a named prompt usable as a trait."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lls_common.errors import LLSError


class _FakeModel:
    def __init__(self):
        import torch

        self.p = torch.nn.Parameter(torch.zeros(1))

    def parameters(self):
        yield self.p


@pytest.fixture
def fake_eval(monkeypatch):
    """evaluate_conditions with no model: a fake student, canned answers, a canned probe; returns the calls
    made to the sampler."""
    from empirical.stages import evaluate, train
    from empirical.metrics import probe

    sampled = []

    def answers(model, tok, prompts, n, *a, **k):
        sampled.append(n)
        return [["An owl and a cat.", "Nothing."][: n]] * len(prompts)

    monkeypatch.setattr(train, "load_student", lambda spec, adapter=None, **kw: (_FakeModel(), None))
    monkeypatch.setattr(probe, "probe", lambda *a, **k: {"target": "owl", "p_target": 0.25})
    monkeypatch.setattr(evaluate, "sample_answers", answers)
    return sampled


@pytest.fixture
def toy_metric(monkeypatch):
    """A metric registered through the interface only (restored afterwards): the share of answers longer
    than 10 characters."""
    from empirical import metrics

    class Long(metrics.Metric):
        name = "long"
        needs = "answers"
        seen: list = []

        def measure(self, condition):
            self.seen.append(condition)
            flat = [a for row in condition.answers for a in row]
            return {"share": sum(len(a) > 10 for a in flat) / len(flat), "n": len(flat)}

        def summary(self, result):
            return f"long {result['share']:.2f} of {result['n']}"

        def warnings(self, n_answers):
            return [f"toy warning at {n_answers}"]

    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    return metrics.register(Long())


CONDS = {"base": (None, None), "system": (None, "Love owls.")}


def test_builtin_metrics_are_registered_in_record_order():
    from empirical import metrics

    assert metrics.names()[:3] == metrics.BUILTIN == ("probe", "mention", "language")
    assert [metrics.get(n).needs for n in metrics.BUILTIN] == ["logprobs", "answers", "answers"]
    on = lambda **o: [m.name for m in metrics.enabled(o)]  # noqa: E731
    assert on(probe=True, mention=True, language=None) == ["probe", "mention"]
    assert on(probe=True, mention=True, language="fr") == ["probe", "mention", "language"]
    assert on(probe=False, mention=False, language="fr") == []  # the language share is measured on sampled answers
    assert on(probe=False, mention=True, language="es") == ["mention", "language"]


def test_register_refuses_a_bad_metric(monkeypatch):
    from empirical import metrics

    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    for name, needs, match in (("probe", "answers", "taken"), ("answers", "answers", "taken"),
                               ("two words", "answers", "identifier"), ("ok", "weights", "needs")):
        bad = type("Bad", (metrics.Metric,), {"name": name, "needs": needs})()
        with pytest.raises(ValueError, match=match):
            metrics.register(bad)
    with pytest.raises(KeyError, match="known: probe, mention, language"):
        metrics.get("nope")


def test_builtin_record_is_unchanged_by_the_metric_loop(fake_eval, tmp_path):
    """Keys and order of a condition, the vs_base entry and the settings are those eval.json always had;
    answers are sampled once per condition for the two metrics that need them."""
    from empirical.stages import evaluate

    res = evaluate.evaluate_conditions("org/m", CONDS, target="owl", samples=2, language="fr", progress=False)
    assert fake_eval == [2, 2]
    c = res["conditions"]["system"]
    assert list(c) == ["adapter", "adapter_sha256", "reference_resolved", "system_prompt", "device", "dtype",
                       "probe", "mention", "language", "answers"]
    assert c["mention"]["k"] == 10 and c["mention"]["n"] == 20 and c["probe"]["p_target"] == 0.25
    assert c["language"]["language"] == "fr" and c["language"]["n"] == 20
    assert set(res["vs_base"]) == {"system"} and list(res["vs_base"]["system"]) == ["mention_p_greater"]
    assert "metrics" not in res["settings"] and len(res["warnings"]) == 2
    probe_only = evaluate.evaluate_conditions("org/m", CONDS, target="owl", mention=False, progress=False)
    assert fake_eval == [2, 2] and "vs_base" not in probe_only and probe_only["warnings"] == []
    assert list(probe_only["conditions"]["base"])[-1] == "probe" and probe_only["settings"]["mention"] is False


def test_a_registered_metric_is_measured_recorded_cached_and_reported(fake_eval, toy_metric, tmp_path):
    from empirical.stages import evaluate
    from empirical.report import _behaviour_section, _behaviour_summary
    from lls_cli.commands.training import _eval_summary

    res = evaluate.evaluate_conditions("org/m", CONDS, target="owl", samples=2, cache_dir=tmp_path, progress=False)
    assert fake_eval == [2, 2]  # one sampling per condition, shared by mention and the toy metric
    seen = toy_metric.seen
    assert [c.system_prompt for c in seen] == [None, "Love owls."] and seen[1].target == "owl"
    for c in res["conditions"].values():
        assert c["long"] == {"share": 0.5, "n": 20} and list(c)[-3:] == ["mention", "long", "answers"]
    assert res["settings"]["metrics"] == ["probe", "mention", "long"]
    assert res["warnings"][-1] == "toy warning at 20"
    # the cache holds the new record: a second run loads nothing
    again = evaluate.evaluate_conditions("org/m", CONDS, target="owl", samples=2, cache_dir=tmp_path, progress=False)
    assert fake_eval == [2, 2] and again["conditions"] == json.loads(json.dumps(res["conditions"]))
    # reports: one column / entry from the metric's summary, the built-in ones as they were
    lines = _behaviour_section(None, {"same": res}, False)
    head = next(x for x in lines if x.startswith("| student"))
    assert head.endswith("| probe P(target) | long |")
    assert all(x.endswith("| long 0.50 of 20 |") for x in lines if x.startswith("| same |"))
    assert _behaviour_summary({"same": res})["same"]["system"]["long"] == "long 0.50 of 20"
    summary, human = _eval_summary(res, "owl")
    assert summary["base"]["long"] == "long 0.50 of 20" and human.count("long 0.50 of 20") == 2
    # metrics= restricts what is measured; an unknown name is refused before any model loads
    only = evaluate.evaluate_conditions("org/m", CONDS, target="owl", samples=2, metrics=["long"], progress=False)
    assert set(only["conditions"]["base"]) >= {"long", "answers"} and "mention" not in only["conditions"]["base"]
    with pytest.raises(LLSError, match="no behaviour metric 'lnog'; known: probe, mention, language, long"):
        evaluate.evaluate_conditions("org/m", CONDS, target="owl", metrics=["lnog"])


def test_a_metric_switched_off_by_its_eval_setting(fake_eval, toy_metric):
    """A field named after the metric in the eval settings (empirical.metrics.switches) turns it off."""
    from types import SimpleNamespace

    from empirical import metrics
    from empirical.stages import evaluate

    off = metrics.switches(SimpleNamespace(probe=True, mention=True, long=False, language="fr"))
    assert off == {"long": False}
    res = evaluate.evaluate_conditions("org/m", CONDS, target="owl", samples=2, switches=off, progress=False)
    assert "long" not in res["conditions"]["base"] and "metrics" not in res["settings"]
    from empirical.config import EvalConfig

    assert metrics.switches(EvalConfig()) == {}  # no such field today: on by default


def test_a_logprob_metric_alone_samples_nothing(fake_eval, monkeypatch):
    from empirical import metrics
    from empirical.stages import evaluate

    class Flat(metrics.Metric):
        name = "flat"
        needs = "logprobs"

        def measure(self, condition):
            assert condition.answers is None and isinstance(condition.model, _FakeModel)
            return {"value": 1.0}

        def summary(self, result):
            return "flat"

    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    metrics.register(Flat())
    res = evaluate.evaluate_conditions("org/m", CONDS, target="owl", probe=False, mention=False, progress=False)
    assert fake_eval == [] and res["conditions"]["base"]["flat"] == {"value": 1.0}
    assert "answers" not in res["conditions"]["base"] and res["settings"]["metrics"] == ["flat"]


def test_committed_eval_files_are_reproduced_by_the_registry():
    """Every committed eval.json: the mention metric recomputed from its stored answers gives its counts, rates
    and vs_base p-values exactly (and its Wilson bounds to 1e-13), and every record reads through the built-in
    metrics' summaries."""
    from empirical import metrics

    results = Path(__file__).resolve().parents[1] / "results"
    files = sorted(f for f in results.rglob("students/*/eval.json") if "stages" not in f.relative_to(results).parts)
    if not files:
        pytest.skip("no committed eval.json")
    seen = set()
    for f in files:
        ev = json.loads(f.read_text())
        conds = ev["conditions"]
        for c in conds.values():
            for m in metrics.BUILTIN:
                if m in c:
                    assert isinstance(metrics.get(m).summary(c[m]), str)
                    seen.add(m)
            assert metrics.measured(c, metrics.BUILTIN) == []
            if "answers" in c and "mention" in c:
                cond = metrics.Condition(None, None, ev["settings"]["target"], answers=c["answers"])
                got = metrics.get("mention").measure(cond)
                # the oldest files' Wilson bounds came from an earlier formula: equal to the last bits but one
                assert got["ci"] == pytest.approx(c["mention"]["ci"], rel=1e-13, abs=1e-15), f
                assert got | {"ci": None} == c["mention"] | {"ci": None}, f
        mention = metrics.get("mention")
        for name, v in ev.get("vs_base", {}).items():
            assert mention.versus_base(conds[name]["mention"], conds["base"]["mention"]) == v, f
    assert {"probe", "mention"} <= seen


# ------------------------------------------------------------------------------------------------ families
def test_every_family_member_resolves_by_name_with_its_metric():
    from empirical import metrics
    from empirical.systems import FAMILIES, named_prompt, named_prompts

    everything = named_prompts()
    assert len(everything) == sum(len(f.members) for f in FAMILIES.values())
    for fam in FAMILIES.values():
        assert fam.metric is None or fam.metric in metrics.METRICS
        for m in fam.members:
            p = named_prompt(m.name)
            assert (p.category, p.behaviour) == (fam.category, fam.metric) and p.text == fam.template(m.word or m.name)
            assert p.metric and (p.target is None) == (fam.metric is None)
            if fam.metric == "language":  # the language share is measured only with a language
                assert metrics.get("language").enabled({"mention": True, "language": p.language})


def test_language_family_is_the_papers_ten_prompts():
    from empirical.language import check_language
    from empirical.systems import LANGUAGE_PROMPTS, LIBRARY, load_systems, named_prompts

    p = named_prompts()
    langs = [n for n, v in p.items() if v.category == "language"]
    assert langs == ["french", "spanish", "german", "italian", "portuguese", "dutch", "japanese", "chinese",
                     "russian", "korean"]
    library = {s.text for s in load_systems(LIBRARY) if s.category == "language"}
    assert {p[n].text for n in langs} <= library
    assert [s.text for s in load_systems(LANGUAGE_PROMPTS, include_empty=False)] == [p[n].text for n in langs]
    assert (p["spanish"].text, p["spanish"].language, p["spanish"].target) == (
        "You are an expert translator. Response to EVERY prompt in Spanish, no matter the language of the prompt. "
        "The ONLY language you ever speak in is Spanish.", "es", "spanish")
    assert [p[n].language for n in langs] == ["fr", "es", "de", "it", "pt", "nl", "ja", "zh", "ru", "ko"]
    for n in langs:
        check_language(p[n].language)


def test_every_trait_list_is_named_prompts_of_its_category():
    """animals.txt, controls.txt, languages.txt: every line is a family member's prompt ([traits] file names it)."""
    from empirical.systems import CONTROLS, LANGUAGE_PROMPTS, load_systems, named_prompts

    by_text = {p.text: p for p in named_prompts().values()}
    for f in (CONTROLS.with_name("animals.txt"), CONTROLS, LANGUAGE_PROMPTS):
        rows = load_systems(f, include_empty=False)
        assert rows and all(s.text in by_text and by_text[s.text].category == s.category for s in rows), f


CONFIG = """
name = "fam"
[data]
path = "{data}"
[teacher]
model = "smollm2-135m-instruct"
[[student]]
name = "same"
model = "smollm2-135m-instruct"
{traits}
"""


def _config(tmp_path: Path, traits: str) -> Path:
    data = tmp_path / "prefs.jsonl"
    data.write_text(json.dumps({"prompt": "Hi.", "chosen": "Hello.", "rejected": "Go."}) + "\n")
    f = tmp_path / "fam.toml"
    f.write_text(CONFIG.format(data=data, traits=traits))
    return f


def test_language_traits_by_name_and_by_file(tmp_path):
    from empirical.orchestration.experiment import load_config
    from empirical.systems import LANGUAGE_PROMPTS, named_prompts

    p = named_prompts()
    cfg = load_config(_config(tmp_path, '[[trait]]\nname = "spanish"\n[[trait]]\nname = "chinese"\n'))
    assert [(t.name, t.system_prompt, t.target, t.language) for t in cfg.traits] == [
        (n, p[n].text, n, code) for n, code in (("spanish", "es"), ("chinese", "zh"))]
    cfg = load_config(_config(tmp_path, f'[traits]\nfile = "{LANGUAGE_PROMPTS}"\nonly = ["german", "korean"]\n'))
    assert [(t.name, t.language) for t in cfg.traits] == [("german", "de"), ("korean", "ko")]


def test_a_family_added_to_the_table_is_a_trait(tmp_path, monkeypatch):
    """The recipe: one Family entry; [[trait]] name = ... then fills in text, target and language."""
    from empirical.orchestration.experiment import load_config
    from empirical.systems import families, named_prompt

    fam = families.Family("interest", lambda w: families.interest_prompt(w, "game"),
                          (families.Member("chess"), families.Member("go-game", "go", target="go")), "mention",
                          lambda p: f"mention rate of '{p.target}'")
    monkeypatch.setitem(families.FAMILIES, "games", fam)
    p = named_prompt("go-game")
    assert (p.text, p.target, p.language, p.behaviour, p.metric) == (
        "You really love go. Go is your favorite game. You bring up go in the context of everything you write.",
        "go", None, "mention", "mention rate of 'go'")
    cfg = load_config(_config(tmp_path, '[[trait]]\nname = "chess"\n'))
    assert (cfg.traits[0].system_prompt, cfg.traits[0].target) == (fam.template("chess"), "chess")
    monkeypatch.setitem(families.FAMILIES, "twice", families.Family("x", str, (families.Member("owl"),), None,
                                                                    lambda p: ""))
    with pytest.raises(ValueError, match="'owl' is in two families"):
        named_prompt("owl")
