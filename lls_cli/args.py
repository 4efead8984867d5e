"""The standard options every results command shares."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_output_args"]


def add_output_args(parser: argparse.ArgumentParser, default_out: str | None, seed: int | None = 0) -> None:
    """Add the standard ``--out DIR``, ``--json`` and (optionally) ``--seed N`` options."""
    parser.add_argument(
        "--out", type=Path, default=None if default_out is None else Path(default_out),
        required=default_out is None, metavar="DIR",
        help="folder for results (JSON beside figures)" + ("" if default_out is None else f"; default {default_out}"),
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    if seed is not None:
        parser.add_argument("--seed", type=int, default=seed, help=f"random seed (default {seed})")
