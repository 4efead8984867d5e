"""DPO training of a student on an LLS subset (TRL ``DPOTrainer`` + PEFT LoRA), resumable, adapters only.

``train(cfg: TrainConfig) -> dict`` trains ``cfg.student`` on the TRL-form pair file ``cfg.data``
(``lls select`` output: one JSON object per line with ``prompt`` (messages), ``chosen``/``rejected``
(one assistant message each, or strings), ``id``, ``weight``) and writes into ``cfg.out``::

    run.json                 settings (the resume key) and the student spec
    checkpoint-<step>/       K evenly spaced checkpoints: LoRA adapter (adapter_model.safetensors) +
                             trainer_state.json; only the newest keeps optimizer/scheduler state (resume)
    train.json               summary: steps, checkpoints [{step, path}], loss history, timing, pairs/s

Objective (paper, Sec. 1 of the notes): per pair the sigmoid DPO loss ``-log sigma(beta * rho)`` with
``rho = (log pi(r+|p) - log pi(r-|p)) - (log pi_ref(r+|p) - log pi_ref(r-|p))``, the same quantity as
:func:`lls_theory.margins.margin` / :func:`lls_theory.margins.dpo_loss` (the tests check TRL's logged loss
against them). The reference ``pi_ref`` is the student's initial state: with PEFT the adapter disabled, so
no second copy of the model exists. Reference log-probs are computed once before training
(``precompute_ref_log_probs=True``), never at every step.

Token agreement with the scorer: each record is converted with :func:`empirical.render.trl_example`
(conversational message lists for chat-template tokenizers, rendered strings for the plain template), so
TRL's tokenization gives exactly the context/completion split that :mod:`empirical.scoring` scores
(tested).

Repeats: the paper repeats the selected set 10x and makes one pass; here ``repeat`` multiplies the number
of epochs (each epoch reshuffles), which visits every pair the same number of times without multiplying
the one-off reference pass.

Resume: re-running with the same settings continues from the newest checkpoint (model adapter, optimizer,
scheduler, RNG and data order restored by ``transformers.Trainer``); a finished run is returned as is.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from empirical.data import iter_json_objects

__all__ = ["TrainConfig", "LORA_TARGETS", "load_pairs_file", "to_trl_records", "train", "list_checkpoints",
           "require_checkpoints",
           "load_student", "checkpoint_steps"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class TrainConfig:
    """Settings of one DPO run. Defaults follow the paper's public example (beta 0.1, lr 5e-4, LoRA r 64)."""

    student: str
    data: str
    out: Path
    beta: float = 0.1
    lr: float = 5e-4
    lora_rank: int = 64
    lora_alpha: int | None = None  # default 2 * rank (paper: 128 for rank 64)
    lora_dropout: float = 0.05
    epochs: int = 1
    repeat: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    checkpoints: int = 4
    seed: int = 0
    limit: int | None = None
    dtype: str = "float32"
    max_length: int | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.beta <= 0 or self.lr <= 0:
            raise ValueError("beta and lr must be > 0")
        for name in ("lora_rank", "epochs", "repeat", "batch_size", "grad_accum", "checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError("lora_dropout must be in [0, 1)")

    def run_key(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("out", "progress"):
            d.pop(k)
        src = Path(self.data)
        if src.is_file():
            st = src.stat()
            d["data_stat"] = [st.st_size]
        return json.loads(json.dumps(d, default=str))


def load_pairs_file(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read a TRL-form pair file (``lls select`` output). ``ValueError`` naming file:line on bad lines; on zero pairs."""
    out = []
    for lineno, rec in iter_json_objects(path):
        for f in ("prompt", "chosen", "rejected"):
            if f not in rec:
                raise ValueError(f"{path}:{lineno}: missing field {f!r}")
        rec["_where"] = f"{path}:{lineno}"
        out.append(rec)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{path}: zero pairs (nothing was selected?)")
    return out


def _reply_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant":
        text = value[0].get("content")
    else:
        raise ValueError(f"{where}: reply must be a string or one assistant message")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{where}: empty reply")
    return text


def to_trl_records(tok: Any, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL DPO records whose tokenization equals the scorer's (see :func:`empirical.render.trl_example`)."""
    from empirical import render

    out = []
    for r in recs:
        where = r.get("_where", "record")
        try:
            msgs = render.as_messages(r["prompt"], where=where)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        out.append(render.trl_example(tok, msgs, _reply_text(r["chosen"], where), _reply_text(r["rejected"], where)))
    return out


def checkpoint_steps(total_steps: int, k: int) -> list[int]:
    """K evenly spaced steps ending at ``total_steps`` (deduplicated, each >= 1): round(j * total / K), j = 1..K."""
    if total_steps < 1 or k < 1:
        raise ValueError("total_steps and k must be >= 1")
    return sorted({max(1, round(j * total_steps / k)) for j in range(1, k + 1)})


def list_checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """``[(step, folder)]`` of the run's saved adapters, by step."""
    run = Path(run)
    out = []
    for p in run.glob("checkpoint-*"):
        if p.is_dir() and (p / "adapter_config.json").is_file():
            try:
                out.append((int(p.name.split("-")[-1]), p))
            except ValueError:
                continue
    return sorted(out)


def require_checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """:func:`list_checkpoints`, or ``FileNotFoundError`` naming ``run`` when it holds no adapter."""
    cks = list_checkpoints(run)
    if not cks:
        raise FileNotFoundError(f"{run}: no LoRA adapter checkpoint (checkpoint-*/adapter_config.json) found")
    return cks


def load_student(spec: str, adapter: str | Path | None = None, dtype: str = "float32"):
    """``(model, tok)``: the student, with the LoRA ``adapter`` folder merged in when given (eval mode)."""
    from empirical import models

    if adapter is not None:
        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{adapter}: no LoRA adapter (adapter_config.json missing)")
    model, tok = models.load(spec, dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.eval()
    return model, tok


def _callbacks(save_at: set[int], out: Path):
    from transformers import TrainerCallback

    class SaveAt(TrainerCallback):
        """Save at the chosen steps; keep optimizer state only in the newest checkpoint."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step in save_at:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kw):
            cks = list_checkpoints(out)
            for _, p in cks[:-1]:
                for name in ("optimizer.pt", "scheduler.pt"):
                    (p / name).unlink(missing_ok=True)
            return control

    return [SaveAt()]


def train(cfg: TrainConfig, *, model_and_tok: tuple[Any, Any] | None = None,
          stop_after_steps: int | None = None) -> dict[str, Any]:
    """Run (or resume, or return the finished) DPO run described by ``cfg``; returns the summary dict.

    ``stop_after_steps`` (tests) simulates a kill after that many optimizer steps of this call.
    Raises ``ValueError`` on bad settings or data, ``FileNotFoundError`` for an unknown/missing model.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from empirical import models
    from lls_common.io import atomic_write_json

    cfg.validate()
    out = Path(cfg.out)
    key = cfg.run_key()
    done_file = out / "train.json"
    run_file = out / "run.json"
    if run_file.is_file():
        old = json.loads(run_file.read_text())
        if old != key:
            raise ValueError(f"{out}: holds a run with other settings; use another --out or delete it")
        if done_file.is_file():
            return json.loads(done_file.read_text())
    recs = load_pairs_file(cfg.data, cfg.limit)
    torch.manual_seed(cfg.seed)
    if model_and_tok is None:
        model, tok = models.load(cfg.student, dtype=cfg.dtype)
    else:
        model, tok = model_and_tok
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_file, key)  # only once the model loaded: an unknown model leaves nothing behind
    model.train()
    trl_recs = to_trl_records(tok, recs)
    ds = Dataset.from_list(trl_recs)

    n = len(trl_recs)
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = math.ceil(math.ceil(n / cfg.batch_size) / cfg.grad_accum)
    total = steps_per_epoch * cfg.epochs * cfg.repeat
    save_at = set(checkpoint_steps(total, cfg.checkpoints))
    use_cpu = not torch.cuda.is_available()
    args = DPOConfig(
        output_dir=str(out), beta=cfg.beta, learning_rate=cfg.lr, num_train_epochs=cfg.epochs * cfg.repeat,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        precompute_ref_log_probs=True, precompute_ref_batch_size=max(cfg.batch_size, 16),
        max_length=cfg.max_length, logging_steps=1, save_strategy="steps", save_steps=10 ** 9,
        report_to="none", seed=cfg.seed, data_seed=cfg.seed, use_cpu=use_cpu, disable_tqdm=not cfg.progress,
        bf16=(cfg.dtype in ("bfloat16", "bf16") and not use_cpu), dataloader_num_workers=0,
        lr_scheduler_type="linear", warmup_steps=0, save_only_model=False, gradient_checkpointing=False,
        **cfg.extra,
    )
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
                      lora_dropout=cfg.lora_dropout, target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM")
    callbacks = _callbacks(save_at, out)
    if stop_after_steps is not None:
        class Stop(TrainerCallback):
            count = 0

            def on_step_end(self, args, state, control, **kw):
                Stop.count += 1
                if Stop.count >= stop_after_steps:
                    control.should_training_stop = True
                return control

        callbacks.append(Stop())
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora,
                         callbacks=callbacks)
    resume = list_checkpoints(out)
    resume_from = None
    if resume and (resume[-1][1] / "trainer_state.json").is_file() and (resume[-1][1] / "optimizer.pt").is_file():
        resume_from = str(resume[-1][1])
    t0 = time.perf_counter()
    step0 = int(json.loads((Path(resume_from) / "trainer_state.json").read_text())["global_step"]) if resume_from else 0
    trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - t0
    step = int(trainer.state.global_step)
    history = [h for h in trainer.state.log_history if "loss" in h]
    if stop_after_steps is not None and step < total:
        raise KeyboardInterrupt(f"simulated interruption at step {step}")
    if step not in {s for s, _ in list_checkpoints(out)}:
        trainer.save_model(str(out / f"checkpoint-{step}"))
    shutil.rmtree(out / "runs", ignore_errors=True)
    summary = {
        "student": cfg.student, "data": str(cfg.data), "n_pairs": n, "total_steps": total, "steps": step,
        "pairs_per_step": per_step, "epochs": cfg.epochs, "repeat": cfg.repeat, "beta": cfg.beta, "lr": cfg.lr,
        "lora_rank": cfg.lora_rank, "resumed_from_step": step0,
        "checkpoints": [{"step": s, "path": p.name} for s, p in list_checkpoints(out)],
        "history": [{k: h[k] for k in ("step", "loss", "rewards/margins", "rewards/accuracies", "learning_rate")
                     if k in h} for h in history],
        "wall_s_this_call": wall,
        "pairs_per_s_this_call": (step - step0) * per_step / wall if wall > 0 else None,
        "device": "cuda" if not use_cpu else "cpu",
    }
    atomic_write_json(done_file, summary)
    return summary
