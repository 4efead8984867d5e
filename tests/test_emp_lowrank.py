"""Log-prob matrices X_M (prefix reuse == naive, resume), the system-prompt library, spectra, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from empirical import systems as sysmod
from empirical.logprob_matrix import (Column, cached_rows, compute_matrix, default_rank_window, logprob_row,
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
    from empirical import models

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


# ------------------------------------------------------------------------------------------ columns
class _Tok:
    """Whitespace tokenizer stand-in."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}


def _pairs(n):
    from empirical.data import PrefPair

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


def test_cli_bad_input(tmp_path):
    rc, msg = _cli(["spectrum", "--model", "smollm2-135m-instruct", "--data", str(tmp_path / "nope.jsonl"),
                    "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in msg and "\n" not in msg
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{not json\n')
    rc, msg = _cli(["spectrum", "--model", "x", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2 and "bad.jsonl:2" in msg
    rc, msg = _cli(["angles", "--model", "a", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2 and "exactly two" in msg
    rc, msg = _cli(["pair-check", "--teacher", "a", "--student", "b", "--data", str(bad), "--out", str(tmp_path)])
    assert rc == 2 and "--system-prompt" in msg
    assert not any(p.suffix == ".json" for p in (tmp_path / "o").glob("*"))


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
    assert sorted(r["rank"] for r in det["table"]) == [1, 2, 3]
