"""DPO training of a student on an LLS subset (TRL ``DPOTrainer`` + PEFT LoRA), resumable, adapters only.

``train(cfg: TrainJob) -> dict`` trains ``cfg.student`` on the pair file ``cfg.data`` (read by
:func:`empirical.stages.data.load_pairs`: every format ``lls score`` reads -- ``lls select`` output, TRL-form
JSONL/JSON/Parquet, hub ids, HH transcripts) and writes into ``cfg.out``::

    run.json                 settings (the resume key) and the student spec
    checkpoint-<step>/       K evenly spaced checkpoints: LoRA adapter (adapter_model.safetensors) +
                             trainer_state.json + README.md (model card); only the newest keeps
                             optimizer/scheduler state (resume)
    train.json               summary: steps, checkpoints [{step, path}], loss history, timing, pairs/s,
                             device, dtype, world size

Portable adapters: ``adapter_config.json`` records ``base_model_name_or_path`` = the registry name (also
when the student was given as a folder of the registry cache) or the hub id, and the hub ``revision``;
never a local cache path. The model card (README.md) states the base model, the LLS settings
(``cfg.card``: teacher, system prompt, gamma, data), the reference rendering and the training settings, and
how to load the adapter.

Any architecture: LoRA targets default to PEFT's ``"all-linear"`` (every linear layer but the output head;
for Llama-style models such as SmolLM2 the same seven projections as the former fixed list
:data:`LORA_TARGETS`); ``target_modules`` overrides it. ``dpo_args`` passes further ``DPOConfig`` fields.

Several processes (``torchrun`` / ``accelerate launch``): ``batch_size`` is the number of pairs per
micro-step across all processes (each of the W processes gets ``batch_size / W``; it must divide), so the
optimizer steps, the checkpoint steps and -- up to fp32 reduction order -- the adapter weights are those
of the one-process run (tested with 2 gloo CPU processes; when the number of pairs is not a multiple of
``batch_size``, accelerate pads the last batch of each process by repeating pairs, which a single process
does not do). Each process loads the model straight onto its local device; only the main process writes
``run.json``, ``train.json``, checkpoints and model cards.

Objective (paper, Sec. 1 of the notes): per pair the sigmoid DPO loss ``-log sigma(beta * rho)`` with
``rho = (log pi(r+|p) - log pi(r-|p)) - (log pi_ref(r+|p) - log pi_ref(r-|p))``, the same quantity as
:func:`lls_theory.margins.margin` / :func:`lls_theory.margins.dpo_loss` (the tests check TRL's logged loss
against them). The reference ``pi_ref`` is the student's initial state: with PEFT the adapter disabled, so
no second copy of the model exists. Reference log-probs are computed once before training
(``precompute_ref_log_probs=True``), never at every step.

Token agreement with the scorer: each record is converted with :func:`empirical.engine.render.trl_example`
(conversational message lists for chat-template tokenizers, rendered strings for the plain template), so
TRL's tokenization gives exactly the context/completion split that :mod:`empirical.engine.scoring` scores
(tested).

Repeats: the paper repeats the selected set 10x and makes one pass; here ``repeat`` multiplies the number
of epochs (each epoch reshuffles), which visits every pair the same number of times without multiplying
the one-off reference pass.

Resume: re-running with the same settings continues from the newest checkpoint (model adapter, optimizer,
scheduler, RNG and data order restored by ``transformers.Trainer``); a finished run is returned as is.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from empirical.config import DTYPES, REFERENCES, ModelArgs, ScoreConfig, TrainConfig
from lls_common.errors import LLSError, MissingInputError
from lls_common.validate import check_choice, check_nonempty_str, check_positive_int, check_seed

__all__ = ["TrainJob", "train_job", "run_train", "check_trained_references", "LORA_TARGETS", "load_pairs_file",
           "to_trl_records", "train", "list_checkpoints", "require_checkpoints", "load_student", "checkpoint_steps", "lora_targets", "dpo_config_kwargs",
           "world_size", "is_main_process", "model_card"]

#: The former fixed LoRA target list (Llama-style names). ``"all-linear"`` selects exactly these on SmolLM2.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Fields added after the first release: left out of the resume key while at their default, so runs started
# before they existed keep resuming.
_NEW_DEFAULTS: dict[str, Any] = {"target_modules": (), "gradient_checkpointing": False, "report_to": "none",
                                 "reference": "default", "revision": None, "trust_remote_code": False,
                                 "packed": True, "max_steps": None}
#: The fields of a run's resume key (``run.json``), in their recorded order; ``extra`` is ``dpo_args``.
_KEY_FIELDS = ("student", "data", "beta", "lr", "lora_rank", "lora_alpha", "lora_dropout", "epochs", "repeat",
               "batch_size", "grad_accum", "checkpoints", "seed", "limit", "dtype", "max_length", "max_steps",
               "extra", "target_modules", "gradient_checkpointing", "report_to", "reference", "revision",
               "trust_remote_code", "packed")
# DPOConfig fields that train() sets itself from TrainJob (a pass-through may not override them).
_OWN_ARGS = ("output_dir", "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps",
             "save_strategy", "save_steps", "logging_steps", "seed", "data_seed", "use_cpu", "beta",
             "learning_rate", "max_length", "report_to", "gradient_checkpointing", "max_steps")
#: The lls option (flag / TOML key) that sets each of :data:`_OWN_ARGS`, named when a pass-through asks for it.
_OWN_ARG_OPTIONS = {"num_train_epochs": "--epochs / --repeat (train.epochs, train.repeat)",
                    "per_device_train_batch_size": "--batch-size (train.batch_size)",
                    "gradient_accumulation_steps": "--grad-accum (train.grad_accum)", "seed": "--seed",
                    "data_seed": "--seed", "output_dir": "--out", "beta": "--beta (train.beta)",
                    "learning_rate": "--lr (train.lr)", "max_length": "--max-length (train.max_length)",
                    "report_to": "--report-to (train.report_to)", "use_cpu": "--device",
                    "gradient_checkpointing": "--gradient-checkpointing (train.gradient_checkpointing)",
                    "max_steps": "--max-steps (train.max_steps)",
                    "save_strategy": "--checkpoints (train.checkpoints)",
                    "save_steps": "--checkpoints (train.checkpoints)"}
#: Where the Trainer's per-step log records (loss, margins, learning rate ...) go, one JSON object a line,
#: inside the run folder; the terminal shows the progress bar and lls's own summary only.
LOG_FILE = "log.jsonl"


def _default(cls: type, name: str) -> Any:
    """The declared default of setting ``name`` of the settings class ``cls`` (:mod:`empirical.config`)."""
    return cls.__dataclass_fields__[name].default


@dataclass(kw_only=True)
class TrainJob(TrainConfig):
    """One DPO run: the hyper-parameters of :class:`empirical.config.TrainConfig` (declared, defaulted and
    validated there) plus what the run trains and where.

    ``student`` / ``dtype`` / ``device`` / ``revision`` / ``trust_remote_code``: how the student loads (see
    :func:`empirical.engine.models.load`; defaults those of :class:`empirical.config.ModelArgs`). ``data``: the pair
    file; ``out``: the run folder; ``seed``: the training seed. ``reference``: the no-system rendering of the
    prompts (:mod:`empirical.engine.render`; must match the one the pairs were scored with; default that of
    :class:`empirical.config.ScoreConfig`). ``card``: LLS settings for the model card (teacher, system_prompt,
    gamma, data, ...). :func:`train_job` builds one from the settings.
    """

    student: str
    data: str
    out: Path
    seed: int = 0
    limit: int | None = None
    dtype: str = _default(ModelArgs, "dtype")
    device: str = _default(ModelArgs, "device")
    revision: str | None = _default(ModelArgs, "revision")
    trust_remote_code: bool = _default(ModelArgs, "trust_remote_code")
    reference: str = _default(ScoreConfig, "reference")
    progress: bool = True
    card: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()  # every hyper-parameter, and the types of the fields above
        check_nonempty_str(self.student, "train.student")
        check_choice(self.dtype, "train.dtype", DTYPES)
        check_choice(self.reference, "reference", REFERENCES)
        check_seed(self.seed, "seed")
        if self.limit is not None:
            check_positive_int(self.limit, "limit")

    def validate(self) -> None:
        """The checks that need the training libraries (before any model loads): the ``report_to``
        integration is installed and every ``dpo_args`` key is a ``DPOConfig`` field lls does not set."""
        check_report_to(self.report_to)
        dpo_config_kwargs(self.dpo_args)

    def run_key(self) -> dict[str, Any]:
        """The settings that identify a run (resume refuses another key). ``dtype`` is recorded resolved."""
        from empirical.engine import models

        d = {k: getattr(self, "dpo_args" if k == "extra" else k) for k in _KEY_FIELDS}
        for k, default in _NEW_DEFAULTS.items():
            if d[k] == default or (k == "target_modules" and not d[k]):
                d.pop(k)
        d["dtype"] = models.dtype_name(models.resolve_dtype(self.dtype, self.device))
        src = Path(self.data).expanduser()
        if src.is_file():  # the training pairs by content; the path resolved (readable from any folder)
            from lls_common.io import content_digest

            d["data"] = str(src.resolve())
            d["data_sha256"] = content_digest(src)
        if self.student not in models.REGISTRY and Path(self.student).expanduser().exists():
            d["student"] = str(Path(self.student).expanduser().resolve())
        try:
            d["student_fingerprint"] = models.model_fingerprint(self.student, self.revision)
        except (ValueError, OSError):  # an unknown model is refused when it loads, with its own message
            d["student_fingerprint"] = None
        return json.loads(json.dumps(d, default=str))


def train_job(settings: TrainConfig, student: ModelArgs, data: str | Path, out: str | Path, seed: int,
              **run: Any) -> TrainJob:
    """The :class:`TrainJob` of one DPO run of ``student`` on the pair file ``data`` with the hyper-parameters
    ``settings``; ``run`` adds the run's other fields (limit, progress, reference, card)."""
    return TrainJob(**asdict(settings), student=student.model, data=str(data), out=Path(out), seed=seed,
                    **student.load_kwargs(), **run)


def check_report_to(report_to: Any) -> None:
    """Refuse, before any model loads, a ``report_to`` the Trainer would reject after loading: each
    comma-separated name must be ``none``, ``all`` or a transformers integration that is installed."""
    from transformers.integrations import get_available_reporting_integrations
    from transformers.integrations import integration_utils as iu

    names = [n.strip() for n in str(report_to).split(",")] if isinstance(report_to, str) else list(report_to)
    known = sorted(getattr(iu, "INTEGRATION_TO_CALLBACK", {}))
    for n in names:
        if n in ("none", "all"):
            if len(names) > 1:
                raise LLSError(f"report_to {report_to!r}: {n!r} cannot be combined with other names")
            continue
        if known and n not in known:
            close = difflib.get_close_matches(str(n), known, n=3)
            raise LLSError(f"report_to {n!r} is not a Trainer integration; use none, all or one of "
                             f"{', '.join(known)}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        if n not in get_available_reporting_integrations():
            raise LLSError(f"report_to {n!r}: that integration's package is not installed; install it "
                             "or use --report-to none")


_NONNEGATIVE_DPO_ARGS = ("max_grad_norm", "weight_decay", "warmup_ratio", "warmup_steps", "label_smoothing",
                         "adam_epsilon", "rpo_alpha", "ld_alpha")


def _check_dpo_value(key: str, v: Any) -> None:
    """Non-finite floats (anywhere in the value) are refused: e.g. ``max_grad_norm=nan`` silently turns
    gradient clipping off (the Trainer tests ``max_grad_norm > 0``); a few fields must also be >= 0."""
    if isinstance(v, (list, tuple)):
        for x in v:
            _check_dpo_value(key, x)
        return
    if isinstance(v, dict):
        for x in v.values():
            _check_dpo_value(key, x)
        return
    if isinstance(v, float) and not math.isfinite(v):
        raise LLSError(f"DPOConfig argument {key}={v}: must be finite")
    if (key in _NONNEGATIVE_DPO_ARGS and isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0):
        raise LLSError(f"DPOConfig argument {key}={v}: must be >= 0")


def dpo_config_kwargs(extra: dict[str, Any]) -> dict[str, Any]:
    """Validate the ``DPOConfig`` pass-through: every key a ``DPOConfig`` field not set by :func:`train`.

    Raises ``ValueError`` naming the key and the closest field names.
    """
    if not extra:
        return {}
    if not isinstance(extra, dict):
        raise LLSError("DPOConfig pass-through must be a mapping KEY -> VALUE")
    from trl import DPOConfig

    names = {f.name for f in fields(DPOConfig)}
    for k in extra:
        if k in _OWN_ARGS:
            raise LLSError(f"DPOConfig argument {k!r} is set by lls train itself; use "
                           f"{_OWN_ARG_OPTIONS.get(k, 'its own option')}")
        if k not in names:
            close = difflib.get_close_matches(k, sorted(names), n=3)
            raise LLSError(f"{k!r} is not a TRL DPOConfig field" + (f" (did you mean {', '.join(close)}?)"
                                                                        if close else ""))
        _check_dpo_value(k, extra[k])
    return dict(extra)


def model_module_names(student: Any, revision: str | None = None, trust_remote_code: bool = False) -> list[str] | None:
    """Module names of ``student``'s model built on the meta device from its config alone (no weights
    read, well under a second); None when that cannot be done cheaply (GGUF files, a config that fails)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from empirical.engine import models

    src = models.resolve_source(student, revision=revision, trust_remote_code=trust_remote_code)
    if src.kind == "gguf":
        return None
    try:
        config = AutoConfig.from_pretrained(src.path, **src.kwargs)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception:  # noqa: BLE001 - the real load reports the problem
        return None
    return [n for n, _ in model.named_modules() if n]


def check_target_modules(target_modules: Any, names: list[str] | None) -> None:
    """Refuse LoRA ``target_modules`` that match no module of the model (PEFT's rule: a module name equal to
    the target or ending in ``.target``), naming the model's linear-layer leaf names as the choice."""
    if not target_modules or names is None or isinstance(target_modules, str):
        return
    leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
    leaves = [leaf for leaf in leaves if not leaf.isdigit()]
    for t in target_modules:
        if not any(n == t or n.endswith("." + t) for n in names):
            close = difflib.get_close_matches(t, leaves, n=3)
            raise LLSError(f"target module {t!r} matches no module of the model"
                             + (f" (did you mean {', '.join(close)}?)" if close else "")
                             + f"; module names end in: {', '.join(leaves[:40])}")


def lora_targets(target_modules: Any) -> str | list[str]:
    """PEFT ``target_modules``: ``"all-linear"`` when empty, else the given names."""
    if not target_modules:
        return "all-linear"
    if isinstance(target_modules, str):
        return target_modules
    return list(target_modules)


def world_size() -> int:
    """Number of processes of a torchrun / accelerate launch (``WORLD_SIZE``; 1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Global rank 0 (``RANK``; true when absent)."""
    return int(os.environ.get("RANK", "0")) == 0


def load_pairs_file(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read a pair file with :func:`empirical.stages.data.load_pairs` (every format ``lls score`` reads).

    Returns ``[{"prompt": messages, "chosen": str, "rejected": str, "id": str, "_where": "FILE:LINE"}]``.
    ``ValueError`` naming file:line on bad records, and on zero pairs.
    """
    from empirical.stages.data import load_pairs

    pairs, _ = load_pairs(path, limit=limit)
    if not pairs:
        raise LLSError(f"{path}: zero pairs (nothing was selected?)")
    return [{"prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected, "id": p.id, "_where": p.where}
            for p in pairs]


def _reply_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant":
        text = value[0].get("content")
    else:
        raise LLSError(f"{where}: reply must be a string or one assistant message")
    if not isinstance(text, str) or not text.strip():
        raise LLSError(f"{where}: empty reply")
    return text


def to_trl_records(tok: Any, recs: list[dict[str, Any]], reference: str = "auto") -> list[dict[str, Any]]:
    """TRL DPO records whose tokenization equals the scorer's (see :func:`empirical.engine.render.trl_example`),
    with the no-system prompts rendered under ``reference``."""
    from empirical.engine import render

    out = []
    for r in recs:
        where = r.get("_where", "record")
        try:
            msgs = render.as_messages(r["prompt"], where=where)
        except ValueError as exc:
            raise LLSError(str(exc)) from None
        out.append(render.trl_example(tok, msgs, _reply_text(r["chosen"], where), _reply_text(r["rejected"], where),
                                      reference=reference))
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
        raise MissingInputError(f"{run}: no LoRA adapter checkpoint (checkpoint-*/adapter_config.json) found")
    return cks


def load_student(spec: str, adapter: str | Path | None = None, dtype: str = "auto", device: Any = "auto",
                 revision: str | None = None, trust_remote_code: bool = False):
    """``(model, tok)``: the student, with the LoRA ``adapter`` folder merged in when given (eval mode).

    ``dtype``/``device``/``revision``/``trust_remote_code``: as :func:`empirical.engine.models.load`.
    """
    from empirical.engine import models

    if adapter is not None:
        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise MissingInputError(f"{adapter}: no LoRA adapter (adapter_config.json missing)")
        check_adapter_base(adapter, spec, revision)
    model, tok = models.load(spec, dtype=dtype, device=device, revision=revision,
                             trust_remote_code=trust_remote_code)
    if adapter is not None:
        from peft import PeftModel

        src = getattr(model, "_lls_source", None)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        if src is not None:
            model._lls_source = src
        model.eval()
    return model, tok


def _portable_adapter_config(folder: Path, base: str, revision: str | None) -> None:
    """Rewrite ``adapter_config.json`` with the portable base model name and revision (atomically)."""
    from lls_common.io import atomic_write_json

    f = folder / "adapter_config.json"
    cfg = json.loads(f.read_text())
    if cfg.get("base_model_name_or_path") != base or cfg.get("revision") != revision:
        cfg["base_model_name_or_path"] = base
        cfg["revision"] = revision
        atomic_write_json(f, cfg)


def model_card(cfg: TrainJob, base: str, step: int, summary: dict[str, Any] | None = None) -> str:
    """Markdown model card of one checkpoint: base model, LLS settings, training settings, how to load it."""
    from empirical.engine import models

    spec = models.REGISTRY.get(base)
    hub = spec.hub_id if spec is not None else (base if "/" in base and not Path(base).exists() else "")
    lines = ["---"]
    if hub:
        lines.append(f"base_model: {hub}")
    lines += ["library_name: peft", "tags: [lls, logit-linear-selection, dpo, lora, trl]", "---", "",
              f"# LLS DPO LoRA adapter: {base}, step {step}", "", "## Base model", ""]
    if spec is not None:
        lines += [f"- lls registry model `{base}`: {spec.description}.",
                  f"- Original on the hub: `{spec.hub_id}`. The adapter was trained on the dequantised GGUF weights "
                  "of the registry entry, not on the hub's original weights.",
                  f"- Load the base with `empirical.engine.models.load({base!r})` or "
                  f"`AutoModelForCausalLM.from_pretrained(empirical.engine.models.local_dir({base!r}))`."]
    else:
        lines.append(f"- `{base}`" + (f" at revision `{cfg.revision}`" if cfg.revision else ""))
    lls = dict(cfg.card) or selection_settings(cfg.data)
    lines += ["", "## LLS settings (how the training pairs were chosen)", ""]
    if lls:
        for k in ("teacher", "system_prompt", "gamma", "data", "arm"):
            if k in lls:
                lines.append(f"- {k}: {json.dumps(lls.pop(k), ensure_ascii=False)}")
        for k, v in sorted(lls.items()):
            lines.append(f"- {k}: {json.dumps(v, ensure_ascii=False, default=str)}")
    else:
        lines.append("- not recorded (trained directly with `lls train`; see the pair file)")
    lines.append(f"- training pairs: `{cfg.data}`; no-system reference rendering: `{cfg.reference}`")
    t = {"beta": cfg.beta, "learning_rate": cfg.lr, "lora_rank": cfg.lora_rank,
         "lora_alpha": cfg.lora_alpha or 2 * cfg.lora_rank, "lora_dropout": cfg.lora_dropout,
         "target_modules": lora_targets(cfg.target_modules), "epochs": cfg.epochs, "repeat": cfg.repeat,
         "batch_size (pairs per micro-step, all processes)": cfg.batch_size, "grad_accum": cfg.grad_accum,
         "seed": cfg.seed, "max_length": cfg.max_length, "gradient_checkpointing": cfg.gradient_checkpointing,
         "loss": "sigmoid DPO, reference = base model (adapter disabled), reference log-probs precomputed",
         **({"dpo_args": cfg.dpo_args} if cfg.dpo_args else {})}
    if summary:
        t.update({k: summary[k] for k in ("n_pairs", "total_steps", "world_size", "device", "dtype", "versions")
                  if k in summary})
    lines += ["", "## Training settings", ""] + [f"- {k}: {json.dumps(v, default=str)}" for k, v in t.items()]
    lines += ["", "## Loading", "", "```python", "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM",
              f"base = AutoModelForCausalLM.from_pretrained({(hub or base)!r})"
              + ("  # or the lls registry folder, see above" if spec is not None else ""),
              "model = PeftModel.from_pretrained(base, 'path/to/this/folder')", "```", ""]
    return "\n".join(lines)


def selection_settings(data: str | Path) -> dict[str, Any]:
    """The selection settings of a pair file written by ``lls select`` / ``lls build``, from the
    ``summary.json`` beside it (``{}`` when there is none or it is not such a summary)."""
    f = Path(data).expanduser().parent / "summary.json"
    try:
        summ = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(summ, dict):
        return {}
    key = summ.get("key") if isinstance(summ.get("key"), dict) else {}
    sel = key.get("select") if isinstance(key.get("select"), dict) else {}
    out = {k: v for k, v in sel.items() if v is not None}
    for k in ("gamma", "seed", "best_pair_per_prompt", "best_pair_per_prompt_text", "reference", "n_scored",
              "n_positive", "n_selected", "system_prompt"):
        if summ.get(k) is not None:
            out.setdefault(k, summ[k])
    if isinstance(key.get("scores"), dict) and key["scores"].get("sha256"):
        out["scores_sha256"] = key["scores"]["sha256"]
    return {"selection (summary.json beside the pairs)": out} if out else {}


#: Beside each adapter: the base model it was trained from, by content (:func:`check_adapter_base`).
BASE_RECORD = "lls-base.json"


def check_adapter_base(adapter: str | Path, spec: str, revision: str | None = None) -> None:
    """Refuse (one :class:`LLSError` line) to load ``adapter`` onto ``spec`` when the adapter's
    :data:`BASE_RECORD` names another base model by content. A local base folder may have moved: any path
    with the same content is accepted; the recorded path is only a hint."""
    from empirical.engine import models
    from lls_common.errors import LLSError

    f = Path(adapter) / BASE_RECORD
    if not f.is_file():
        return
    try:
        rec = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LLSError(f"{f}: damaged (not JSON); restore it from the training run") from None
    if models.fingerprint_mismatch(rec, models.model_fingerprint(spec, revision)):
        hint = rec.get("path") or rec.get("model")
        raise LLSError(f"adapter {adapter}: trained on {hint} ({models.short_fingerprint(rec)}), but {spec} is "
                       f"{models.short_fingerprint(models.model_fingerprint(spec, revision))}; give the base model "
                       "it was trained from (a moved copy of that folder is fine)")


def _write_cards(cfg: TrainJob, out: Path, base: str, summary: dict[str, Any] | None) -> None:
    from empirical.engine import models
    from lls_common.io import atomic_write_json, atomic_write_text

    cks = list_checkpoints(out)
    base_record = models.model_provenance(cfg.student, cfg.revision)
    for step, p in cks:
        _portable_adapter_config(p, base, cfg.revision)
        atomic_write_json(p / BASE_RECORD, base_record)
        atomic_write_text(p / "README.md", model_card(cfg, base, step, summary))
    if cks:  # the run folder's card (TRL writes one that names no base model): the final checkpoint's
        step, p = cks[-1]
        atomic_write_text(out / "README.md", model_card(cfg, base, step, summary).replace(
            "'path/to/this/folder'", repr(f"path/to/this/folder/{p.name}")))


def _callbacks(save_at: set[int], out: Path, base: str, revision: str | None):
    from transformers import TrainerCallback

    class SaveAt(TrainerCallback):
        """Save at the chosen steps; keep optimizer state only in the newest checkpoint (main process)."""

        def on_step_end(self, args, state, control, **kw):
            if state.global_step in save_at:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kw):
            if not state.is_world_process_zero:
                return control
            cks = list_checkpoints(out)
            for _, p in cks:  # PEFT saved the local path (its vocabulary check reads it); make it portable
                _portable_adapter_config(p, base, revision)
            for _, p in cks[:-1]:
                for name in ("optimizer.pt", "scheduler.pt"):
                    (p / name).unlink(missing_ok=True)
            return control

    return [SaveAt()]


def quiet_trainer_logs(trainer: Any, log_file: Path, progress: bool) -> None:
    """Send the Trainer's per-step log records to ``log_file`` (JSON lines, numbers as numbers) instead of the
    terminal: transformers prints each one as a Python dict with quoted numbers on stdout, between the
    progress bar's lines. The progress bar stays (when ``progress``); stdout keeps lls's own summary only."""
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    class LogFile(TrainerCallback):
        """Append each log record of the main process to ``log_file``."""

        def on_log(self, args, state, control, logs=None, **kw):
            if state.is_world_process_zero and logs:
                rec = {"step": state.global_step, **{k: v for k, v in logs.items() if k != "total_flos"}}
                with open(log_file, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec, default=str) + "\n")
            return control

    class Bar(ProgressCallback):
        """transformers' progress bar without its log lines."""

        def on_log(self, args, state, control, logs=None, **kw):
            return control

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(Bar())
    trainer.add_callback(LogFile())


_SHARED_CACHE = ".datasets-cache"


def _dataset(trl_recs: list[dict[str, Any]], out: Path, ws: int):
    """The training records as a ``datasets.Dataset``. With several processes it is backed by a file in
    ``out`` written by the main process first, so TRL's precomputed reference log-probs (cached by the main
    process next to the dataset's own files) are found by every process; an in-memory dataset would put
    that cache in each process's private temporary folder."""
    from datasets import Dataset

    ds = Dataset.from_list(trl_recs)
    if ws == 1:
        return ds
    from accelerate import PartialState

    folder = out / _SHARED_CACHE
    with PartialState().main_process_first():
        folder.mkdir(parents=True, exist_ok=True)
        return ds.map(lambda x: x, cache_file_name=str(folder / "records.arrow"), load_from_cache_file=True)


def _threads() -> dict[str, Any]:
    """The CPU thread setting in force (:func:`empirical.engine.threads.record`)."""
    from empirical.engine import threads

    return threads.record()


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__,
            "peft": peft.__version__}


def train(cfg: TrainJob, *, model_and_tok: tuple[Any, Any] | None = None,
          stop_after_steps: int | None = None) -> dict[str, Any]:
    """Run (or resume, or return the finished) DPO run described by ``cfg``; returns the summary dict.

    ``stop_after_steps`` (tests) simulates a kill after that many optimizer steps of this call.
    Raises ``ValueError`` on bad settings or data, ``FileNotFoundError`` for an unknown/missing model.

    The steps: check the settings and the run folder (:func:`_finished_run`), read the pairs, load the student
    (:func:`_load_model`), record ``run.json``, build the TRL trainer (:func:`_dpo_args`,
    :func:`_lora_config`), count the optimizer steps (:func:`_total_steps`) and add the checkpoint callbacks,
    train from the newest checkpoint (:func:`_resume_point`), then save the final adapter and write the
    summary (:func:`_summary`, :func:`_finish`).
    """
    import torch
    from trl import DPOConfig

    from empirical.engine import models
    from empirical.stages import packed_dpo
    from lls_common.io import atomic_write_json

    cfg.validate()
    models.silence_library_deprecations()
    out = Path(cfg.out)
    ws = world_size()
    if cfg.batch_size % ws:
        raise LLSError(f"batch_size {cfg.batch_size} must be a multiple of the number of processes ({ws})")
    key = cfg.run_key()
    finished = _finished_run(out, key)
    if finished is not None:
        return finished
    recs = load_pairs_file(cfg.data, cfg.limit)
    torch.manual_seed(cfg.seed)
    model, tok = _load_model(cfg, model_and_tok)
    where = models.placement(model)
    base = models.base_model_id(cfg.student)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "run.json", key)  # only once the model loaded: an unknown model leaves nothing behind
    model.train()
    trl_recs = to_trl_records(tok, recs, cfg.reference)
    args = DPOConfig(**_dpo_args(cfg, out, ws, where))  # under torchrun this sets up the process group
    trainer, forward = packed_dpo.make_trainer(cfg.packed, model=model, args=args,
                                               train_dataset=_dataset(trl_recs, out, ws), processing_class=tok,
                                               peft_config=_lora_config(cfg))
    total = _total_steps(trainer, cfg)
    for cb in _callbacks(set(checkpoint_steps(total, cfg.checkpoints)), out, base, cfg.revision):
        trainer.add_callback(cb)
    quiet_trainer_logs(trainer, out / LOG_FILE, cfg.progress)
    if stop_after_steps is not None:
        trainer.add_callback(_stop_after(stop_after_steps))
    resume_from, step0 = _resume_point(out)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - t0
    step = int(trainer.state.global_step)
    if stop_after_steps is not None and step < total:
        raise KeyboardInterrupt(f"simulated interruption at step {step}")
    if step not in {s for s, _ in list_checkpoints(out)}:
        trainer.save_model(str(out / f"checkpoint-{step}"))  # every process calls it (DeepSpeed/FSDP gather)
    summary = _summary(cfg, out, base=base, n_pairs=len(trl_recs), total=total, step=step, step0=step0, ws=ws,
                       where=where, log_history=trainer.state.log_history, wall=wall)
    summary["forward"] = forward.record()
    _finish(cfg, out, base, summary, ws)
    return summary


def _finished_run(out: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The summary (``train.json``) of the finished run in ``out`` with these settings; None when the run is
    new or unfinished; ``ValueError`` when ``out`` holds a run with other settings (``run.json``)."""
    from lls_common.io import read_json

    run_file = out / "run.json"
    fix = "give --overwrite to train it again, or another --out"
    if run_file.is_file():
        old = read_json(run_file, dict, fix=fix)
        if old != key:
            from empirical.engine import models

            what = "other settings"
            if models.fingerprint_mismatch(old.get("student_fingerprint"), key.get("student_fingerprint") or {}):
                what = (f"a student of {models.short_fingerprint(old['student_fingerprint'])}, but the student is "
                        f"now {models.short_fingerprint(key['student_fingerprint'])}")
            raise LLSError(f"{out}: holds a run made with {what}; give --overwrite to replace it, or another "
                           "--out")
        done_file = out / "train.json"
        if done_file.is_file():
            return read_json(done_file, dict, fix=fix)
    return None


def _load_model(cfg: TrainJob, model_and_tok: tuple[Any, Any] | None) -> tuple[Any, Any]:
    """``(model, tok)``: the given pair, or the student loaded by :func:`empirical.engine.models.load` after its LoRA
    ``target_modules`` were checked against the model's module names (before the weights load)."""
    from empirical.engine import models

    if model_and_tok is not None:
        return model_and_tok
    if cfg.target_modules:
        check_target_modules(cfg.target_modules, model_module_names(cfg.student, cfg.revision,
                                                                    cfg.trust_remote_code))
    return models.load(cfg.student, dtype=cfg.dtype, device=cfg.device, revision=cfg.revision,
                       trust_remote_code=cfg.trust_remote_code)


def _dpo_args(cfg: TrainJob, out: Path, ws: int, where: dict[str, Any]) -> dict[str, Any]:
    """The ``DPOConfig`` arguments of the run: ``cfg``'s settings (``batch_size`` split over the ``ws``
    processes), the model's placement ``where`` (device, dtype), then the validated pass-through ``cfg.dpo_args``."""
    per_device = cfg.batch_size // ws
    use_cpu = where["device"] == "cpu"
    dtype = where["dtype"]
    kwargs: dict[str, Any] = dict(
        output_dir=str(out), beta=cfg.beta, learning_rate=cfg.lr, num_train_epochs=cfg.epochs * cfg.repeat,
        per_device_train_batch_size=per_device, gradient_accumulation_steps=cfg.grad_accum,
        precompute_ref_log_probs=True, precompute_ref_batch_size=max(per_device, 16),
        max_length=cfg.max_length, logging_steps=1, save_strategy="steps", save_steps=10 ** 9,
        report_to=cfg.report_to, seed=cfg.seed, data_seed=cfg.seed, use_cpu=use_cpu, disable_tqdm=not cfg.progress,
        bf16=(dtype == "bfloat16" and not use_cpu), fp16=(dtype == "float16" and not use_cpu),
        dataloader_num_workers=0, lr_scheduler_type="linear", warmup_steps=0, save_only_model=False,
    )
    kwargs[dpo_checkpointing_field()] = cfg.gradient_checkpointing
    if cfg.max_steps is not None:
        kwargs["max_steps"] = cfg.max_steps
    if ws > 1 and use_cpu:
        kwargs["ddp_backend"] = "gloo"
    kwargs.update(dpo_config_kwargs(cfg.dpo_args))
    return kwargs


def dpo_checkpointing_field() -> str:
    """The ``DPOConfig`` field that switches activation recomputation, always passed explicitly: TRL's
    ``DPOConfig`` turns it **on** by default (TRL 1.0-1.16), which recomputes the forward pass in every backward
    (a dearer step, same numbers). transformers >= 5.x names it ``activation_checkpointing`` and warns on the
    older ``gradient_checkpointing`` alias; transformers 5.0 has only the alias."""
    from trl import DPOConfig

    fields = DPOConfig.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def _lora_config(cfg: TrainJob):
    """PEFT ``LoraConfig`` of the run (alpha defaults to 2 × rank; targets: :func:`lora_targets`)."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_rank,
                      lora_dropout=cfg.lora_dropout, target_modules=lora_targets(cfg.target_modules),
                      task_type="CAUSAL_LM")


def _total_steps(trainer: Any, cfg: TrainJob) -> int:
    """The optimizer-step count as the Trainer computes it (per-process batches, accumulation, epochs), or
    ``cfg.max_steps`` when set (the Trainer then stops there, repeating the data if it runs out)."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    n_batches = len(trainer.get_train_dataloader())
    steps_per_epoch = max(n_batches // cfg.grad_accum + int(n_batches % cfg.grad_accum > 0), 1)
    return steps_per_epoch * cfg.epochs * cfg.repeat


def _stop_after(n_steps: int):
    """A callback that stops training after ``n_steps`` optimizer steps of this call (tests: a simulated kill)."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        count = 0

        def on_step_end(self, args, state, control, **kw):
            Stop.count += 1
            if Stop.count >= n_steps:
                control.should_training_stop = True
            return control

    return Stop()


def _resume_point(out: Path) -> tuple[str | None, int]:
    """``(folder, step)`` of the newest checkpoint that can be resumed (trainer state and optimizer saved);
    ``(None, 0)`` when there is none."""
    resume = list_checkpoints(out)
    if resume and (resume[-1][1] / "trainer_state.json").is_file() and (resume[-1][1] / "optimizer.pt").is_file():
        folder = resume[-1][1]
        return str(folder), int(json.loads((folder / "trainer_state.json").read_text())["global_step"])
    return None, 0


def _summary(cfg: TrainJob, out: Path, *, base: str, n_pairs: int, total: int, step: int, step0: int, ws: int,
             where: dict[str, Any], log_history: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    """The ``train.json`` summary: settings, step counts, checkpoints, loss history, timing of this call."""
    per_step = cfg.batch_size * cfg.grad_accum
    history = [h for h in log_history if "loss" in h]
    return {
        "student": cfg.student, "base_model": base, "revision": cfg.revision, "data": str(cfg.data),
        "n_pairs": n_pairs, "total_steps": total, "steps": step, "pairs_per_step": per_step, "world_size": ws,
        "per_device_batch_size": cfg.batch_size // ws, "epochs": cfg.epochs, "repeat": cfg.repeat, "beta": cfg.beta,
        "lr": cfg.lr, "lora_rank": cfg.lora_rank, "target_modules": lora_targets(cfg.target_modules),
        "seed": cfg.seed, "reference": cfg.reference, "resumed_from_step": step0,
        "checkpoints": [{"step": s, "path": p.name} for s, p in list_checkpoints(out)],
        "history": [{k: h[k] for k in ("step", "loss", "rewards/margins", "rewards/accuracies", "learning_rate")
                     if k in h} for h in history],
        "wall_s_this_call": wall,
        "pairs_per_s_this_call": (step - step0) * per_step / wall if wall > 0 else None,
        "device": where["device"], "dtype": where["dtype"], "threads": _threads(), "versions": _versions(),
    }


def _finish(cfg: TrainJob, out: Path, base: str, summary: dict[str, Any], ws: int) -> None:
    """The main process removes the scratch folders and writes the model cards and ``train.json``; with several
    processes the others wait for it."""
    import torch

    from lls_common.io import atomic_write_json

    if is_main_process():
        shutil.rmtree(out / "runs", ignore_errors=True)
        shutil.rmtree(out / _SHARED_CACHE, ignore_errors=True)
        _write_cards(cfg, out, base, summary)
        atomic_write_json(out / "train.json", summary)
    if ws > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # the others return once the main process has written the run files


# ---------------------------------------------------------------------------------------------- lls train
def trained_reference(run: str | Path) -> str | None:
    """The reference rendering an ``lls train`` run used (its run.json / train.json), None if unknown."""
    for name in ("train.json", "run.json"):
        try:
            rec = json.loads((Path(run) / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and isinstance(rec.get("reference"), str):
            return rec["reference"]
    return None


def check_reference(reference: str, recorded: str | None, what: str, verb: str) -> None:
    """Refuse to mix two no-system renderings (``score.reference``): ``what`` was ``verb`` under
    ``recorded``. Mixing them changes what "no system prompt" means between the stages (SmolLM2's persona
    or an empty system turn), which silently corrupts the weights / z_M; the fix is one flag."""
    if recorded is not None and recorded != reference:
        raise LLSError(f"{what} was {verb} with reference rendering {recorded!r}, this command uses {reference!r}; "
                       f"pass --reference {recorded} (the same rendering in every stage)")


def check_trained_references(reference: str, runs: Any) -> None:
    """Refuse ``lls train`` runs (None entries skipped) trained under another no-system rendering than
    ``reference`` (correlate and eval score their checkpoints under ``reference``)."""
    for run in runs:
        if run is not None:
            check_reference(reference, trained_reference(run), f"run {run}", "trained")


def train_warnings(data_path: str, limit: int | None) -> list[str]:
    """Before any model work: the pair file's pairs counted by the reader ``lls train`` uses (a damaged or
    empty file is refused here, in one line) and a tiny training set warned about."""
    from empirical.stages import data
    from empirical.config import tiny_subset_warning

    if data.looks_like_hub_id(data_path):
        return []
    n = len(load_pairs_file(data_path, limit))
    w = tiny_subset_warning(n, f"the training data {data_path}" + (f" (--limit {limit})" if limit else ""))
    return [w] if w else []


def clear_other_run(out: Path, key: dict) -> None:
    """``--overwrite``: empty ``out`` (the lock kept) when it holds an ``lls train`` run made with other settings
    (its ``run.json`` differs from ``key``); a run with the same settings is resumed or kept as it is."""
    import shutil

    from lls_common.io import json_key, read_json

    run_file = out / "run.json"
    if not run_file.exists():
        return
    try:
        same = read_json(run_file, dict) == json_key(key)
    except LLSError:  # a damaged record: the run cannot be resumed anyway
        same = False
    if same:
        return
    for p in out.iterdir():
        if p.name != ".lock":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def run_train(job: TrainJob, *, overwrite: bool = False, warn: Any = print) -> dict[str, Any]:
    """``lls train``: every check before any model work, then :func:`train` under the output guards.

    Refused before anything loads: a pair file selected under another reference rendering, an ``out`` that is
    the data's folder or not writable, an unknown student, an unreachable hub dataset, a damaged or empty pair
    file, a bad ``report_to`` / ``dpo_args``. A tiny training set is warned about (``warn``, one line each).
    ``out.lock`` guards the run; ``overwrite`` empties an ``out`` holding a run with other settings; a new
    ``out`` left empty by a failure is removed. Returns the summary with ``warnings``.
    """
    from empirical.engine import models
    from empirical.stages import data
    from empirical.stages.build import pairs_reference
    from lls_common.io import OutputLock, check_output, remove_if_empty

    check_reference(job.reference, pairs_reference(job.data), f"data {job.data}", "selected")
    # the data itself: empirical.stages.data's reader; an out folder holding the data (the select folder) is refused
    check_output(job.out, inputs=(job.data,), kind="dir", name="out", inputs_inside=False)
    models.check_model_setting(job.student, "--student", revision=job.revision,
                               trust_remote_code=job.trust_remote_code)
    if data.looks_like_hub_id(job.data):  # refused now, not after the trainer's imports (minutes)
        data.check_hub_dataset(job.data)
    warnings = train_warnings(job.data, job.limit)
    for line in warnings:
        warn(line)
    fresh = not Path(job.out).exists()
    try:
        job.validate()
        with OutputLock(job.out, kind="dir", name="out"):
            if overwrite:
                clear_other_run(Path(job.out), job.run_key())
            summary = train(job)
    except BaseException:
        remove_if_empty(job.out, fresh)
        raise
    return {**summary, "warnings": warnings}
