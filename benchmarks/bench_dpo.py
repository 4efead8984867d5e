"""DPO step time (s/step) for SmolLM2-135M-Instruct + LoRA on the e2e config's batch, where a step spends it,
and what TRL's own options change -- side by side in one run, numbers checked equal.

    python benchmarks/bench_dpo.py [--steps 4] [--threads 1] [--variants base,packed,...] [--workloads short,full]
                                   [--json]

Batch: as ``empirical/configs/owl-hh.toml`` trains -- HH-RLHF single-turn pairs, prompts <= 128 tokens,
replies cut to their first 24 tokens, 8 pairs per step, LoRA r 64 / alpha 128 on all linear layers,
beta 0.1, lr 5e-4, fp32 on CPU (``bf16=False`` passed explicitly, as ``empirical.stages.train`` does: TRL's
``DPOConfig`` turns bf16 autocast on by default, even on a CPU, which makes its log-probs depend on how the
pairs are batched by up to ~0.5 nats). Every variant starts from the same weights, seed and data order.

Workloads (``--workloads``): ``short`` = replies cut to their first 24 tokens (the e2e config's batch);
``full`` = the same pairs' full HH replies.

Variants (TRL ``DPOConfig`` options and the forward; ``packed`` is what ``empirical.stages.train`` runs by default):

* ``base``           -- TRL's own forward: ``precompute_ref_log_probs=True`` (one reference pass before
                        training), ``max_length`` None (no truncation: the e2e sequences are < 200 tokens);
                        what ``lls train --no-packed`` runs.
* ``packed``         -- ``base`` with the packed forward of :mod:`empirical.stages.packed_dpo` (each prompt once for
                        both replies, packed rows, no padding rows), policy and reference pass; TRL's loss.
* ``ref_per_step``   -- ``precompute_ref_log_probs=False``: the reference forward (adapter disabled) inside
                        every step, what TRL does by default.
* ``padding_free``   -- ``padding_free=True`` (TRL 1.16 disables it with a warning and pads: measured to say so).
* ``max_length_64``  -- ``max_length=64, truncation_mode="keep_end"``: a truncation setting that does cut
                        (changes the numbers by construction; shown for its speed, not a candidate default).
* ``grad_ckpt``      -- activation recomputation on (less activation memory, more compute). This is **TRL's
                        own default** (``DPOConfig().gradient_checkpointing is True`` in TRL 1.0-1.16), which
                        ``lls train`` ran until it started passing it off explicitly; ``base`` passes it off.

There is no ``use_logits_to_keep`` in TRL >= 1.0: its DPO trainer always runs the LM head only at positions
with a label (``fused_lm_head``), which is what that option did.

Per variant: set-up seconds (holds the reference pass when precomputed), s/step of the optimisation loop
(timed by a callback, first step included), and the logged loss / reward margin of every step; variants that
must give the same numbers are compared with ``base`` (max |difference|, fp32 tolerance 1e-4).

**Work bound** (per workload, the same for every variant): the real tokens a step must run -- each prompt once,
each reply once, ``sum_i (|p_i| + |c_i| + |r_i| - 2)`` over the step's pairs -- divided by the measured token
rate of a dense step: forward + backward + optimizer step of the same LoRA model on a block of real tokens
with no padding and no mask (rows of 128 tokens, as many as the step's real tokens fill), LM head at as many
positions as the step has reply tokens; best of 2 after a warm-up, measured before and after the variants and
the faster taken. Printed beside each variant: its s/step, the bound in s/step and the share of it reached
(bound / s/step), each also in CPU time of the process (with 1 thread, equal to wall time on an idle machine;
the figure to read under load). The tokens each layout runs per step
(TRL's ``2B x T`` padded, packed rows x longest row) are printed per workload.

Breakdown of one ``base`` step (``--breakdown``): collate (padding), policy forward (loss), backward,
optimizer step, each timed on the same batch after a warm-up step; plus the batch's real vs padded tokens
and the share of positions that reach the LM head.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
VARIANTS = {
    "base": {},
    "packed": {"packed": True},
    "ref_per_step": {"precompute_ref_log_probs": False},
    "padding_free": {"padding_free": True},
    "max_length_64": {"max_length": 64, "truncation_mode": "keep_end"},
    "grad_ckpt": {"checkpointing": True},
}
SAME_NUMBERS = ("packed", "ref_per_step", "padding_free", "grad_ckpt")
WORKLOADS = {"short": 24, "full": None}  # reply truncation in tokens (None: full HH replies)


def _pairs(n: int, tok, truncate: int | None = 24, max_prompt_tokens: int = 128) -> list[dict]:
    from empirical.engine import render
    from empirical.stages.data import DataError, record_to_pair

    out = []
    with gzip.open(DATA, "rt") as fh:
        for k, line in enumerate(fh):
            try:
                p = record_to_pair(json.loads(line), f"{DATA}:{k + 1}", str(k))
            except DataError:  # 9 records of the split have an empty reply
                continue
            if len(p.messages) != 1 or len(tok(p.messages[0]["content"]).input_ids) > max_prompt_tokens:
                continue
            c, r = (render.truncate_response(tok, t, truncate) for t in (p.chosen, p.rejected))
            out.append(render.trl_example(tok, p.messages, c, r))
            if len(out) == n:
                break
    return out


def _trainer(model_dir: str, recs: list[dict], a, options: dict):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig

    from empirical.engine import models
    from empirical.stages import packed_dpo
    from empirical.stages.train import dpo_checkpointing_field

    torch.manual_seed(0)
    model, tok = models.load(model_dir)
    model.train()
    kw = dict(output_dir="/tmp/lls-bench-dpo", beta=0.1, learning_rate=5e-4, max_steps=a.steps,
              per_device_train_batch_size=a.batch_size, precompute_ref_log_probs=True, max_length=None,
              report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True, logging_steps=1, seed=0,
              data_seed=0, bf16=False)  # TRL's DPOConfig defaults to bf16 autocast, even on CPU; lls train is fp32
    options = dict(options)
    kw[dpo_checkpointing_field()] = options.pop("checkpointing", False)  # TRL's default is on; lls train passes off
    packed = options.pop("packed", False)
    kw.update(options)
    lora = LoraConfig(r=a.lora_rank, lora_alpha=2 * a.lora_rank, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer, state = packed_dpo.make_trainer(packed, model=model, args=DPOConfig(**kw),
                                             train_dataset=Dataset.from_list(recs), processing_class=tok,
                                             peft_config=lora)
    trainer._bench_forward = state
    return trainer


def _run(model_dir: str, recs: list[dict], name: str, a) -> dict:
    from transformers import TrainerCallback

    class LoopTimer(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_train_end(self, *_, **__):
            self.loop_s = time.perf_counter() - self.t0
            self.loop_cpu_s = time.process_time() - self.c0

    t0 = time.perf_counter()
    trainer = _trainer(model_dir, recs, a, VARIANTS[name])
    timer = LoopTimer()
    trainer.add_callback(timer)
    t_init = time.perf_counter() - t0
    t1 = time.perf_counter()
    trainer.train()
    t_call = time.perf_counter() - t1
    hist = [h for h in trainer.state.log_history if "loss" in h]
    return {"variant": name, "options": VARIANTS[name], "setup_s": t_init + (t_call - timer.loop_s),
            "loop_s": timer.loop_s, "s_per_step": timer.loop_s / a.steps, "cpu_s_per_step": timer.loop_cpu_s / a.steps,
            "forward": trainer._bench_forward.record(),
            "loss": [h["loss"] for h in hist], "margins": [h.get("rewards/margins") for h in hist]}


def _step_tokens(model_dir: str, recs: list[dict], a) -> dict:
    """Tokens of each step's batch (the training order of the base trainer): TRL's padded ``2B x T`` and real
    tokens, the packed rows' tokens (rows x longest row, spare columns included), the least a step must run
    (each prompt once, each reply once) and the reply tokens (LM-head positions)."""
    from empirical.stages import packed_dpo

    trainer = _trainer(model_dir, recs, a, {})
    inner = trainer.model.get_base_model()
    out = []
    for k, batch in enumerate(trainer.get_train_dataloader()):
        if k == a.steps:
            break
        labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
        pairs, _ = packed_dpo.unpack_pairs(batch["input_ids"], batch["attention_mask"], labels)
        pk = packed_dpo.step_rows(inner, pairs, 0, packed_dpo.PackedState().pack_tokens)
        out.append({"trl_padded": int(batch["input_ids"].numel()), "trl_real": int(batch["attention_mask"].sum()),
                    "packed_rows": int(pk.ids.numel()), "least": sum(pk.lens),
                    "reply_tokens": int((labels[:, 1:] != -100).sum())})
    return {k: sum(o[k] for o in out) / len(out) for k in out[0]}


def _token_rate(model_dir: str, recs: list[dict], a, tokens: float, heads: float) -> tuple[float, float]:
    """Tokens per wall second and per CPU second of a dense step (module doc, work bound): forward + backward +
    optimizer step of the LoRA model on rows of 128 real tokens (no padding, causal mask only), fused LM head
    at ``heads`` positions; best of 2 after a warm-up."""
    import torch

    trainer = _trainer(model_dir, recs, a, {})
    trainer.create_optimizer_and_scheduler(num_training_steps=a.steps)
    model, opt = trainer.model, trainer.optimizer
    stream = [t for ex in trainer.train_dataset for part in ("prompt_ids", "chosen_ids", "rejected_ids")
              for t in ex[part]]
    L = 128
    R = max(1, round(tokens / L))
    while len(stream) < R * L:
        stream = stream + stream
    ids = torch.tensor(stream[:R * L]).view(R, L)
    labels = torch.full_like(ids, -100)
    flat = torch.linspace(1, R * L - 1, steps=max(1, min(int(heads), R * L - R))).long()  # spread over the block
    labels.view(-1)[flat] = ids.view(-1)[flat]
    labels[:, 0] = -100
    times, cpu = [], []
    for _ in range(3):  # the first warms up
        t, c = time.perf_counter(), time.process_time()
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, fused_lm_head=True,
                    use_cache=False)
        (-out.log_probs.sum()).backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return R * L / min(times[1:]), R * L / min(cpu[1:])


def _breakdown(model_dir: str, recs: list[dict], a) -> dict:
    """Time the parts of one base step on one batch (after a warm-up step on the same batch)."""
    import torch

    trainer = _trainer(model_dir, recs, a, {})
    trainer.create_optimizer_and_scheduler(num_training_steps=a.steps)
    model, opt = trainer.model, trainer.optimizer
    feats = [trainer.train_dataset[i] for i in range(a.batch_size)]
    out = {}
    for rep in range(2):  # rep 0 warms up
        t = time.perf_counter()
        batch = trainer.data_collator(feats)
        t_collate = time.perf_counter() - t
        t = time.perf_counter()
        loss = trainer.compute_loss(model, batch)
        t_fwd = time.perf_counter() - t
        t = time.perf_counter()
        loss.backward()
        t_bwd = time.perf_counter() - t
        t = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t_opt = time.perf_counter() - t
        out = {"collate_s": t_collate, "policy_forward_s": t_fwd, "backward_s": t_bwd, "optimizer_s": t_opt}
    mask = batch["attention_mask"]
    comp = batch["completion_mask"]
    out.update({"sequences": int(mask.shape[0]), "padded_length": int(mask.shape[1]),
                "real_tokens": int(mask.sum()), "padded_tokens": int(mask.numel()),
                "lm_head_positions": int(comp.sum()), "lm_head_share_of_real": float(comp.sum() / mask.sum())})
    del torch
    return out


def main() -> None:
    import os

    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lora-rank", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch compute threads (default 1)")
    ap.add_argument("--variants", default="base,packed", help="comma-separated, from: " + ", ".join(VARIANTS))
    ap.add_argument("--workloads", default="short,full", help="comma-separated, from: " + ", ".join(WORKLOADS))
    ap.add_argument("--breakdown", action="store_true", help="also time the parts of one base step")
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every run")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from empirical.engine import models

    names = [v for v in a.variants.split(",") if v]
    for v in names:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r}")
    loads = [w for w in a.workloads.split(",") if w]
    for w in loads:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}")
    model_dir = str(models.local_dir("smollm2-135m-instruct"))
    tok = models.load_tokenizer(model_dir)
    print(f"SmolLM2-135M fp32 CPU, {torch.get_num_threads()} thread(s), {a.steps} steps x {a.batch_size} pairs, "
          f"LoRA r{a.lora_rank} all-linear; load average {os.getloadavg()[0]:.1f}", flush=True)
    results = {}
    for w in loads:
        recs = _pairs(a.steps * a.batch_size, tok, truncate=WORKLOADS[w])
        tk = _step_tokens(model_dir, recs, a)
        print(f"[{w}] replies {'cut to ' + str(WORKLOADS[w]) + ' tokens' if WORKLOADS[w] else 'full'}; tokens per "
              f"step: least {tk['least']:.0f} (each prompt once), TRL {tk['trl_real']:.0f} real of "
              f"{tk['trl_padded']:.0f} padded, packed rows {tk['packed_rows']:.0f}", flush=True)
        rates = [_token_rate(model_dir, recs, a, tk["least"], tk["reply_tokens"])]
        runs = {}
        for v in names:
            runs[v] = _run(model_dir, recs, v, a)
        rates.append(_token_rate(model_dir, recs, a, tk["least"], tk["reply_tokens"]))  # before and after: best
        rate, cpu_rate = max(r[0] for r in rates), max(r[1] for r in rates)
        bound, cpu_bound = tk["least"] / rate, tk["least"] / cpu_rate
        print(f"  dense step: {rate:.0f} tok/s wall, {cpu_rate:.0f} tok/CPU-s (best of before/after: "
              f"{', '.join(f'{r[0]:.0f}' for r in rates)} wall) -> work bound {bound:.2f} s/step "
              f"({cpu_bound:.2f} CPU s/step)", flush=True)
        for v in names:
            r = runs[v]
            r["work_bound_s_per_step"], r["share_of_bound"] = bound, bound / r["s_per_step"]
            r["cpu_work_bound_s_per_step"], r["cpu_share_of_bound"] = cpu_bound, cpu_bound / r["cpu_s_per_step"]
            line = (f"  {v:14s} set-up {r['setup_s']:6.1f} s   {r['s_per_step']:6.2f} s/step "
                    f"({r['cpu_s_per_step']:.2f} CPU)   bound {bound:5.2f} s/step: {r['share_of_bound']:.0%} of it ({r['cpu_share_of_bound']:.0%} "
                    f"in CPU time)   forward {r['forward']['forward']}")
            if v in SAME_NUMBERS and "base" in runs:
                d = max(abs(x - y) for x, y in zip(r["loss"], runs["base"]["loss"]))
                dm = max(abs(x - y) for x, y in zip(r["margins"], runs["base"]["margins"]))
                r["max_abs_loss_diff_vs_base"], r["max_abs_margin_diff_vs_base"] = d, dm
                line += (f"   |loss - base| <= {d:.2e}, |margin - base| <= {dm:.2e} "
                         f"({'same' if max(d, dm) <= 1e-4 else 'DIFFERENT'})")
            if "base" in runs and v != "base":
                line += (f"   {runs['base']['s_per_step'] / r['s_per_step']:.2f}x base speed "
                         f"({runs['base']['cpu_s_per_step'] / r['cpu_s_per_step']:.2f}x in CPU time)")
            print(line, flush=True)
        results[w] = {"tokens_per_step": tk, "dense_tokens_per_s": rate, "dense_tokens_per_cpu_s": cpu_rate,
                      "work_bound_s_per_step": bound, "cpu_work_bound_s_per_step": cpu_bound, "runs": runs}
    bd = None
    if a.breakdown:
        recs = _pairs(a.steps * a.batch_size, tok)
        bd = _breakdown(model_dir, recs, a)
        step = bd["collate_s"] + bd["policy_forward_s"] + bd["backward_s"] + bd["optimizer_s"]
        print("base step breakdown: " + ", ".join(
            f"{k[:-2]} {bd[k]:.2f} s ({bd[k] / step:.0%})" for k in ("collate_s", "policy_forward_s", "backward_s",
                                                                       "optimizer_s"))
              + f"; tokens {bd['real_tokens']} real of {bd['padded_tokens']} padded ({bd['sequences']} x "
                f"{bd['padded_length']}); LM head at {bd['lm_head_positions']} positions "
                f"({bd['lm_head_share_of_real']:.0%} of real tokens)", flush=True)
    if a.json:
        print(json.dumps({"settings": vars(a), "threads": torch.get_num_threads(), "workloads": results,
                          "breakdown": bd}))


if __name__ == "__main__":
    main()
