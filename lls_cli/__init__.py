"""The ``lls`` console command.

Each package contributes its subcommands through a module that defines
``register(subparsers)``; the module must be cheap to import (no torch at import
time) so that ``lls --help`` stays instant. Handlers receive the parsed
``argparse.Namespace`` and return an exit code.

Errors the user can fix (bad input files, bad options) are raised as
:class:`lls_common.errors.LLSError` and reported as a single line on stderr with
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from lls_common.errors import LLSError
from lls_common.io import json_stdout

#: Modules that register subcommands, in the order they appear in ``lls --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "lls_cli.commands.simulate",
    "lls_cli.commands.proof",
    "lls_cli.commands.data",
    "lls_cli.commands.training",
    "lls_cli.commands.lowrank",
    "lls_cli.commands.report",
)


def package_version() -> str:
    """The installed ``lls-toolkit`` version from the package metadata (pyproject's ``version``), or
    ``"unknown (not installed; pip install -e .)"`` when the code runs from a folder that pip never installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lls-toolkit")
    except PackageNotFoundError:
        return "unknown (not installed; pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lls",
        description="Logit-Linear Selection toolkit: theory checks, simulator, real-LLM pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"lls {package_version()}",
                        help="print the installed lls-toolkit version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        with json_stdout(bool(getattr(args, "json", False))):
            return int(args.func(args) or 0)
    except LLSError as exc:
        print(f"lls {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lls {args.command}: interrupted (re-run the same command to resume)", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk is the user's to fix; any other OSError is shown as it is
        import errno

        from lls_common.errors import write_failure

        if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        print(f"lls {args.command}: error: {write_failure(exc, exc.filename or Path.cwd() / '?')}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
