"""Behaviour evaluation: the log-prob probe (b) of issue 6.

Probe: for each "favourite animal" question q and candidate list c_1..c_K (target included), the
probability of the target *among the candidates*,

    P(target | q) = exp(log pi(target|q)) / sum_k exp(log pi(c_k|q)),

(log pi of the whole reply under the chat template, via :func:`empirical.scoring.score_completions`),
averaged over questions. Cheap and low-variance; a sampled mention rate (a) is not implemented yet.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PROBE_QUESTIONS", "CANDIDATES", "probe"]

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
