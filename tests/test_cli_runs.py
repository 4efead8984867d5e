"""The shared CLI contract: atomic writes, JSON conversion, one-line errors, the subcommand list."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from lls_common import io as runs


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.json"
    runs.atomic_write_json(target, {"a": 1})

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        runs.atomic_write_json(target, {"a": 2})
    # the old file is intact and no temporary file is left behind
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_to_jsonable_converts_numpy_and_non_finite():
    obj = {"x": np.float32(1.5), "v": np.arange(3), "bad": math.nan, "inf": np.inf, "t": (1, 2)}
    out = runs.to_jsonable(obj)
    assert out == {"x": 1.5, "v": [0, 1, 2], "bad": None, "inf": None, "t": [1, 2]}
    json.dumps(out, allow_nan=False)


def test_to_jsonable_rejects_unknown_objects():
    with pytest.raises(TypeError):
        runs.to_jsonable(object())


def test_rundir_refuses_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(runs.LLSError, match="not a folder"):
        runs.RunDir(f)


def test_user_error_is_one_line_exit_2(capsys, monkeypatch):
    import argparse

    import lls_cli

    def fake_parser():
        p = argparse.ArgumentParser(prog="lls")
        sub = p.add_subparsers(dest="command")
        q = sub.add_parser("boom")

        def handler(_args):
            raise runs.LLSError("data.jsonl:3: missing field 'chosen'")

        q.set_defaults(func=handler)
        return p

    monkeypatch.setattr(lls_cli, "build_parser", fake_parser)
    assert lls_cli.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err == "lls boom: error: data.jsonl:3: missing field 'chosen'\n"


EXPECTED_COMMANDS = {"demo", "simulate", "check-proof", "models", "split", "score", "select", "build", "train",
                     "correlate", "eval", "experiment", "spectrum", "angles", "pair-check", "detect"}


def test_every_subcommand_is_registered(capsys):
    import argparse

    import lls_cli

    parser = lls_cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert EXPECTED_COMMANDS <= set(sub.choices)
    with pytest.raises(SystemExit) as exc:
        lls_cli.main(["--help"])
    assert exc.value.code == 0
    assert "pair-check" in capsys.readouterr().out


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, lls_cli; lls_cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_json_flag_keeps_stdout_pure_json(capsys, monkeypatch):
    """Library prints (e.g. the Trainer's loss dicts) go to stderr under --json; stdout is one JSON document."""
    import argparse
    import json

    import lls_cli

    def fake_parser():
        p = argparse.ArgumentParser(prog="lls")
        sub = p.add_subparsers(dest="command")
        q = sub.add_parser("chatty")
        q.add_argument("--json", action="store_true")

        def handler(args):
            print({"loss": 0.69})
            runs.emit_summary({"ok": True}, args.json, "ok")
            return 0

        q.set_defaults(func=handler)
        return p

    monkeypatch.setattr(lls_cli, "build_parser", fake_parser)
    assert lls_cli.main(["chatty", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == {"ok": True} and "loss" in err
    assert lls_cli.main(["chatty"]) == 0
    assert capsys.readouterr().out == "{'loss': 0.69}\nok\n"


def test_correlate_json_summary_carries_the_warnings(tmp_path, capsys, monkeypatch):
    """hostile R9: the small-sample warnings of correlate.json were missing from the --json summary."""
    import json as _json

    import lls_cli
    from empirical.report import figures
    from empirical.stages import correlate
    from lls_common.io import RunDir

    z = {"cosine": 0.1, "pearson": 0.2, "pearson_ci": [0.0, 0.4]}
    res = {"n": 3, "student": "s", "teacher": "t", "arms": {"lls": {"final": {"z_s": z}}},
           "warnings": ["n = 3 < 30: small sample"]}
    monkeypatch.setattr(correlate, "correlate_run", lambda *a, **k: res)
    monkeypatch.setattr(figures, "trajectory_figure", lambda r: None)
    monkeypatch.setattr(RunDir, "save_figure", lambda self, name, fig: None)
    data, run = tmp_path / "held.jsonl", tmp_path / "run"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    run.mkdir()
    rc = lls_cli.main(["correlate", "--student", "smollm2-135m-instruct", "--run", str(run), "--system-prompt", "x",
                       "--data", str(data), "--out", str(tmp_path / "co"), "--json"])
    assert rc == 0
    summary = _json.loads(capsys.readouterr().out)
    assert summary["warnings"] == res["warnings"]


@pytest.mark.parametrize("cmd", ["correlate", "eval", "train"])
def test_unreachable_hub_model_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, cmd):
    """hostile R12: an uncached hub id used to cost ~60 s of download retries and 23 stderr lines."""
    import lls_cli
    from empirical.engine import models

    monkeypatch.setattr(models, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    data, run = tmp_path / "held.jsonl", tmp_path / "run"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    run.mkdir()
    out = tmp_path / "o"
    argv = {"correlate": ["correlate", "--student", "nosuchorg/nosuchmodel", "--run", str(run), "--system-prompt",
                          "x", "--data", str(data)],
            "eval": ["eval", "--model", "nosuchorg/nosuchmodel", "--target", "owl"],
            "train": ["train", "--student", "nosuchorg/nosuchmodel", "--data", str(data)]}[cmd]
    assert lls_cli.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be reached" in err, err
    assert not out.exists()


def test_version_prints_the_installed_package_version(capsys, monkeypatch):
    """lls --version: the version in the package metadata (pyproject's), and a hint when not installed."""
    from importlib import metadata

    import lls_cli

    monkeypatch.setattr(metadata, "version", lambda name: "9.8.7" if name == "lls-toolkit" else "?")
    with pytest.raises(SystemExit) as exc:
        lls_cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out == "lls 9.8.7\n"

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert "pip install -e ." in lls_cli.package_version()
