"""Value checks in the scikit-learn style: one function per kind of value, each raising one-line LLSError.

Every check takes the value and the *name* under which the user set it (a config key such as
``train.beta`` or ``select.gamma``; never a CLI flag, the CLI layer maps keys to flags itself) and
returns the value, normalised where that is safe (an ``int``-valued float is NOT turned into an int:
``4.5`` and ``4.0`` are both refused where an integer is expected, as are booleans).

    >>> check_interval(0.1, "select.gamma", 0, 1, closed="right")
    0.1
    >>> check_positive_int(0, "train.lora_rank")
    Traceback (most recent call last):
    ...
    lls_common.errors.LLSError: train.lora_rank must be an integer >= 1, got 0
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Iterable, Sequence

from lls_common.errors import LLSError

__all__ = [
    "check_bool", "check_choice", "check_finite", "check_int", "check_interval", "check_nonempty_str",
    "check_optional", "check_positive", "check_positive_int", "check_seed", "check_str", "check_str_list",
    "check_language_code", "check_text",
]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_bool(value: Any, name: str) -> bool:
    """``True``/``False`` only (not 0/1, not ``"yes"``)."""
    if not isinstance(value, bool):
        raise LLSError(f"{name} must be true or false, got {_show(value)}")
    return value


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """An integer in ``[low, high]`` (either end optional); booleans and floats (even 4.0) are refused."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise LLSError(f"{name} must be an integer, got {_show(value)}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        rng = f">= {low}" if high is None else (f"<= {high}" if low is None else f"in [{low}, {high}]")
        raise LLSError(f"{name} must be an integer {rng}, got {value}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    """An integer >= 1."""
    return check_int(value, name, low=1)


def check_seed(value: Any, name: str = "seed") -> int:
    """A random seed: an integer in [0, 2**32 - 1] (numpy's range)."""
    return check_int(value, name, low=0, high=2**32 - 1)


def check_finite(value: Any, name: str) -> float:
    """A finite real number (ints accepted and returned as float; bool, NaN and +-inf refused)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise LLSError(f"{name} must be a number, got {_show(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise LLSError(f"{name} must be finite, got {value}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A finite number > 0."""
    value = check_finite(value, name)
    if value <= 0:
        raise LLSError(f"{name} must be > 0, got {value}")
    return value


def check_interval(value: Any, name: str, low: float | None, high: float | None, closed: str = "both") -> float:
    """A finite number in an interval; ``closed`` in {"both", "left", "right", "neither"} says which ends belong.

    ``check_interval(g, "select.gamma", 0, 1, closed="right")`` accepts ``0 < g <= 1``.
    """
    if closed not in ("both", "left", "right", "neither"):
        raise ValueError(f"closed must be both/left/right/neither, got {closed!r}")
    value = check_finite(value, name)
    lo_ok = low is None or (value >= low if closed in ("both", "left") else value > low)
    hi_ok = high is None or (value <= high if closed in ("both", "right") else value < high)
    if not (lo_ok and hi_ok):
        lb = "(-inf" if low is None else ("[" if closed in ("both", "left") else "(") + f"{low:g}"
        hb = "inf)" if high is None else f"{high:g}" + ("]" if closed in ("both", "right") else ")")
        raise LLSError(f"{name} must be in {lb}, {hb}, got {value}")
    return value


def check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise LLSError(f"{name} must be a string, got {_show(value)}")
    return value


def check_nonempty_str(value: Any, name: str) -> str:
    """A string with at least one visible character (zero-width and blank characters do not count)."""
    value = check_str(value, name)
    if not value.strip():
        raise LLSError(f"{name} must not be empty")
    if not any(_visible(c) for c in value):
        shown = ", ".join(sorted({f"U+{ord(c):04X}" for c in value if not c.isspace()}))
        raise LLSError(f"{name} must not be empty (it holds only invisible characters: {shown})")
    return value


#: Zero-width and format characters, and letters / symbols that render as blank space (the Hangul fillers
#: U+115F, U+1160, U+3164, U+FFA0 and the blank Braille pattern U+2800).
_INVISIBLE = set("\u200b\u200c\u200d\u2060\ufeff\u00ad\u115f\u1160\u3164\uffa0\u2800")


def _visible(c: str) -> bool:
    import unicodedata

    return (c.isprintable() and not c.isspace() and c not in _INVISIBLE
            and unicodedata.category(c) not in ("Cf", "Cn", "Co", "Cs", "Mn", "Me"))


def check_text(value: Any, name: str) -> str:
    """:func:`check_nonempty_str` for text a tokenizer will read (a system prompt, a target word): also valid
    Unicode. Bytes that are not UTF-8 on the command line reach Python as lone surrogates (U+DC80..U+DCFF),
    which the tokenizers refuse with a ``TypeError`` long after the models loaded."""
    value = check_str(value, name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LLSError(f"{name} holds bytes that are not valid UTF-8 text (U+{ord(value[exc.start]):04X} at "
                       f"character {exc.start}); give UTF-8 text") from None
    return check_nonempty_str(value, name)


def check_str_list(value: Any, name: str, nonempty_items: bool = True) -> tuple[str, ...]:
    """A list/tuple of strings (returned as a tuple); with ``nonempty_items`` each must be non-empty."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise LLSError(f"{name} must be a list of strings, got {_show(value)}")
    out = []
    for k, v in enumerate(value):
        item = f"{name}[{k}]"
        out.append(check_nonempty_str(v, item) if nonempty_items else check_str(v, item))
    return tuple(out)


def check_choice(value: Any, name: str, choices: Sequence[Any] | Iterable[Any]) -> Any:
    """One of ``choices`` (compared with ``==``; a bool never matches an int choice)."""
    choices = list(choices)
    if not any(value == c and type(value) is type(c) for c in choices):
        raise LLSError(f"{name} must be one of {', '.join(map(str, choices))}; got {_show(value)}")
    return value


def check_optional(value: Any, name: str, check: Any, *args: Any, **kwargs: Any) -> Any:
    """``None`` or whatever ``check(value, name, *args)`` accepts."""
    return None if value is None else check(value, name, *args, **kwargs)


#: ISO 639-1 codes (the two-letter codes language detection reports).
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en
eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv
ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne
ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st
su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())


def check_language_code(value: Any, name: str) -> str:
    """A two-letter ISO 639-1 code, lower case (e.g. ``fr``)."""
    value = check_str(value, name)
    if value not in ISO_639_1:
        raise LLSError(f"{name} must be a two-letter ISO 639-1 language code such as fr or es, got {_show(value)}")
    return value
