"""The one library error type.

:class:`LLSError` marks a problem the user can fix (bad input file, bad option or config value,
an output that would overwrite something). Its message is one line naming the file, line, index or
key at fault and, where there is one, the fix. It subclasses :class:`ValueError` so that library
callers can catch it as such; ``lls_cli.main`` is the one place that maps it to exit status 2.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["LLSError", "MissingInputError", "first_line", "write_failure"]


class LLSError(ValueError):
    """A problem with the user's input, reported as one line without a traceback."""


class MissingInputError(LLSError, FileNotFoundError):
    """A user's input that is not there (a run folder without checkpoints, a missing record file): an
    :class:`LLSError`, and a ``FileNotFoundError`` for callers that catch that."""


def first_line(exc: BaseException) -> str:
    """The first non-blank line of ``str(exc)`` (third-party errors often span many lines), else the
    exception's type name: what an :class:`LLSError` wrapping it reports."""
    import errno

    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # a full disk: name the folder, not the errno
        return str(write_failure(exc, exc.filename or "?"))
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_failure(exc: OSError, target: str | os.PathLike) -> LLSError:
    """The one-line user error for an output that could not be written (no space, read-only, a folder in the
    way), naming ``target``'s folder; earlier results are untouched (every write is atomic)."""
    import errno

    p = Path(target)
    folder = p.parent if not p.is_dir() or exc.errno == errno.EISDIR else p
    if exc.errno == errno.ENOSPC:
        return LLSError(f"{folder}: no space left on the device while writing {p.name}; free some space (earlier "
                        "results are intact) and run the same command again")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return LLSError(f"{folder}: not writable ({exc.strerror}); make it writable or give another output")
    if exc.errno == errno.EISDIR:
        return LLSError(f"{p}: is a folder where an output file goes; move it away")
    return LLSError(f"{folder}: cannot write here ({exc.strerror or exc}, writing {p.name})")
