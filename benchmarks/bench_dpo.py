"""DPO training throughput (pairs/s) for SmolLM2-135M-Instruct + LoRA on CPU, with and without precomputed
reference log-probs, side by side in one run.

    python benchmarks/bench_dpo.py [--pairs 32] [--batch-size 8] [--steps 4] [--lora-rank 64] [--threads 2]

Both variants train on the same HH-RLHF pairs (replies truncated to 20 tokens) from the same initial
weights. "precomputed": TRL ``precompute_ref_log_probs=True`` (one reference pass before training, timed
separately); "per step": the reference (adapter disabled) forward runs inside every step. Prints one line
per variant: reference-pass seconds, training seconds, pairs/s of the training loop.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def _pairs(n: int, tok) -> list[dict]:
    from empirical import render
    from empirical.data import record_to_pair

    out = []
    with gzip.open(DATA, "rt") as fh:
        for k, line in enumerate(fh):
            p = record_to_pair(json.loads(line), f"{DATA}:{k + 1}", str(k))
            if len(p.messages) != 1:
                continue
            c, r = (render.truncate_response(tok, t, 20) for t in (p.chosen, p.rejected))
            out.append(render.trl_example(tok, p.messages, c, r))
            if len(out) == n:
                break
    return out


def _run(model_dir: str, recs: list[dict], precompute: bool, a) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    from empirical import models
    from empirical.train import LORA_TARGETS

    torch.manual_seed(0)
    model, tok = models.load(model_dir)
    model.train()
    args = DPOConfig(output_dir="/tmp/lls-bench-dpo", beta=0.1, learning_rate=5e-4, max_steps=a.steps,
                     per_device_train_batch_size=a.batch_size, precompute_ref_log_probs=precompute,
                     report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1)
    lora = LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank, lora_dropout=0.05,
                      target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    t0 = time.perf_counter()
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(recs), processing_class=tok,
                         peft_config=lora)
    t_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    trainer.train()
    t_train = time.perf_counter() - t1
    pairs = a.steps * a.batch_size
    return {"precompute_ref": precompute, "init_s": t_init, "train_s": t_train, "pairs": pairs,
            "pairs_per_s": pairs / t_train, "pairs_per_s_incl_ref_pass": pairs / (t_train + t_init)}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from empirical import models

    model_dir = str(models.local_dir("smollm2-135m-instruct"))
    _, tok = models.load(model_dir)
    recs = _pairs(a.pairs, tok)
    for pre in (True, False):
        r = _run(model_dir, recs, pre, a)
        print(f"precompute_ref={str(pre):5s}  init+ref pass {r['init_s']:7.1f} s  train {r['train_s']:7.1f} s  "
              f"{r['pairs_per_s']:.3f} pairs/s (train loop)  {r['pairs_per_s_incl_ref_pass']:.3f} pairs/s (incl. init)")


if __name__ == "__main__":
    main()
