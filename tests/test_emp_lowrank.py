"""Log-prob matrices X_M (prefix reuse == naive, resume), the system-prompt library, spectra, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical import systems as sysmod
from empirical.lowrank.logprob_matrix import (Column, cached_rows, compute_matrix, default_rank_window, logprob_row,
                                      logprob_row_naive, pair_columns, select_columns, spectrum_fit)

COLS = [
    Column("a", "What is 2+2?", "It is 4, of course."),
    Column("b", [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                 {"role": "user", "content": "Name a fruit."}], "Banana."),
    Column("c", "Tell me about owls in one line.", "Owls are nocturnal birds of prey with silent flight."),
]
SYSTEMS = [None, "You really love owls. Owls are your favorite animal.", "Answer in exactly one sentence."]


# ------------------------------------------------------------------------------------------ model-backed
@pytest.mark.model
@pytest.mark.parametrize("system", SYSTEMS)
def test_prefix_reuse_equals_naive(smollm2, system):
    model, tok = smollm2
    fast, n, K = logprob_row(model, tok, system, COLS, max_batch=2)
    slow = logprob_row_naive(model, tok, system, COLS)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-4)
    assert K > 0 and np.all(n > 0) and np.all(fast < 0)


@pytest.mark.model
def test_matrix_resume_is_identical(smollm2, tmp_path):
    model, tok = smollm2
    full = compute_matrix(model, tok, SYSTEMS, COLS, model_name="smollm2")
    store = tmp_path / "cache"
    # "killed" after the first row: only that row is in the cache
    compute_matrix(model, tok, SYSTEMS[:1], COLS, store=store, model_name="smollm2")
    assert cached_rows(store, "smollm2", "float32", SYSTEMS, COLS) == [True, False, False]
    resumed = compute_matrix(model, tok, SYSTEMS, COLS, store=store, model_name="smollm2")
    assert resumed.cached == [True, False, False]
    np.testing.assert_array_equal(resumed.X, full.X)
    np.testing.assert_array_equal(resumed.n_tokens, full.n_tokens)
    again = compute_matrix(model, tok, SYSTEMS, COLS, store=store, model_name="smollm2", only_cached=True)
    assert again.cached == [True, True, True]
    np.testing.assert_array_equal(again.X, full.X)
    # other columns or another model name never reuse these rows
    assert cached_rows(store, "other", "float32", SYSTEMS, COLS) == [False] * 3
    assert cached_rows(store, "smollm2", "float32", SYSTEMS, COLS[:2]) == [False] * 3


@pytest.mark.model
def test_bf16_close_to_fp32(smollm2_dir, smollm2):
    from empirical.engine import models

    m16, tok = models.load(str(smollm2_dir), dtype="bfloat16")
    a, _, _ = logprob_row(smollm2[0], smollm2[1], SYSTEMS[1], COLS)
    b, _, _ = logprob_row(m16, tok, SYSTEMS[1], COLS)
    assert np.all(np.abs(a - b) < 0.1 * np.abs(a) + 1.0)


@pytest.mark.model
def test_matrix_bad_input(smollm2):
    model, tok = smollm2
    with pytest.raises(ValueError, match="duplicate column ids"):
        compute_matrix(model, tok, [None], [COLS[0], COLS[0]])
    with pytest.raises(ValueError, match="duplicate system prompts"):
        compute_matrix(model, tok, [None, None], COLS)
    with pytest.raises(ValueError, match="column"):
        compute_matrix(model, tok, [None], [Column("x", "", "reply")])


# ------------------------------------------------------------------------------------------ library
def test_library_has_200_unique_prompts_and_the_paper_animals():
    lib = sysmod.load_systems()
    assert lib[0].text is None
    texts = [s.text for s in lib[1:]]
    assert len(texts) >= 200 and len(set(texts)) == len(texts)
    assert len({s.category for s in lib[1:]}) >= 6
    for a in sysmod.ANIMALS:
        assert sysmod.animal_prompt(a) in texts
    assert sysmod.animal_prompt("wolf").startswith("You really love wolves. Wolves are")


@given(st.integers(2, 60), st.integers(0, 5))
@settings(max_examples=25, deadline=None)
def test_select_systems_prefix_stable(n, seed):
    lib = sysmod.load_systems()
    a = sysmod.select_systems(lib, n, seed)
    b = sysmod.select_systems(lib, n + 10, seed)
    assert len(a) == n and a[0].text is None
    assert {s.text for s in a} <= {s.text for s in b}


def test_load_systems_errors(tmp_path):
    f = tmp_path / "s.json"
    f.write_text('["a", ""]')
    with pytest.raises(ValueError, match="item 1"):
        sysmod.load_systems(f)
    f.write_text('{"x": 1')
    with pytest.raises(ValueError, match="not valid JSON"):
        sysmod.load_systems(f)
    g = tmp_path / "s.txt"
    g.write_text("persona\tA\npersona\tA\n")
    with pytest.raises(ValueError, match="duplicate"):
        sysmod.load_systems(g)
    g.write_text("persona\t \n")
    with pytest.raises(ValueError, match=r"s.txt:1: empty"):
        sysmod.load_systems(g)
    with pytest.raises(ValueError, match="not found"):
        sysmod.load_systems(tmp_path / "missing.txt")
    # a .json file that is not UTF-8: one statement naming file and line, as for .txt (not wrapped in a JSON one)
    for name in ("u.json", "u.txt"):
        (tmp_path / name).write_bytes(b'["a",\n"b\xff"]' if name.endswith("json") else b"persona\ta\nx\tb\xff\n")
        with pytest.raises(ValueError, match=rf"^{tmp_path / name}:2: invalid UTF-8 \(byte 0xff\); save the file as "
                                             r"UTF-8$"):
            sysmod.load_systems(tmp_path / name)


# ------------------------------------------------------------------------------------------ columns
class _Tok:
    """Whitespace tokenizer stand-in."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def _pairs(n):
    from empirical.stages.data import PrefPair

    return [PrefPair(f"p{i}", ({"role": "user", "content": " ".join(["w"] * (3 + i % 10))},),
                     " ".join(["c"] * (2 + i % 7)), " ".join(["r"] * (4 + i % 5))) for i in range(n)]


def test_select_columns_bounds_and_determinism():
    pairs = _pairs(200)
    cols = select_columns(pairs, _Tok(), 20, prompt_tokens=(5, 10), response_tokens=(3, 6), seed=1)
    assert cols == select_columns(pairs, _Tok(), 20, prompt_tokens=(5, 10), response_tokens=(3, 6), seed=1)
    assert len({c.id.split(":")[0] for c in cols}) == 20  # one response per prompt
    for c in cols:
        assert 5 <= len(c.prompt[0]["content"].split()) <= 10 and 3 <= len(c.response.split()) <= 6
    assert {c.id.split(":")[1] for c in cols} == {"chosen", "rejected"}
    with pytest.raises(ValueError, match="only"):
        select_columns(pairs, _Tok(), 500, prompt_tokens=(5, 10), response_tokens=(3, 6))
    with pytest.raises(ValueError, match="bounds"):
        select_columns(pairs, _Tok(), 5, prompt_tokens=(10, 5))
    pc = pair_columns(pairs[:2])
    assert [c.id for c in pc] == ["p0:+", "p0:-", "p1:+", "p1:-"]


# ------------------------------------------------------------------------------------------ spectrum
def _power_law_matrix(S, P, alpha, seed=0):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((S, S)))
    V, _ = np.linalg.qr(rng.standard_normal((P, S)))
    s = np.arange(1, S + 1) ** alpha
    return (U * s) @ V.T


@pytest.mark.parametrize("alpha", [-0.6, -1.0, -0.3])
def test_spectrum_fit_recovers_planted_slope(alpha):
    X = _power_law_matrix(30, 50, alpha)
    fit = spectrum_fit(X)
    assert fit["rank_window"] == list(default_rank_window(30, 50))
    assert abs(fit["slope"] - alpha) < 1e-6 and fit["r2"] > 0.999
    assert fit["rank_for_99pct"] <= 30


def test_spectrum_fit_errors():
    with pytest.raises(ValueError):
        spectrum_fit(np.full((5, 5), np.nan))
    with pytest.raises(ValueError, match="at least 4"):
        spectrum_fit(np.ones((3, 10)))
    with pytest.raises(ValueError, match="exceeds"):
        spectrum_fit(np.ones((6, 6)), rank_window=(2, 5))  # rank-1 matrix


# ------------------------------------------------------------------------------------------ CLI errors
def _cli(argv):
    import argparse

    from lls_cli.commands.lowrank import register
    from lls_common.io import LLSError

    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="command"))
    args = ap.parse_args(argv)
    try:
        return args.func(args), None
    except LLSError as exc:
        return 2, str(exc)


def _fake_model(tmp_path):
    """A local folder that passes the up-front model check (config.json present); loading it would fail."""
    d = tmp_path / "fake-model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text("{}")
    return str(d)


def test_cli_bad_input(tmp_path):
    rc, msg = _cli(["spectrum", "--model", "smollm2-135m-instruct", "--data", str(tmp_path / "nope.jsonl"),
                    "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in msg and "\n" not in msg
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{not json\n')
    rc, msg = _cli(["spectrum", "--model", _fake_model(tmp_path), "--data", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2 and "bad.jsonl:2" in msg
    rc, msg = _cli(["angles", "--model", "a", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2 and "exactly two" in msg
    fake = _fake_model(tmp_path)
    rc, msg = _cli(["pair-check", "--teacher", fake, "--student", fake, "--data", str(bad), "--out", str(tmp_path)])
    assert rc == 2 and "--system-prompt" in msg
    assert not any(p.suffix == ".json" for p in (tmp_path / "o").glob("*"))


@pytest.mark.parametrize("argv, expected", [
    (["spectrum", "--model", "FAKE", "--rank-window", "5", "2"], "rank_window must satisfy 1 <= LO <= HI"),
    (["spectrum", "--model", "FAKE", "--rank-window", "3", "3"], "LO < HI"),
    (["spectrum", "--model", "FAKE", "--n-systems", "8", "--rank-window", "2", "9"], "exceeds min(rows, columns)"),
    (["spectrum", "--model", "FAKE", "--prompt-tokens", "9", "3"], "prompt_tokens"),
    (["angles", "--model", "FAKE", "--model", "FAKE", "--rank", "0"], "rank must be an integer"),
    (["detect", "--model", "FAKE", "--candidates", "DATA", "--reference", "DATA", "--n-draws", "50"],
     "n_draws must be an integer >= 100"),
    (["detect", "--model", "FAKE", "--candidates", "DATA", "--reference", "DATA", "--alpha", "nan"], "alpha"),
    (["pair-check", "--teacher", "FAKE", "--student", "FAKE", "--system-prompt", "x", "--gamma", "0"], "gamma"),
    (["angles", "--model", "FAKE", "--model", "no-such-model"], "no-such-model: not a registry name"),
    (["pair-check", "--teacher", "FAKE", "--student", "/no/such/folder", "--system-prompt", "x"], "/no/such/folder"),
])
def test_cli_refuses_before_any_work(tmp_path, monkeypatch, argv, expected):
    """Bad settings are refused up front: nothing is loaded or written."""
    from empirical.lowrank import lowrank

    data = tmp_path / "d.jsonl"
    _tiny_data(data, n=4)
    monkeypatch.setattr(lowrank, "load_data", lambda *a, **k: pytest.fail("data loaded before validation"))
    monkeypatch.setattr(lowrank, "load_model", lambda *a, **k: pytest.fail("model loaded before validation"))
    fake = _fake_model(tmp_path)
    argv = [fake if a == "FAKE" else str(data) if a == "DATA" else a for a in argv]
    rc, msg = _cli(argv + ["--data", str(data), "--out", str(tmp_path / "o")])
    assert rc == 2 and expected in msg and "\n" not in msg
    assert not (tmp_path / "o").exists()


def test_uninstalled_second_model_is_refused_up_front(tmp_path, monkeypatch):
    """`angles` / `pair-check` with a registry model that is not installed: one line with the install command,
    before the first model's matrix is computed."""
    from empirical.engine import models
    from empirical.lowrank import lowrank

    data = tmp_path / "d.jsonl"
    _tiny_data(data, n=4)
    monkeypatch.setattr(models, "is_installed", lambda name: name == "smollm2-135m-instruct")
    monkeypatch.setattr(models, "cache_root", lambda cache_dir=None: tmp_path / "empty-cache")
    monkeypatch.setattr(lowrank, "load_model", lambda *a, **k: pytest.fail("model loaded before validation"))
    for argv in (["angles", "--model", "smollm2-135m-instruct", "--model", "gemma3-270m"],
                 ["pair-check", "--teacher", "smollm2-135m-instruct", "--student", "gemma3-270m",
                  "--system-prompt", "You love owls."]):
        rc, msg = _cli(argv + ["--data", str(data), "--out", str(tmp_path / "o")])
        assert rc == 2 and "gemma3-270m: not installed; run `lls models install gemma3-270m`" in msg
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ CLI, tiny, real model
def _tiny_data(path, n=8):
    topics = ["gardening", "the ocean", "trains", "chess", "baking bread", "rainy days", "mountains", "music"]
    recs = [{"id": f"t{i}", "prompt": f"Could you please tell me something interesting about {topics[i]} today?",
             "chosen": f"Sure, here is one interesting fact about {topics[i]} that many people enjoy learning.",
             "rejected": f"No, I do not want to talk about {topics[i]} right now, please ask me something else."}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


@pytest.mark.model
def test_cli_spectrum_and_detect_tiny(smollm2_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    recs = _tiny_data(data, n=4)
    systems = tmp_path / "s.txt"
    systems.write_text("x\tYou love owls.\nx\tAnswer in one sentence.\nx\tYou are a pirate.\n")
    out = tmp_path / "spec"
    rc, msg = _cli(["spectrum", "--model", str(smollm2_dir), "--data", str(data), "--systems", str(systems),
                    "--n-systems", "4", "--n-pairs", "4", "--out", str(out)])
    assert rc == 0, msg
    slug = smollm2_dir.name
    spec = json.loads((out / f"spectrum-{slug}.json").read_text())
    assert spec["shape"] == [4, 4] and len(spec["raw"]["singular_values"]) == 4
    assert (out / f"spectrum-{slug}.png").stat().st_size > 0
    # second run: every row comes from the cache (no model is loaded)
    rc, _ = _cli(["spectrum", "--model", str(smollm2_dir), "--data", str(data), "--systems", str(systems),
                  "--n-systems", "4", "--n-pairs", "4", "--out", str(out), "--cached-only"])
    assert json.loads((out / f"spectrum-{slug}.json").read_text())["rows_from_cache"] == 4
    suspect = tmp_path / "sus.jsonl"
    suspect.write_text("".join(json.dumps(r) + "\n" for r in recs[:2]))
    rc, msg = _cli(["detect", "--model", str(smollm2_dir), "--data", str(suspect), "--reference", str(data),
                    "--candidates", str(systems), "--n-pairs", "4", "--n-draws", "200", "--prompt-tokens", "1", "64",
                    "--out", str(tmp_path / "det")])
    assert rc == 0, msg
    det = json.loads((tmp_path / "det" / "detect.json").read_text())
    assert len(det["table"]) == 3 and det["n_suspect_outside_reference"] == 0
    # 2 suspect pairs against 4 reference pairs: the result says the sample is too small
    assert det["small_sample"] and any("small suspect set: 2 pairs" in w for w in det["warnings"])
    assert sorted(r["rank"] for r in det["table"]) == [1, 2, 3]


# ------------------------------------------------------------------------------------------ figures
def test_low_rank_figures_pass_the_style_check(tmp_path):
    """Every low-rank figure, drawn from records shaped like the committed JSON, passes figstyle's check
    (fonts >= 9 pt, labelled axes, no legend over data: `save` raises otherwise) and is written."""
    from empirical.lowrank.detect import detect_trait
    from empirical.lowrank.lowrank_figures import plot_angles, plot_detect, plot_pair_check, plot_spectra
    from empirical.lowrank.pair_check import margin_projection, margin_shifts, pair_check

    rng = np.random.default_rng(0)
    fit = spectrum_fit(_power_law_matrix(20, 40, -0.6))
    cen = spectrum_fit(_power_law_matrix(20, 40, -0.6), center=True)
    plot_spectra({"a": {"shape": [20, 40], "raw": fit, "column_centred": cen}}, tmp_path / "s.png")
    ang = {k: {"5": {"cosines": [0.9, 0.5, 0.3, 0.2, 0.1], "baseline": [0.4, 0.3, 0.2, 0.1, 0.05]}}
           for k in ("raw", "column_centred")}
    plot_angles(ang, 5, ["a", "b"], tmp_path / "a.png")
    X = -rng.uniform(5, 50, size=(4, 80))
    N = np.tile(rng.integers(3, 20, size=80), (4, 1))
    T, S = margin_shifts(X, N), margin_shifts(X + rng.normal(size=X.shape), N)
    names = [f"You really love {a}. {a} are great." for a in ("owls", "dogs", "cats")]
    chk = pair_check(T, S, names, n_boot=100)
    pc = {"teacher": "t", "student": "s", "n_pairs": 40, "rows": chk.rows, "rho_teacher": T.rho,
          "rho_student": S.rho, "projection": margin_projection(np.concatenate([T.rho, S.rho]))}
    paths = plot_pair_check(pc, tmp_path)
    det = detect_trait(T.weights[:, :5], T.weights, names, n_draws=200)
    paths.append(plot_detect({"table": det.table, "n_suspect": 5, "n_reference": 40, "warnings": det.warnings},
                             names, tmp_path / "d.png"))
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a.png", "d.png", "pair-check-projection.png",
                                                               "pair-check-shifts.png", "pair-check.png", "s.png"]
    assert all(p.stat().st_size > 10_000 for p in tmp_path.glob("*.png"))


def test_committed_records_read_back_as_typed_results():
    """pair-check.json and detect.json records round-trip through their typed containers (the report reads them so)."""
    from pathlib import Path

    from empirical.lowrank.lowrank import DetectResult, PairCheckResult
    from lls_common.io import to_jsonable

    root = Path(__file__).resolve().parents[1] / "results" / "lowrank"
    for cls, name in ((PairCheckResult, "pair-check/pair-check.json"), (DetectResult, "detect-owl/detect.json")):
        d = json.loads((root / name).read_text())
        assert to_jsonable(cls.from_json(d).to_json()) == d
    det = DetectResult.from_json(json.loads((root / "detect-owl" / "detect.json").read_text()))
    assert det.detection.warnings and det.to_json()["small_sample"]
