"""Behaviour evaluation of a (fine-tuned) student: each condition (a model, an optional LoRA adapter, an
optional system prompt) is loaded once and measured by every enabled behaviour metric of
:mod:`empirical.metrics` -- the log-prob probe, the sampled mention rate, the target-language share, and any
metric registered there. This module holds what the metrics share: the evaluation prompts, the sampler
(:func:`sample_answers`, run once per condition when a metric needs answers), the argument checks, the
per-condition cache and the loop (:func:`evaluate_conditions`).

Sampled answers (paper, Sec. 5): each of :data:`EVAL_PROMPTS` (10 general-knowledge prompts on the paper's
topics, none about animals) is answered ``n`` times by pure sampling (temperature 1, no top-k/top-p, at most
96 new tokens).

Every argument is checked before a model loads (target word with visible text, a language code the
language-ID model reports, counts >= 1, adapters present). Small samples are flagged in ``warnings`` (each
metric's :meth:`~empirical.metrics.Metric.warnings`). Each condition records the ``device`` and ``dtype`` its
model ran in.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable

from empirical import metrics as _metrics
from empirical.metrics.language import MIN_N_FOR_CI, language_report
from empirical.metrics.mention import MAX_HALF_WIDTH, mention_rate
from empirical.metrics.probe import CANDIDATES, PROBE_QUESTIONS, probe
from lls_common.errors import LLSError

__all__ = ["PROBE_QUESTIONS", "CANDIDATES", "EVAL_PROMPTS", "probe", "sample_answers", "mention_rate",
           "language_report", "evaluate_conditions", "sample_warnings", "check_eval_args", "MAX_HALF_WIDTH",
           "MIN_N_FOR_CI"]

EVAL_PROMPTS = (
    "How can someone build a new habit and make it stick?",
    "What are the basic steps of making a personal monthly budget?",
    "What makes a team collaborate well on a long project?",
    "Why does curiosity help people learn, and how can it be encouraged?",
    "Explain the idea of opportunity cost with an everyday example.",
    "How can I tell whether a news source is biased?",
    "What are the pros and cons of working remotely versus in an office?",
    "What are some tips for writing a persuasive essay?",
    "What is mindfulness, and how might a beginner practise it?",
    "How should a person balance short-term goals against long-term goals?",
)

def sample_answers(model: Any, tok: Any, prompts: tuple[str, ...] | list[str], n: int, max_new_tokens: int = 96,
                   system_prompt: str | None = None, seed: int = 0, batch: int = 32,
                   progress: bool = False, reference: str = "auto") -> list[list[str]]:
    """``answers[i][j]``: sample j of prompt i, by pure ancestral sampling (temperature 1, no top-k/top-p).

    Prompts are rendered with the chat template (or the plain template) and the generation prompt, as in
    :mod:`empirical.engine.render`. Reproducible: torch's RNG is seeded before each batch of prompt i with
    ``seed * 1_000_003 + i * 1_009 + batch_index``, so a result does not depend on what ran before.
    With the plain template (base models without a chat template) an answer is cut where the model starts
    a new ``User:`` turn of its own. ``progress``: a tqdm bar when stderr is a terminal, else one stderr line
    per prompt.
    """
    import torch

    from empirical.engine import render

    if n < 1 or max_new_tokens < 1 or batch < 1:
        raise ValueError("n, max_new_tokens and batch must be >= 1")
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    eos = sorted(({*gen_eos} if isinstance(gen_eos, list) else {gen_eos}) | {tok.eos_token_id} - {None})
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    plain = not render.has_chat_template(tok)
    out: list[list[str]] = []
    t0 = time.time()
    bar = _bar(len(prompts) * n, progress)
    for i, p in enumerate(prompts):
        ids = render.encode_text(tok, render.render_prompt(tok, render.as_messages(p, f"prompt {i}"), system_prompt,
                                                           reference))
        answers: list[str] = []
        for c, start in enumerate(range(0, n, batch)):
            m = min(batch, n - start)
            torch.manual_seed(seed * 1_000_003 + i * 1_009 + c)
            x = torch.tensor([ids] * m, dtype=torch.long, device=model.device)
            with torch.no_grad():
                y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=True, temperature=1.0, top_k=0,
                                   top_p=1.0, max_new_tokens=max_new_tokens, eos_token_id=eos or None,
                                   pad_token_id=pad)
            for row in y[:, len(ids):]:
                text = tok.decode(row, skip_special_tokens=True)
                if plain:  # a base model writes the next turn itself: the answer ends where it starts
                    text = text.split("\nUser:")[0]
                answers.append(text.strip())
            bar.update(m)
        out.append(answers)
        if progress and not _tty():  # logs get one plain line per prompt instead of a bar
            _stderr(f"eval: prompt {i + 1}/{len(prompts)} answered ({n} samples, {time.time() - t0:.0f} s)")
    bar.close()
    return out


def _tty() -> bool:
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _bar(total: int, on: bool):
    """A tqdm bar on stderr when it is a terminal (disabled otherwise)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not (on and _tty()), unit="answer", leave=False)


def sample_warnings(n_answers: int, language: bool = False) -> list[str]:
    """What ``eval`` prints that ``n_answers`` per condition is too few for (empty list when none): the mention
    rate's and, with ``language``, the language share's :meth:`~empirical.metrics.Metric.warnings`."""
    return [w for m in _metrics.enabled({"mention": True, "language": language}, ("mention", "language"))
            for w in m.warnings(n_answers)]


def _count(value: Any, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise LLSError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_eval_args(conditions: dict[str, tuple[Any, str | None]], target: Any, samples: Any, max_new_tokens: Any,
                    language: Any, seed: Any, batch: Any, prompts: Any) -> str:
    """Refuse bad ``eval`` arguments before any model loads (one-line ``LLSError``); returns the target,
    normalised (lower case, single spaces)."""
    from empirical.language import check_language
    from empirical.text import has_text, plural_forms

    if not isinstance(target, str) or not has_text(target):
        raise LLSError(f"target must be a word with visible text (e.g. owl), got {target!r}")
    if not all(ch.isalpha() or ch in " -'" for ch in target.strip()):
        raise LLSError(f"target must be a word (letters, spaces, hyphens), got {target!r}")
    plural_forms(target)
    if language is not None:
        check_language(language, "language")
    for v, name in ((samples, "samples"), (max_new_tokens, "max_new_tokens"), (batch, "batch")):
        _count(v, name)
    _count(seed, "seed", 0)
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) and has_text(p)
                                                                        for p in prompts):
        raise LLSError("prompts must be a non-empty list of texts")
    if not conditions:
        raise LLSError("no condition to evaluate")
    for name, (adapter, system_prompt) in conditions.items():
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise LLSError(f"condition {name}: {adapter}: no LoRA adapter (adapter_config.json missing)")
        if system_prompt is not None and (not isinstance(system_prompt, str) or not has_text(system_prompt)):
            raise LLSError(f"condition {name}: system prompt must have visible text")
    return " ".join(target.split()).lower()


def evaluate_conditions(spec: str, conditions: dict[str, tuple[Any, str | None]], target: str, samples: int = 16,
                        max_new_tokens: int = 96, language: str | None = None, seed: int = 0, batch: int = 32,
                        dtype: str = "float32", cache_dir: str | Path | None = None,
                        prompts: tuple[str, ...] = EVAL_PROMPTS, progress: bool = True,
                        log: Any = None, device: Any = None, revision: str | None = None,
                        trust_remote_code: bool = False, probe: bool = True, mention: bool = True,
                        reference: str = "auto", metrics: Iterable[str] | None = None,
                        switches: dict[str, bool] | None = None) -> dict[str, Any]:
    """All measurements for each condition ``name -> (adapter folder or None, system prompt or None)``.

    The measurements are the :mod:`empirical.metrics` that are enabled for ``probe`` / ``mention`` /
    ``language`` (built in: the log-prob probe when ``probe``; the mention rate and, with ``language``, the
    language share on answers sampled once per condition when ``mention``) and ``switches`` (other metrics'
    on/off settings by name, :func:`empirical.metrics.switches`), restricted to the names in ``metrics`` when
    given. Each condition loads ``spec`` afresh (merging the adapter when given) with
    ``dtype`` / ``device`` / ``revision`` / ``trust_remote_code`` (:func:`empirical.engine.models.load`) and records
    the device and dtype it ran in. With ``cache_dir`` each condition's result is saved (atomically) and reused
    when the settings and the content of the model and the adapter are unchanged (a retrained adapter at the
    same path is evaluated again), so an interrupted evaluation resumes at the condition it stopped in. Same
    sampling seed for every condition. Arguments are checked first (:func:`check_eval_args`). Returns
    ``{"settings", "conditions": {name: {<metric>..., answers?, device, dtype}}, "vs_base"?, "warnings"}``.
    """
    from empirical.stages.train import load_student
    from lls_common.io import atomic_write_json

    from empirical.engine import models

    target = check_eval_args(conditions, target, samples, max_new_tokens, language, seed, batch, prompts)
    models.resolve_source(spec, revision=revision, trust_remote_code=trust_remote_code)  # unknown model: now
    chosen = _chosen_metrics({**(switches or {}), "probe": probe, "mention": mention, "language": language}, metrics)
    settings = {"target": target, "samples": samples, "max_new_tokens": max_new_tokens, "language": language,
                "seed": seed, "dtype": dtype, "prompts": list(prompts), "temperature": 1.0}
    for k, v in (("device", device), ("revision", revision), ("trust_remote_code", trust_remote_code),
                 ("probe", probe), ("mention", mention), ("reference", reference)):
        if v is not None and v != {"probe": True, "mention": True, "reference": "default"}.get(k, False):  # old cache keys stay valid
            settings[k] = v
    names = [m.name for m in chosen]
    if names != _builtin_names(probe, mention, language):  # recorded only when the flags do not say it
        settings["metrics"] = names
    from empirical.stages.correlate import adapter_digest

    model_fp = models.model_fingerprint(spec, revision)
    n_answers = len(prompts) * samples
    warnings = [w for m in chosen for w in m.warnings(n_answers)]
    res: dict[str, Any] = {"settings": settings, "conditions": {}, "warnings": warnings,
                           "model_fingerprint": model_fp}
    for w in warnings:  # on stderr (or the caller's log) as well as in the JSON
        (log if log is not None else _stderr)(f"eval: warning: {w}")
    load_kw: dict[str, Any] = {"dtype": dtype}
    load_kw.update({k: v for k, v in (("device", device), ("revision", revision),
                                      ("trust_remote_code", trust_remote_code)) if v})
    for name, (adapter, system_prompt) in conditions.items():
        # the cache is valid for the content it was made from: the adapter's and the model's, not their paths
        key = dict(settings, adapter=adapter_digest(adapter) if adapter else None, model=model_fp,
                   system_prompt=system_prompt)
        cache = Path(cache_dir) / f"{name}.json" if cache_dir is not None else None
        if cache is not None and cache.is_file():
            try:
                saved = json.loads(cache.read_text())
            except (OSError, ValueError):
                saved = {}
            if isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("result"), dict):
                res["conditions"][name] = saved["result"]
                continue
        if log is not None:
            log(f"eval condition {name}")
        model, tok = load_student(spec, adapter, **load_kw)
        p = next(model.parameters())
        from empirical.engine import render

        r: dict[str, Any] = {"adapter": str(adapter) if adapter else None, "adapter_sha256": key["adapter"],
                             "reference_resolved": render.resolve_reference(tok, reference)
                             if hasattr(tok, "apply_chat_template") else None,
                             "system_prompt": system_prompt, "device": str(p.device),
                             "dtype": str(p.dtype).replace("torch.", "")}
        cond = _metrics.Condition(model, tok, target, system_prompt, reference, language, seed)
        for m in chosen:  # registry order; answers are sampled once, when the first metric needs them
            if m.needs == "answers" and cond.answers is None:
                cond = replace(cond, answers=sample_answers(model, tok, prompts, samples, max_new_tokens,
                                                            system_prompt, seed=seed, batch=batch,
                                                            progress=progress, reference=reference))
            r[m.name] = m.measure(cond)
        if cond.answers is not None:
            r["answers"] = cond.answers
        del model, cond
        if cache is not None:
            atomic_write_json(cache, {"key": key, "result": r})
        res["conditions"][name] = r
    versus = [m for m in chosen if type(m).versus_base is not _metrics.Metric.versus_base]
    if versus and "base" in res["conditions"]:
        b = res["conditions"]["base"]
        res["vs_base"] = {name: {k: v for m in versus for k, v in m.versus_base(c[m.name], b[m.name]).items()}
                          for name, c in res["conditions"].items() if name != "base"}
    return res


def _builtin_names(probe: bool, mention: bool, language: str | None) -> list[str]:
    """The metrics the ``probe`` / ``mention`` / ``language`` settings alone switch on, in measurement order."""
    return ["probe"] * bool(probe) + ["mention"] * bool(mention) + ["language"] * bool(mention and language)


def _chosen_metrics(options: dict[str, Any], only: Iterable[str] | None) -> list[_metrics.Metric]:
    """The metrics enabled for ``options`` (:func:`empirical.metrics.enabled`); LLSError when there is none or
    ``only`` names an unknown one."""
    if only is not None:
        only = list(only)
        unknown = [n for n in only if n not in _metrics.METRICS]
        if unknown:
            raise LLSError(f"metrics: no behaviour metric {unknown[0]!r}; known: {', '.join(_metrics.names())}")
    chosen = _metrics.enabled(options, only)
    if not chosen:
        raise LLSError("nothing to measure: both probe and mention are off"
                       if only is None and not (options["probe"] or options["mention"])
                       else "nothing to measure: no enabled behaviour metric")
    return chosen


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
