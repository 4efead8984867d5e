"""`lls score / select / build / models`: outputs, exactness end to end, resume, 2 processes, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from empirical.stages import build
from empirical.config import DataConfig, Filters, ModelArgs, ScoreConfig, TraitConfig

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "prefs_small.jsonl"
SYS = "You really love owls. Owls are your favorite animal."
REPO = Path(__file__).resolve().parents[1]


def run_cli(argv: list[str]) -> int:
    import lls_cli

    return lls_cli.main(argv)


def _cfg(out: Path, data: Path = SMALL, *, truncate: int | None = 8, limit: int | None = 4, skip_bad: bool = False,
         **score) -> build.ScoreJob:
    """A scoring job of SmolLM2 (fp32) on ``data`` under the owl prompt; ``score``: ScoreConfig fields."""
    return build.ScoreJob(model=ModelArgs(model="smollm2-135m-instruct", dtype="float32"),
                          data=DataConfig(path=str(data), limit=limit, truncate=truncate, skip_bad=skip_bad),
                          trait=TraitConfig(name="cli", system_prompt=SYS), out=Path(out), filters=Filters(),
                          score=ScoreConfig(**{"chunk_size": 2, "progress": False, **score}))


# ---------------------------------------------------------------------------------------------- selection
def _write_scores(path: Path, weights_spec: list[tuple[float, float, float, float, int, int]]) -> None:
    with open(path, "w") as fh:
        for i, (a, b, c, d, n1, n2) in enumerate(weights_spec):
            w = ((a - b) - (c - d)) / (n1 + n2)
            fh.write(json.dumps({"id": f"q{i}", "prompt": [{"role": "user", "content": f"prompt {i % 4}"}],
                                 "chosen": f"c{i}", "rejected": f"r{i}", "logp_chosen_sys": a,
                                 "logp_rejected_sys": b, "logp_chosen": c, "logp_rejected": d,
                                 "n_tokens_chosen": n1, "n_tokens_rejected": n2, "weight": w}) + "\n")


def test_select_algorithm1_and_controls(tmp_path, capsys):
    rng = np.random.default_rng(0)
    # log-probabilities are <= 0 (a scores file with a positive one is refused)
    spec = [(-abs(float(rng.normal())), -abs(float(rng.normal())), -abs(float(rng.normal())),
             -abs(float(rng.normal())), int(rng.integers(1, 9)), int(rng.integers(1, 9))) for _ in range(40)]
    scores = tmp_path / "s.jsonl"
    _write_scores(scores, spec)
    w = np.array([((a - b) - (c - d)) / (n1 + n2) for a, b, c, d, n1, n2 in spec])
    positive = np.flatnonzero(w > 0)
    k = math.ceil(0.3 * len(positive))
    assert run_cli(["select", "--scores", str(scores), "--quantile", "0.3", "--out", str(tmp_path / "sel"),
                    "--seed", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_selected"] == k and summary["n_positive"] == len(positive)
    assert summary["weights_match_scores_file"] is True
    lls = [json.loads(x) for x in open(tmp_path / "sel" / "lls.jsonl")]
    assert [r["id"] for r in lls] == [f"q{i}" for i in positive[np.argsort(-w[positive], kind="stable")][:k]]
    assert all(r["weight"] > 0 for r in lls) and lls[0]["chosen"] == [{"role": "assistant", "content": lls[0]["chosen"][0]["content"]}]
    assert lls[0]["prompt"][0]["role"] == "user"
    bottom = [json.loads(x) for x in open(tmp_path / "sel" / "bottom.jsonl")]
    assert [r["id"] for r in bottom] == [f"q{i}" for i in np.argsort(w, kind="stable")[:k]]
    rand = [json.loads(x)["id"] for x in open(tmp_path / "sel" / "random.jsonl")]
    assert len(rand) == k == len(set(rand))
    # same seed -> same random control; another seed -> (almost surely) another one
    run_cli(["select", "--scores", str(scores), "--quantile", "0.3", "--out", str(tmp_path / "sel2"), "--seed", "3"])
    run_cli(["select", "--scores", str(scores), "--quantile", "0.3", "--out", str(tmp_path / "sel3"), "--seed", "4"])
    assert (tmp_path / "sel2" / "random.jsonl").read_text() == (tmp_path / "sel" / "random.jsonl").read_text()
    assert (tmp_path / "sel3" / "random.jsonl").read_text() != (tmp_path / "sel" / "random.jsonl").read_text()
    assert json.loads((tmp_path / "sel" / "summary.json").read_text())["n_selected"] == k


def test_select_bad_scores_file(tmp_path, capsys):
    scores = tmp_path / "s.jsonl"
    _write_scores(scores, [(0.0, -1.0, 0.0, 0.0, 1, 1)] * 2)
    lines = scores.read_text().splitlines()
    scores.write_text(lines[0] + "\n" + lines[1][:-5] + "\n")
    assert run_cli(["select", "--scores", str(scores), "--quantile", "0.5", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{scores}:2: malformed JSON" in err
    scores.write_text(json.dumps({"id": "a"}) + "\n")
    assert run_cli(["select", "--scores", str(scores), "--quantile", "0.5", "--out", str(tmp_path / "o")]) == 2
    assert f"{scores}:1: missing field(s) prompt" in capsys.readouterr().err
    assert not (tmp_path / "o" / "lls.jsonl").exists()
    assert run_cli(["select", "--scores", str(scores), "--quantile", "1.5", "--out", str(tmp_path / "o")]) == 2


# -------------------------------------------------------------------------------------------------- scoring
@pytest.mark.model
def test_score_cli_fields_weights_and_exactness(tmp_path, smollm2, capsys):
    from empirical.engine import render, scoring
    from lls_theory.selection import lls_weights

    out = tmp_path / "scores.jsonl"
    rc = run_cli(["score", "--model", "smollm2-135m-instruct", "--system-prompt", SYS, "--data", str(SMALL),
                  "--truncate", "8", "--limit", "3", "--out", str(out), "--json", "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["scored"] == 3 and summary["bad"] == 0 and summary["processes"] == 1
    recs = [json.loads(x) for x in open(out)]
    assert [r["id"] for r in recs] == ["p0", "p1", "p2"]
    assert list(recs[0]) == list(build.SCORE_FIELDS)
    model, tok = smollm2
    # truncation kept in the output: at most 8 teacher tokens per reply
    assert all(len(tok(r["chosen"], add_special_tokens=False)["input_ids"]) <= 8 for r in recs)
    assert recs[2]["chosen"] == render.truncate_response(tok, "A cat or a small bird suits a small flat.", 8)
    from empirical.config import ScoreConfig as Defaults

    reference = Defaults().reference  # the no-system rendering lls score uses by default
    ref_sys = scoring.score_pairs(model, tok, recs, SYS, naive=True, reference=reference)
    ref = scoring.score_pairs(model, tok, recs, None, naive=True, reference=reference)
    col = lambda f: np.array([r[f] for r in recs])  # noqa: E731
    np.testing.assert_allclose(col("logp_chosen_sys"), ref_sys.logp_chosen, atol=1e-4)
    np.testing.assert_allclose(col("logp_rejected_sys"), ref_sys.logp_rejected, atol=1e-4)
    np.testing.assert_allclose(col("logp_chosen"), ref.logp_chosen, atol=1e-4)
    np.testing.assert_allclose(col("logp_rejected"), ref.logp_rejected, atol=1e-4)
    np.testing.assert_array_equal(col("n_tokens_chosen"), ref.n_chosen)
    w = lls_weights(col("logp_chosen_sys"), col("logp_rejected_sys"), col("logp_chosen"), col("logp_rejected"),
                    col("n_tokens_chosen"), col("n_tokens_rejected"))
    np.testing.assert_allclose(col("weight"), w, rtol=1e-12)


@pytest.mark.model
def test_resume_after_interruption_gives_the_same_file(tmp_path, smollm2):
    full = tmp_path / "full.jsonl"
    build.score_file(_cfg(full), model_and_tok=smollm2)
    part = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        build.score_file(_cfg(part), model_and_tok=smollm2, stop_after_chunks=1)  # killed after chunk 0
    assert not part.exists()
    saved = sorted(p.name for p in (tmp_path / "part.jsonl.parts").iterdir())
    assert saved == ["chunk-000000.json", "run.json"]
    res = build.score_file(_cfg(part), model_and_tok=smollm2)
    assert res.chunks_resumed == 1 and res.chunks_total == 2
    assert part.read_bytes() == full.read_bytes()
    assert not (tmp_path / "part.jsonl.parts").exists()


@pytest.mark.model
def test_resume_with_a_damaged_chunk_scores_it_again(tmp_path, smollm2, capsys):
    """A saved chunk truncated by a crash or a full disk is noticed before scoring (a note), scored again, and the
    file equals an uninterrupted run's -- no JSON error after the rest ran."""
    full = tmp_path / "full.jsonl"
    build.score_file(_cfg(full), model_and_tok=smollm2)
    part = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        build.score_file(_cfg(part), model_and_tok=smollm2, stop_after_chunks=1)
    chunk = tmp_path / "part.jsonl.parts" / "chunk-000000.json"
    chunk.write_bytes(chunk.read_bytes()[:40])
    res = build.score_file(_cfg(part), model_and_tok=smollm2)
    assert res.chunks_resumed == 0 and part.read_bytes() == full.read_bytes()
    assert "damaged saved chunk" in capsys.readouterr().err


def test_a_run_stopped_inside_its_first_chunk_keeps_the_pieces_it_finished(tmp_path, smollm2, monkeypatch):
    """Pieces of 4 * max_batch pairs are saved as they finish: a run killed after one piece of its first chunk
    keeps that piece, the re-run scores only the rest, and the file equals an uninterrupted run's."""
    from empirical.stages import build

    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    kw = dict(chunk_size=6, max_batch=1, limit=6)  # one chunk: pieces of 4 and 2 pairs
    build.score_file(_cfg(full, **kw), model_and_tok=smollm2)
    real, calls = build._score_chunk, []

    def killed_after_one(*a, **k):
        if calls:
            raise KeyboardInterrupt("stopped")
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(build, "_score_chunk", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        build.score_file(_cfg(part, **kw), model_and_tok=smollm2)
    saved = sorted(p.name for p in (tmp_path / "part.jsonl.parts").iterdir())
    assert saved == ["chunk-000000.piece-0000.json", "run.json"]
    counted = []
    monkeypatch.setattr(build, "_score_chunk", lambda *a, **k: counted.append(len(a[2])) or real(*a, **k))
    build.score_file(_cfg(part, **kw), model_and_tok=smollm2)
    assert counted == [2]  # the piece not saved before; the saved one was read back
    assert part.read_bytes() == full.read_bytes()
    assert not (tmp_path / "part.jsonl.parts").exists()


@pytest.mark.model
def test_resume_refuses_other_settings(tmp_path, smollm2):
    out = tmp_path / "s.jsonl"
    with pytest.raises(KeyboardInterrupt):
        build.score_file(_cfg(out), model_and_tok=smollm2, stop_after_chunks=0)
    from empirical.stages.data import DataError

    with pytest.raises(DataError, match="left by a run with other settings"):
        build.score_file(_cfg(out, truncate=4), model_and_tok=smollm2)


@pytest.mark.model
def test_bad_input_stops_with_one_line_or_is_skipped(tmp_path, smollm2_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    lines = SMALL.read_text().splitlines()[:2]
    bad.write_text(lines[0] + "\n" + '{"prompt": "q", "chosen": "a"}\n' + lines[1] + "\n" + "{oops\n")
    out = tmp_path / "s.jsonl"
    base = ["score", "--model", str(smollm2_dir), "--system-prompt", SYS, "--data", str(bad), "--out", str(out),
            "--truncate", "4", "--no-progress"]
    assert run_cli(base) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # earlier stderr lines: transformers' loading bar
    assert err == f"lls score: error: {bad}:2: missing field 'rejected'"
    assert not out.exists()
    assert run_cli(base + ["--skip-bad", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["records"], s["bad"], s["scored"]) == (4, 2, 2)
    assert any(f"{bad}:4: malformed JSON" in e for e in s["first_errors"])


@pytest.mark.model
def test_prompt_longer_than_context(tmp_path, smollm2, monkeypatch):
    from empirical.engine import scoring
    from empirical.stages.data import DataError

    monkeypatch.setattr(scoring, "context_limit", lambda m: 60)
    # the template's default persona block makes record 4's reference rendering the one over 60 tokens
    with pytest.raises(DataError, match=r"prefs_small.jsonl:4: \d+ tokens exceed the model's context of 60"):
        build.score_file(_cfg(tmp_path / "s.jsonl", truncate=4, reference="default"), model_and_tok=smollm2)
    assert not (tmp_path / "s.jsonl").exists()
    # the same command with --skip-bad resumes from the chunk saved before the error
    res = build.score_file(_cfg(tmp_path / "s.jsonl", truncate=4, skip_bad=True, reference="default"),
                              model_and_tok=smollm2)
    assert res.n_scored == 3 and res.n_bad == 1 and res.chunks_resumed == 1
    assert "context of 60" in res.first_errors[0]


@pytest.mark.model
@pytest.mark.slow
def test_two_processes_give_the_same_file_as_one(tmp_path, smollm2_dir):
    """torchrun --nproc_per_node 2 (gloo on CPU) vs 1 process, same per-process thread count."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    common = ["score", "--model", str(smollm2_dir), "--system-prompt", SYS, "--data", str(SMALL),
              "--truncate", "6", "--chunk-size", "1", "--no-progress", "--json"]
    one = subprocess.run([sys.executable, "-m", "lls_cli", *common, "--out", str(tmp_path / "one.jsonl")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--standalone", "-m", "lls_cli", *common,
                          "--out", str(tmp_path / "two.jsonl")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert json.loads(two.stdout)["processes"] == 2  # one JSON summary: only rank 0 reports
    assert (tmp_path / "two.jsonl").read_bytes() == (tmp_path / "one.jsonl").read_bytes()
    assert len((tmp_path / "one.jsonl").read_text().splitlines()) == 6


@pytest.mark.model
def test_build_and_models_list(tmp_path, smollm2_dir, capsys):
    assert run_cli(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["models"]}
    assert rows["smollm2-135m-instruct"]["installed"] is True
    out = tmp_path / "build"
    assert run_cli(["build", "--model", str(smollm2_dir), "--system-prompt", SYS, "--data", str(SMALL),
                    "--truncate", "4", "--limit", "3", "--quantile", "1.0", "--out", str(out), "--json",
                    "--no-progress"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["score"]["scored"] == 3 and s["select"]["n_scored"] == 3
    n_sel = s["select"]["n_selected"]
    assert n_sel == s["select"]["n_positive"]
    for name in ("lls", "random", "bottom"):
        assert len((out / f"{name}.jsonl").read_text().splitlines()) == n_sel
    assert (out / "scores.jsonl").is_file() and (out / "summary.json").is_file()


@pytest.mark.model
def test_finished_scores_are_kept_and_protected(tmp_path, smollm2_dir, capsys):
    """Same command again: the finished file is kept (not re-scored); other settings: refused unless --overwrite."""
    out = tmp_path / "s.jsonl"
    base = ["score", "--model", str(smollm2_dir), "--system-prompt", SYS, "--data", str(SMALL), "--out", str(out),
            "--limit", "2", "--no-progress", "--json"]
    assert run_cli(base + ["--truncate", "4"]) == 0
    first, mtime = json.loads(capsys.readouterr().out), out.stat().st_mtime_ns
    record = json.loads((tmp_path / "s.jsonl.run.json").read_text())
    assert record["key"]["system_prompt"] == SYS and record["key"]["input"]["sha256"]
    assert run_cli(base + ["--truncate", "4"]) == 0
    assert json.loads(capsys.readouterr().out) == first and out.stat().st_mtime_ns == mtime
    assert run_cli(base + ["--truncate", "5"]) == 2
    err = capsys.readouterr().err
    assert "other settings (data.truncate)" in err and out.stat().st_mtime_ns == mtime
    assert run_cli(base + ["--truncate", "5", "--overwrite"]) == 0
    assert json.loads((tmp_path / "s.jsonl.run.json").read_text())["key"]["data"]["truncate"] == 5
    assert not (tmp_path / "s.jsonl.lock").exists()


@pytest.mark.model
def test_reference_scores_shared_between_system_prompts_give_the_same_file(tmp_path, smollm2):
    """lls experiment scores the reference (no-system) condition once and each system prompt against it:
    the file equals a combined run's, byte for byte."""
    full = tmp_path / "full.jsonl"
    build.score_file(_cfg(full), model_and_tok=smollm2)
    base_job = _cfg(tmp_path / "base.jsonl")
    base_job.trait = None
    build.score_file(base_job, model_and_tok=smollm2)
    assert all(set(json.loads(x)) == set(build.BASE_FIELDS) for x in open(tmp_path / "base.jsonl"))
    two = _cfg(tmp_path / "two.jsonl")
    two.base = tmp_path / "base.jsonl"
    build.score_file(two, model_and_tok=smollm2)
    assert (tmp_path / "two.jsonl").read_bytes() == full.read_bytes()
    # a base file of other pairs is refused, naming it
    other = _cfg(tmp_path / "o.jsonl", limit=2)
    other.trait = None
    build.score_file(other, model_and_tok=smollm2)
    bad = _cfg(tmp_path / "bad.jsonl")
    bad.base = tmp_path / "o.jsonl"
    with pytest.raises(Exception, match="base scores file"):
        build.score_file(bad, model_and_tok=smollm2)


# ------------------------------------------------------------------------------------- gamma, tiny subsets
def test_select_and_build_take_gamma_as_optional_with_the_settings_default(tmp_path, capsys):
    """--gamma is optional with SelectConfig's default everywhere (select, build), and help says the default."""
    import lls_cli
    from empirical.config import SelectConfig

    parser = lls_cli.build_parser()
    for cmd, extra in (("select", ["--scores", "s.jsonl"]), ("build", ["--model", "m", "--data", "d.jsonl",
                                                                       "--system-prompt", "s"])):
        args = parser.parse_args([cmd, *extra, "--out", str(tmp_path / cmd)])
        from lls_common.config import from_namespace

        assert from_namespace(SelectConfig, args).gamma == SelectConfig().gamma == 0.1
    with pytest.raises(SystemExit):
        lls_cli.main(["select", "--help"])
    assert "(default 0.1)" in capsys.readouterr().out
    spec = [(-0.1, -2.0, -1.0, -1.0, 2, 2)] * 3 + [(-2.0, -0.1, -1.0, -1.0, 2, 2)] * 37
    scores = tmp_path / "s.jsonl"
    _write_scores(scores, spec)
    assert run_cli(["select", "--scores", str(scores), "--out", str(tmp_path / "sel"), "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert summary["gamma"] == 0.1 and summary["n_selected"] == math.ceil(0.1 * 3) == 1


def test_select_warns_about_a_tiny_subset_with_the_count(tmp_path, capsys):
    """gamma 0.1 of 48 pairs keeps a handful: a warning on stderr (and in --json) names the count; a subset of
    TINY_SUBSET pairs or more gets none."""
    from empirical.config import TINY_SUBSET

    rng = np.random.default_rng(1)
    spec = [(-abs(float(rng.normal())), -abs(float(rng.normal())), -abs(float(rng.normal())),
             -abs(float(rng.normal())), 3, 3) for _ in range(48)]
    scores = tmp_path / "s.jsonl"
    _write_scores(scores, spec)
    assert run_cli(["select", "--scores", str(scores), "--gamma", "0.1", "--out", str(tmp_path / "a"), "--json"]) == 0
    out, err = capsys.readouterr()
    s = json.loads(out)
    assert s["n_selected"] < TINY_SUBSET
    assert f"has only {s['n_selected']} pair(s)" in err and s["warnings"] == [err.strip()]
    many = [(-0.1, -2.0, -1.0, -1.0, 2, 2)] * (TINY_SUBSET + 4)
    _write_scores(scores, many)
    assert run_cli(["select", "--scores", str(scores), "--gamma", "1", "--out", str(tmp_path / "b"), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warnings"] == [] and "warning" not in err


# ------------------------------------------------------------------------------------------------ lls split
def _hh_file(path: Path, n: int) -> Path:
    recs = [{"chosen": f"\n\nHuman: question {k}?\n\nAssistant: answer {k}",
             "rejected": f"\n\nHuman: question {k}?\n\nAssistant: other {k}"} for k in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_split_writes_disjoint_files_with_the_experiment_rule_and_a_record(tmp_path, capsys):
    """lls split: held-out and pool are disjoint and cover the usable pairs; the same seed gives the same
    files as the experiment's split rule; split.json records the input's hash, settings and seed; a finished
    split is kept, another seed is refused without --overwrite; the pool is readable by lls score / train."""
    from empirical.stages import data
    from empirical.config import DataConfig, Filters
    from empirical.orchestration.experiment import split_pairs
    from lls_common.io import fingerprint

    src = _hh_file(tmp_path / "hh.jsonl", 30)
    out = tmp_path / "sp"
    assert run_cli(["split", "--data", str(src), "--heldout", "10", "--seed", "7", "--out", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    held = [json.loads(x) for x in open(out / "heldout.jsonl")]
    pool = [json.loads(x) for x in open(out / "pool.jsonl")]
    assert len(held) == 10 and len(pool) == 20
    texts = lambda rs: {r["prompt"][-1]["content"] for r in rs}  # noqa: E731
    assert not texts(held) & texts(pool) and len(texts(held) | texts(pool)) == 30
    ref_held, ref_pool, _ = split_pairs(DataConfig(path=str(src), heldout=10), Filters(), 7)
    assert held == json.loads(json.dumps(ref_held)) and pool == json.loads(json.dumps(ref_pool))
    rec = json.loads((out / "split.json").read_text())
    assert rec == s and rec["seed"] == 7 and rec["input"] == fingerprint(src)
    assert rec["key"]["data"]["heldout"] == 10 and rec["counts"]["n_pool"] == 20
    assert data.check_pairs(out / "pool.jsonl").n_kept == 20 and data.check_pairs(out / "heldout.jsonl").n_kept == 10
    before = (out / "pool.jsonl").stat().st_mtime_ns
    assert run_cli(["split", "--data", str(src), "--heldout", "10", "--seed", "7", "--out", str(out)]) == 0
    assert (out / "pool.jsonl").stat().st_mtime_ns == before  # kept as it is
    capsys.readouterr()
    assert run_cli(["split", "--data", str(src), "--heldout", "10", "--seed", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed" in err and "--overwrite" in err
    assert run_cli(["split", "--data", str(src), "--heldout", "10", "--seed", "8", "--out", str(out),
                    "--overwrite"]) == 0
    assert json.loads((out / "split.json").read_text())["seed"] == 8


@pytest.mark.parametrize("case", ["missing", "too_small", "truncate_without_model", "out_is_input", "bad_line"])
def test_split_refuses_bad_input_in_one_line_before_writing(tmp_path, capsys, case):
    src = _hh_file(tmp_path / "hh.jsonl", 12)
    argv = ["split", "--data", str(src), "--heldout", "5", "--out", str(tmp_path / "sp")]
    if case == "missing":
        argv[2] = str(tmp_path / "nope.jsonl")
    elif case == "too_small":
        argv[4] = "12"
    elif case == "truncate_without_model":
        argv += ["--truncate", "8"]
    elif case == "out_is_input":
        argv[-1] = str(src)
    else:
        src.write_text(src.read_text() + "{not json\n")
    assert run_cli(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("lls split: error: ")
    assert not (tmp_path / "sp").exists()
