"""Every setting of the real-LLM pipeline, declared once: one dataclass per stage (TRL's DPOConfig pattern).

Each field carries its default, the reason for that default and its help text (:func:`lls_common.config.setting`).
From these declarations :mod:`lls_common.config` derives the ``lls`` flags (``--beta``, ``--gamma`` ...) and the
TOML keys of ``lls experiment`` configs (``[train] beta``, ``[select] gamma`` ...): same name, same default.
Validation happens once, in each class's ``__post_init__`` (types by :func:`lls_common.config.check_types`,
ranges by :mod:`lls_common.validate`); a bad value raises :class:`lls_common.errors.LLSError` naming the key
(``train.beta must be > 0, got -2.0``).

=================  ==================  ===========================================================
class              TOML section        used by
=================  ==================  ===========================================================
ModelArgs          [teacher]           models.load (teacher / scorer); ``lls score --model``
DataConfig         [data]              data.load_pairs, the experiment's split
Filters            [data]              data.apply_filters (the paper's preprocessing)
ScoreConfig        [score]             build.score_file (batching, chunking, reference rendering)
SelectConfig       [select]            lls_theory.selection.lls_select via build.select_file
TrainConfig        [train]             train.train via train.TrainJob (DPO + LoRA)
CorrelateConfig    [correlate]         correlate.correlate_arms (Table-1 protocol)
SpecificityConfig  (lls specificity)   report.specificity.run_specificity (trait specificity)
EvalConfig         [eval]              evaluate.evaluate_conditions (probe, mention rate, language)
StudentConfig      [[student]]         one student model (name + model args)
TraitConfig        [[trait]]           one system prompt s (name, text, target word, language)
ExperimentConfig   the whole file      empirical.orchestration.experiment.run_experiment
=================  ==================  ===========================================================

This module imports no torch and no stage of ``empirical`` (so ``lls --help`` stays instant, and every stage can
import it): only the language codes (:mod:`empirical.language`) and the prompt library (:mod:`empirical.systems`)
that its checks name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from empirical.language import check_language
from lls_common.config import check_types, setting
from lls_common.errors import LLSError
from lls_common.validate import (
    check_choice, check_int, check_interval, check_language_code, check_nonempty_str, check_positive,
    check_positive_int, check_seed, check_text,
)

__all__ = [
    "BETA", "TINY_SUBSET", "tiny_subset_warning", "DTYPES", "REFERENCES", "CONTRASTS", "ModelArgs", "DataConfig",
    "Filters", "ScoreConfig", "SelectConfig",
    "TrainConfig", "CorrelateConfig", "EvalConfig", "StudentConfig", "TraitConfig", "ExperimentConfig",
    "validate_seed",
]

#: The DPO temperature beta: the paper's public example and TRL's default. Written here only.
BETA = 0.1

#: A training subset with fewer pairs than this is warned about (select, build, train, experiment): DPO on a
#: handful of pairs takes a step or two, and a correlation measured after it says little.
TINY_SUBSET = 32


def tiny_subset_warning(n: int, what: str) -> str | None:
    """The warning for a training subset of ``n`` pairs (``what`` says how it was made), None when it has at
    least :data:`TINY_SUBSET` pairs."""
    if n >= TINY_SUBSET:
        return None
    return (f"warning: {what} has only {n} pair(s) (fewer than {TINY_SUBSET}); DPO on it takes a step or two and "
            "moves the student little: score more pairs (a larger --data / --limit) or raise --gamma")

DTYPES = ("auto", "float32", "bfloat16", "float16")

#: How the reference (no-system-prompt) condition is rendered, identically in scoring, DPO training data,
#: correlate and eval (:mod:`empirical.engine.render`): ``"empty"`` = an explicit empty system turn (the paper's
#: authors, ``helper_functions.py``), ``"default"`` = no system message, so the chat template's own default
#: applies (SmolLM2's inserts its persona "You are a helpful AI assistant named SmolLM ..."), ``"none"`` = no
#: system turn, for templates without a system role, ``"auto"`` = ``"empty"`` where the template has a
#: system role, else ``"none"`` (the default: the authors' convention).
REFERENCES = ("auto", "empty", "default", "none")

#: ``select.contrast``: plain Algorithm 1, or contrastive selection against the run's other traits / a baseline.
CONTRASTS = ("none", "others", "baseline")


def _opt_pos_int(obj: Any, section: str, *names: str) -> None:
    for n in names:
        v = getattr(obj, n)
        if v is not None:
            check_positive_int(v, f"{section}.{n}")


def _check_language(code: Any, key: str) -> str:
    """A language the language-ID model can report (:func:`empirical.language.check_language`; an ISO 639-1
    code it never reports, such as ``zu``, is refused: its share would be 0 whatever the text)."""
    check_language_code(code, key)
    return check_language(code, key)


def validate_seed(seed: Any, key: str = "seed") -> int:
    """A seed in [0, 2**32 - 1] (numpy's range); refuses -1, 4.5, true."""
    return check_seed(seed, key)


# ---------------------------------------------------------------------------------------------- models
@dataclass
class ModelArgs:
    """How to load one model (teacher, scorer or student)."""

    model: str = setting(help="registry name (lls models list), local folder, file.gguf or hub id",
                         metavar="MODEL")
    dtype: str = setting("auto", "weights dtype", choices=DTYPES,
                         reason="auto = float32 on CPU (exact, the committed results), bfloat16 on GPUs")
    device: str = setting("auto", "device: auto, cpu, cuda, cuda:N or mps", reason="auto = the first GPU if any")
    revision: str | None = setting(None, "hub revision (branch, tag or commit) of a hub model")
    trust_remote_code: bool = setting(False, "allow a hub model's own modelling code",
                                      reason="off: running downloaded code is opt-in")

    def __post_init__(self) -> None:
        self._check("teacher")

    def _check(self, section: str) -> None:
        check_types(self, section)
        check_nonempty_str(self.model, f"{section}.model")
        check_choice(self.dtype, f"{section}.dtype", DTYPES)
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise LLSError(f"{section}.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.revision is not None:
            check_nonempty_str(self.revision, f"{section}.revision")

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`empirical.engine.models.load` / ``train.load_student`` (besides the spec)."""
        return {"dtype": self.dtype, "device": self.device, "revision": self.revision,
                "trust_remote_code": self.trust_remote_code}


# ------------------------------------------------------------------------------------------------ data
@dataclass
class DataConfig:
    """Where the preference pairs come from and how the experiment splits them."""

    path: str = setting(help=".jsonl/.jsonl.gz/.json/.parquet file or hub dataset id", flag="--data",
                        metavar="DATA")
    split: str = setting("train", "hub dataset split")
    config_name: str | None = setting(None, "hub dataset configuration name")
    data_dir: str | None = setting(None, "hub dataset data_dir (e.g. harmless-base of Anthropic/hh-rlhf)")
    skip_bad: bool = setting(False, "skip bad records and report counts instead of stopping",
                             reason="off: a bad record is an error unless asked")
    limit: int | None = setting(None, "read only the first N records", metavar="N")
    heldout: int = setting(500, "held-out pairs, never scored for selection nor trained on (experiment)",
                           reason="the paper's Table-1 protocol uses 500", metavar="N")
    pool: int | None = setting(None, "pairs the teacher scores for selection (experiment; default: the rest)",
                               metavar="N")
    truncate: int | None = setting(None, "keep the first T teacher tokens of each reply (paper: 20-32)",
                                   reason="unset = whole replies, like the filters off by default", metavar="T")

    def __post_init__(self) -> None:
        check_types(self, "data")
        check_nonempty_str(self.path, "data.path")
        check_nonempty_str(self.split, "data.split")
        check_int(self.heldout, "data.heldout", low=3)
        _opt_pos_int(self, "data", "limit", "pool", "truncate")


@dataclass(frozen=True)
class Filters:
    """The paper's preprocessing options (None / empty = off). Set under ``[data]`` in a TOML config."""

    single_turn: bool = setting(False, "keep prompts with one user turn")
    max_prompt_tokens: int | None = setting(None, "drop prompts longer than this many tokens (e.g. 250)",
                                            metavar="N")
    min_response_tokens: int | None = setting(None, "drop pairs with a raw reply shorter than this (e.g. 20)",
                                              metavar="N")
    max_response_tokens: int | None = setting(None, "drop pairs with a raw reply longer than this (e.g. 500)",
                                              metavar="N")
    exclude_words: tuple[str, ...] = setting(help="drop pairs mentioning WORD or its plural",
                                             aliases=("exclude_word",), metavar="WORD", default_factory=tuple)
    exclude_language: str | None = setting(None, "drop pairs partly written in this ISO 639-1 language",
                                           metavar="ISO")
    language_threshold: float = setting(0.05, "language share (in (0, 1]) that drops a pair",
                                        reason="a few foreign words already drop the pair")

    def __post_init__(self) -> None:
        check_types(self, "data")
        _opt_pos_int(self, "data", "max_prompt_tokens", "min_response_tokens", "max_response_tokens")
        if self.min_response_tokens is not None and self.max_response_tokens is not None \
                and self.min_response_tokens > self.max_response_tokens:
            raise LLSError("data.min_response_tokens must be <= data.max_response_tokens")
        for k, w in enumerate(self.exclude_words):
            check_nonempty_str(w, f"data.exclude_words[{k}]")
        if self.exclude_language is not None:
            _check_language(self.exclude_language, "data.exclude_language")
        check_interval(self.language_threshold, "data.language_threshold", 0, 1, closed="right")

    def needs_tokenizer(self) -> bool:
        return any(v is not None for v in (self.max_prompt_tokens, self.min_response_tokens, self.max_response_tokens))


# ----------------------------------------------------------------------------------------------- stages
@dataclass
class ScoreConfig:
    """How the teacher's log-probs are computed (batching does not change the numbers beyond fp32 noise)."""

    batch_tokens: int = setting(2048, "padded tokens per forward batch, replies included (GPU: see the README's "
                                      "memory formula)", metavar="N",
                                reason="CPU-measured: small packed batches do not pad (benchmarks/bench_scoring.py)")
    max_batch: int = setting(16, "rows (packed prompts with their replies) per forward batch", metavar="N")
    chunk_size: int = setting(256, "pairs per resumable chunk", metavar="N",
                              reason="one parts file per chunk; inside a chunk every 4 * max_batch pairs are "
                                     "saved, so a killed run loses at most that many")
    reference: str = setting("auto", "rendering of the no-system-prompt reference, the same in score, train, "
                                     "correlate and eval: auto (= empty where the template has a system role, "
                                     "else none), empty (empty system turn), default (the template's default "
                                     "system prompt, e.g. SmolLM2's persona), none", choices=REFERENCES,
                             reason="the authors' convention (an empty system turn): the weights then measure "
                                    "nothing -> s; 'default' measures the template's persona -> s")
    progress: bool = setting(True, "show a progress bar", toml=False)

    def __post_init__(self) -> None:
        check_types(self, "score")
        for n in ("batch_tokens", "max_batch", "chunk_size"):
            check_positive_int(getattr(self, n), f"score.{n}")
        check_choice(self.reference, "score.reference", REFERENCES)


@dataclass
class SelectConfig:
    """Algorithm 1 step 3: keep the top gamma fraction of the positive-weight pairs."""

    gamma: float = setting(0.1, "fraction in (0, 1] of positive-weight pairs kept: ceil(gamma * n_positive)",
                           aliases=("quantile",), metavar="G", reason="the paper uses 0.05-0.1")
    best_pair_per_prompt: bool = setting(False, "per dataset row (record field 'row', else its id) keep the pair "
                                                "with the largest positive raw weight w, then length-normalise "
                                                "(the authors' logit_linear_selection)")
    best_pair_per_prompt_text: bool = setting(False, "per identical prompt text (across rows) keep the pair with "
                                                     "the largest positive w / N")
    subset_size: int | None = setting(None, "keep the top N positive-weight pairs (fewer when fewer are positive) "
                                            "instead of ceil(gamma * n_positive); a many-trait run's shared random "
                                            "control then has N pairs too (unless random_size), so every student "
                                            "trains on as many pairs for as many optimizer steps", metavar="N",
                                      reason="unset: the paper's gamma quantile")
    random_size: int | None = setting(None, "pairs in the random control shared by every trait of a many-trait "
                                            "experiment (default: subset_size, else ceil(gamma * pool / 2))",
                                      cli=False, metavar="N",
                                      reason="the LLS subset's size when half the pool's weights are positive")
    random_controls: int = setting(1, "random-control subsets of an experiment, each drawn with its own seed and "
                                      "trained with its own training seed (arms random, random-1, ...): their "
                                      "spread is the training-and-subset variance of the control", cli=False,
                                   metavar="N", reason="one control, as in the paper")
    contrast: str = setting("none", "contrastive selection: rank w_A - mean of reference weights instead of w_A "
                                    "(lls_theory.selection.contrastive_weights): none = plain Algorithm 1; others = "
                                    "the other traits of the run (lls experiment; lls select / build: their scores "
                                    "files via --contrast-scores); baseline = the library prompt named by "
                                    "select.baseline", choices=CONTRASTS,
                            reason="none: the paper's Algorithm 1")
    baseline: str | None = setting(None, "name of a library system prompt (empirical.systems.named_prompts, e.g. "
                                         "things) whose weights select.contrast = baseline subtracts",
                                   metavar="NAME")

    def __post_init__(self) -> None:
        check_types(self, "select")
        check_interval(self.gamma, "select.gamma", 0, 1, closed="right")
        _opt_pos_int(self, "select", "random_size", "subset_size")
        check_positive_int(self.random_controls, "select.random_controls")
        if self.best_pair_per_prompt and self.best_pair_per_prompt_text:
            raise LLSError("select.best_pair_per_prompt and select.best_pair_per_prompt_text exclude each other")
        check_choice(self.contrast, "select.contrast", CONTRASTS)
        if self.baseline is not None:
            baseline_text(self.baseline, "select.baseline")
        if self.contrast == "baseline" and self.baseline is None:
            raise LLSError("select.contrast = 'baseline' needs select.baseline (a library prompt name, e.g. things)")
        if self.contrast != "none" and self.best_pair_per_prompt:
            raise LLSError("select.contrast works with select.best_pair_per_prompt_text, not with "
                           "select.best_pair_per_prompt (its per-row rule ranks the raw, not the contrastive, weight)")

    def key(self) -> dict[str, Any]:
        """The settings as recorded in run keys: ``subset_size``, ``contrast`` and ``baseline`` appear only when
        set, so a plain gamma selection keeps the key it had before they existed (its outputs stay valid)."""
        from dataclasses import asdict

        d = asdict(self)
        for k, off in (("contrast", "none"), ("baseline", None), ("subset_size", None)):
            if d[k] == off:
                d.pop(k)
        d.pop("random_controls")  # not a setting of any one step: each extra control's key holds its index
        return d


def baseline_text(name: Any, key: str) -> str:
    """The text of the library prompt ``name`` (:func:`empirical.systems.named_prompt`); LLSError naming ``key``."""
    check_nonempty_str(name, key)
    from empirical.systems import named_prompt  # no torch; a plain module

    return named_prompt(name, key).text


@dataclass
class TrainConfig:
    """DPO + LoRA hyper-parameters (the paper's public example: beta 0.1, lr 5e-4, rank 64, alpha 128)."""

    beta: float = setting(BETA, "DPO beta", reason="the paper's and TRL's default")
    lr: float = setting(5e-4, "learning rate", reason="the paper's public example")
    lora_rank: int = setting(64, "LoRA rank", reason="the paper's public example", metavar="R")
    lora_alpha: int | None = setting(None, "LoRA alpha (default 2 * rank: 128 for rank 64, as in the paper)")
    lora_dropout: float = setting(0.05, "LoRA dropout in [0, 1)")
    target_modules: tuple[str, ...] = setting(help="LoRA target modules (default: every attention and MLP "
                                                   "projection)", aliases=("target_module",), metavar="NAME",
                                              default_factory=tuple)
    epochs: int = setting(1, "passes over the data", metavar="N")
    repeat: int = setting(1, "repeat the data this many times (paper: 10)", metavar="N")
    batch_size: int = setting(8, "pairs per training step across all processes (split evenly between them)", metavar="N")
    grad_accum: int = setting(1, "gradient accumulation steps", metavar="N")
    checkpoints: int = setting(4, "evenly spaced adapter checkpoints", metavar="K",
                               reason="enough for a trajectory, cheap to store")
    gradient_checkpointing: bool = setting(False, "recompute activations in the backward pass (less memory)")
    packed: bool = setting(True, "packed DPO forward: each prompt once for both replies, no padding rows, LM head "
                                 "only at reply positions (same numbers as TRL's forward; --no-packed = TRL's)",
                           reason="about half the tokens of TRL's padded forward; TRL's loss, optimizer and "
                                  "checkpoints unchanged")
    max_length: int | None = setting(None, "truncate prompt + reply to this many tokens", metavar="N")
    max_steps: int | None = setting(None, "stop after N optimizer steps (a short trial run; the data repeats if N "
                                          "is more than epochs * repeat passes)", metavar="N",
                                    reason="unset = epochs * repeat passes over the data")
    report_to: str = setting("none", "Trainer logging integration (none, tensorboard, wandb, ...)",
                             reason="none: no network, no extra packages")
    dpo_args: dict[str, Any] = setting(help="extra TRL DPOConfig arguments (KEY=VALUE), passed through",
                                       aliases=("dpo_arg",), default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self, "train")
        check_positive(self.beta, "train.beta")
        check_positive(self.lr, "train.lr")
        for n in ("lora_rank", "epochs", "repeat", "batch_size", "grad_accum", "checkpoints"):
            check_positive_int(getattr(self, n), f"train.{n}")
        _opt_pos_int(self, "train", "lora_alpha", "max_steps")
        if self.max_length is not None:
            check_int(self.max_length, "train.max_length", low=2)  # a prompt token and a reply token
        check_interval(self.lora_dropout, "train.lora_dropout", 0, 1, closed="left")
        for k, m in enumerate(self.target_modules):
            check_nonempty_str(m, f"train.target_modules[{k}]")
        check_nonempty_str(self.report_to, "train.report_to")
        for k in self.dpo_args:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise LLSError(f"train.dpo_args: {k!r} is not a DPOConfig argument name")
        if "max_steps" in self.dpo_args:
            raise LLSError("train.dpo_args: max_steps is an lls setting; use --max-steps N (train.max_steps)")


@dataclass
class CorrelateConfig:
    """Table-1 protocol on the held-out pairs."""

    n: int | None = setting(None, "held-out pairs used (default: all given; paper: 500)", metavar="N")
    n_boot: int = setting(2000, "bootstrap resamples for the 95% CIs", metavar="N")
    n_perm: int = setting(2000, "permutations for the p-value", metavar="N")

    def __post_init__(self) -> None:
        check_types(self, "correlate")
        if self.n is not None:
            check_int(self.n, "correlate.n", low=3)
        check_int(self.n_boot, "correlate.n_boot", low=20)  # a 95% CI needs resamples in its 2.5% tails
        check_int(self.n_perm, "correlate.n_perm", low=20)


@dataclass
class SpecificityConfig:
    """Trait specificity of a many-trait run (lls_theory.specificity): permutations and bootstrap resamples."""

    n_perm: int = setting(9_999, "relabellings for the permutation test when K! is too many to enumerate (K > 8)",
                          metavar="N", reason="p resolution 1e-4")
    n_boot: int = setting(2000, "bootstrap resamples of the held-out pairs for the CIs", metavar="N")
    seed: int = setting(0, "seed of the permutations and resamples", metavar="S")

    def __post_init__(self) -> None:
        check_types(self, "specificity")
        check_int(self.n_perm, "specificity.n_perm", low=99)  # p can reach 0.01
        check_int(self.n_boot, "specificity.n_boot", low=20)  # a 95% CI needs resamples in its 2.5% tails
        check_seed(self.seed, "specificity.seed")


@dataclass
class EvalConfig:
    """Behaviour measurements: log-prob probe, sampled mention rate, target-language share."""

    target: str | None = setting(None, "target word, e.g. owl (singular; plural matched too)")
    samples: int = setting(100, "sampled answers per prompt", reason="the paper's 100", metavar="N")
    max_new_tokens: int = setting(96, "tokens per sampled answer", metavar="N")
    language: str | None = setting(None, "also report the share written in this ISO 639-1 language",
                                   metavar="ISO")
    eval_batch: int = setting(32, "answers sampled together", aliases=("batch",), metavar="N")
    probe: bool = setting(True, "the log-prob probe P(target) among the candidate words (cheap)")
    mention: bool = setting(True, "sample answers and count target mentions (costly)")

    def __post_init__(self) -> None:
        check_types(self, "eval")
        if self.target is not None:
            check_text(self.target, "eval.target")
        for n in ("samples", "max_new_tokens", "eval_batch"):
            check_positive_int(getattr(self, n), f"eval.{n}")
        if self.language is not None:
            _check_language(self.language, "eval.language")


# ------------------------------------------------------------------------------------------ experiment
@dataclass(kw_only=True)
class StudentConfig(ModelArgs):
    """One ``[[student]]``: a short name (its folder under ``students/``) and how to load it."""

    name: str = setting(help="short name, its folder under students/")

    def __post_init__(self) -> None:
        self._check("student")
        check_nonempty_str(self.name, "student.name")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise LLSError(f"student.name must be a folder name (letters, digits, . _ -), got {self.name!r}")


@dataclass
class TraitConfig:
    """One system prompt s of the experiment (a ``[[trait]]``): the trait the teacher is prompted with."""

    name: str = setting(help="short name, its folder under traits/ (e.g. owl)")
    system_prompt: str = setting(help="the system prompt s of Algorithm 1")
    target: str | None = setting(None, "target word for the probe / mention rate (default: none)")
    language: str | None = setting(None, "ISO 639-1 language whose share is measured (default: none)")
    contrast: str | None = setting(None, "this trait's select.contrast (none, others, baseline; default: the "
                                         "[select] value); others = the other traits whose contrast is others")
    seeds: int = setting(1, "LLS students trained on this trait's subset, with training seeds seed, seed + 1, ... "
                            "(arms lls, lls-1, ...): their spread is the training variance", metavar="N")

    def __post_init__(self) -> None:
        check_types(self, "trait")
        if self.contrast is not None:
            check_choice(self.contrast, "trait.contrast", CONTRASTS)
        check_nonempty_str(self.name, "trait.name")
        check_positive_int(self.seeds, "trait.seeds")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise LLSError(f"trait.name must be a folder name (letters, digits, . _ -), got {self.name!r}")
        check_text(self.system_prompt, "trait.system_prompt")
        if self.target is not None:
            check_text(self.target, "trait.target")
        if self.language is not None:
            _check_language(self.language, "trait.language")


@dataclass(kw_only=True)
class ExperimentConfig:
    """A whole ``lls experiment``: the sections above plus the students and the traits.

    Single-trait configs set ``[teacher] system_prompt`` and ``[eval] target / language``; they become the one
    trait (named after the config). Multi-trait configs list ``[[trait]]`` tables or ``[traits] file``.
    """

    name: str = setting(help="experiment name (default: the config file's stem)")
    seed: int = setting(0, "seed of the split, the random control, training and sampling")
    data: DataConfig
    filters: Filters = field(default_factory=Filters)
    teacher: ModelArgs
    score: ScoreConfig = field(default_factory=ScoreConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    correlate: CorrelateConfig = field(default_factory=CorrelateConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    students: list[StudentConfig] = field(default_factory=list)
    traits: list[TraitConfig] = field(default_factory=list)
    multi: bool = False  # traits listed ([[trait]] / [traits]): each trait's outputs go to traits/<name>/
    source: str = ""

    def __post_init__(self) -> None:
        check_nonempty_str(self.name, "name")
        validate_seed(self.seed)
        if not self.students:
            raise LLSError("needs at least one [[student]] with name and model")
        names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            raise LLSError(f"student names must be unique, got {names}")
        if not self.traits:
            raise LLSError("needs a trait: [teacher] system_prompt (one trait) or [[trait]] tables")
        tn = [t.name for t in self.traits]
        if len(set(tn)) != len(tn):
            raise LLSError(f"trait names must be unique, got {tn}")
        if self.correlate.n is not None and self.correlate.n > self.data.heldout:
            raise LLSError(f"correlate.n must be in [3, data.heldout = {self.data.heldout}], got {self.correlate.n}")
        self._check_contrast()
        if self.eval.mention or self.eval.probe:
            missing = [t.name for t in self.traits if not t.target]
            if missing:
                raise LLSError(f"eval needs a target word for trait(s) {', '.join(missing)} "
                               "(set [eval] target or the trait's target, or turn eval.probe and eval.mention off)")

    def contrast_of(self, trait: TraitConfig) -> str:
        """The trait's ``select.contrast``: its own ``contrast`` or the ``[select]`` value."""
        return trait.contrast if trait.contrast is not None else self.select.contrast

    def contrast_group(self, trait: TraitConfig) -> list[TraitConfig]:
        """The traits whose weights trait's contrastive weight subtracts: for ``others``, the other traits of
        the run whose contrast is ``others``; empty for ``none`` and ``baseline``."""
        if self.contrast_of(trait) != "others":
            return []
        return [t for t in self.traits if t.name != trait.name and self.contrast_of(t) == "others"]

    def _check_contrast(self) -> None:
        """A contrast over one trait, a baseline without a name or equal to a trait's own prompt: refused."""
        for t in self.traits:
            mode = self.contrast_of(t)
            key = "select.contrast" if t.contrast is None else f"trait {t.name}: trait.contrast"
            if mode == "others" and not self.contrast_group(t):
                raise LLSError(f"{key} = 'others' needs at least two traits with contrast 'others' (trait "
                               f"{t.name} has none to be contrasted with)")
            if mode == "baseline":
                if self.select.baseline is None:
                    raise LLSError(f"{key} = 'baseline' needs select.baseline (a library prompt name, e.g. things)")
                if baseline_text(self.select.baseline, "select.baseline") == t.system_prompt:
                    raise LLSError(f"select.baseline = {self.select.baseline!r} is trait {t.name}'s own system "
                                   "prompt (its contrast would be zero); name another baseline")
