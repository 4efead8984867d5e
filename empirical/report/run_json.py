"""The one reader of a run folder's JSON for the reports (:mod:`empirical.report` and its sections)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["read_run_json"]


def read_run_json(path: Path, expect: type = dict) -> Any:
    """Every JSON file a report reads goes through here: :func:`lls_common.io.read_json` (a damaged file is one
    :class:`LLSError` line naming it) and, for stored vectors (``z_s``, ``z_T``, ``z_M``), finite numbers only."""
    from lls_common.io import check_number_lists, read_json

    obj = read_json(path, expect, fix="re-run `lls experiment` with the run's config to rewrite it, or restore it "
                                      "from a copy")
    check_number_lists(obj, path, ("z_s", "z_T", "z_M"))
    return obj
