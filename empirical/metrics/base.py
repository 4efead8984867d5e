"""The behaviour-metric interface: :class:`Metric` (what a metric is) and :class:`Condition` (what it sees of one
evaluated condition). The registry and the built-in metrics are in :mod:`empirical.metrics`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

__all__ = ["NEEDS", "Condition", "Metric"]

#: What a metric can need from a condition.
NEEDS = ("logprobs", "answers")


@dataclass(frozen=True)
class Condition:
    """What a metric sees of one evaluated condition.

    ``model`` / ``tok``: the loaded (merged) student and its tokenizer; ``system_prompt``: the condition's
    system prompt (None: the no-system rendering ``reference``); ``target``: the normalised target word;
    ``language``: the ISO 639-1 target language or None; ``seed``: the evaluation seed; ``answers``:
    ``answers[i][j]`` = sample j of evaluation prompt i (None when no enabled metric needs answers).
    """

    model: Any
    tok: Any
    target: str
    system_prompt: str | None = None
    reference: str = "auto"
    language: str | None = None
    seed: int = 0
    answers: list[list[str]] | None = None


class Metric:
    """One behaviour measurement. Subclasses set ``name`` and ``needs`` and define :meth:`measure` and
    :meth:`summary`; the rest has defaults."""

    name: ClassVar[str]
    needs: ClassVar[str]  # one of NEEDS
    description: ClassVar[str] = ""

    def enabled(self, options: Mapping[str, Any]) -> bool:
        """On or off for the eval ``options`` (``probe``, ``mention``: booleans; ``language``: a code or
        None); default: ``options[name]``, on when absent."""
        return bool(options.get(self.name, True))

    def measure(self, condition: Condition) -> dict[str, Any]:
        """The JSON-able record of this metric for one condition (``eval.json``: ``conditions.<c>.<name>``)."""
        raise NotImplementedError

    def summary(self, result: Mapping[str, Any]) -> str:
        """One line for reports from :meth:`measure`'s record."""
        raise NotImplementedError

    def warnings(self, n_answers: int) -> list[str]:
        """What ``n_answers`` sampled answers per condition are too few for (empty: nothing)."""
        return []

    def versus_base(self, result: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
        """Entries of ``vs_base[<condition>]`` comparing a condition's record with the base model's."""
        return {}
