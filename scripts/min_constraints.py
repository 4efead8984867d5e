#!/usr/bin/env python3
"""Write a pip constraints file that pins EVERY dependency of pyproject.toml at its lower bound.

    python3 scripts/min_constraints.py CONSTRAINTS [--extras empirical,test] [--override torch==2.13.0 ...]

Each requirement of ``[project] dependencies`` and of the named extras must have a ``>=`` lower bound (one
without is an error: an unstated bound cannot be tested); it becomes ``name==bound`` (environment markers
kept). ``--override`` replaces the pin of one package (torch: the only build installable on the CI machine
is newer than pyproject's bound, which stays wide for GPU users' own builds). The CI ``min`` job installs
with ``pip install -c CONSTRAINTS -e ".[empirical,test]"`` and runs its tests in that environment.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?$")


def lower_bound_pins(pyproject: Path, extras: list[str]) -> list[str]:
    """``["numpy==1.24", ...]``: one pin per requirement, its ``>=`` bound; ``SystemExit`` naming a
    requirement without one."""
    proj = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    reqs = list(proj["dependencies"])
    for extra in extras:
        reqs += proj["optional-dependencies"][extra]
    pins: dict[str, str] = {}
    for req in reqs:
        m = _REQ.match(req)
        if m is None:
            sys.exit(f"pyproject: cannot read the requirement {req!r}")
        name, spec, marker = m.group(1), m.group(3), m.group(4) or ""
        low = re.search(r">=\s*([0-9][^,\s]*)", spec)
        if low is None:
            sys.exit(f"pyproject: {req!r} has no lower bound (>=); the min job pins every dependency at one")
        key = re.sub(r"[-_.]+", "-", name).lower()
        pins[key] = f"{name}=={low.group(1)}{(' ' + marker) if marker else ''}"
    return list(pins.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="constraints file to write")
    ap.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    ap.add_argument("--extras", default="empirical,test", help="comma-separated extras (default empirical,test)")
    ap.add_argument("--override", action="append", default=[], metavar="NAME==VERSION",
                    help="pin NAME at VERSION instead of its lower bound (repeatable)")
    args = ap.parse_args(argv)
    pins = lower_bound_pins(args.pyproject, [e for e in args.extras.split(",") if e])
    for o in args.override:
        name = re.split(r"[=<>!~ ]", o, maxsplit=1)[0].lower()
        pins = [p for p in pins if re.split(r"[=<>!~ ]", p, maxsplit=1)[0].lower() != name] + [o]
    args.out.write_text("\n".join(pins) + "\n")
    print("min-versions pins: " + ", ".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
