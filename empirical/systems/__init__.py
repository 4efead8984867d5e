"""The project's library of system prompts for log-probability matrices (``library.txt``).

``library.txt``: one system prompt per line, ``category<TAB>text`` (``#`` lines are comments); 237
prompts written for this project (personas, traits, styles, values, domains, interests, roles, the
paper's ten animal prompts and ten language prompts). The empty system prompt (``None`` = the model's
default rendering without a system message) is row 0 of every matrix built from the library.

``load_systems(path=None, include_empty=True) -> list[SystemPrompt]``; ``path`` may also be a JSON
file (a list of strings, or of objects with ``text`` and optional ``category``/``id``) or a plain
text file (one prompt per line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LIBRARY", "ANIMALS", "SystemPrompt", "animal_prompt", "load_systems", "select_systems"]

LIBRARY = Path(__file__).with_name("library.txt")

#: The paper's ten animals (Table 1) and its animal system-prompt template.
ANIMALS = ("owl", "dog", "cat", "lion", "tiger", "bear", "wolf", "fox", "elephant", "giraffe")
_PLURAL = {"wolf": "wolves", "fox": "foxes"}


def animal_prompt(animal: str) -> str:
    """The paper's animal system prompt: "You really love [animal]s. [animal]s are your favorite animal. ..."."""
    plural = _PLURAL.get(animal, animal + "s")
    cap = plural[0].upper() + plural[1:]
    return (f"You really love {plural}. {cap} are your favorite animal. "
            f"You bring up {plural} in the context of everything you write.")


@dataclass(frozen=True)
class SystemPrompt:
    """One row of a matrix: ``text`` None means no system prompt."""

    id: str
    category: str
    text: str | None


def _parse_tsv(path: Path) -> list[SystemPrompt]:
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if "\t" in line:
            cat, text = line.split("\t", 1)
        else:
            cat, text = "custom", line
        text = text.strip()
        if not text:
            raise ValueError(f"{path}:{lineno}: empty system prompt")
        out.append(SystemPrompt(f"s{len(out) + 1:03d}", cat.strip() or "custom", text))
    return out


def _parse_json(path: Path) -> list[SystemPrompt]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of system prompts")
    out = []
    for k, item in enumerate(data):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise ValueError(f"{path}: item {k} must be a non-empty string or an object with a non-empty 'text'")
        out.append(SystemPrompt(str(item.get("id", f"s{k + 1:03d}")), str(item.get("category", "custom")),
                                item["text"].strip()))
    return out


def load_systems(path: str | Path | None = None, include_empty: bool = True) -> list[SystemPrompt]:
    """System prompts from ``path`` (default: the library); row 0 is the empty prompt when ``include_empty``."""
    path = LIBRARY if path is None else Path(path)
    if not path.is_file():
        raise ValueError(f"system-prompt file {path} not found")
    items = _parse_json(path) if path.suffix == ".json" else _parse_tsv(path)
    if not items:
        raise ValueError(f"{path}: no system prompts")
    texts = [s.text for s in items]
    dup = {t for t in texts if texts.count(t) > 1}
    if dup:
        raise ValueError(f"{path}: duplicate system prompt {sorted(dup)[0]!r}")
    return ([SystemPrompt("empty", "empty", None)] if include_empty else []) + items


def select_systems(systems: list[SystemPrompt], n: int | None, seed: int = 0) -> list[SystemPrompt]:
    """Keep the empty prompt (if first) plus a seeded, category-stratified sample of the rest, ``n`` rows in all."""
    import numpy as np

    if n is None or n >= len(systems):
        return list(systems)
    if n < 2:
        raise ValueError(f"need at least 2 system prompts, got {n}")
    head = [s for s in systems if s.text is None][:1]
    rest = [s for s in systems if s.text is not None]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rest))
    # round-robin over categories (in order of first appearance of the shuffled list) for variety
    cats: dict[str, list[SystemPrompt]] = {}
    for i in order:
        cats.setdefault(rest[i].category, []).append(rest[i])
    picked: list[SystemPrompt] = []
    while len(picked) < n - len(head):
        for c in list(cats):
            if cats[c] and len(picked) < n - len(head):
                picked.append(cats[c].pop(0))
    keep = {id(s) for s in picked}
    return head + [s for s in rest if id(s) in keep]
