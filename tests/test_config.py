"""One home for every setting: flags and TOML keys derived from the dataclasses of empirical.config.

Properties: a config written as TOML and the same config written as flags give the same object; every field is
reachable from both; bad values (NaN, inf, negative, bool-as-int, 4.5-as-int, lists-as-strings) raise one-line
LLSError naming the key. Plus the output guards of lls_common.io (fingerprints, cached_json, lock, modes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tomllib
import typing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from empirical import config as C
from lls_common.config import _toml_literal, add_arguments, from_namespace, from_table, settings_fields, table_keys
from lls_common.errors import LLSError
from lls_common.validate import ISO_639_1

CLASSES = [C.ModelArgs, C.DataConfig, C.Filters, C.ScoreConfig, C.SelectConfig, C.TrainConfig, C.CorrelateConfig,
           C.EvalConfig, C.StudentConfig, C.TraitConfig]
REQUIRED = {"model": "smollm2-135m-instruct", "path": "pairs.jsonl", "name": "owl",
            "system_prompt": "You really love owls."}
SECTION = {C.ModelArgs: "teacher", C.DataConfig: "data", C.Filters: "data", C.ScoreConfig: "score",
           C.SelectConfig: "select", C.TrainConfig: "train", C.CorrelateConfig: "correlate", C.EvalConfig: "eval",
           C.StudentConfig: "student", C.TraitConfig: "trait"}


def _base(cls: type) -> dict:
    return {s.name: REQUIRED[s.name] for s in settings_fields(cls) if s.required}


def _inner(tp):
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if typing.get_origin(tp) in (typing.Union, __import__("types").UnionType) else tp


_TEXT = st.text(alphabet=st.characters(whitelist_categories=("L", "N", "P", "Zs"), max_codepoint=0x2FF),
                min_size=1, max_size=20).filter(lambda s: s.strip() != "" and "--" not in s)
# ("--" is excluded: argparse drops a literal "--" even from "--flag=--", a limitation of argparse itself)


def _strategy(s) -> st.SearchStrategy:
    tp = _inner(s.type)
    origin = typing.get_origin(tp)
    if s.choices is not None:
        return st.sampled_from(list(s.choices))
    if s.name in ("language", "exclude_language"):
        return st.sampled_from(sorted(ISO_639_1))
    if s.name == "device":
        return st.sampled_from(["auto", "cpu", "cuda", "cuda:1", "mps"])
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(1, 10**6)
    if tp is float:
        return st.floats(1e-6, 1.0, allow_nan=False)
    if origin in (tuple, list):
        return st.lists(_TEXT, max_size=3).map(tuple)
    if origin is dict or tp is dict:
        ident = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
        return st.dictionaries(ident, st.one_of(st.integers(-5, 5), st.floats(-1, 1, allow_nan=False), _TEXT,
                                                st.booleans()), max_size=2)
    return _TEXT


@st.composite
def configs(draw, cls):
    """A valid instance of ``cls`` with a random subset of its fields set (each value valid on its own)."""
    kw = _base(cls)
    for s in settings_fields(cls):
        if s.required or not draw(st.booleans()):
            continue
        v = draw(_strategy(s))
        try:
            cls(**{**_base(cls), s.name: v})
        except LLSError:
            continue
        kw[s.name] = v
    try:
        return cls(**kw)
    except LLSError:  # fields valid alone but not together (e.g. min > max response tokens)
        assume(False)


def _argv(obj) -> list[str]:
    argv = []
    for s in settings_fields(type(obj)):
        if not s.cli:
            continue
        v = getattr(obj, s.name)
        if v is None:
            continue
        tp = _inner(s.type)
        if tp is bool:
            argv.append(s.flag if v else "--no-" + s.flag[2:])
        elif typing.get_origin(tp) in (tuple, list):
            argv += [f"{s.flag}={x}" for x in v]
        elif typing.get_origin(tp) is dict or tp is dict:
            argv += [f"{s.flag}={k}={_toml_literal(x)}" for k, x in v.items()]
        else:
            argv.append(f"{s.flag}={v!r}" if tp is float else f"{s.flag}={v}")
    return argv


def _toml(obj) -> str:
    return "\n".join(f"{s.name} = {_toml_literal(getattr(obj, s.name))}" for s in settings_fields(type(obj))
                     if s.toml and getattr(obj, s.name) is not None)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_toml_and_flags_give_the_same_config(cls, data):
    obj = data.draw(configs(cls))
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser, cls)
    via_cli = from_namespace(cls, parser.parse_args(_argv(obj)))
    via_toml = from_table(cls, tomllib.loads(_toml(obj)), "x.toml", SECTION[cls])
    cli_only = {s.name for s in settings_fields(cls) if not s.toml}
    for s in settings_fields(cls):
        if s.cli:
            assert getattr(via_cli, s.name) == getattr(obj, s.name), s.name
        if s.name not in cli_only:
            assert getattr(via_toml, s.name) == getattr(obj, s.name), s.name


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_reachable_from_flags_and_toml_with_one_default(cls):
    parser = argparse.ArgumentParser()
    add_arguments(parser, cls)
    flags = {o for a in parser._actions for o in a.option_strings}
    keys = table_keys(cls)
    for s in settings_fields(cls):
        assert s.help, f"{cls.__name__}.{s.name} has no help text"
        if s.cli:
            assert s.flag in flags and s.flag == "--" + s.name.replace("_", "-") or s.name == "path"
        if s.toml:
            assert keys[s.name] == s.name
        # a flag not given keeps the dataclass default: one default for CLI and TOML
        if not s.required:
            req = [f"{r.flag}={REQUIRED[r.name]}" for r in settings_fields(cls) if r.required and r.cli]
            assert getattr(from_namespace(cls, parser.parse_args(req), **_base(cls)), s.name) == s.default


def _numeric_fields():
    for cls in CLASSES:
        for s in settings_fields(cls):
            if _inner(s.type) in (int, float):
                yield cls, s


@pytest.mark.parametrize("cls,s", list(_numeric_fields()), ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1, True, "4", [1]])
def test_bad_numbers_are_one_line_errors_naming_the_key(cls, s, bad):
    if bad == -1 and s.name in ("seed",):
        bad = -1
    with pytest.raises(LLSError) as exc:
        cls(**{**_base(cls), s.name: bad})
    msg = str(exc.value)
    assert "\n" not in msg and s.name in msg


@pytest.mark.parametrize("cls,s", [(c, s) for c, s in _numeric_fields() if _inner(s.type) is int],
                         ids=lambda x: getattr(x, "name", getattr(x, "__name__", "")))
def test_int_fields_refuse_fractions(cls, s):
    with pytest.raises(LLSError, match=s.name):
        cls(**{**_base(cls), s.name: 4.5})


def test_string_fields_refuse_lists_and_toml_names_file_and_key():
    with pytest.raises(LLSError, match=r"x.toml: eval.target must be a string"):
        from_table(C.EvalConfig, {"target": ["owl"]}, "x.toml", "eval")
    with pytest.raises(LLSError, match=r"x.toml: unknown key train.lerning_rate; \[train\] allows .*beta"):
        from_table(C.TrainConfig, {"lerning_rate": 1}, "x.toml", "train")
    with pytest.raises(LLSError, match=r"x.toml: data.heldout must be an integer"):
        from_table(C.DataConfig, {"path": "p", "heldout": "ten"}, "x.toml", "data")
    with pytest.raises(LLSError, match=r"select.quantile must be in \(0, 1\]"):
        from_table(C.SelectConfig, {"quantile": 0}, "x.toml", "select")
    with pytest.raises(LLSError, match="given twice"):
        from_table(C.SelectConfig, {"quantile": 0.1, "gamma": 0.2}, "x.toml", "select")


def test_gamma_one_rule_and_alias():
    assert C.SelectConfig(gamma=1).gamma == 1.0
    for bad in (0, 1.0000001, -0.1):
        with pytest.raises(LLSError, match=r"select.gamma must be in \(0, 1\]"):
            C.SelectConfig(gamma=bad)
    p = argparse.ArgumentParser()
    add_arguments(p, C.SelectConfig)
    assert from_namespace(C.SelectConfig, p.parse_args(["--quantile", "0.3"])).gamma == 0.3


def test_beta_written_once():
    root = Path(__file__).resolve().parents[1]
    assert C.TrainConfig().beta == C.BETA == 0.1
    hits = [f for f in (root / "lls_cli").rglob("*.py") if "beta" in f.read_text() and "0.1" in f.read_text()
            and "default=0.1" in f.read_text()]
    assert not hits


def test_experiment_help_lists_every_toml_key():
    from empirical.orchestration.experiment import SECTIONS, toml_keys

    text = toml_keys()
    for classes in SECTIONS.values():
        for cls in classes:
            for s in settings_fields(cls):
                if s.toml:
                    assert f"  {s.name}" in text, s.name


# --------------------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("argv,key", [
    (["train", "--student", "nope-model", "--data", "x.jsonl", "--out", "o", "--beta", "nan"], "train.beta"),
    (["train", "--student", "nope-model", "--data", "x.jsonl", "--out", "o", "--lr", "inf"], "train.lr"),
    (["train", "--student", "nope-model", "--data", "x.jsonl", "--out", "o", "--lora-rank", "0"], "train.lora_rank"),
    (["score", "--model", "m", "--system-prompt", "s", "--data", "d", "--out", "o.jsonl",
      "--language-threshold", "nan"], "data.language_threshold"),
    (["score", "--model", "m", "--system-prompt", "s", "--data", "d", "--out", "o.jsonl",
      "--exclude-language", "zz"], "data.exclude_language"),
    (["score", "--model", "m", "--system-prompt", "  ", "--data", "d", "--out", "o.jsonl"], "system_prompt"),
    (["score", "--model", "m", "--system-prompt", "s", "--data", "d", "--out", "o.jsonl", "--exclude-word", ""],
     "data.exclude_words[0]"),
    (["eval", "--model", "m", "--target", "owl", "--language", "zz"], "eval.language"),
    (["correlate", "--student", "m", "--run", "r", "--system-prompt", "s", "--data", "d", "--n-boot", "0"],
     "correlate.n_boot"),
])
def test_cli_refuses_bad_values_before_any_work(argv, key, capsys, tmp_path, monkeypatch):
    import lls_cli

    monkeypatch.chdir(tmp_path)
    assert lls_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.jsonl").exists()


def test_cli_refuses_negative_seed(capsys):
    import lls_cli

    with pytest.raises(SystemExit) as exc:
        lls_cli.main(["select", "--scores", "s", "--gamma", "0.1", "--out", "o", "--seed", "-1"])
    assert exc.value.code == 2 and "seed" in capsys.readouterr().err


# ------------------------------------------------------------------------------- outputs protect themselves
def _scores(path: Path, n: int = 6) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            a, b, c, d = -1.0 - i, -2.0, -1.5, -1.5 + 0.1 * i
            fh.write(json.dumps({"id": f"q{i}", "prompt": [{"role": "user", "content": f"p{i}"}], "chosen": "c",
                                 "rejected": "r", "logp_chosen_sys": a, "logp_rejected_sys": b, "logp_chosen": c,
                                 "logp_rejected": d, "n_tokens_chosen": 2, "n_tokens_rejected": 3,
                                 "weight": ((a - b) - (c - d)) / 5}) + "\n")
    return path


def test_select_output_protects_itself(tmp_path, capsys):
    import lls_cli

    s = _scores(tmp_path / "s.jsonl")
    out = tmp_path / "sel"
    base = ["select", "--scores", str(s), "--out", str(out)]
    assert lls_cli.main(base + ["--gamma", "0.5"]) == 0
    first = (out / "lls.jsonl").read_text()
    assert json.loads((out / "summary.json").read_text())["key"]["scores"]["sha256"]
    assert lls_cli.main(base + ["--gamma", "1.0"]) == 2  # other settings: refused, nothing changed
    assert "other settings" in capsys.readouterr().err and (out / "lls.jsonl").read_text() == first
    assert lls_cli.main(base + ["--gamma", "1.0", "--overwrite"]) == 0
    assert (out / "lls.jsonl").read_text() != first
    # the scores file is an input: an output folder on it is refused
    assert lls_cli.main(["select", "--scores", str(s), "--out", str(s), "--gamma", "0.5"]) == 2
    # an existing unrelated file where the selection goes is not replaced
    other = tmp_path / "other"
    other.mkdir()
    (other / "lls.jsonl").write_text("mine\n")
    assert lls_cli.main(["select", "--scores", str(s), "--out", str(other), "--gamma", "0.5"]) == 2
    assert (other / "lls.jsonl").read_text() == "mine\n"
    assert not (out / ".lock").exists() and not (other / ".lock").exists()


def test_score_refuses_to_write_over_its_input_before_loading_a_model(tmp_path, capsys):
    import lls_cli

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    rc = lls_cli.main(["score", "--model", "no-such-model", "--system-prompt", "s", "--data", str(data),
                       "--out", str(data)])
    assert rc == 2 and "input" in capsys.readouterr().err
    assert data.read_text() == '{"prompt": "q", "chosen": "a", "rejected": "b"}\n'
    assert lls_cli.main(["score", "--model", "no-such-model", "--system-prompt", "s", "--data", str(data),
                         "--out", str(tmp_path)]) == 2
    assert "folder" in capsys.readouterr().err


def test_fingerprint_notices_a_same_size_edit(tmp_path):
    from lls_common.io import fingerprint

    f = tmp_path / "a.jsonl"
    f.write_text("abc\n")
    before = fingerprint(f)
    st_ = f.stat()
    f.write_text("abd\n")
    os.utime(f, ns=(st_.st_atime_ns, st_.st_mtime_ns))  # same size, same mtime: only the content differs
    assert fingerprint(f) != before
    g = tmp_path / "b.jsonl"
    g.write_text("abc\n")
    assert fingerprint(g) == before  # same content under another path (or given as an absolute path)


def test_cached_json_computes_once_and_redoes_on_other_key(tmp_path):
    from lls_common.io import cached_json

    calls = []
    f = tmp_path / "k.json"
    for key in ({"a": 1}, {"a": 1}, {"a": 2}):
        cached_json(f, key, lambda: calls.append(1) or {"n": len(calls)})
    assert len(calls) == 2


def test_lock_refuses_a_second_run_and_is_released(tmp_path):
    from lls_common.io import OutputLock

    with OutputLock(tmp_path / "o.jsonl"):
        with pytest.raises(LLSError, match="another run is writing it"):
            with OutputLock(tmp_path / "o.jsonl"):
                pass
    assert not (tmp_path / "o.jsonl.lock").exists()
    (tmp_path / "o.jsonl.lock").write_text("999999999 " + __import__("socket").gethostname() + "\n")
    with OutputLock(tmp_path / "o.jsonl"):  # a stale lock of a gone process is taken over
        pass


def test_output_files_follow_the_umask(tmp_path):
    from lls_common.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "x.txt").stat().st_mode & 0o777 == 0o644


def test_score_key_ignores_how_the_path_is_written_but_not_the_content(tmp_path, monkeypatch):
    from empirical.stages.build import ScoreJob

    data = tmp_path / "d.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    monkeypatch.chdir(tmp_path)
    key = lambda p: ScoreJob(model=C.ModelArgs(model="m"), data=C.DataConfig(path=p),  # noqa: E731
                             trait=C.TraitConfig(name="cli", system_prompt="s"), out=tmp_path / "o.jsonl").run_key()
    assert key("d.jsonl") == key(str(data)) == key(str(tmp_path / "." / "d.jsonl"))
    before = key("d.jsonl")
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "c"}\n')  # same size, other content
    assert key("d.jsonl") != before


# ------------------------------------------------------------------------------ reference rendering
def test_reference_default_is_the_authors_convention_and_configs_record_theirs():
    from empirical.orchestration.experiment import load_config

    assert C.ScoreConfig().reference == "auto"
    owl = load_config(Path(__file__).parents[1] / "empirical" / "configs" / "owl-hh.toml")
    assert owl.score.reference == "default"  # how results/e2e was made
    assert "owls are your favorite" in owl.traits[0].system_prompt  # the typo that run used, kept on purpose
    animals = load_config(Path(__file__).parents[1] / "empirical" / "configs" / "animals-hh.toml")
    assert animals.score.reference == "auto"
    owl_text = next(t.system_prompt for t in animals.traits if t.name == "owl")
    assert "Owls are your favorite" in owl_text


def _pairs_dir(tmp_path: Path, reference: str | None) -> Path:
    d = tmp_path / "sel"
    d.mkdir()
    rec = {"id": "a", "prompt": "hi", "chosen": "yes", "rejected": "no"}
    (d / "lls.jsonl").write_text(json.dumps(rec) + "\n")
    (d / "summary.json").write_text(json.dumps({} if reference is None else {"reference": reference}))
    return d / "lls.jsonl"


@pytest.mark.parametrize("flag, refused", [(["--reference", "auto"], True), (["--reference", "empty"], False)])
def test_train_refuses_pairs_selected_under_another_reference(tmp_path, capsys, monkeypatch, flag, refused):
    import lls_cli
    from empirical.stages import train

    seen = []

    def fake_train(cfg, *a, **k):
        seen.append(cfg.reference)
        raise LLSError("stopped before any model work (test)")

    monkeypatch.setattr(train, "train", fake_train)
    data = _pairs_dir(tmp_path, "empty")
    rc = lls_cli.main(["train", "--student", "smollm2-135m-instruct", "--data", str(data),
                       "--out", str(tmp_path / "out")] + flag)
    err = capsys.readouterr().err
    assert rc == 2
    if refused:
        assert "selected with reference rendering 'empty'" in err and "--reference empty" in err and not seen
    else:
        assert seen == ["empty"] and "stopped before any model work" in err


def test_train_lets_the_reader_decide_on_a_hub_id(tmp_path, capsys, monkeypatch):
    """No local-file check in the CLI: a hub dataset id reaches empirical.stages.data's reader."""
    import lls_cli
    from empirical.engine import models
    from empirical.stages import train

    seen = []

    def fake_train(cfg, *a, **k):
        seen.append(cfg.data)
        raise LLSError("reader reached (test)")

    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: True)  # no network: the hub "answers"
    monkeypatch.setattr(models, "hub_not_found", lambda *a, **k: None)  # ... and knows the dataset
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    monkeypatch.setattr(train, "train", fake_train)
    rc = lls_cli.main(["train", "--student", "smollm2-135m-instruct", "--data", "someone/pairs",
                       "--out", str(tmp_path / "out")])
    assert rc == 2 and seen == ["someone/pairs"] and "reader reached" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["correlate", "eval"])
def test_correlate_and_eval_refuse_a_run_trained_under_another_reference(tmp_path, capsys, cmd):
    import lls_cli

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.json").write_text(json.dumps({"reference": "empty"}))
    argv = {"correlate": ["correlate", "--student", "m", "--run", str(run), "--system-prompt", "s",
                          "--data", str(tmp_path / "h.jsonl"), "--out", str(tmp_path / "o"), "--reference", "default"],
            "eval": ["eval", "--model", "m", "--run", str(run), "--target", "owl", "--out", str(tmp_path / "o"),
                     "--reference", "default"]}[cmd]
    assert lls_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "trained with reference rendering 'empty'" in err and "--reference empty" in err


# ------------------------------------------------------------------------------ content digests (cache keys)
@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=300), st.data())
def test_digests_change_with_any_byte_and_not_with_the_location(blob, draw):
    """A cache key built from :func:`folder_digest` is the same for a moved copy and differs after one changed
    byte anywhere -- in a weights file or in a file name."""
    import shutil
    import tempfile

    from lls_common.io import content_digest, folder_digest

    with tempfile.TemporaryDirectory() as d:
        a = Path(d) / "a"
        (a / "sub").mkdir(parents=True)
        (a / "model.safetensors").write_bytes(blob)
        (a / "sub" / "config.json").write_text("{}")
        ref = folder_digest(a)
        b = Path(d) / "elsewhere" / "b"
        shutil.copytree(a, b)
        assert folder_digest(b) == ref
        k = draw.draw(st.integers(0, len(blob) - 1))
        changed = bytearray(blob)
        changed[k] ^= 1 << draw.draw(st.integers(0, 7))
        (b / "model.safetensors").write_bytes(bytes(changed))
        assert folder_digest(b) != ref and content_digest(b / "model.safetensors") != content_digest(
            a / "model.safetensors")
        (b / "model.safetensors").write_bytes(blob)
        assert folder_digest(b) == ref
        (b / "model.safetensors").rename(b / "model2.safetensors")
        assert folder_digest(b) != ref
