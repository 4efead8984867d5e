"""The project's library of system prompts for log-probability matrices (``library.txt``).

``library.txt``: one system prompt per line, ``category<TAB>text`` (``#`` lines are comments); 237
prompts written for this project (personas, traits, styles, values, domains, interests, roles, the
paper's ten animal prompts and ten language prompts). The empty system prompt (``None`` = the model's
default rendering without a system message) is row 0 of every matrix built from the library.

``load_systems(path=None, include_empty=True) -> list[SystemPrompt]``; ``path`` may also be a JSON
file (a list of strings, or of objects with ``text`` and optional ``category``/``id``) or a plain
text file (one prompt per line). Candidate files (``lls detect --candidates``) are read the same way.

Named prompts (``named_prompts()``, ``named_prompt(name)``): the prompts an ``lls experiment`` refers to by name
-- ``[[trait]] name = "football"`` (text, target word and language filled in) and ``[select] baseline``. They
are declared as trait families in :mod:`empirical.systems.families` (template, members, default behaviour
metric, target-word rule): the ten animals (the paper's template), an interest (``football``: the animal
template), the paper's ten languages (``french``, ``spanish``, ... : its translator prompt, behaviour = the
target-language share), a persona (``evil-ruler``: the paper's persona prompt) and the generic baselines of
contrastive selection (``things``, ``animals``: the template with no specific object). ``controls.txt`` lists
the control traits football / french / evil-ruler and ``languages.txt`` the ten language traits in the library
format (for ``[traits] file``).

Bad files raise one-line :class:`empirical.text.DataError` (an ``LLSError``/``ValueError``) naming
``file:line`` (text files) or ``file: item N`` (JSON): invalid UTF-8, lone surrogates, prompts without
visible text (whitespace or zero-width characters only), malformed or too deeply nested JSON, non-string
``text``/``category``/``id``, duplicate prompts or ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from empirical.systems.families import (ANIMALS, EVIL_RULER, FAMILIES, LANGUAGES, Family, Member, NamedPrompt,
                                        animal_prompt, interest_prompt, language_prompt, named_prompts)

__all__ = ["LIBRARY", "CONTROLS", "LANGUAGE_PROMPTS", "ANIMALS", "LANGUAGES", "SystemPrompt", "animal_prompt",
           "interest_prompt", "language_prompt", "EVIL_RULER", "NamedPrompt", "Family", "Member", "FAMILIES",
           "named_prompts", "named_prompt", "load_systems", "select_systems"]

LIBRARY = Path(__file__).with_name("library.txt")
#: The non-animal control traits, one per line (``category<TAB>text``).
CONTROLS = Path(__file__).with_name("controls.txt")
#: The paper's ten language prompts, one per line (``category<TAB>text``).
LANGUAGE_PROMPTS = Path(__file__).with_name("languages.txt")


def named_prompt(name: str, key: str = "name") -> NamedPrompt:
    """The named prompt ``name``; :class:`lls_common.errors.LLSError` naming ``key`` and the known names if
    there is none."""
    from lls_common.errors import LLSError

    known = named_prompts()
    if name not in known:
        raise LLSError(f"{key}: no system prompt named {name!r} in the library; known: {', '.join(known)}")
    return known[name]


@dataclass(frozen=True)
class SystemPrompt:
    """One row of a matrix: ``text`` None means no system prompt."""

    id: str
    category: str
    text: str | None


def _read_text(path: Path) -> str:
    from empirical.text import DataError

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: invalid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None


def _check_text(text: Any, where: str, what: str = "system prompt") -> str:
    from empirical.text import DataError, _check_encodable, has_text

    if not isinstance(text, str):
        raise DataError(f"{where}: {what} must be a string, got {type(text).__name__}")
    try:
        _check_encodable(text, what)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None
    if not has_text(text):
        raise DataError(f"{where}: empty {what} (no visible text)")
    return text.strip()


def _parse_tsv(path: Path) -> list[SystemPrompt]:
    out = []
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if "\t" in line:
            cat, text = line.split("\t", 1)
        else:
            cat, text = "custom", line
        text = _check_text(text, f"{path}:{lineno}")
        out.append(SystemPrompt(f"s{len(out) + 1:03d}", cat.strip() or "custom", text))
    return out


def _json_problem(path: Path, exc: Any) -> str:
    """This reader's wording of a :class:`empirical.text.JSONRefused` (``path:LINE: not valid JSON (...)``)."""
    if exc.kind == "malformed":
        return f"{path}:{exc.lineno}: not valid JSON ({exc.msg})"
    if exc.kind == "nested":
        return f"{path}: {exc}"
    return f"{path}: not valid JSON ({exc.detail} is not a JSON value)"


def _parse_json(path: Path) -> list[SystemPrompt]:
    from empirical.text import DataError, JSONRefused, loads_strict

    text = _read_text(path)
    try:
        data = loads_strict(text)
    except JSONRefused as exc:
        raise DataError(_json_problem(path, exc)) from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of system prompts (strings or objects with 'text')")
    out = []
    for k, item in enumerate(data):
        where = f"{path}: item {k}"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or "text" not in item:
            raise DataError(f"{where} must be a non-empty string or an object with a non-empty 'text'")
        text = _check_text(item["text"], where)
        cat = _check_text(item.get("category", "custom"), where, "'category'")
        sid = item.get("id", f"s{k + 1:03d}")
        if isinstance(sid, bool) or not isinstance(sid, (str, int)):
            raise DataError(f"{where}: 'id' must be a string or an integer, got {type(sid).__name__}")
        out.append(SystemPrompt(_check_text(str(sid), where, "'id'"), cat, text))
    return out


def load_systems(path: str | Path | None = None, include_empty: bool = True) -> list[SystemPrompt]:
    """System prompts from ``path`` (default: the library); row 0 is the empty prompt when ``include_empty``."""
    from empirical.text import DataError

    path = LIBRARY if path is None else Path(path)
    if not path.is_file():
        raise DataError(f"system-prompt file {path} not found")
    items = _parse_json(path) if path.suffix.lower() == ".json" else _parse_tsv(path)
    if not items:
        raise DataError(f"{path}: no system prompts")
    for attr, what in (("text", "system prompt"), ("id", "id")):
        seen: set[str] = set()
        for s in items:
            v = getattr(s, attr)
            if v in seen:
                raise DataError(f"{path}: duplicate {what} {v!r}")
            seen.add(v)
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
