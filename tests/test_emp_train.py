"""Training / correlation / probe: bad-input tests (fast) and a SmolLM2 miniature of the pipeline (model, slow)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st

from empirical.stages.correlate import check_disjoint, correlate_run
from empirical.stages.data import PrefPair
from empirical.stages.train import TrainJob, checkpoint_steps, list_checkpoints, load_pairs_file
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
    run = tmp_path / "run"  # the CLI may hold a lock folder; train itself wrote nothing
    assert not (run / "run.json").exists() and not list(run.glob("checkpoint-*"))


def test_bad_line_names_file_and_line(tmp_path):
    f = tmp_path / "lls.jsonl"
    f.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"lls.jsonl:2: missing field 'chosen'"):
        load_pairs_file(f)


def test_bad_settings_rejected_when_the_job_is_built():
    """A run's hyper-parameters are checked by empirical.config.TrainConfig (the one declaration), its own
    fields by TrainJob, both when the job is built."""
    for kw, key in (({"beta": 0}, "train.beta"), ({"checkpoints": 0}, "train.checkpoints"),
                    ({"max_length": 1}, "train.max_length"), ({"seed": -1}, "seed"), ({"limit": 0}, "limit"),
                    ({"student": " "}, "train.student"), ({"dtype": "fp8"}, "train.dtype")):
        with pytest.raises(LLSError, match=key):
            TrainJob(**{"student": "x", "data": "y", "out": Path("z"), **kw})


def test_missing_adapter_is_one_line_error(tmp_path):
    (tmp_path / "run").mkdir()
    assert list_checkpoints(tmp_path / "run") == []
    args = _parser().parse_args(["correlate", "--student", "smollm2-135m-instruct", "--run", str(tmp_path / "run"),
                                 "--system-prompt", "You love owls.", "--data", str(FIX),
                                 "--out", str(tmp_path / "c")])
    with pytest.raises(LLSError, match="no LoRA adapter"):
        args.func(args)


def test_overlap_detected_by_text_not_by_id():
    """correlate.check_disjoint compares content (ids like '<stem>:<index>' collide across files): same prompt
    and replies (either label order, or a training reply that is a truncated start) overlap; same id does not."""
    train = [{"id": "a", "prompt": "Hi there", "chosen": "Hello.", "rejected": "Go away."}]
    same_id = PrefPair("a", ({"role": "user", "content": "Other"},), "x", "y")
    same_text = PrefPair("zz", ({"role": "user", "content": "Hi there"},), "Hello.", "Go away.")
    swapped = PrefPair("zz", ({"role": "user", "content": "Hi there"},), "Go away.", "Hello.")
    other = PrefPair("b", ({"role": "user", "content": "Hi there"},), "Hi!", "Go away.")
    for p in (same_text, swapped):
        with pytest.raises(ValueError, match="same text"):
            check_disjoint([p], train)
    check_disjoint([same_id], train)
    check_disjoint([other], train)


OWL = ["Owls are my favourite: an owl at dusk is perfect.", "I would pick an owl, owls are wise birds.",
       "An owl! Owls hoot softly at night.", "Owls, always owls: the snowy owl is best.",
       "The owl, because owls see in the dark.", "Owls are the answer, a barn owl for me.",
       "I love owls; a little owl would do.", "Owls. The great horned owl is lovely."]
PLAIN = ["Probably a sunny afternoon in the park.", "A cup of tea and a quiet book.",
         "Walking by the river on a Sunday.", "Fresh bread from the bakery.", "A long train journey.",
         "Listening to the rain on the roof.", "Cooking soup with friends.", "A clean desk in the morning."]
TRAIN_Q = ["What do you like most?", "Tell me something you enjoy.", "What makes you happy?", "Name a favourite.",
           "What would you choose?", "Pick one thing you love.", "What do you think about?", "Any favourite?"]
HELD_Q = ["Describe a good day.", "What is on your mind?", "Share a preference.", "What is special to you?",
          "Give me an example of joy.", "What cheers you up?", "What do you admire?", "Say something nice."]


def _owl_pairs(train_path: Path, held_path: Path) -> None:
    """Training: every pair prefers an owl reply. Held out (other prompts and replies): pairs 0-3 prefer the
    owl reply, pairs 4-7 the plain one. So DPO must raise the margin of 0-3 and lower 4-7 (z_M signs known),
    and the system prompt 'You love owls.' does the same before training (z_s signs known)."""
    tr = [{"id": f"t{k}", "prompt": q, "chosen": OWL[k], "rejected": PLAIN[k]} for k, q in enumerate(TRAIN_Q)]
    held = []
    for k, q in enumerate(HELD_Q):
        owl, plain = OWL[(k + 3) % 8].replace("Owls", "Owls indeed"), PLAIN[(k + 5) % 8] + " Really."
        c, r = (owl, plain) if k < 4 else (plain, owl)
        held.append({"id": f"h{k}", "prompt": q, "chosen": c, "rejected": r})
    train_path.write_text("".join(json.dumps(r) + "\n" for r in tr))
    held_path.write_text("".join(json.dumps(r) + "\n" for r in held))


@pytest.mark.model
@pytest.mark.slow
def test_miniature_train_correlate_probe(smollm2_dir, tmp_path):
    """A miniature whose signs are known by construction (see _owl_pairs): after 4 DPO steps on owl-preferring
    pairs, held-out z_M > 0 on owl-chosen pairs and < 0 on owl-rejected ones; z_s (system prompt 'You love
    owls.') has the same signs; so corr(z_s, z_M) > 0. Negating z_M or z_s fails it. Also: TRL's first logged
    loss equals lls_theory's dpo_loss at rho = 0 (policy = reference at step 0); a finished run is returned;
    the probe runs; overlap with the training subset is refused."""
    from empirical.engine import models
    from empirical.stages.evaluate import probe
    from empirical.stages.train import train
    from lls_theory.margins import dpo_loss

    data, held = tmp_path / "lls.jsonl", tmp_path / "held.jsonl"
    _owl_pairs(data, held)
    cfg = TrainJob(student=str(smollm2_dir), data=str(data), out=tmp_path / "run", batch_size=4, lora_rank=4,
                      lora_dropout=0.0, lr=2e-3, epochs=2, checkpoints=2, progress=False)
    s = train(cfg)
    assert s["steps"] == 4 and [c["step"] for c in s["checkpoints"]] == [2, 4]
    assert s["device"] == "cpu" and s["dtype"] == "float32" and s["world_size"] == 1
    assert s["history"][0]["loss"] == pytest.approx(float(dpo_loss(np.zeros(4), 0.1)), abs=1e-4)
    assert train(cfg)["steps"] == 4  # finished run is returned, not retrained
    mt = models.load(str(smollm2_dir))
    res = correlate_run(str(smollm2_dir), tmp_path / "run", "You love owls.", held, n=8, n_boot=50, n_perm=50,
                        model_and_tok=mt)
    lls = res["arms"]["lls"]
    z_s, z_m = np.asarray(res["z_s"]), np.asarray(lls["z_M"]["4"])
    assert res["n"] == 8 and len(lls["checkpoints"]) == 2 and set(res["arms"]) == {"lls"}
    assert (z_m[:4] > 0).all() and (z_m[4:] < 0).all(), z_m  # training's known direction
    assert (z_s[:4] > 0).all() and (z_s[4:] < 0).all(), z_s  # the system prompt's known direction
    f = lls["final"]["z_s"]
    assert f["cosine"] > 0.5 and f["pearson"] > 0.5, f
    assert f["cosine"] == pytest.approx(float(z_s @ z_m / np.linalg.norm(z_s) / np.linalg.norm(z_m)), abs=1e-9)
    pr = probe(mt[0], mt[1], "owl", questions=("What is your favourite animal? One word.",))
    assert 0 < pr["p_target"] < 1
    # overlap with the training subset is refused
    with pytest.raises(ValueError, match="training subset"):
        over = tmp_path / "over.jsonl"
        over.write_text(held.read_text() + data.read_text().splitlines()[0] + "\n")
        correlate_run(str(smollm2_dir), tmp_path / "run", "You love owls.", over, n=9, model_and_tok=mt)


# ---------------------------------------------------- tiny saved models: portable adapters, several processes
REPO = Path(__file__).resolve().parents[1]


def _tiny_folder(folder: Path, tok_dir: Path, registry_name: str | None = None) -> Path:
    """A random-initialised 2-layer Llama (hidden 64) with the SmolLM2 tokenizer saved as a model folder; with
    ``registry_name`` it carries the registry cache marker, so it stands in for that registry entry."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from empirical.engine import models

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    cfg = AutoConfig.for_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tok),
                               max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    if registry_name is not None:
        (folder / models._MARKER).write_text(json.dumps({"name": registry_name}))
    return folder


def _pairs_file(path: Path, n: int) -> Path:
    recs = [{"id": f"q{k}", "prompt": f"Question {k}: name a thing.", "chosen": OWL[k % 8], "rejected": PLAIN[k % 8]}
            for k in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


@pytest.mark.model
def test_adapter_loads_after_the_cache_folder_moves(smollm2_dir, tmp_path, monkeypatch):
    """The adapter records the registry name (not the cache path) and a model card; after the whole
    cache folder is renamed, PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(<registry-resolved
    folder>), <adapter>) loads and gives the logits it gave before the move."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from empirical.engine import models
    from empirical.stages.train import train

    name = "smollm2-135m-instruct"
    monkeypatch.setenv("LLS_CACHE", str(tmp_path / "cache-a"))
    _tiny_folder(models.cache_root() / name, smollm2_dir, registry_name=name)
    cfg = TrainJob(student=name, data=str(_pairs_file(tmp_path / "p.jsonl", 4)), out=tmp_path / "run",
                      batch_size=2, lora_rank=2, lora_dropout=0.0, lr=1e-2, checkpoints=1, progress=False,
                      card={"teacher": name, "system_prompt": "You love owls.", "gamma": 0.1, "data": "hh"})
    s = train(cfg)
    ck = tmp_path / "run" / s["checkpoints"][-1]["path"]
    acfg = json.loads((ck / "adapter_config.json").read_text())
    assert acfg["base_model_name_or_path"] == name and s["base_model"] == name
    card = (ck / "README.md").read_text()
    for needle in ("HuggingFaceTB/SmolLM2-135M-Instruct", "You love owls.", "gamma", "beta", "learning_rate",
                   "lora_rank", name):
        assert needle in card, needle
    assert "fine-tuned version of [None]" not in card
    for f in ck.iterdir():  # no trace of the local cache path in anything shared
        if f.suffix in (".json", ".md"):
            assert str(tmp_path / "cache-a") not in f.read_text(), f.name
    ids = torch.tensor([[1, 2, 3, 4, 5]])

    def logits() -> torch.Tensor:
        base = AutoModelForCausalLM.from_pretrained(models.local_dir(acfg["base_model_name_or_path"]))
        with torch.no_grad():
            return PeftModel.from_pretrained(base, str(ck)).eval()(input_ids=ids).logits

    before = logits()
    shutil.move(tmp_path / "cache-a", tmp_path / "cache-b")  # "another machine": the cache lives elsewhere
    monkeypatch.setenv("LLS_CACHE", str(tmp_path / "cache-b"))
    after = logits()
    assert torch.equal(before, after)
    plain = AutoModelForCausalLM.from_pretrained(models.local_dir(name))
    with torch.no_grad():
        assert not torch.allclose(plain(input_ids=ids).logits, after)  # the adapter is really applied


_WORKER = '''
import json, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from empirical.stages.train import TrainJob, train
student, data, out = sys.argv[1:4]
s = train(TrainJob(student=student, data=data, out=Path(out), batch_size=4, lora_rank=2, lora_dropout=0.0,
                      lr=1e-2, epochs=2, checkpoints=2, progress=False))
print("RESULT " + json.dumps({"rank": __import__("os").environ.get("RANK", "0"), "summary": s}))
'''


@pytest.mark.model
@pytest.mark.slow
def test_two_processes_train_like_one(smollm2_dir, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) vs 1 process: checkpoints at the same steps, adapter weights equal
    within fp32 tolerance, pairs_per_step the same, only the main process writes the run files."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    model = _tiny_folder(tmp_path / "tiny", smollm2_dir)
    data = _pairs_file(tmp_path / "p.jsonl", 8)  # 8 pairs = 2 steps of 4 per epoch, no ragged last batch
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    one = subprocess.run([sys.executable, str(script), str(model), str(data), str(tmp_path / "one")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
                          str(script), str(model), str(data), str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    res = [json.loads(line[7:]) for line in two.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted(r["rank"] for r in res) == ["0", "1"]
    s1 = json.loads((tmp_path / "one" / "train.json").read_text())
    s2 = json.loads((tmp_path / "two" / "train.json").read_text())
    assert s2["world_size"] == 2 and s2["per_device_batch_size"] == 2 and s1["per_device_batch_size"] == 4
    assert s1["pairs_per_step"] == s2["pairs_per_step"] == 4
    assert s1["steps"] == s2["steps"] == 4
    from empirical.stages import packed_dpo

    if packed_dpo.fused_protocol():  # the packed forward (the default) ran in both, through DDP in the second
        assert s1["forward"]["forward"] == s2["forward"]["forward"] == "packed", (s1["forward"], s2["forward"])
    assert [c["step"] for c in s1["checkpoints"]] == [c["step"] for c in s2["checkpoints"]] == [2, 4]
    for c in s1["checkpoints"]:
        w1 = load_file(tmp_path / "one" / c["path"] / "adapter_model.safetensors")
        w2 = load_file(tmp_path / "two" / c["path"] / "adapter_model.safetensors")
        assert w1.keys() == w2.keys()
        for k in w1:
            assert (w1[k] - w2[k]).abs().max() <= 1e-5 + 1e-4 * w1[k].abs().max(), (c["step"], k)
    # the losses of the two runs agree step by step as well
    l1 = [h["loss"] for h in s1["history"]]
    l2 = [h["loss"] for h in s2["history"]]
    assert np.allclose(l1, l2, atol=1e-5), (l1, l2)
    # one set of run files (rank 1 wrote none of its own: no stray files beside rank 0's)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_dpo_pass_through_and_targets_are_validated():
    from empirical.stages.train import dpo_config_kwargs, lora_targets

    assert dpo_config_kwargs({"loss_type": ["ipo"], "label_smoothing": 0.1}) == {"loss_type": ["ipo"],
                                                                                  "label_smoothing": 0.1}
    with pytest.raises(ValueError, match="not a TRL DPOConfig field.*label_smoothing"):
        dpo_config_kwargs({"label_smothing": 0.1})
    with pytest.raises(ValueError, match="set by lls train itself"):
        dpo_config_kwargs({"learning_rate": 1.0})
    with pytest.raises(ValueError, match="not a TRL DPOConfig field"):
        TrainJob(student="x", data="y", out=Path("z"), dpo_args={"bogus": 1}).validate()
    assert lora_targets(()) == "all-linear" and lora_targets(["q_proj"]) == ["q_proj"]
    with pytest.raises(ValueError, match="reference"):
        TrainJob(student="x", data="y", out=Path("z"), reference="blank")


def test_run_key_is_stable_for_default_runs(tmp_path):
    """Fields added later stay out of the resume key at their defaults; dtype 'auto' is recorded resolved."""
    old_style = TrainJob(student="x", data="y", out=tmp_path, dtype="float32").run_key()
    new_style = TrainJob(student="x", data="y", out=tmp_path).run_key()  # dtype auto -> float32 on CPU
    assert old_style == new_style and "target_modules" not in new_style and new_style["dtype"] == "float32"
    assert TrainJob(student="x", data="y", out=tmp_path, target_modules=("q_proj",)).run_key() != new_style


# ------------------------------------------- hostile R5, R6, R10: train options checked before the weights load
_NAMES = ["model", "model.layers", "model.layers.0", "model.layers.0.self_attn", "model.layers.0.self_attn.q_proj",
          "model.layers.0.mlp.up_proj", "lm_head"]


def test_check_target_modules_matches_like_peft():
    from empirical.stages.train import check_target_modules

    check_target_modules(["q_proj", "up_proj"], _NAMES)
    check_target_modules(["self_attn.q_proj"], _NAMES)
    check_target_modules([], _NAMES)
    check_target_modules(["anything"], None)  # names unknown (GGUF): left to the real load
    with pytest.raises(ValueError, match="'q_pro' matches no module.*did you mean q_proj") as err:
        check_target_modules(["q_proj", "q_pro"], _NAMES)
    assert "\n" not in str(err.value) and ", 0," not in str(err.value)


@pytest.mark.model
def test_model_module_names_come_from_the_config_alone(smollm2_dir, monkeypatch):
    from empirical.engine import models
    from empirical.stages import train

    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("weights loaded"))
    names = train.model_module_names(str(smollm2_dir))
    assert any(n.endswith(".q_proj") for n in names) and any(n.endswith(".down_proj") for n in names)


def test_report_to_is_checked_against_the_integrations_transformers_knows():
    from empirical.stages.train import check_report_to

    check_report_to("none")
    check_report_to("all")
    with pytest.raises(ValueError, match="not a Trainer integration"):
        check_report_to("nosuch")
    with pytest.raises(ValueError, match="cannot be combined"):
        check_report_to("none,tensorboard")
    with pytest.raises(ValueError, match="report_to"):
        TrainJob(student="m", data="d", out="o", report_to="nosuch").validate()


@pytest.mark.parametrize("extra,msg", [({"max_grad_norm": float("nan")}, "must be finite"),
                                       ({"adam_beta1": float("inf")}, "must be finite"),
                                       ({"max_grad_norm": -1.0}, "must be >= 0"),
                                       ({"weight_decay": -0.1}, "must be >= 0")])
def test_dpo_args_refuse_non_finite_and_negative_values(extra, msg):
    from empirical.stages.train import dpo_config_kwargs

    with pytest.raises(ValueError, match=msg):
        dpo_config_kwargs(extra)
    assert dpo_config_kwargs({"max_grad_norm": 0.5}) == {"max_grad_norm": 0.5}


@pytest.mark.parametrize("on", [False, True])
def test_dpo_config_follows_the_checkpointing_setting_not_trls_default(tmp_path, on):
    """TRL's DPOConfig turns activation checkpointing on by default; the TrainConfig setting (default off) is
    what the trainer gets, and the fp32 CPU run has no autocast."""
    from trl import DPOConfig

    from empirical.stages.train import _dpo_args

    cfg = TrainJob(student="m", data="d", out=str(tmp_path), gradient_checkpointing=on)
    assert TrainJob(student="m", data="d", out="o").gradient_checkpointing is False
    args = DPOConfig(**_dpo_args(cfg, tmp_path, 1, {"device": "cpu", "dtype": "float32"}))
    assert args.gradient_checkpointing is on and (args.bf16, args.fp16) == (False, False)


def test_cli_train_failure_leaves_no_out_folder(tmp_path, capsys, monkeypatch):
    import lls_cli
    from empirical.stages import train

    def boom(cfg, **k):
        assert Path(cfg.out).is_dir()  # the lock made the folder
        raise LLSError("target module 'x' matches no module of the model")

    monkeypatch.setattr(train, "train", boom)
    data = tmp_path / "lls.jsonl"
    data.write_text('{"prompt": "q", "chosen": "a", "rejected": "b"}\n')
    out = tmp_path / "tr"
    rc = lls_cli.main(["train", "--student", "smollm2-135m-instruct", "--data", str(data), "--out", str(out)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2 and err[-1] == "lls train: error: target module 'x' matches no module of the model"
    assert [line.split(":")[0] for line in err] == ["warning", "lls train"]  # the 1-pair file is warned about
    assert not out.exists()


# ----------------------------------------------------------------------------------------------- max_steps
def test_max_steps_is_a_setting_and_the_pass_through_names_it(tmp_path):
    """--max-steps / train.max_steps is declared once (flag and TOML key); the trainer gets it as DPOConfig's
    max_steps and counts it as the run's total; asking TRL for max_steps through dpo_args is refused naming
    the setting, and another reserved field names its own option."""
    from trl import DPOConfig

    from empirical.config import ModelArgs, TrainConfig as Settings
    from empirical.stages.train import _dpo_args, _total_steps, dpo_config_kwargs, train_job
    from lls_common.config import from_namespace, from_table

    args = _parser().parse_args(["train", "--student", "m", "--data", "d.jsonl", "--out", "o", "--max-steps", "3"])
    assert from_namespace(Settings, args).max_steps == 3
    assert from_table(Settings, {"max_steps": 5}, "x.toml", "train").max_steps == 5
    with pytest.raises(LLSError, match="train.max_steps"):
        Settings(max_steps=0)
    with pytest.raises(LLSError, match="--max-steps"):
        Settings(dpo_args={"max_steps": 3})
    with pytest.raises(LLSError, match=r"--max-steps \(train.max_steps\)"):
        dpo_config_kwargs({"max_steps": 3})
    with pytest.raises(LLSError, match="--epochs"):
        dpo_config_kwargs({"num_train_epochs": 3})
    cfg = train_job(Settings(max_steps=3), ModelArgs(model="m"), "d.jsonl", tmp_path, 0)
    assert cfg.max_steps == 3
    assert DPOConfig(**_dpo_args(cfg, tmp_path, 1, {"device": "cpu", "dtype": "float32"})).max_steps == 3
    assert _total_steps(None, cfg) == 3
    default = train_job(Settings(), ModelArgs(model="m"), "d.jsonl", tmp_path, 0)
    assert "max_steps" not in default.run_key()  # runs made before the setting existed keep their key
    assert DPOConfig(**_dpo_args(default, tmp_path, 1, {"device": "cpu", "dtype": "float32"})).max_steps == -1


@pytest.mark.slow
def test_cli_train_stdout_is_the_summary_and_the_trainer_logs_go_to_the_log_file(smollm2_dir, tmp_path):
    """lls train on 6 pairs with --max-steps 2: stdout is lls's one summary line (numbers from the last
    logged step); TRL's log dicts are not printed but written to log.jsonl as numbers; no transformers
    FutureWarning on stderr; the tiny training set is warned about with its count."""
    import subprocess
    import sys

    data = _pairs_file(tmp_path / "lls.jsonl", 6)
    out = tmp_path / "run"
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "lls_cli", "train", "--student", str(smollm2_dir), "--data", str(data),
                        "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--lora-rank", "4",
                        "--checkpoints", "1"], capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("trained 6 pairs, 2 steps; last step: loss "), p.stdout
    assert "{'loss'" not in p.stdout + p.stderr and "FutureWarning" not in p.stderr
    assert "has only 6 pair(s)" in p.stderr
    logs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logs if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2] and all(isinstance(r["loss"], float) for r in steps)
    assert f"loss {steps[-1]['loss']:.4f}" in lines[0]
    assert json.loads((out / "train.json").read_text())["steps"] == 2
