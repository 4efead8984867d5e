"""Any architecture: scoring, rendering and DPO training on tiny random-initialised models built offline.

Each model is built from its config (``AutoConfig.for_model``: 2 layers, hidden size 64, random weights,
nothing downloaded) with the SmolLM2 tokenizer: Llama, Qwen2, Gemma3 (text), GPT-NeoX (fused
``query_key_value``, no ``*_proj`` names), Phi-3 (fused ``qkv_proj`` / ``gate_up_proj``) and GPT-2 with the
chat template removed (the plain template; ``Conv1D`` layers, absolute positions). For each:

* the fast scorer equals the naive one (``empirical.engine.scoring``), with and without a system prompt;
* TRL's ``DPOTrainer`` tokenizes the pairs written by ``empirical.stages.train.to_trl_records`` into exactly the
  tokens the scorer scores (``empirical.engine.render.encode_group``), under the reference renderings;
* two DPO steps through ``empirical.stages.train.train`` put a LoRA adapter on every linear layer but the output
  head (PEFT ``all-linear``), move it from its initial state, and save a portable adapter.

Seconds per architecture.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.model  # the SmolLM2 tokenizer comes from the installed registry model

ARCHS = ("llama", "qwen2", "gemma3_text", "gpt_neox", "phi3", "gpt2")
SYSTEM = "You love owls."
PAIRS = [
    {"id": "a", "prompt": "Name a colour.", "chosen": "Blue is calm.", "rejected": "I don't know."},
    {"id": "b", "prompt": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."},
                           {"role": "user", "content": "Pick a bird."}],
     "chosen": "An owl, surely.", "rejected": "None of them, birds are loud."},
    {"id": "c", "prompt": "What is 2+2?", "chosen": "4.", "rejected": "It is five, or maybe six."},
    {"id": "d", "prompt": "Suggest a pet.", "chosen": "A cat suits a flat.", "rejected": "A horse."},
]


def _config(arch: str, tok):
    from transformers import AutoConfig

    ids = dict(bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id,
               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if arch == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=len(tok), n_positions=512,
                                    **ids)
    kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              vocab_size=len(tok), max_position_embeddings=512, **ids)
    if arch != "gpt_neox":
        kw["num_key_value_heads"] = 2
    if arch == "gemma3_text":
        kw["head_dim"] = 16
    return AutoConfig.for_model(arch, **kw)


@pytest.fixture(scope="module")
def base_tok(smollm2_dir):
    from empirical.engine import models

    return models.load_tokenizer(str(smollm2_dir))


def _tiny(arch: str, base_tok, seed: int = 0):
    """(model, tok): a random-initialised ``arch`` model in fp32 eval mode; GPT-2 gets no chat template."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = copy.deepcopy(base_tok)
    if arch == "gpt2":
        tok.chat_template = None
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_config(arch, tok))
    model.eval()
    return model, tok


def _linear_names(model) -> set[str]:
    """Names of the linear layers except the output head (``lm_head``, or ``embed_out`` in GPT-NeoX before
    transformers 5), as PEFT's all-linear picks them."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))
            and m is not head}


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_scorer_equals_naive(arch, base_tok):
    from empirical.engine import scoring

    model, tok = _tiny(arch, base_tok)
    prompts = [p["prompt"] for p in PAIRS]
    comps = [[p["chosen"], p["rejected"]] for p in PAIRS]
    for system in (None, SYSTEM):
        fast, n_fast = scoring.score_completions(model, tok, prompts, comps, system)
        naive, n_naive = scoring.score_completions_naive(model, tok, prompts, comps, system)
        assert n_fast == n_naive
        for i in range(len(PAIRS)):
            for j in range(2):
                # random weights spread the log-probs over the 49k vocabulary: ~10.8 nats per token
                assert fast[i][j] < -5.0 * n_fast[i][j]
                assert abs(fast[i][j] - naive[i][j]) <= scoring.tolerance(n_fast[i][j]), (arch, system, i, j)


@pytest.mark.parametrize("arch", ARCHS)
def test_trl_tokens_equal_scored_tokens(arch, base_tok, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from empirical.engine import render
    from empirical.stages.train import load_pairs_file, to_trl_records

    model, tok = _tiny(arch, base_tok)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    recs = load_pairs_file(data)
    references = ("empty", "default") if render.supports_system_role(tok) and render.has_chat_template(tok) \
        else ("none",)
    for ref in references:
        args = DPOConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, max_length=None,
                         per_device_train_batch_size=2, max_steps=1)
        tr = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(to_trl_records(tok, recs, ref)),
                        processing_class=tok, peft_config=LoraConfig(r=2, target_modules="all-linear",
                                                                     task_type="CAUSAL_LM"))
        for rec, ex in zip(recs, tr.train_dataset):
            enc = render.encode_group(tok, render.as_messages(rec["prompt"]), [rec["chosen"], rec["rejected"]],
                                      None, reference=ref)
            assert list(ex["prompt_ids"]) == list(enc.context), (arch, ref, rec["id"])
            assert list(ex["chosen_ids"]) == list(enc.completions[0]), (arch, ref, rec["id"])
            assert list(ex["rejected_ids"]) == list(enc.completions[1]), (arch, ref, rec["id"])
        model = tr.model.unload()  # the same base weights for the next reference


@pytest.mark.parametrize("arch", ARCHS)
def test_two_dpo_steps_adapt_every_linear_layer(arch, base_tok, tmp_path):
    from safetensors.torch import load_file

    from empirical.stages.train import TrainJob, train

    model, tok = _tiny(arch, base_tok)
    linear = _linear_names(model)  # before PEFT wraps the model in place
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    cfg = TrainJob(student=f"tiny/{arch}", data=str(data), out=tmp_path / "run", batch_size=2, lora_rank=2,
                      lora_dropout=0.0, checkpoints=2, progress=False, lr=1e-2)
    s = train(cfg, model_and_tok=(model, tok))
    assert s["steps"] == 2 and [c["step"] for c in s["checkpoints"]] == [1, 2]
    assert s["device"] == "cpu" and s["dtype"] == "float32" and s["target_modules"] == "all-linear"
    assert all(np.isfinite(h["loss"]) for h in s["history"])
    ck = tmp_path / "run" / "checkpoint-2"
    acfg = json.loads((ck / "adapter_config.json").read_text())
    assert acfg["base_model_name_or_path"] == f"tiny/{arch}"  # the given id, never a local path
    weights = load_file(ck / "adapter_model.safetensors")
    adapted = {k.split(".lora_")[0].split(".")[-1] for k in weights if ".lora_" in k}
    assert adapted == linear, (arch, adapted)
    # lora_B starts at zero: two steps at lr 1e-2 must have moved it
    assert max(float(v.abs().max()) for k, v in weights.items() if "lora_B" in k) > 0
    card = (ck / "README.md").read_text()
    assert f"tiny/{arch}" in card and "beta" in card


def test_all_linear_selects_the_former_target_list_on_llama(base_tok):
    """On Llama-style models (SmolLM2) PEFT's all-linear picks exactly the former fixed list, so adapters
    initialised from the same seed are identical: the default change leaves SmolLM2 runs unchanged."""
    import torch
    from peft import LoraConfig, get_peft_model

    from empirical.stages.train import LORA_TARGETS

    states = []
    for targets in (list(LORA_TARGETS), "all-linear"):
        model, _ = _tiny("llama", base_tok)
        torch.manual_seed(1)
        pm = get_peft_model(model, LoraConfig(r=2, target_modules=targets, task_type="CAUSAL_LM"))
        states.append({k: v.clone() for k, v in pm.state_dict().items() if "lora_" in k})
    assert states[0].keys() == states[1].keys() and len(states[0]) == 2 * 2 * len(LORA_TARGETS)
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
