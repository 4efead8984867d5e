"""The standard options every results command shares (``--out``, ``--json``, ``--seed``, ``--overwrite``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lls_common.errors import LLSError
from lls_common.validate import check_seed

__all__ = ["add_output_args", "add_common_args", "seed_type", "positive_int"]


def positive_int(text: str) -> int:
    """argparse type of counts such as ``--limit``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def seed_type(text: str) -> int:
    """argparse type of ``--seed``: an integer in [0, 2**32 - 1] (refuses -1 up front, not after model work)."""
    try:
        return check_seed(int(text), "seed")
    except ValueError as exc:  # int() failure or LLSError (a ValueError)
        raise argparse.ArgumentTypeError(str(exc) if isinstance(exc, LLSError) else f"not an integer: {text!r}")


def add_output_args(parser: argparse.ArgumentParser, default_out: str | None, seed: int | None = 0) -> None:
    """Add the standard ``--out DIR``, ``--json`` and (optionally) ``--seed N`` options."""
    parser.add_argument(
        "--out", type=Path, default=None if default_out is None else Path(default_out),
        required=default_out is None, metavar="DIR",
        help="folder for results (JSON beside figures)" + ("" if default_out is None else f"; default {default_out}"),
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout (logs go to stderr)")
    if seed is not None:
        parser.add_argument("--seed", type=seed_type, default=seed, help=f"random seed >= 0 (default {seed})")


def add_common_args(parser: argparse.ArgumentParser, json: bool = True) -> None:
    """``--overwrite`` (replace a finished output made with other settings) and, with ``json``, ``--json``."""
    if json:
        parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout (logs go to stderr)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output made with other settings (refused otherwise)")
