"""DPO training throughput (pairs/s) for SmolLM2-135M-Instruct + LoRA on CPU, with and without precomputed
reference log-probs, side by side in one run.

    python benchmarks/bench_dpo.py [--pairs 32] [--batch-size 8] [--steps 4] [--lora-rank 64] [--threads 2]

Both variants train on the same HH-RLHF pairs (replies truncated to 20 tokens) from the same initial
weights. "precomputed": TRL ``precompute_ref_log_probs=True`` (one reference pass before training, timed
separately); "per step": the reference (adapter disabled) forward runs inside every step. Prints one line
per variant: trainer set-up seconds (which hold the one-off reference pass), seconds and pairs/s of the
optimisation loop alone (timed by a callback), pairs/s including the set-up; then the loop speed-up.
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
    from empirical.data import DataError, record_to_pair

    out = []
    with gzip.open(DATA, "rt") as fh:
        for k, line in enumerate(fh):
            try:
                p = record_to_pair(json.loads(line), f"{DATA}:{k + 1}", str(k))
            except DataError:  # 9 records of the split have an empty reply
                continue
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
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class LoopTimer(TrainerCallback):
        """Times the optimisation loop alone: TRL's reference pass runs before on_train_begin."""

        def on_train_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_train_end(self, *_, **__):
            self.loop_s = time.perf_counter() - self.t0

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
    timer = LoopTimer()
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(recs), processing_class=tok,
                         peft_config=lora, callbacks=[timer])
    t_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    trainer.train()
    t_call = time.perf_counter() - t1
    pairs = a.steps * a.batch_size
    # TRL computes the precomputed reference log-probs while building the trainer or its dataloader, i.e.
    # outside the loop: init_s + pre_loop_s holds the reference pass, loop_s only the optimisation steps.
    return {"precompute_ref": precompute, "init_s": t_init, "pre_loop_s": t_call - timer.loop_s,
            "loop_s": timer.loop_s, "pairs": pairs, "pairs_per_s": pairs / timer.loop_s,
            "pairs_per_s_incl_ref_pass": pairs / (t_init + t_call)}


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="also print one JSON line with both runs")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from empirical import models

    model_dir = str(models.local_dir("smollm2-135m-instruct"))
    _, tok = models.load(model_dir)
    recs = _pairs(a.pairs, tok)
    runs = []
    for pre in (True, False):
        r = _run(model_dir, recs, pre, a)
        runs.append(r)
        print(f"precompute_ref={str(pre):5s}  trainer init + pre-loop (holds the ref pass) "
              f"{r['init_s'] + r['pre_loop_s']:6.1f} s  loop {r['loop_s']:7.1f} s  {r['pairs_per_s']:.3f} pairs/s (loop)  "
              f"{r['pairs_per_s_incl_ref_pass']:.3f} pairs/s (incl. ref pass)", flush=True)
    print(f"loop speed-up from precomputed reference log-probs: {runs[0]['pairs_per_s'] / runs[1]['pairs_per_s']:.2f}x")
    if a.json:
        print(json.dumps({"settings": vars(a), "runs": runs}))


if __name__ == "__main__":
    main()
