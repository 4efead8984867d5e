"""The target-language share: how much of each sampled answer is written in the trait's language.

For translator system prompts: each answer's share written in the target language by sentence-level language
ID weighted by sentence length, ignoring sentences with >= 50% non-alphabetic characters or a top-language
probability < 0.25 (:func:`empirical.language.language_share`); reported as the mean over answers with a
bootstrap 95% interval (:func:`lls_theory.stats.bootstrap_mean_ci`). Measured on the answers the mention
rate samples, so it is on when ``eval.mention`` is and the trait (or ``--language``) names a language.
"""

from __future__ import annotations

from typing import Any, Mapping

from empirical.metrics.base import Condition, Metric

__all__ = ["MIN_N_FOR_CI", "language_report", "LanguageShare", "METRIC"]

#: Answers below which the language share's bootstrap interval is flagged (percentile CIs under-cover).
MIN_N_FOR_CI = 30


def language_report(answers: list[list[str]], lang: str, seed: int = 0, n_boot: int = 2000) -> dict[str, Any]:
    """Mean per-answer share of ``lang`` (paper's evaluation rule) with a bootstrap 95% interval
    (:func:`lls_theory.stats.bootstrap_mean_ci`; NaN bounds for a single answer)."""
    import numpy as np

    from empirical.language import language_share
    from lls_theory.stats import bootstrap_mean_ci

    shares = np.array([language_share(a, lang, max_nonalpha=0.5, min_prob=0.25)
                       for row in answers for a in row])
    if shares.size == 0:
        raise ValueError("no answers to score")
    ci = bootstrap_mean_ci(shares, n_boot=n_boot, seed=seed)
    return {"language": lang, "mean_share": float(shares.mean()), "ci": [float(ci[0]), float(ci[1])],
            "frac_mostly_target": float(np.mean(shares >= 0.5)), "n": int(shares.size)}


class LanguageShare(Metric):
    """``eval.json`` ``language``: :func:`language_report` of the condition's sampled answers."""

    name = "language"
    needs = "answers"
    description = "mean share of each sampled answer written in the target language, bootstrap 95% CI"

    def enabled(self, options: Mapping[str, Any]) -> bool:
        return bool(options.get("mention", True) and options.get("language"))

    def measure(self, condition: Condition) -> dict[str, Any]:
        return language_report(condition.answers, condition.language, seed=condition.seed)

    def summary(self, result: Mapping[str, Any]) -> str:
        lo, hi = result["ci"]
        return f"{result['language']} share {result['mean_share']:.3f} [{lo:.3f}, {hi:.3f}]"

    def warnings(self, n_answers: int) -> list[str]:
        if n_answers < MIN_N_FOR_CI:
            return [f"{n_answers} answers per condition: the language share's bootstrap interval is unreliable "
                    f"below {MIN_N_FOR_CI} answers"]
        return []


METRIC = LanguageShare()
