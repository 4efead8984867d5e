"""The sampled mention rate (paper, Sec. 5): the share of sampled answers that mention the target word.

Each evaluation prompt is answered ``n`` times by pure sampling (:func:`empirical.stages.evaluate.sample_answers`);
an answer mentions the target when it contains it, singular or plural, as a whole word in any case
(:func:`empirical.text.word_pattern`). Reported with a Wilson 95% interval
(:func:`lls_theory.stats.wilson_interval`) and, against the base model, a one-sided Fisher p-value
(:func:`lls_theory.stats.difference_pvalue`).
"""

from __future__ import annotations

from typing import Any, Mapping

from empirical.metrics.base import Condition, Metric

__all__ = ["MAX_HALF_WIDTH", "mention_rate", "Mention", "METRIC"]

#: Mention-rate Wilson intervals wider than +-this (at rate 0.5) are flagged: a difference smaller than that
#: between two conditions cannot be resolved. n >= 97 answers per condition keeps them below it.
MAX_HALF_WIDTH = 0.1


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


class Mention(Metric):
    """``eval.json`` ``mention``: :func:`mention_rate` of the condition's sampled answers."""

    name = "mention"
    needs = "answers"
    description = "share of sampled answers mentioning the target word (or its plural), Wilson 95% CI"

    def measure(self, condition: Condition) -> dict[str, Any]:
        return mention_rate(condition.answers, condition.target)

    def summary(self, result: Mapping[str, Any]) -> str:
        lo, hi = result["ci"]
        return f"mention {result['rate']:.3f} [{lo:.3f}, {hi:.3f}]"

    def warnings(self, n_answers: int) -> list[str]:
        from lls_theory.stats import wilson_interval

        lo, hi = wilson_interval(n_answers // 2, n_answers)
        if (hi - lo) / 2 > MAX_HALF_WIDTH:
            return [f"{n_answers} answers per condition: mention-rate 95% intervals are up to +-{(hi - lo) / 2:.2f} "
                    f"wide, so differences between conditions below that are not resolved (paper: 10 prompts x 100)"]
        return []

    def versus_base(self, result: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
        from lls_theory.stats import difference_pvalue

        return {"mention_p_greater": difference_pvalue(result["k"], result["n"], base["k"], base["n"])}


METRIC = Mention()
