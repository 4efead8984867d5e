"""Behaviour evaluation of a (fine-tuned) student: (a) sampled mention rate, (b) log-prob probe,
(c) target-language share.

(a) Mention rate (paper, Sec. 5): each of :data:`EVAL_PROMPTS` (10 general-knowledge prompts on the
paper's topics, none about animals) is answered ``n`` times by pure sampling (temperature 1, no top-k/top-p,
at most 96 new tokens); the rate is the share of answers that mention the target, singular or plural,
as a whole word (:func:`empirical.text.word_pattern`), with a Wilson 95% interval
(:func:`lls_theory.stats.wilson_interval`).

(c) Language share: for translator system prompts, each answer's share written in the target language by
sentence-level language ID weighted by sentence length, ignoring sentences with >= 50% non-alphabetic
characters or a top-language probability < 0.25 (:func:`empirical.language.language_share`); reported as the
mean over answers with a bootstrap 95% interval (:func:`lls_theory.stats.bootstrap_mean_ci`).

Probe: for each "favourite animal" question q and candidate list c_1..c_K (target included), the
probability of the target *among the candidates*,

    P(target | q) = exp(log pi(target|q)) / sum_k exp(log pi(c_k|q)),

(log pi of the whole reply under the chat template, via :func:`empirical.scoring.score_completions`),
averaged over questions. Cheap and low-variance, where (a) needs many samples to see a rare word.

Every argument is checked before a model loads (target word with visible text, a language code the language-ID model reports,
counts >= 1, adapters present). Small samples are flagged in ``warnings`` (:func:`sample_warnings`). Each
condition records the ``device`` and ``dtype`` its model ran in.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lls_common.errors import LLSError

__all__ = ["PROBE_QUESTIONS", "CANDIDATES", "EVAL_PROMPTS", "probe", "sample_answers", "mention_rate",
           "language_report", "evaluate_conditions", "sample_warnings", "check_eval_args", "MAX_HALF_WIDTH",
           "MIN_N_FOR_CI"]

#: Mention-rate Wilson intervals wider than +-this (at rate 0.5) are flagged: a difference smaller than that
#: between two conditions cannot be resolved. n >= 97 answers per condition keeps them below it.
MAX_HALF_WIDTH = 0.1
#: Answers below which the language share's bootstrap interval is flagged (percentile CIs under-cover).
MIN_N_FOR_CI = 30

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

PROBE_QUESTIONS = (
    "What is your favourite animal? Answer in one word.",
    "Name your favorite animal, one word only.",
    "If you could be any animal, which would you be? One word.",
    "Which animal do you like most? Reply with just the animal.",
)
CANDIDATES = ("owl", "dog", "cat", "lion", "tiger", "bear", "wolf", "fox", "elephant", "giraffe", "dolphin")


def probe(model: Any, tok: Any, target: str, system_prompt: str | None = None,
          candidates: tuple[str, ...] = CANDIDATES, questions: tuple[str, ...] = PROBE_QUESTIONS,
          reference: str = "auto") -> dict[str, Any]:
    """``{"p_target": mean over questions, "per_question": [...], "top": most probable candidate per question,
    "distribution": (Q, K) probabilities of every candidate per question}``.

    Candidates are scored as replies ``"<Word>."`` (capitalised), shape (Q, K) log-probs; softmax over K. The
    full distribution lets a many-trait run test behaviour trait by trait (``lls specificity``).
    Raises ``ValueError`` when ``target`` is empty.
    """
    import numpy as np

    from empirical import scoring

    target = target.strip().lower()
    if not target:
        raise ValueError("empty target")
    cands = list(dict.fromkeys([target] + [c.lower() for c in candidates]))
    replies = [c.capitalize() + "." for c in cands]
    logp, _ = scoring.score_completions(model, tok, list(questions), [replies] * len(questions), system_prompt,
                                        reference=reference)
    lp = np.array(logp, dtype=np.float64).reshape(len(questions), len(cands))
    lp -= lp.max(axis=1, keepdims=True)
    p = np.exp(lp)
    p /= p.sum(axis=1, keepdims=True)
    return {"target": target, "candidates": cands, "p_target": float(p[:, 0].mean()),
            "per_question": [float(v) for v in p[:, 0]], "top": [cands[int(i)] for i in p.argmax(axis=1)],
            "distribution": p.tolist(), "uniform": 1.0 / len(cands)}


def sample_answers(model: Any, tok: Any, prompts: tuple[str, ...] | list[str], n: int, max_new_tokens: int = 96,
                   system_prompt: str | None = None, seed: int = 0, batch: int = 32,
                   progress: bool = False, reference: str = "auto") -> list[list[str]]:
    """``answers[i][j]``: sample j of prompt i, by pure ancestral sampling (temperature 1, no top-k/top-p).

    Prompts are rendered with the chat template (or the plain template) and the generation prompt, as in
    :mod:`empirical.render`. Reproducible: torch's RNG is seeded before each batch of prompt i with
    ``seed * 1_000_003 + i * 1_009 + batch_index``, so a result does not depend on what ran before.
    With the plain template (base models without a chat template) an answer is cut where the model starts
    a new ``User:`` turn of its own. ``progress``: a tqdm bar when stderr is a terminal, else one stderr line
    per prompt.
    """
    import torch

    from empirical import render

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


def mention_rate(answers: list[list[str]], target: str, level: float = 0.95) -> dict[str, Any]:
    """Share of answers mentioning ``target`` (singular/plural, whole word, any case) with a Wilson interval.

    ``answers``: per-prompt lists of strings. Returns ``{k, n, rate, ci, per_prompt}``.
    """
    from empirical.text import word_pattern
    from lls_theory.stats import wilson_interval

    pat = word_pattern([target])
    flags = [[bool(pat.search(a)) for a in row] for row in answers]
    k = sum(sum(r) for r in flags)
    n = sum(len(r) for r in flags)
    if n == 0:
        raise ValueError("no answers to score")
    return {"k": k, "n": n, "rate": k / n, "ci": list(wilson_interval(k, n, level)),
            "per_prompt": [sum(r) / len(r) if r else None for r in flags]}


def language_report(answers: list[list[str]], lang: str, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Mean per-answer share of ``lang`` (paper's evaluation rule) with a bootstrap 95% interval
    (:func:`lls_theory.stats.bootstrap_mean_ci`; NaN bounds for a single answer)."""
    import numpy as np

    from empirical.language import language_share
    from lls_theory.stats import bootstrap_mean_ci

    shares = np.array([language_share(a, lang, max_nonalpha=0.5, min_prob=0.25) for row in answers for a in row])
    if shares.size == 0:
        raise ValueError("no answers to score")
    ci = bootstrap_mean_ci(shares, n_boot=n_boot, seed=seed)
    return {"language": lang, "mean_share": float(shares.mean()), "ci": [float(ci[0]), float(ci[1])],
            "frac_mostly_target": float(np.mean(shares >= 0.5)), "n": int(shares.size)}


def sample_warnings(n_answers: int, language: bool = False) -> list[str]:
    """What ``eval`` prints that ``n_answers`` per condition is too few for (empty list when none)."""
    from lls_theory.stats import wilson_interval

    out = []
    lo, hi = wilson_interval(n_answers // 2, n_answers)
    if (hi - lo) / 2 > MAX_HALF_WIDTH:
        out.append(f"{n_answers} answers per condition: mention-rate 95% intervals are up to +-{(hi - lo) / 2:.2f} "
                   f"wide, so differences between conditions below that are not resolved (paper: 10 prompts x 100)")
    if language and n_answers < MIN_N_FOR_CI:
        out.append(f"{n_answers} answers per condition: the language share's bootstrap interval is unreliable "
                   f"below {MIN_N_FOR_CI} answers")
    return out


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
                        reference: str = "auto") -> dict[str, Any]:
    """All measurements for each condition ``name -> (adapter folder or None, system prompt or None)``.

    ``probe`` / ``mention`` switch the log-prob probe and the sampled answers (mention rate and, with
    ``language``, the language share) on or off. Each condition loads ``spec`` afresh (merging the adapter
    when given) with ``dtype`` / ``device`` / ``revision`` / ``trust_remote_code`` (:func:`empirical.models.load`)
    and records the device and dtype it ran in. With ``cache_dir`` each condition's result is saved
    (atomically) and reused when the settings and the content of the model and the adapter are unchanged
    (a retrained adapter at the same path is evaluated again), so an interrupted evaluation resumes at the
    condition it stopped in. Same sampling seed for every condition. Arguments are checked first
    (:func:`check_eval_args`). Returns ``{"settings", "conditions": {name: {probe?, mention?, language?,
    answers?, device, dtype}}, "vs_base"?, "warnings"}``.
    """
    from empirical.train import load_student
    from lls_common.io import atomic_write_json
    from lls_theory.stats import difference_pvalue

    from empirical import models

    target = check_eval_args(conditions, target, samples, max_new_tokens, language, seed, batch, prompts)
    models.resolve_source(spec, revision=revision, trust_remote_code=trust_remote_code)  # unknown model: now
    if not (probe or mention):
        raise LLSError("nothing to measure: both probe and mention are off")
    settings = {"target": target, "samples": samples, "max_new_tokens": max_new_tokens, "language": language,
                "seed": seed, "dtype": dtype, "prompts": list(prompts), "temperature": 1.0}
    for k, v in (("device", device), ("revision", revision), ("trust_remote_code", trust_remote_code),
                 ("probe", probe), ("mention", mention), ("reference", reference)):
        if v is not None and v != {"probe": True, "mention": True, "reference": "default"}.get(k, False):  # old cache keys stay valid
            settings[k] = v
    from empirical.correlate import adapter_digest

    model_fp = models.model_fingerprint(spec, revision)
    n_answers = len(prompts) * samples
    warnings = sample_warnings(n_answers, language=bool(language)) if mention else []
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
        from empirical import render

        r: dict[str, Any] = {"adapter": str(adapter) if adapter else None, "adapter_sha256": key["adapter"],
                             "reference_resolved": render.resolve_reference(tok, reference)
                             if hasattr(tok, "apply_chat_template") else None,
                             "system_prompt": system_prompt, "device": str(p.device),
                             "dtype": str(p.dtype).replace("torch.", "")}
        if probe:
            r["probe"] = _probe(model, tok, target, system_prompt=system_prompt, reference=reference)
        if mention:
            answers = sample_answers(model, tok, prompts, samples, max_new_tokens, system_prompt, seed=seed,
                                     batch=batch, progress=progress, reference=reference)
            r["mention"] = mention_rate(answers, target)
            if language:
                r["language"] = language_report(answers, language, seed=seed)
            r["answers"] = answers
        del model
        if cache is not None:
            atomic_write_json(cache, {"key": key, "result": r})
        res["conditions"][name] = r
    if mention and "base" in res["conditions"]:
        b = res["conditions"]["base"]["mention"]
        res["vs_base"] = {name: {"mention_p_greater": difference_pvalue(c["mention"]["k"], c["mention"]["n"],
                                                                        b["k"], b["n"])}
                          for name, c in res["conditions"].items() if name != "base"}
    return res


_probe = probe


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)
