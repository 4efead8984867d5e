"""``lls split``: one pair file -> two disjoint pair files (held-out and pool) with a recorded seed.

The split rule is :func:`empirical.orchestration.experiment.split_pairs` (the ``split`` stage of ``lls experiment``): the same
data settings, filters and seed give the same two files here and in an experiment's ``data/`` folder. The
pool (``pool.jsonl``) is what ``lls score`` / ``lls build`` select from and ``lls train`` trains on; the
held-out file (``heldout.jsonl``) is what ``lls correlate`` measures on, so that no held-out pair was ever
scored for selection nor trained on. ``split.json`` records the input's content hash, every setting, the
seed, the counts and the package versions; a finished split with the same record is kept as it is.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from empirical.config import DataConfig, Filters, ModelArgs
from lls_common.errors import LLSError

__all__ = ["SPLIT_FILES", "run_split", "split_key"]

#: What ``lls split`` writes into its ``--out`` folder (the last one, the record, is written last).
SPLIT_FILES = ("heldout.jsonl", "pool.jsonl", "split.json")


def _versions() -> dict[str, str]:
    """Versions of the packages that shape the split (numpy's permutation; the tokenizer with truncation)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("lls-toolkit", "numpy", "transformers", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def split_key(d: DataConfig, filters: Filters, seed: int, model: ModelArgs | None) -> dict[str, Any]:
    """What the two files depend on: the data settings, the input's fingerprint (content hash of a file, the
    id of a hub dataset), the filters, the seed and the tokenizer's model (truncation / token filters)."""
    from lls_common.io import fingerprint, json_key

    return json_key({"data": asdict(d), "input": fingerprint(d.path), "filters": asdict(filters), "seed": seed,
                     "tokenizer": None if model is None else asdict(model)})


def needs_tokenizer(d: DataConfig, filters: Filters) -> bool:
    """Truncation (``--truncate``) and the token-length filters count tokens of a model's tokenizer."""
    return d.truncate is not None or filters.needs_tokenizer()


def run_split(d: DataConfig, filters: Filters, out_dir: str | Path, seed: int = 0, *,
              model: ModelArgs | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Split ``d.path`` into ``out_dir/heldout.jsonl`` (``d.heldout`` pairs) and ``out_dir/pool.jsonl`` (the
    rest, or ``d.pool`` of it) by :func:`empirical.orchestration.experiment.split_pairs`; ``out_dir/split.json`` records what
    produced them. Returns that record. Everything the user can get wrong (output place, data file, missing
    ``model`` for truncation, sizes) is refused in one :class:`LLSError` line before any file is written."""
    from empirical.engine import models
    from empirical.stages import data
    from empirical.orchestration.experiment import check_split_sizes, split_pairs
    from lls_common.io import OutputLock, atomic_write_json, atomic_write_jsonl, check_output, key_diff
    from lls_common.validate import check_seed

    check_seed(seed, "seed")
    out = check_output(out_dir, inputs=(d.path,), kind="dir", name="out")
    if needs_tokenizer(d, filters) and model is None:
        raise LLSError("--truncate and the token-length filters count tokens: give --model (its tokenizer only "
                       "is loaded)")
    if model is not None:
        models.check_model_setting(model.model, "--model", revision=model.revision,
                                   trust_remote_code=model.trust_remote_code)
    if data.looks_like_hub_id(d.path):
        data.check_hub_dataset(d.path)
    key = split_key(d, filters, seed, model)
    present = [f for f in SPLIT_FILES if (out / f).exists()]
    if present:
        try:
            old = json.loads((out / "split.json").read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("key") == key and len(present) == len(SPLIT_FILES):
            return old
        if not overwrite:
            why = ("made with other settings (" + ", ".join(key_diff(old["key"], key)[:6]) + ")"
                   if "key" in old else f"holds {present[0]}, not written by lls split")
            raise LLSError(f"out {out}: {why}; give --overwrite to replace it, or another --out")
    rep = data.check_pairs(d.path, split=d.split, limit=d.limit, skip_bad=d.skip_bad, config=d.config_name,
                           data_dir=d.data_dir)
    check_split_sizes(d, rep.n_kept)  # before any tokenizer loads; checked again after filters
    tok = None if model is None else models.load_tokenizer(model.model, revision=model.revision,
                                                            trust_remote_code=model.trust_remote_code)
    held, pool, counts = split_pairs(d, filters, seed, tok)
    record = {"key": key, "seed": seed, "input": key["input"], "counts": counts,
              "files": {"heldout": "heldout.jsonl", "pool": "pool.jsonl"}, "versions": _versions()}
    with OutputLock(out, kind="dir", name="out"):
        (out / "split.json").unlink(missing_ok=True)  # a half-replaced split never looks finished
        atomic_write_jsonl(out / "heldout.jsonl", held)
        atomic_write_jsonl(out / "pool.jsonl", pool)
        atomic_write_json(out / "split.json", record)
    return json.loads(json.dumps(record))
