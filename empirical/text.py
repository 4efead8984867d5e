"""Rules for user text, shared by the pair reader (:mod:`empirical.stages.data`), the prompt library
(:mod:`empirical.systems`) and the behaviour measures: the one data error, what counts as visible text,
strict JSON, and a word's singular and plural forms.

Imports nothing else from ``empirical`` (no torch), so every module of the package can build on it.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from lls_common.errors import LLSError

__all__ = ["BLANK_LOOKALIKES", "DataError", "JSONRefused", "has_text", "loads_strict", "plural_forms", "word_pattern"]


def _one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line (newlines and other line breaks shown as ``\\n``, lone surrogates -- e.g. from an
    undecodable file name -- as ``\\udXXX``), at most ``limit`` characters."""
    out = "".join("\\n" if ch in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029" else ch for ch in str(text))
    out = out.encode("utf-8", "backslashreplace").decode("utf-8")
    return out if len(out) <= limit else out[: limit - 3] + "..."


class DataError(LLSError):
    """A bad record or file; one line starting with ``FILE:LINE`` (or ``FILE:record N`` / ``FILE:row N``).

    A :class:`lls_common.errors.LLSError` (so also a ``ValueError``): ``lls`` prints it as one line, exit 2.
    """

    def __init__(self, message: str):
        super().__init__(_one_line(message))


# ------------------------------------------------------------------------------------------ visible text
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zs", "Zl", "Zp", "Mn", "Me"})


def has_text(s: str) -> bool:
    """True when ``s`` holds at least one visible character.

    Whitespace, control and format characters (zero-width space/joiners, BOM, soft hyphen, bidi marks),
    unassigned code points and lone combining marks do not count.
    """
    return any(not ch.isspace() and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES
               and ch not in BLANK_LOOKALIKES for ch in s)


#: Characters that are letters or symbols to Unicode but render as blank space: the Hangul fillers
#: (U+115F, U+1160, U+3164, U+FFA0) and the blank Braille pattern (U+2800). A text made of them is invisible.
BLANK_LOOKALIKES = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _check_encodable(s: str, what: str) -> None:
    """``ValueError`` when ``s`` holds a lone surrogate (from a ``\\udXXX`` JSON escape): not valid Unicode."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} holds a lone surrogate U+{ord(s[exc.start]):04X} at character {exc.start} "
                         "(not valid Unicode)") from None


class JSONRefused(ValueError):
    """Why :func:`loads_strict` refused a JSON text; ``str()`` is a short reason without a location.

    ``kind``: ``"malformed"`` (the decoder's ``msg``, ``lineno`` and ``colno`` are set), ``"nested"`` (too
    deep for the parser), ``"constant"`` (a NaN/Infinity literal, named by ``detail``) or ``"value"`` (another
    ``ValueError`` of the parser, e.g. an integer too long to convert; ``detail`` is its message). Each reader
    words its own message from these (:meth:`located` is the pair readers' form).
    """

    def __init__(self, kind: str, reason: str, *, detail: str = "", msg: str = "", lineno: int = 0, colno: int = 0):
        super().__init__(reason)
        self.kind, self.detail, self.msg, self.lineno, self.colno = kind, detail, msg, lineno, colno

    def located(self, name: str) -> str:
        """``NAME:LINE: reason`` for malformed JSON (the line the decoder stopped at), else ``NAME: reason``."""
        return f"{name}:{self.lineno}: {self}" if self.kind == "malformed" else f"{name}: {self}"


def _reject_constant(name: str) -> Any:
    raise JSONRefused("constant", f"{name} is not valid JSON (use a finite number or null)", detail=name)


def loads_strict(text: str) -> Any:
    """``json.loads`` refusing NaN/Infinity; every failure is a :class:`JSONRefused` (never RecursionError)."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise JSONRefused("malformed", f"malformed JSON ({exc.msg} at column {exc.colno})", msg=exc.msg,
                          lineno=exc.lineno, colno=exc.colno) from None
    except JSONRefused:
        raise
    except RecursionError:
        raise JSONRefused("nested", "JSON nested too deeply") from None
    except ValueError as exc:
        raise JSONRefused("value", str(exc), detail=str(exc)) from None


# ------------------------------------------------------------------------------------------ word forms
_INFLECT: list[Any] = []


def _inflect() -> Any:
    if not _INFLECT:
        try:
            import inflect
        except ImportError as exc:  # pragma: no cover - part of the `empirical` extra
            raise LLSError(f"target-word matching needs `inflect` (pip install inflect, or the `empirical` extra): {exc}") \
                from None
        _INFLECT.append(inflect.engine())
    return _INFLECT[0]


def plural_forms(word: str) -> tuple[str, ...]:
    """Singular and English plural of ``word``, lower case, from ``inflect`` (owl/owls, fox/foxes,
    wolf/wolves, pony/ponies, mouse/mice, goose/geese).

    A word given in the plural yields its singular instead (``owls`` -> ``owl``, ``mice`` -> ``mouse``); a
    singular ending in s keeps its real plural (``bus`` -> ``buses``); ``news`` and ``fish`` stay as they are.
    """
    if not isinstance(word, str):
        raise LLSError(f"target word must be a string, got {type(word).__name__}")
    w = " ".join(word.split()).lower()
    if not has_text(w):
        raise LLSError("empty target word")
    eng = _inflect()
    forms = {w}
    single = eng.singular_noun(w)
    plural = eng.plural_noun(w) or ""
    # w is already a plural when its singular pluralises back to it and inflect, asked for the plural of w,
    # only appends "s" (owls -> owlss, mice -> mices); a singular ending in s gets a real plural (bus -> buses)
    if single and (eng.plural_noun(single) or "").lower() == w and plural.lower() == w + "s":
        forms.add(single.lower())
    elif plural:
        forms.add(plural.lower())
    return tuple(sorted(forms))


def word_pattern(words: tuple[str, ...] | list[str]) -> re.Pattern[str]:
    """Regex matching any of ``words`` or their plural/singular as whole words, any case."""
    if isinstance(words, str):
        words = [words]
    forms = sorted({f for w in words for f in plural_forms(w)}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(f).replace(r"\ ", r"\s+") for f in forms) + r")\b", re.IGNORECASE)
