"""The paper's reported numbers that our reports put beside ours (source: lls-notes.md section 5).

Table 1 of the paper: Pearson correlation between the teacher's system-prompt margin shift and the
fine-tuned student's margin shift on 500 random preference pairs; student OLMo2-1B-Instruct; one column per
animal; two teacher rows. Our rows map onto them by whether the student is the teacher's own model
(``"same"``) or another model (``"cross"``; in the paper the *teacher* differs, here the student does).
"""

from __future__ import annotations

__all__ = ["ANIMALS", "TABLE1", "TABLE1_ROWS", "MENTION_RATE", "paper_value", "paper_trait"]

ANIMALS = ("owls", "dogs", "cats", "lions", "tigers", "bears", "wolves", "foxes", "elephants", "giraffes")

TABLE1_ROWS = {
    "same": "teacher = student model (paper: OLMo2-1B -> OLMo2-1B)",
    "cross": "teacher and student differ (paper: Qwen3-8B -> OLMo2-1B)",
}

TABLE1 = {
    "same": dict(zip(ANIMALS, (0.537, 0.565, 0.569, 0.539, 0.550, 0.531, 0.543, 0.474, 0.562, 0.553))),
    "cross": dict(zip(ANIMALS, (0.113, 0.049, 0.026, 0.139, 0.062, 0.062, 0.124, 0.106, 0.065, 0.084))),
}
"""``TABLE1[row][animal]``: the paper's held-out Pearson correlation (no CIs are reported)."""

MENTION_RATE = {"same": 0.299, "cross": 0.032}
"""Share of generations mentioning the animal in the Table-1 runs (averaged over animals)."""

_IRREGULAR = {"wolf": "wolves", "fox": "foxes", "wolves": "wolves", "foxes": "foxes"}


def paper_trait(name: str | None) -> str | None:
    """The paper's column for one of our trait names (``"owl"``, ``"Owls"``, ``"owls-hh"`` -> ``"owls"``) or None."""
    if not name:
        return None
    key = str(name).strip().lower()
    for token in [key] + key.replace("_", "-").replace("/", "-").split("-"):
        if token in ANIMALS:
            return token
        if token in _IRREGULAR:
            return _IRREGULAR[token]
        if token + "s" in ANIMALS:
            return token + "s"
    return None


def paper_value(row: str, trait: str | None) -> float | None:
    """Paper's Table-1 number for ``row`` (``"same"``/``"cross"``) and our trait name, or None."""
    col = paper_trait(trait)
    return None if col is None else TABLE1[row].get(col)
