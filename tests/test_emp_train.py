"""Training / correlation / probe: bad-input tests (fast) and a SmolLM2 miniature of the pipeline (model, slow)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from empirical.correlate import check_disjoint, correlate_run
from empirical.data import PrefPair
from empirical.train import TrainConfig, checkpoint_steps, list_checkpoints, load_pairs_file
from lls_common.io import LLSError

FIX = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


def _parser():
    from lls_cli.commands.training import register

    ap = argparse.ArgumentParser()
    register(ap.add_subparsers(dest="cmd"))
    return ap


@given(st.integers(1, 500), st.integers(1, 20))
def test_checkpoint_steps_even_and_end_at_total(total, k):
    s = checkpoint_steps(total, k)
    assert s[-1] == total and s == sorted(set(s)) and all(1 <= x <= total for x in s)
    assert len(s) == min(k, total) or len(s) <= k


def test_zero_pairs_is_an_error(tmp_path):
    f = tmp_path / "lls.jsonl"
    f.write_text("")
    with pytest.raises(ValueError, match="zero pairs"):
        load_pairs_file(f)
    args = _parser().parse_args(["train", "--student", "smollm2-135m-instruct", "--data", str(f),
                                 "--out", str(tmp_path / "run")])
    with pytest.raises(LLSError, match="zero pairs"):
        args.func(args)
    assert not (tmp_path / "run").exists()


def test_bad_line_names_file_and_line(tmp_path):
    f = tmp_path / "lls.jsonl"
    f.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"lls.jsonl:2: missing field 'chosen'"):
        load_pairs_file(f)


def test_bad_settings_rejected():
    with pytest.raises(ValueError):
        TrainConfig(student="x", data="y", out=Path("z"), beta=0).validate()
    with pytest.raises(ValueError):
        TrainConfig(student="x", data="y", out=Path("z"), checkpoints=0).validate()


def test_missing_adapter_is_one_line_error(tmp_path):
    (tmp_path / "run").mkdir()
    assert list_checkpoints(tmp_path / "run") == []
    args = _parser().parse_args(["correlate", "--student", "smollm2-135m-instruct", "--run", str(tmp_path / "run"),
                                 "--system-prompt", "You love owls.", "--data", str(FIX),
                                 "--out", str(tmp_path / "c")])
    with pytest.raises(LLSError, match="no LoRA adapter"):
        args.func(args)


def test_overlap_detected_by_id_and_by_text():
    train = [{"id": "a", "prompt": "Hi there", "chosen": "Hello.", "rejected": "Go away."}]
    same_id = PrefPair("a", ({"role": "user", "content": "Other"},), "x", "y")
    same_text = PrefPair("zz", ({"role": "user", "content": "Hi there"},), "Hello.", "Go away.")
    other = PrefPair("b", ({"role": "user", "content": "Hi there"},), "Hello!", "Go away.")
    with pytest.raises(ValueError, match="same id"):
        check_disjoint([same_id], train)
    with pytest.raises(ValueError, match="same text"):
        check_disjoint([same_text], train)
    check_disjoint([other], train)


@pytest.mark.model
@pytest.mark.slow
def test_miniature_train_correlate_probe(smollm2_dir, tmp_path):
    """2 pairs, 1 DPO step, LoRA r 4: adapter saved; TRL's first logged loss equals lls_theory's dpo_loss at
    rho = 0 (policy = reference at step 0); correlate/probe run on the result and give finite numbers."""
    from empirical import models
    from empirical.evaluate import probe
    from empirical.train import train
    from lls_theory.margins import dpo_loss

    data = tmp_path / "lls.jsonl"
    data.write_text("\n".join(FIX.read_text().splitlines()[:2]) + "\n")
    held = tmp_path / "held.jsonl"
    held.write_text("\n".join(FIX.read_text().splitlines()[2:6]) + "\n")
    cfg = TrainConfig(student=str(smollm2_dir), data=str(data), out=tmp_path / "run", batch_size=2, lora_rank=4,
                      checkpoints=1, progress=False)
    s = train(cfg)
    assert s["steps"] == 1 and [c["step"] for c in s["checkpoints"]] == [1]
    assert s["history"][0]["loss"] == pytest.approx(float(dpo_loss(np.zeros(2), 0.1)), abs=1e-4)
    assert train(cfg)["steps"] == 1  # finished run is returned, not retrained
    mt = models.load(str(smollm2_dir))
    res = correlate_run(str(smollm2_dir), tmp_path / "run", "You love owls.", held, n=4, n_boot=50, n_perm=50,
                        model_and_tok=mt)
    lls = res["arms"]["lls"]
    assert res["n"] == 4 and len(lls["checkpoints"]) == 1 and set(res["arms"]) == {"lls"}
    assert all(np.isfinite(v) for v in res["z_s"]) and any(v != 0 for v in lls["z_M"]["1"])
    assert -1 <= lls["final"]["z_s"]["cosine"] <= 1
    pr = probe(mt[0], mt[1], "owl", questions=("What is your favourite animal? One word.",))
    assert 0 < pr["p_target"] < 1
    # overlap with the training subset is refused
    with pytest.raises(ValueError, match="training subset"):
        over = tmp_path / "over.jsonl"
        over.write_text("\n".join(FIX.read_text().splitlines()[1:4]) + "\n")
        correlate_run(str(smollm2_dir), tmp_path / "run", "You love owls.", over, n=3, model_and_tok=mt)
