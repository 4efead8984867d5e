"""Settings declared once as dataclass fields; argparse flags and TOML keys derived from them.

A settings class is a dataclass whose fields are declared with :func:`setting`::

    @dataclass
    class SelectConfig:
        gamma: float = setting(0.1, "fraction of positive-weight pairs kept", aliases=("quantile",))

        def __post_init__(self):
            check_types(self, "select")              # int refuses 4.5 and true, str refuses lists, ...
            check_interval(self.gamma, "select.gamma", 0, 1, closed="right")

From that one declaration:

* :func:`add_arguments` gives the parser ``--gamma G`` (and ``--quantile G``), help text with the default;
* :func:`from_namespace` builds the dataclass from the parsed flags (flags not given keep the field default);
* :func:`from_table` builds it from a TOML table (``gamma = 0.1`` or ``quantile = 0.1``), refusing unknown keys
  with the list of allowed ones;
* :func:`describe` lists the keys with type, default and help (for ``--help`` epilogs and documentation).

Errors are :class:`LLSError` with one line naming the key (and the file, for TOML).
Supported field types: bool, int, float, str, Path, ``X | None`` of those, ``tuple[str, ...]``/``list[str]``
and ``dict[str, Any]`` (pass-through options).
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Iterable

from lls_common.errors import LLSError

__all__ = ["setting", "check_types", "settings_fields", "add_arguments", "from_namespace", "from_table",
           "describe", "flag_name", "Setting"]


def setting(default: Any = dataclasses.MISSING, help: str = "", *, reason: str = "",
            aliases: tuple[str, ...] = (), choices: tuple[Any, ...] | None = None, metavar: str | None = None,
            flag: str | None = None, cli: bool = True, toml: bool = True,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text, the reason for its default, aliases and choices.

    ``flag`` overrides the derived ``--field-name``; ``aliases`` are extra names (TOML key and ``--flag``);
    ``cli=False`` / ``toml=False`` keep a field out of one surface (e.g. a path the experiment fills in).
    """
    meta = {"help": help, "reason": reason, "aliases": tuple(aliases), "choices": choices, "metavar": metavar,
            "flag": flag, "cli": cli, "toml": toml}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Setting:
    """What :func:`settings_fields` reports about one field."""

    name: str
    type: Any
    default: Any
    required: bool
    help: str
    reason: str
    aliases: tuple[str, ...]
    choices: tuple[Any, ...] | None
    metavar: str | None
    flag: str
    cli: bool
    toml: bool


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def settings_fields(cls: type) -> list[Setting]:
    """The fields of a settings dataclass with their metadata (fields without metadata count too)."""
    hints = _hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        m = f.metadata
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default, required = f.default_factory(), False  # type: ignore[misc]
        else:
            default, required = None, True
        out.append(Setting(f.name, hints[f.name], default, required, m.get("help", ""), m.get("reason", ""),
                           tuple(m.get("aliases", ())), m.get("choices"), m.get("metavar"),
                           m.get("flag") or "--" + f.name.replace("_", "-"), m.get("cli", True), m.get("toml", True)))
    return out


def flag_name(cls: type, field: str) -> str:
    """The ``--flag`` of a field (for messages in the CLI layer)."""
    return next(s.flag for s in settings_fields(cls) if s.name == field)


# ----------------------------------------------------------------------------------------------- types
def _split_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _type_name(tp: Any) -> str:
    base, opt = _split_optional(tp)
    origin = typing.get_origin(base)
    if origin in (tuple, list):
        name = "list of strings"
    elif origin is dict or base is dict:
        name = "table"
    elif base is bool:
        name = "true/false"
    elif base is Path:
        name = "path"
    else:
        name = {int: "integer", float: "number", str: "string"}.get(base, getattr(base, "__name__", str(base)))
    return name + (" (optional)" if opt else "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it normalised (int -> float, list -> tuple)."""
    base, optional = _split_optional(tp)
    if value is None:
        if optional:
            return None
        raise LLSError(f"{key} must be set (a {_type_name(base)})")
    origin = typing.get_origin(base)
    article = "an" if _type_name(base)[0] in "aeiou" else "a"
    bad = LLSError(f"{key} must be {article} {_type_name(base)}, got {value!r}"[:200])
    if base is bool:
        if not isinstance(value, bool):
            raise bad
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    elif base is str:
        if not isinstance(value, str):
            raise bad
    elif base is Path:
        if isinstance(value, str):
            return Path(value)
        if not isinstance(value, Path):
            raise bad
    elif origin in (tuple, list):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise bad
        for k, v in enumerate(value):
            if not isinstance(v, str):
                raise LLSError(f"{key}[{k}] must be a string, got {v!r}"[:200])
        return tuple(value) if origin is tuple else list(value)
    elif origin is dict or base is dict:
        if not isinstance(value, dict):
            raise bad
    return value


def check_types(obj: Any, section: str) -> None:
    """Check (and normalise in place) every field of a settings dataclass against its annotation.

    Call it first thing in ``__post_init__``; ``section`` prefixes the key in messages (``train.beta``).
    Fields annotated with other types (nested dataclasses, lists of dataclasses) are left alone.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        tp = hints[f.name]
        base, _ = _split_optional(tp)
        if base in (bool, int, float, str, Path) or typing.get_origin(base) in (tuple, list, dict) or base is dict:
            args = typing.get_args(base)
            if typing.get_origin(base) is list and args and args[0] is not str:
                continue
            key = f"{section}.{f.name}" if section else f.name
            object.__setattr__(obj, f.name, _coerce(getattr(obj, f.name), tp, key))


# --------------------------------------------------------------------------------------------- argparse
def _parse_literal(text: str) -> Any:
    """``KEY=VALUE`` values: a TOML literal (1e-4, true, "x", [1, 2]) or else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _dict_item(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), _parse_literal(v.strip())


class _DictAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        d = dict(getattr(namespace, self.dest, None) or {})
        k, v = values
        d[k] = v
        setattr(namespace, self.dest, d)


def _help(s: Setting) -> str:
    text = s.help or ""
    if not s.required and s.default not in (None, (), [], {}, False):
        text += f" (default {s.default})"
    if s.choices is not None:
        text += f" (one of {', '.join(map(str, s.choices))})"
    if s.reason:
        text += f"; {s.reason}"
    return text.replace("%", "%%")


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, only: Iterable[str] | None = None,
                  exclude: Iterable[str] = (), required: Iterable[str] = (), dest_prefix: str = "",
                  flags: dict[str, str] | None = None) -> None:
    """Add one ``--flag`` per field of ``cls`` (defaults are not stored: :func:`from_namespace` uses the field's).

    Booleans get ``--x`` / ``--no-x``; ``tuple[str, ...]`` fields are repeatable; ``dict`` fields take
    ``KEY=VALUE`` repeatedly. ``required`` makes a field's flag mandatory (fields without default always are).
    ``flags`` renames a field's flag for this parser (``{"model": "--student"}``); the dest stays the field name.
    """
    only = None if only is None else set(only)
    exclude, required = set(exclude), set(required)
    for s in settings_fields(cls):
        if not s.cli or s.name in exclude or (only is not None and s.name not in only):
            continue
        names = [(flags or {}).get(s.name, s.flag)] + ["--" + a.replace("_", "-") for a in s.aliases]
        kw: dict[str, Any] = {"dest": dest_prefix + s.name, "default": argparse.SUPPRESS, "help": _help(s)}
        base, _ = _split_optional(s.type)
        origin = typing.get_origin(base)
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (tuple, list):
            kw.update(action="append", metavar=s.metavar or "TEXT")
            kw["help"] += " (repeatable)"
        elif origin is dict or base is dict:
            kw.update(action=_DictAction, type=_dict_item, metavar="KEY=VALUE")
            kw["help"] += " (repeatable)"
        else:
            kw["type"] = {int: int, float: float, str: str, Path: Path}.get(base, str)
            kw["metavar"] = s.metavar or s.name.upper()
            if s.choices is not None:
                kw["choices"] = list(s.choices)
        if s.required or s.name in required:
            kw["required"] = True
        parser.add_argument(*names, **kw)


def from_namespace(cls: type, ns: argparse.Namespace, dest_prefix: str = "", **extra: Any) -> Any:
    """Build ``cls`` from the flags given in ``ns`` (plus ``extra``); missing flags keep the field defaults."""
    kw = {}
    for s in settings_fields(cls):
        if hasattr(ns, dest_prefix + s.name):
            kw[s.name] = getattr(ns, dest_prefix + s.name)
    kw.update(extra)
    return cls(**kw)


# ------------------------------------------------------------------------------------------------- TOML
def table_keys(cls: type) -> dict[str, str]:
    """TOML key (or alias) -> field name, for the fields that TOML may set."""
    keys = {}
    for s in settings_fields(cls):
        if s.toml:
            keys[s.name] = s.name
            for a in s.aliases:
                keys[a] = s.name
    return keys


def from_table(cls: type, table: dict[str, Any], where: str, section: str = "", **extra: Any) -> Any:
    """Build ``cls`` from a TOML table; ``where`` (the file) and ``section`` prefix every error message.

    Unknown keys are refused with the allowed list; a key given twice (by name and alias) is refused.
    """
    keys = table_keys(cls)
    kw: dict[str, Any] = {}
    used_alias: dict[str, str] = {}
    label = f"[{section}] " if section else ""
    for k, v in table.items():
        if k not in keys:
            raise LLSError(f"{where}: unknown key {section + '.' if section else ''}{k}; {label}allows "
                           f"{', '.join(sorted(keys))}")
        name = keys[k]
        if name in kw:
            raise LLSError(f"{where}: {section + '.' if section else ''}{name} given twice (as {k!r} too)")
        kw[name] = v
        if k != name:
            used_alias[name] = k
    kw.update(extra)
    try:
        return cls(**kw)
    except LLSError as exc:
        msg = str(exc)
        for name, alias in used_alias.items():  # name the key as the user wrote it
            dotted = f"{section}.{name}" if section else name
            msg = msg.replace(dotted, f"{section}.{alias}" if section else alias)
        raise LLSError(f"{where}: {msg}") from None
    except TypeError as exc:  # a required field missing
        missing = [s.name for s in settings_fields(cls) if s.required and s.name not in kw]
        if missing:
            raise LLSError(f"{where}: missing {', '.join((section + '.' if section else '') + m for m in missing)}") \
                from None
        raise LLSError(f"{where}: {exc}") from None


def _toml_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (str, Path)):
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_literal(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_literal(x)}" for k, x in v.items()) + "}"
    return repr(v)


def describe(cls: type, section: str = "", indent: str = "  ") -> str:
    """One line per TOML key: ``key = default  # type; help``."""
    lines = [f"[{section}]"] if section else []
    for s in settings_fields(cls):
        if not s.toml:
            continue
        default = "(required)" if s.required else ("(unset)" if s.default is None else _toml_literal(s.default))
        alias = f" (alias {', '.join(s.aliases)})" if s.aliases else ""
        lines.append(f"{indent}{s.name}{alias} = {default}  # {_type_name(s.type)}; {s.help}")
    return "\n".join(lines)
