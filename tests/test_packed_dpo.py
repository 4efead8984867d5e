"""The packed DPO forward (``empirical.stages.packed_dpo``) gives TRL's numbers: loss, reward margin, every logged
metric, the precomputed reference log-probs and every LoRA gradient equal TRL's own padded forward to fp32
tolerance, on tiny random-initialised models of several architectures (built offline as in
``tests/test_archs.py``) and on SmolLM2 with HH pairs (slow); ``lls train`` uses it by default, records it,
and falls back to TRL's forward -- saying so once, recording why -- where it cannot be used.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_archs import ARCHS, PAIRS, _tiny

pytestmark = pytest.mark.model  # the SmolLM2 tokenizer comes from the installed registry model

OFF_LINE = "packed DPO forward not used"


@pytest.fixture(scope="module")
def base_tok(smollm2_dir):
    from empirical.engine import models

    return models.load_tokenizer(str(smollm2_dir))


def _need_fused():
    from empirical.stages import packed_dpo

    if not packed_dpo.fused_protocol():
        import trl

        pytest.skip(f"TRL {trl.__version__} has no fused-head DPO forward: lls train uses TRL's forward")


def _records(tok, pairs=PAIRS):
    from empirical.stages.train import to_trl_records

    return to_trl_records(tok, [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                                for p in pairs])


def _step(model, tok, recs, packed: bool, tmp_path, batch: int):
    """One compute_loss + backward of a fresh trainer (LoRA B random, so the adapter changes the policy):
    (loss, metrics, LoRA grads, reference log-probs of the first batch, packed state)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig

    from empirical.stages import packed_dpo
    from empirical.stages.train import dpo_checkpointing_field

    args = DPOConfig(output_dir=str(tmp_path / f"o{int(packed)}"), report_to="none", use_cpu=True, max_length=None,
                     per_device_train_batch_size=batch, max_steps=1, bf16=False, precompute_ref_log_probs=True,
                     logging_steps=1, **{dpo_checkpointing_field(): False})
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM",
                      init_lora_weights=False)
    tr, state = packed_dpo.make_trainer(packed, model=copy.deepcopy(model).train(), args=args,
                                        train_dataset=Dataset.from_list(recs), processing_class=tok, peft_config=lora)
    feats = [tr.train_dataset[i] for i in range(batch)]
    inputs = tr.data_collator(feats)
    loss = tr.compute_loss(tr.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    weights = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    metrics = {k: v[-1] for k, v in tr._metrics["train"].items()}
    ref = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]])
    return float(loss.detach()), metrics, grads, weights, ref, state


def _assert_same_step(a, b, tag):
    import torch

    la, ma, ga, wa, ra, _ = a
    lb, mb, gb, wb, rb, _ = b
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), tag  # same start
    assert abs(la - lb) <= 1e-5, (tag, la, lb)
    assert ma.keys() == mb.keys(), tag
    for k in ma:
        assert abs(ma[k] - mb[k]) <= 1e-4 * max(1.0, abs(ma[k])), (tag, k, ma[k], mb[k])
    assert float((ra - rb).abs().max()) <= 1e-4, (tag, ra, rb)
    scale = max(float(g.abs().max()) for g in ga.values())
    assert scale > 0, tag
    for k in ga:
        assert float((ga[k] - gb[k]).abs().max()) <= 1e-5 * scale + 1e-8, (tag, k)


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_step_equals_trls_forward(arch, base_tok, tmp_path):
    """Loss, every logged metric, reference log-probs and every LoRA gradient of one step: packed = TRL."""
    _need_fused()
    model, tok = _tiny(arch, base_tok)
    recs = _records(tok)
    trl_step = _step(model, tok, recs, False, tmp_path, batch=4)
    packed_step = _step(model, tok, recs, True, tmp_path, batch=4)
    state = packed_step[-1]
    rec = state.record()
    assert rec["forward"] == "packed" and rec["reason"] is None and rec["packed_calls"] >= 2, rec  # ref + policy
    assert rec["first_call_check_nats"]["max_abs_diff"] <= 1e-4
    assert trl_step[-1].record()["forward"] == "trl"
    _assert_same_step(trl_step, packed_step, arch)


def test_packed_step_equals_trls_forward_with_a_binding_sliding_window(base_tok, tmp_path, monkeypatch):
    """Gemma3 with an 8-token sliding window on one of its two layers (rows are far longer): the packed rows
    take the per-layer-type mask (window in positions, as the model's own mask); numbers equal TRL's."""
    _need_fused()
    import test_archs

    config = test_archs._config

    def windowed(arch, tok):
        c = config(arch, tok)
        c.sliding_window, c.layer_types = 8, ["sliding_attention", "full_attention"]
        return c

    monkeypatch.setattr(test_archs, "_config", windowed)
    model, tok = _tiny("gemma3_text", base_tok)
    assert model.config.sliding_window == 8
    recs = _records(tok)
    trl_step = _step(model, tok, recs, False, tmp_path, batch=4)
    packed_step = _step(model, tok, recs, True, tmp_path, batch=4)
    assert packed_step[-1].record()["forward"] == "packed"
    _assert_same_step(trl_step, packed_step, "gemma3 sliding 8")


def test_packed_step_equals_trls_forward_with_eager_attention(base_tok, tmp_path):
    """The eager attention implementation takes the rows' mask as an additive float mask: numbers equal TRL's."""
    _need_fused()
    model, tok = _tiny("llama", base_tok)
    model.set_attn_implementation("eager")
    recs = _records(tok)
    trl_step = _step(model, tok, recs, False, tmp_path, batch=4)
    packed_step = _step(model, tok, recs, True, tmp_path, batch=4)
    assert packed_step[-1].record()["forward"] == "packed"
    _assert_same_step(trl_step, packed_step, "llama eager")


def test_packed_rows_hold_each_prompt_once(base_tok):
    """The packed rows carry each prompt once and no padding row: real tokens = sum(|p| + |c| + |r| - 2) (+ one
    spare column per pair), fewer than TRL's 2B x T padded batch."""
    _need_fused()
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from empirical.engine import render
    from empirical.stages import packed_dpo

    model, tok = _tiny("llama", base_tok)

    encs = [render.encode_group(tok, render.as_messages(p["prompt"]), [p["chosen"], p["rejected"]], None)
            for p in PAIRS]
    feats = [{"prompt_ids": list(e.context), "chosen_ids": list(e.completions[0]),
              "rejected_ids": list(e.completions[1])} for e in encs]
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)(feats)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    pairs, plens = packed_dpo.unpack_pairs(batch["input_ids"], batch["attention_mask"], labels)
    assert [p.context for p in pairs] == [tuple(e.context) for e in encs]
    assert [p.completions for p in pairs] == [tuple(map(tuple, e.completions)) for e in encs]
    pk = packed_dpo.step_rows(model, pairs, 0, 512)
    need = sum(len(p.context) + len(p.completions[0]) + len(p.completions[1]) - 2 for p in pairs)
    assert sum(pk.lens) == need
    assert pk.ids.numel() == need + len(pairs)  # one row (need < 512): no padding but the spare columns
    assert need < int(batch["attention_mask"].sum()) < batch["input_ids"].numel()
    assert sorted(pk.seq) == sorted(s for s in range(8) for _ in range(len(encs[s % 4].completions[s // 4])))


def _collated(pairs):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    feats = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in pairs]
    b = DataCollatorForPreference(pad_token_id=0)(feats)
    return b, b["input_ids"].masked_fill(b["completion_mask"] == 0, -100)


_ids = st.lists(st.integers(1, 50), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_ids, _ids, _ids), min_size=1, max_size=5))
def test_unpack_pairs_inverts_trls_collator(pairs):
    """For any prompts/replies, the pairs read back from TRL's padded batch are the collated ones, and each
    reply's first token sits at column |prompt| of its row (shifted: |prompt| - 1), as the scatter assumes."""
    pytest.importorskip("trl")
    from empirical.stages import packed_dpo

    b, labels = _collated(pairs)
    got = packed_dpo.unpack_pairs(b["input_ids"], b["attention_mask"], labels)
    assert not isinstance(got, str), got
    out, plens = got
    assert [[list(p.context), list(p.completions[0]), list(p.completions[1])] for p in out] == [list(x) for x in pairs]
    assert plens == [len(p) for p, _, _ in pairs]
    shift = labels[:, 1:] != -100
    B = len(pairs)
    for i, (p, c, r) in enumerate(pairs):
        assert shift[i].nonzero().flatten().tolist() == list(range(len(p) - 1, len(p) - 1 + len(c)))
        assert shift[B + i].nonzero().flatten().tolist() == list(range(len(p) - 1, len(p) - 1 + len(r)))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30), st.integers(1, 30)), min_size=1, max_size=12),
       st.integers(8, 300))
def test_balanced_rows_partition_the_pairs_evenly(sizes, pack_tokens):
    """``balanced`` rows hold every pair exactly once, in ``R = min(pairs, ceil(total / pack_tokens))`` rows,
    the longest row at most ``total / R + the longest segment`` (longest-first onto the shortest row)."""
    from empirical.engine.batching import make_rows
    from empirical.stages.packed_dpo import Pair

    pairs = [Pair(tuple(range(p)), (tuple(range(c)), tuple(range(r)))) for p, c, r in sizes]
    seg = [p + c + r - 2 for p, c, r in sizes]
    rows = make_rows(pairs, 0, "balanced", pack_tokens)
    assert sorted(g for row in rows for g, _ in row) == list(range(len(pairs)))
    assert all(reps == [0, 1] for row in rows for _, reps in row)
    total = sum(seg)
    assert len(rows) == min(len(pairs), -(-total // pack_tokens))
    assert max(sum(seg[g] for g, _ in row) for row in rows) <= total / len(rows) + max(seg)


def test_unpack_pairs_names_batches_it_cannot_pack():
    pytest.importorskip("trl")
    from empirical.stages import packed_dpo

    b, labels = _collated([([1, 2], [3], [4, 5])])
    ids = b["input_ids"].clone()
    ids[1, 0] = 9  # the rejected row's prompt differs from the chosen row's
    assert "different prompts" in packed_dpo.unpack_pairs(ids, b["attention_mask"], labels)
    lab = labels.clone()
    lab[1, :] = -100  # a reply truncated away
    assert "empty" in packed_dpo.unpack_pairs(b["input_ids"], b["attention_mask"], lab)
    assert "odd" in packed_dpo.unpack_pairs(b["input_ids"][:1], b["attention_mask"][:1], labels[:1])


def _train(tmp_path, name, model, tok, **kw):
    from empirical.stages.train import TrainJob, train

    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    cfg = TrainJob(student="tiny/llama", data=str(data), out=tmp_path / name, batch_size=2, lora_rank=2,
                      lora_dropout=0.0, checkpoints=2, progress=False, lr=1e-2, **kw)
    return train(cfg, model_and_tok=(copy.deepcopy(model), tok))


def _adapter(tmp_path, name, step):
    from safetensors.torch import load_file

    return load_file(tmp_path / name / f"checkpoint-{step}" / "adapter_model.safetensors")


def _same_runs(a, b, tmp_path, na, nb, tol=1e-5):
    assert len(a["history"]) == len(b["history"]) == 2
    for ha, hb in zip(a["history"], b["history"]):
        assert abs(ha["loss"] - hb["loss"]) <= tol and abs(ha["rewards/margins"] - hb["rewards/margins"]) <= tol
    wa, wb = _adapter(tmp_path, na, 2), _adapter(tmp_path, nb, 2)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert float((wa[k] - wb[k]).abs().max()) <= 1e-4 * max(1.0, float(wa[k].abs().max())), k


def test_lls_train_uses_the_packed_forward_by_default(base_tok, tmp_path, capsys):
    """Two steps of ``lls train`` (library call): packed by default, recorded in train.json; TRL's forward with
    ``packed=False`` gives the same losses, margins and adapters; step 1's loss is log 2 (policy = reference)."""
    _need_fused()
    model, tok = _tiny("llama", base_tok)
    s_packed = _train(tmp_path, "packed", model, tok)
    s_trl = _train(tmp_path, "trl", model, tok, packed=False)
    assert s_packed["forward"]["forward"] == "packed" and s_packed["forward"]["reason"] is None
    assert s_packed["forward"]["packed_calls"] >= 3  # the reference pass and two steps
    assert s_trl["forward"]["forward"] == "trl" and "--no-packed" in s_trl["forward"]["reason"]
    assert json.loads((tmp_path / "packed" / "train.json").read_text())["forward"]["forward"] == "packed"
    import torch

    assert s_packed["threads"]["threads"] == torch.get_num_threads()  # the CPU thread setting is recorded
    assert abs(s_packed["history"][0]["loss"] - math.log(2)) <= 1e-6
    _same_runs(s_trl, s_packed, tmp_path, "trl", "packed")
    assert OFF_LINE not in capsys.readouterr().err  # nothing said when nothing falls back


def test_run_key_records_only_a_non_default_packed_setting(tmp_path):
    """Runs made before the setting existed (no ``packed`` in run.json) resume under the default; turning the
    packed forward off is a different run."""
    from empirical.stages.train import TrainJob

    base = dict(student="s", data=str(tmp_path / "d.jsonl"), out=tmp_path / "o")
    assert "packed" not in TrainJob(**base).run_key()
    assert TrainJob(**base, packed=False).run_key()["packed"] is False


def test_experiment_unit_keys_name_packed_only_when_off():
    """``lls experiment`` unit keys (train, correlate, eval, report) are unchanged by the setting at its default,
    so experiment folders made before it existed resume; ``packed = false`` is another key."""
    from dataclasses import replace
    from pathlib import Path

    from empirical.orchestration import experiment

    cfg = experiment.load_config(Path(__file__).resolve().parents[1] / "empirical" / "configs" / "owl-hh.toml")
    for stage in ("train", "correlate", "eval"):
        assert "packed" not in experiment.unit_key(cfg, stage)["train"]
        off = replace(cfg, train=replace(cfg.train, packed=False))
        assert experiment.unit_key(off, stage)["train"]["packed"] is False


def test_cli_no_packed_reaches_the_trainer(tmp_path):
    import argparse

    from empirical.config import ModelArgs, TrainConfig
    from empirical.stages.train import train_job
    from lls_common.config import add_arguments, from_namespace

    p = argparse.ArgumentParser()
    add_arguments(p, TrainConfig)
    for argv, want in (([], True), (["--no-packed"], False), (["--packed"], True)):
        cfg = from_namespace(TrainConfig, p.parse_args(argv))
        assert cfg.packed is want
        assert train_job(cfg, ModelArgs(model="m"), tmp_path / "d", tmp_path / "o", 0).packed is want


def _off_run(tmp_path, name, model, tok, capsys):
    s = _train(tmp_path, name, model, tok)
    err = capsys.readouterr().err
    assert err.count(OFF_LINE) == 1, err  # said once
    assert s["forward"]["forward"] == "trl" and s["forward"]["reason"], s["forward"]
    return s, err


def test_falls_back_when_attention_cannot_take_the_mask(base_tok, tmp_path, capsys, monkeypatch):
    _need_fused()
    from empirical.engine import batching

    model, tok = _tiny("llama", base_tok)
    reference = _train(tmp_path, "trl", model, tok, packed=False)
    monkeypatch.setattr(batching, "supports_4d_mask", lambda m: False)
    s, err = _off_run(tmp_path, "off", model, tok, capsys)
    assert "4-D mask" in s["forward"]["reason"] and "4-D mask" in err
    _same_runs(reference, s, tmp_path, "trl", "off", tol=0.0)  # TRL's forward: the very same numbers


def test_falls_back_when_the_model_ignores_the_packed_positions(base_tok, tmp_path, capsys, monkeypatch):
    """A model whose forward ignores the rows' position ids (simulated: 0..T-1 along each row, what such a model
    uses) fails the first-call comparison with TRL's forward: the run uses TRL's forward, says so, records it."""
    _need_fused()
    from empirical.engine import batching

    model, tok = _tiny("llama", base_tok)
    reference = _train(tmp_path, "trl", model, tok, packed=False)
    real = batching.pack_rows

    def row_positions(*a, **k):
        import torch

        pk = real(*a, **k)
        pk.pos = torch.arange(pk.pos.shape[1]).expand_as(pk.pos).clone()
        return pk

    monkeypatch.setattr(batching, "pack_rows", row_positions)
    s, err = _off_run(tmp_path, "off", model, tok, capsys)
    assert "first batch" in s["forward"]["reason"] and s["forward"]["first_call_check_nats"]["max_abs_diff"] > 1e-3
    _same_runs(reference, s, tmp_path, "trl", "off", tol=0.0)


def test_falls_back_on_a_trl_without_the_fused_head(base_tok, tmp_path, capsys, monkeypatch):
    """TRL before the fused-head DPO forward (the min-versions job's TRL 1.0) keeps TRL's own trainer."""
    from empirical.stages import packed_dpo

    model, tok = _tiny("llama", base_tok)
    monkeypatch.setattr(packed_dpo, "fused_protocol", lambda: False)
    s, err = _off_run(tmp_path, "off", model, tok, capsys)
    assert "fused-head" in s["forward"]["reason"]


@pytest.mark.slow
def test_packed_step_equals_trls_forward_on_smollm2_hh(smollm2_dir, tmp_path):
    """SmolLM2-135M on 4 HH-RLHF pairs with full replies (one step of 4 pairs): packed = TRL's forward."""
    _need_fused()
    import gzip
    from pathlib import Path

    from empirical.engine import models
    from empirical.stages.data import DataError, record_to_pair

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
    if not data.is_file():
        pytest.skip(f"{data} absent")
    model, tok = models.load(str(smollm2_dir))
    pairs = []
    with gzip.open(data, "rt") as fh:
        for k, line in enumerate(fh):
            try:
                p = record_to_pair(json.loads(line), f"{data}:{k + 1}", str(k))
            except DataError:
                continue
            if len(tok(p.chosen).input_ids) + len(tok(p.rejected).input_ids) < 160:
                pairs.append({"prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected})
            if len(pairs) == 4:
                break
    recs = _records(tok, pairs)
    trl_step = _step(model, tok, recs, False, tmp_path, batch=4)
    packed_step = _step(model, tok, recs, True, tmp_path, batch=4)
    assert packed_step[-1].record()["forward"] == "packed"
    _assert_same_step(trl_step, packed_step, "smollm2")
