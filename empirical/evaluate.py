"""Behaviour evaluation of a (fine-tuned) student: (a) sampled mention rate, (b) log-prob probe,
(c) target-language share.

(a) Mention rate (paper, Sec. 5): each of :data:`EVAL_PROMPTS` (10 general-knowledge prompts on the
paper's topics, none about animals) is answered ``n`` times by pure sampling (temperature 1, no top-k/top-p,
at most 96 new tokens); the rate is the share of answers that mention the target, singular or plural,
as a whole word (:func:`empirical.data.word_pattern`), with a Wilson 95% interval
(:func:`lls_theory.stats.wilson_interval`).

(c) Language share: for translator system prompts, each answer's share written in the target language by
sentence-level language ID weighted by sentence length, ignoring sentences with >= 50% non-alphabetic
characters or a top-language probability < 0.25 (:func:`empirical.data.language_share`); reported as the
mean over answers with a bootstrap 95% interval.

Probe: for each "favourite animal" question q and candidate list c_1..c_K (target included), the
probability of the target *among the candidates*,

    P(target | q) = exp(log pi(target|q)) / sum_k exp(log pi(c_k|q)),

(log pi of the whole reply under the chat template, via :func:`empirical.scoring.score_completions`),
averaged over questions. Cheap and low-variance, where (a) needs many samples to see a rare word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["PROBE_QUESTIONS", "CANDIDATES", "EVAL_PROMPTS", "probe", "sample_answers", "mention_rate",
           "language_report", "evaluate_conditions"]

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
          candidates: tuple[str, ...] = CANDIDATES, questions: tuple[str, ...] = PROBE_QUESTIONS) -> dict[str, Any]:
    """``{"p_target": mean over questions, "per_question": [...], "top": most probable candidate per question}``.

    Candidates are scored as replies ``"<Word>."`` (capitalised), shape (Q, K) log-probs; softmax over K.
    Raises ``ValueError`` when ``target`` is empty.
    """
    import numpy as np

    from empirical import scoring

    target = target.strip().lower()
    if not target:
        raise ValueError("empty target")
    cands = list(dict.fromkeys([target] + [c.lower() for c in candidates]))
    replies = [c.capitalize() + "." for c in cands]
    logp, _ = scoring.score_completions(model, tok, list(questions), [replies] * len(questions), system_prompt)
    lp = np.array(logp, dtype=np.float64).reshape(len(questions), len(cands))
    lp -= lp.max(axis=1, keepdims=True)
    p = np.exp(lp)
    p /= p.sum(axis=1, keepdims=True)
    return {"target": target, "candidates": cands, "p_target": float(p[:, 0].mean()),
            "per_question": [float(v) for v in p[:, 0]], "top": [cands[int(i)] for i in p.argmax(axis=1)],
            "uniform": 1.0 / len(cands)}


def sample_answers(model: Any, tok: Any, prompts: tuple[str, ...] | list[str], n: int, max_new_tokens: int = 96,
                   system_prompt: str | None = None, seed: int = 0, batch: int = 32,
                   progress: bool = False) -> list[list[str]]:
    """``answers[i][j]``: sample j of prompt i, by pure ancestral sampling (temperature 1, no top-k/top-p).

    Prompts are rendered with the chat template (or the plain template) and the generation prompt, as in
    :mod:`empirical.render`. Reproducible: torch's RNG is seeded before each batch of prompt i with
    ``seed * 1_000_003 + i * 1_009 + batch_index``, so a result does not depend on what ran before.
    With the plain template (base models without a chat template) an answer is cut where the model starts
    a new ``User:`` turn of its own.
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
    bar = _bar(len(prompts) * n, progress)
    for i, p in enumerate(prompts):
        ids = render.encode_text(tok, render.render_prompt(tok, render.as_messages(p, f"prompt {i}"), system_prompt))
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
    bar.close()
    return out


def _bar(total: int, on: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not on, unit="answer", leave=False)


def mention_rate(answers: list[list[str]], target: str, level: float = 0.95) -> dict[str, Any]:
    """Share of answers mentioning ``target`` (singular/plural, whole word, any case) with a Wilson interval.

    ``answers``: per-prompt lists of strings. Returns ``{k, n, rate, ci, per_prompt}``.
    """
    from empirical.data import word_pattern
    from lls_theory.stats import wilson_interval

    pat = word_pattern([target])
    flags = [[bool(pat.search(a)) for a in row] for row in answers]
    k = sum(sum(r) for r in flags)
    n = sum(len(r) for r in flags)
    if n == 0:
        raise ValueError("no answers to score")
    return {"k": k, "n": n, "rate": k / n, "ci": list(wilson_interval(k, n, level)),
            "per_prompt": [sum(r) / len(r) for r in flags]}


def language_report(answers: list[list[str]], lang: str, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Mean per-answer share of ``lang`` (paper's evaluation rule) with a bootstrap 95% interval."""
    import numpy as np

    from empirical.data import language_share

    shares = np.array([language_share(a, lang, max_nonalpha=0.5, min_prob=0.25) for row in answers for a in row])
    if shares.size == 0:
        raise ValueError("no answers to score")
    rng = np.random.default_rng(seed)
    boots = shares[rng.integers(0, shares.size, size=(n_boot, shares.size))].mean(axis=1)
    return {"language": lang, "mean_share": float(shares.mean()),
            "ci": [float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))],
            "frac_mostly_target": float(np.mean(shares >= 0.5)), "n": int(shares.size)}


def evaluate_conditions(spec: str, conditions: dict[str, tuple[Any, str | None]], target: str, samples: int = 16,
                        max_new_tokens: int = 96, language: str | None = None, seed: int = 0, batch: int = 32,
                        dtype: str = "float32", cache_dir: str | Path | None = None,
                        prompts: tuple[str, ...] = EVAL_PROMPTS, progress: bool = True,
                        log: Any = None) -> dict[str, Any]:
    """All three measurements for each condition ``name -> (adapter folder or None, system prompt or None)``.

    Each condition loads ``spec`` afresh (merging the adapter when given). With ``cache_dir`` each
    condition's result is saved (atomically) and reused when the settings are unchanged, so an
    interrupted evaluation resumes at the condition it stopped in. Same sampling seed for every condition.
    Returns ``{"settings", "conditions": {name: {probe, mention, language?, answers}}, "vs_base": ...}``.
    """
    from empirical.train import load_student
    from lls_common.io import atomic_write_json
    from lls_theory.stats import difference_pvalue

    settings = {"target": target, "samples": samples, "max_new_tokens": max_new_tokens, "language": language,
                "seed": seed, "dtype": dtype, "prompts": list(prompts), "temperature": 1.0}
    res: dict[str, Any] = {"settings": settings, "conditions": {}}
    for name, (adapter, system_prompt) in conditions.items():
        key = dict(settings, adapter=str(adapter) if adapter else None, system_prompt=system_prompt)
        cache = Path(cache_dir) / f"{name}.json" if cache_dir is not None else None
        if cache is not None and cache.is_file():
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                res["conditions"][name] = saved["result"]
                continue
        if log is not None:
            log(f"eval condition {name}")
        model, tok = load_student(spec, adapter, dtype=dtype)
        answers = sample_answers(model, tok, prompts, samples, max_new_tokens, system_prompt, seed=seed,
                                 batch=batch, progress=progress)
        r = {"adapter": key["adapter"], "system_prompt": system_prompt,
             "probe": probe(model, tok, target, system_prompt=system_prompt),
             "mention": mention_rate(answers, target), "answers": answers}
        if language:
            r["language"] = language_report(answers, language, seed=seed)
        del model
        if cache is not None:
            atomic_write_json(cache, {"key": key, "result": r})
        res["conditions"][name] = r
    if "base" in res["conditions"]:
        b = res["conditions"]["base"]["mention"]
        res["vs_base"] = {name: {"mention_p_greater": difference_pvalue(c["mention"]["k"], c["mention"]["n"],
                                                                        b["k"], b["n"])}
                          for name, c in res["conditions"].items() if name != "base"}
    return res
