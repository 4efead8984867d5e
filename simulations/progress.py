"""Progress for the simulator's long runs (``lls demo``, ``lls simulate``), always on stderr.

On a terminal: a tqdm bar. Otherwise (logs, CI, ``nohup``): one plain line every ``every`` seconds
and one at the end, e.g. ``lls simulate: 4/9 points, 12.3 s elapsed, ≈ 15 s left (overlap=8, ...)``,
so a log shows that a run is alive and how far it is. stdout is left alone (``--json`` prints only
JSON there).
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """``p = Progress(total, "lls demo", "settings"); p.update("same-teacher"); ...; p.close()``."""

    def __init__(self, total: int, desc: str, unit: str, every: float = 10.0, stream=None, tty: bool | None = None):
        self.total, self.desc, self.unit, self.every = int(total), desc, unit, float(every)
        self.stream = stream if stream is not None else sys.stderr
        is_tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.done = 0
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        if is_tty:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=unit.rstrip("s"), file=self.stream, leave=False)

    def line(self, label: str = "") -> str:
        """The plain progress line for the current state."""
        el = time.perf_counter() - self.t0
        left = f", ≈ {el / self.done * (self.total - self.done):.0f} s left" if 0 < self.done < self.total else ""
        return f"{self.desc}: {self.done}/{self.total} {self.unit}, {el:.1f} s elapsed{left}" + (f" ({label})" if label else "")

    def update(self, label: str = "", n: int = 1) -> None:
        """Count ``n`` finished items; ``label`` names the last one."""
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last >= self.every or self.done >= self.total:
            self.last = now
            print(self.line(label), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
