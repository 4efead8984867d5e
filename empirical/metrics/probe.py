"""The log-prob probe: the probability of the target among candidate answers to "favourite animal" questions.

For each question q and candidate list c_1..c_K (target included), the probability of the target *among the
candidates*,

    P(target | q) = exp(log pi(target|q)) / sum_k exp(log pi(c_k|q)),

(log pi of the whole reply under the chat template, via :func:`empirical.engine.scoring.score_completions`),
averaged over questions. Cheap and low-variance, where the mention rate needs many samples to see a rare word.
"""

from __future__ import annotations

from typing import Any, Mapping

from empirical.metrics.base import Condition, Metric

__all__ = ["PROBE_QUESTIONS", "CANDIDATES", "probe", "Probe", "METRIC"]

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

    from empirical.engine import scoring

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


class Probe(Metric):
    """``eval.json`` ``probe``: :func:`probe` of the condition's model under its system prompt."""

    name = "probe"
    needs = "logprobs"
    description = "probability of the target among the candidate animal names for 'favourite animal' questions"

    def measure(self, condition: Condition) -> dict[str, Any]:
        return probe(condition.model, condition.tok, condition.target, system_prompt=condition.system_prompt,
                     reference=condition.reference)

    def summary(self, result: Mapping[str, Any]) -> str:
        return f"P({result['target']}) {result['p_target']:.3f}"


METRIC = Probe()
