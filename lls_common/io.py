"""Run folders and safe output: the one place that writes results to disk.

Every results command follows the same contract:

* ``--out DIR``: results go to ``DIR`` (created if missing);
* machine-readable JSON is written beside figures;
* ``--json`` prints a summary object on stdout (and nothing else on stdout);
* files are written to a temporary file in the same folder and renamed, so a
  crash never leaves a half-written output;
* user-fixable problems raise :class:`lls_common.errors.LLSError` with one line naming the file,
  line or index at fault.

Use :class:`RunDir` to write into the folder (``lls_cli.args.add_output_args`` gives a subcommand the
standard ``--out`` / ``--json`` / ``--seed`` options).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable

from lls_common.atomic import atomic_write_bytes
from lls_common.errors import LLSError, write_failure


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, dataclasses, paths and non-finite floats to plain JSON values.

    NaN and infinities become ``None`` (JSON has no representation for them).
    """
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars, torch tensors
        return to_jsonable(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    raise TypeError(f"cannot convert {type(obj).__name__} to JSON")


def dumps(obj: Any, indent: int | None = 2) -> str:
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps(obj) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    return atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in records))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int | None = None) -> Path:
    """Save a matplotlib figure atomically (PNG by the path's suffix) and close it, at ``dpi`` (default: the
    one figure resolution, :data:`lls_common.figstyle.DPI`)."""
    import io

    import matplotlib.pyplot as plt

    from lls_common.figstyle import DPI

    dpi = DPI if dpi is None else dpi

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


class RunDir:
    """A results folder: ``RunDir(args.out)``; ``run.path("x.png")``; ``run.write_json("summary.json", obj)``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise LLSError(f"out {self.root}: exists and is not a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LLSError(f"out {self.root}: cannot write here ({exc.strerror or exc})") from None

    def path(self, name: str) -> Path:
        return self.root / name

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.path(name), obj)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path(name), text)

    def save_figure(self, name: str, fig: Any) -> Path:
        return save_figure(fig, self.path(name))


_SUMMARY_STREAM: list[Any] = []


@contextlib.contextmanager
def json_stdout(active: bool):
    """With ``active`` (``--json``), everything printed inside goes to stderr (library logs, Trainer dicts) and
    only :func:`emit_summary` writes to the real stdout, so stdout is one JSON document."""
    if not active:
        yield
        return
    _SUMMARY_STREAM.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _SUMMARY_STREAM.pop()


def emit_summary(summary: Any, as_json: bool, human: str | None = None) -> None:
    """Print ``summary`` as JSON (``--json``) or the ``human`` text otherwise."""
    if as_json:
        (_SUMMARY_STREAM[-1] if _SUMMARY_STREAM else sys.stdout).write(dumps(summary) + "\n")
    elif human is not None:
        sys.stdout.write(human.rstrip("\n") + "\n")


# ------------------------------------------------------------------------------ fingerprints and caching
#: Files up to this size are fingerprinted by content (SHA-256); larger ones by size and modification time.
HASH_LIMIT = 256 * 2**20


def fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """What identifies an input file's content, for resume keys and output records.

    ``{"size", "sha256"}`` for files up to :data:`HASH_LIMIT` (an edited file of the same size, or the same
    file under another path, is recognised as such), else ``{"path" (resolved), "size", "mtime_ns"}``.
    A folder gives ``{"path", "files": {relative name: fingerprint}}`` of its files; a missing path (a hub id)
    gives ``{"id": str(path)}``.
    """
    import hashlib

    p = Path(path).expanduser()
    if p.is_dir():
        return {"path": str(p.resolve()), "files": {str(f.relative_to(p)): fingerprint(f)
                                                     for f in sorted(p.rglob("*")) if f.is_file()}}
    if not p.is_file():
        return {"id": str(path)}
    st = p.stat()
    if st.st_size > HASH_LIMIT:
        return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return {"size": st.st_size, "sha256": h.hexdigest()}


_DIGESTS: dict[tuple[str, int, int, int], str] = {}


#: Files from this size on are memoised per process by (path, size, mtime, inode); smaller ones are always
#: hashed (a same-size rewrite within one clock tick keeps the mtime of a small file).
MEMO_MIN = 16 * 2**20


def content_digest(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, whatever its size (large files memoised, see :data:`MEMO_MIN`).

    Unlike :func:`fingerprint`, large files are hashed too: this is what a model's weights and an adapter
    are identified by, so one changed byte gives another digest."""
    import hashlib

    p = Path(path)
    st = p.stat()
    memo = (str(p.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo in _DIGESTS:
        return _DIGESTS[memo]
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    if st.st_size >= MEMO_MIN:
        _DIGESTS[memo] = h.hexdigest()
    return h.hexdigest()


def folder_digest(folder: str | os.PathLike, patterns: Iterable[str] = ("*",)) -> str:
    """One SHA-256 over the files of ``folder`` matching ``patterns`` (relative name + :func:`content_digest`
    of each, sorted): the same content under another path gives the same digest. Hidden files are left out."""
    import hashlib

    root = Path(folder)
    files = sorted({f for pat in patterns for f in root.rglob(pat) if f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(root).parts)})
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(root).as_posix()}\0{content_digest(f)}\n".encode())
    return h.hexdigest()


def outputs_fingerprint(root: str | os.PathLike, outputs: Iterable[str | os.PathLike]) -> dict[str, str | None]:
    """``{name relative to root: digest}`` of a step's outputs (a folder: :func:`folder_digest`; missing:
    None), recorded beside a cached result so that a replaced or damaged output is noticed on resume."""
    root = Path(root)
    out: dict[str, str | None] = {}
    for o in outputs:
        p = Path(o)
        try:
            name = p.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            name = str(p.resolve())
        out[name] = folder_digest(p) if p.is_dir() else content_digest(p) if p.is_file() else None
    return out


def json_key(obj: Any) -> Any:
    """``obj`` as the plain JSON value it will be compared with after a round trip through a file."""
    return json.loads(dumps(obj, indent=None))


def cached_json(path: str | os.PathLike, key: Any, compute: Any, outputs: Iterable[str | os.PathLike] = ()) -> Any:
    """The one resume rule: ``path`` holds ``{"key", "result"}``; reuse ``result`` when the key matches.

    ``compute()`` runs when ``path`` is missing, unreadable, holds another key, or when one of ``outputs``
    (files the step leaves behind) is missing; its result is then saved (atomically) with ``key``.
    """
    hit = cached_result(path, key, outputs)
    if hit is not None:
        return hit
    result = compute()
    atomic_write_json(path, {"key": key, "result": result})
    return json_key(result)


def cached_result(path: str | os.PathLike, key: Any, outputs: Iterable[str | os.PathLike] = ()) -> Any:
    """The lookup half of :func:`cached_json`: the saved result when ``path`` holds ``key`` and every output
    exists, else None (a step's result is never None: it is a dict)."""
    rec = read_record(path)
    if rec is not None and rec["key"] == json_key(key) and all(Path(o).exists() for o in outputs):
        return rec.get("result")
    return None


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """A ``{"key", "result"}`` record written by :func:`cached_json` (None when missing or unreadable)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "key" in rec else None


def key_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The dotted names of the settings that differ between two keys (for "made with other settings")."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += key_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [prefix.rstrip(".") or "(all)"]


# ------------------------------------------------------------------------------------- output guards
def check_output(out: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (), kind: str = "file",
                 name: str = "out", inputs_inside: bool = True) -> Path:
    """Refuse, before any work, an output that cannot or must not be written.

    ``kind`` is "file" (``out`` may not be an existing folder) or "dir" (``out`` may not be an existing file).
    Refused: ``out`` equal to (or, for a folder, inside which the run writes over) one of ``inputs``; a path
    under an existing file; a place that is not writable. ``name`` is the setting's key for messages.
    ``inputs_inside=False`` (a folder output): also refuse an ``out`` folder that directly holds one of
    ``inputs`` -- e.g. ``lls train --out`` the select folder its ``--data`` lives in, which would mix two
    commands' results in one folder (an input deeper down, ``--out .`` with ``sel/lls.jsonl``, is allowed).
    """
    p = Path(out).expanduser()
    for path, what in ((p, name), *((Path(i).expanduser(), "input") for i in inputs)):
        check_no_symlink_loop(path, what)
    if kind == "file" and p.is_dir():
        raise LLSError(f"{name} {p}: is a folder; give a file name")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise LLSError(f"{name} {p}: exists and is not a folder")
    for i in inputs:
        ip = Path(i).expanduser()
        if ip.exists() and p.exists() and os.path.samefile(ip, p):
            raise LLSError(f"{name} {p}: is an input of this run; write the output elsewhere")
        if kind == "file" and ip.resolve() == p.resolve():
            raise LLSError(f"{name} {p}: is an input of this run; write the output elsewhere")
        if not inputs_inside and kind == "dir" and ip.exists() and p.is_dir() \
                and p.resolve() in (ip.resolve().parent, ip.absolute().parent.resolve()):
            raise LLSError(f"{name} {p}: holds an input of this run ({i}); write the output to another folder")
    parent = p if kind == "dir" else p.parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise LLSError(f"{name} {p}: {probe} is a file, not a folder")
    if not _can_create_in(probe):
        raise LLSError(f"{name} {p}: {probe} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise LLSError(f"{name} {p}: is not writable")
    return p


def check_no_symlink_loop(path: str | os.PathLike, name: str = "path") -> None:
    """Refuse (one :class:`LLSError` line) a path that is, or passes through, a symbolic link loop: Python
    raises ``RuntimeError`` (``Path.resolve``) or ``OSError`` ELOOP on it, deep inside whatever reads it."""
    import errno

    try:
        Path(path).expanduser().resolve()
    except RuntimeError:
        pass
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            return
    else:
        return
    raise LLSError(f"{name} {path}: is a symbolic link loop (the link points back to itself); give the real file "
                   "or folder")


def remove_if_empty(out: str | os.PathLike, fresh: bool) -> None:
    """After a failed run: remove the ``out`` folder it created (``fresh``: it did not exist before) when
    nothing but the released lock's absence is left in it -- a refused start leaves no trace."""
    if fresh:
        with contextlib.suppress(OSError):
            Path(out).rmdir()  # only succeeds on an empty folder


def _can_create_in(folder: Path) -> bool:
    """True when a file can really be created (and removed) in ``folder``; ``os.access`` is not enough
    (it says yes for root on /proc and /sys, and ignores read-only mounts)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lls-probe-")
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return True


class OutputLock:
    """``with OutputLock(out):`` -- one run per output at a time; a second is refused with a clear message.

    The lock is ``<out>.lock`` (beside a file output, or ``<dir>/.lock`` for a folder) holding the owner's pid
    and host from the moment it exists: the line is written to a temporary file that is then hard-linked to
    the lock's name (which fails when the lock exists). A lock that is empty or unreadable (left by a crash or
    a full disk) or left by a process that no longer runs (same host) is taken over, with a note on stderr.
    The lock is removed on exit, also on errors, so a failed start never blocks the corrected command.
    """

    def __init__(self, out: str | os.PathLike, kind: str = "file", name: str = "out"):
        p = Path(out)
        self.path = p / ".lock" if kind == "dir" else p.with_name(p.name + ".lock")
        self.name, self.out = name, p
        self._held = False

    def _stale(self) -> str | None:
        """Why the existing lock may be taken over (None: it belongs to a live or unknown process)."""
        import socket

        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return "gone"
        except (OSError, UnicodeDecodeError):
            return "unreadable"
        fields = text.split()
        if len(fields) < 2 or not fields[0].isdigit():
            return "empty" if not text.strip() else "damaged"
        pid, host = fields[:2]
        if host != socket.gethostname():
            return None
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return f"left by process {pid}, which no longer runs"
        except OSError:
            return None
        return None

    def _create(self) -> bool:
        """Create the lock with its content in one step; False when it exists already."""
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()} {socket.gethostname()}\n")
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def __enter__(self) -> "OutputLock":
        for _ in range(3):
            try:
                created = self._create()
            except OSError as exc:
                raise write_failure(exc, self.path) from None
            if created:
                self._held = True
                return self
            why = self._stale()
            if why is not None:
                if why != "gone":
                    print(f"note: {self.name} {self.out}: taking over the lock {self.path} ({why})", file=sys.stderr)
                self.path.unlink(missing_ok=True)
                continue
            try:
                owner = self.path.read_text().strip()
            except OSError:
                owner = "?"
            raise LLSError(f"{self.name} {self.out}: another run is writing it (lock {self.path}, "
                           f"pid/host {owner}); wait for it, or delete the lock if that process is gone")
        raise LLSError(f"{self.name} {self.out}: could not take the lock {self.path}")

    def __exit__(self, *exc: Any) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False


# ------------------------------------------------------------------------------------ guarded reading
_KINDS = {dict: "a JSON object", list: "a JSON list", str: "a string"}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: str | os.PathLike, expect: type | None = dict,
              fix: str = "re-run the stage that writes it, or restore it from a copy") -> Any:
    """Read a JSON file of a run folder, or raise one :class:`LLSError` line naming the file, what is wrong
    with it and ``fix``: missing, a folder, unreadable, not UTF-8, not valid JSON (e.g. truncated), holding
    ``NaN`` / ``Infinity`` (never written by :func:`dumps`), or not of type ``expect``."""
    p = Path(path)
    if not p.exists():
        raise LLSError(f"{p}: missing; {fix}")
    if p.is_dir():
        raise LLSError(f"{p}: is a folder, expected a JSON file; {fix}")
    try:
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise LLSError(f"{p}: cannot read ({exc.strerror or exc}); check its permissions") from None
    except UnicodeDecodeError:
        raise LLSError(f"{p}: not UTF-8 text (damaged); {fix}") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise LLSError(f"{p}:{exc.lineno}: not valid JSON ({exc.msg}; truncated?); {fix}") from None
    except ValueError as exc:
        raise LLSError(f"{p}: holds a non-finite value ({exc}); {fix}") from None
    if expect is not None and not isinstance(obj, expect):
        raise LLSError(f"{p}: holds {type(obj).__name__ if obj is not None else 'null'}, expected "
                       f"{_KINDS.get(expect, expect.__name__)}; {fix}")
    return obj


def check_number_lists(obj: Any, path: str | os.PathLike, keys: Iterable[str]) -> None:
    """Refuse (:class:`LLSError` naming ``path`` and the key) a stored vector under one of ``keys`` (at any
    depth of ``obj``) that holds anything but finite numbers -- a null where a number was, for instance."""
    keys = set(keys)

    def walk(o: Any, where: str) -> None:
        if isinstance(o, dict):
            for k, v in o.items():
                here = f"{where}.{k}" if where else str(k)
                vecs = [v] if isinstance(v, list) else list(v.values()) if isinstance(v, dict) and v and all(
                    isinstance(x, list) for x in v.values()) else None
                if k in keys and vecs is not None:
                    for vec in vecs:
                        if vec is not None and (not isinstance(vec, list) or not all(
                                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                for x in vec)):
                            raise LLSError(f"{path}: {here} must be a list of finite numbers (damaged file); "
                                           "re-run the stage that writes it, or restore it from a copy")
                else:
                    walk(v, here)

    walk(obj, "")
