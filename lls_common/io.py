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

import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Iterable

from lls_common.errors import LLSError


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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps(obj) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    return atomic_write_text(path, "".join(dumps(r, indent=None) + "\n" for r in records))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (PNG by the path's suffix) and close it."""
    import io

    import matplotlib.pyplot as plt

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
            raise LLSError(f"--out {self.root}: exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.root / name

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(self.path(name), obj)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path(name), text)

    def save_figure(self, name: str, fig: Any) -> Path:
        return save_figure(fig, self.path(name))


def emit_summary(summary: Any, as_json: bool, human: str | None = None) -> None:
    """Print ``summary`` as JSON (``--json``) or the ``human`` text otherwise."""
    if as_json:
        sys.stdout.write(dumps(summary) + "\n")
    elif human is not None:
        sys.stdout.write(human.rstrip("\n") + "\n")
