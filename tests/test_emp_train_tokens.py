"""The tokens TRL's DPOTrainer trains on are exactly the tokens the scorer scores (empirical.engine.render).

Uses the real SmolLM2 tokenizer (chat template with a system role) and a tiny randomly initialised Llama
model of the same vocabulary, so building the trainer is cheap; TRL's own dataset preparation is run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIX = Path(__file__).parent / "fixtures" / "prefs_small.jsonl"


@pytest.mark.model
def test_trl_tokens_equal_scorer_tokens(smollm2_dir, tmp_path):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    from empirical.engine import render
    from empirical.stages.train import LORA_TARGETS, load_pairs_file, to_trl_records

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    data = tmp_path / "lls.jsonl"
    lines = []
    for line in FIX.read_text().splitlines()[:4]:
        rec = json.loads(line)
        lines.append(json.dumps({"prompt": rec["prompt"], "chosen": rec["chosen"], "rejected": rec["rejected"]}))
    data.write_text("\n".join(lines) + "\n")
    recs = load_pairs_file(data)
    trl_recs = to_trl_records(tok, recs)
    torch.manual_seed(0)
    tiny = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    args = DPOConfig(output_dir=str(tmp_path / "o"), report_to="none", use_cpu=True, max_length=None,
                     per_device_train_batch_size=2, max_steps=1)
    tr = DPOTrainer(model=tiny, args=args, train_dataset=Dataset.from_list(trl_recs), processing_class=tok,
                    peft_config=LoraConfig(r=2, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
    for rec, ex in zip(recs, tr.train_dataset):
        msgs = render.as_messages(rec["prompt"])
        enc = render.encode_group(tok, msgs, [rec["chosen"] if isinstance(rec["chosen"], str)
                                              else rec["chosen"][0]["content"],
                                              rec["rejected"] if isinstance(rec["rejected"], str)
                                              else rec["rejected"][0]["content"]])
        assert list(ex["prompt_ids"]) == list(enc.context)
        assert list(ex["chosen_ids"]) == list(enc.completions[0])
        assert list(ex["rejected_ids"]) == list(enc.completions[1])
