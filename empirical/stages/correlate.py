"""The paper's Table 1 protocol: correlation of the trained student's margins with the system prompt's.

On held-out pairs i (never selected nor trained on):

    z_M(i) = rho_{M_k}(i)        = margin(log pi_k(+|p), log pi_k(-|p), log pi_0(+|p), log pi_0(-|p))
    z_s(i) = rho_{M_0, s}(i)     = margin(log pi_0(+|s,p), log pi_0(-|s,p), log pi_0(+|p), log pi_0(-|p))

where pi_0 is the initial student, pi_k the student with the LoRA adapter of checkpoint k, s the system
prompt. Every formula comes from :func:`lls_theory.margins.margin` and
:func:`lls_theory.stats.correlation_report` (uncentred cosine = the theorem's Corr, Pearson, Spearman,
bootstrap CIs, permutation p-value). Log-probs via :func:`empirical.engine.scoring.score_pairs` (fast scorer).

Beyond the theorem's pair (z_s, z_M) two more vectors are reported when they exist:

- the random-control run ("arms"): the same protocol for a student trained on a same-size random subset,
  the baseline any LLS effect must beat, and the paired difference LLS - random on the same pairs
  (:func:`arm_contrast`);
- the teacher-side vector z_T(i) = rho_{T, s}(i) (the teacher's own system-prompt margin shift) when
  the teacher is not the student. corr(z_T, z_M) is what the paper's Table 1 reports across teachers;
  corr(z_T, z_s) says how alike the two models' system-prompt shifts are before any training (the
  quantity ``lls pair-check`` estimates).

Held-out pairs must not occur in any arm's training subset. The check compares *content*, never ids
(default ids are ``<file stem>:<index>``, so two unrelated files share them): a held-out pair overlaps a
training pair when their prompts are the same and each training reply equals, or is the start of, the
held-out reply with the same label or the opposite one (training replies may be truncated copies).

Every input is read and checked before any model is loaded (arguments, held-out file, each run's training
data, overlap). Small samples are flagged: ``warnings`` in the result lists every statistic printed whose
sample is too small for it (:func:`sample_warnings`). Progress goes to stderr: one line per scoring stage
(base, system prompt, teacher, each checkpoint) with the elapsed time, and tqdm bars while scoring when
stderr is a terminal. ``device`` / ``dtype`` of the loaded models are recorded in the result.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from lls_common.errors import LLSError, MissingInputError

__all__ = ["pair_key", "pair_fingerprint", "check_disjoint", "checkpoint_margins", "arm_report", "arm_contrast",
           "correlate_arms", "correlate_run", "scores_from_file", "sample_warnings", "MIN_N_FOR_CI",
           "MIN_BOOT", "Progress"]

#: Held-out pairs below which a bootstrap CI of a correlation is flagged as unreliable (percentile intervals
#: of Pearson/Spearman under-cover badly at small n; 30 is the usual floor).
MIN_N_FOR_CI = 30
#: Resamples below which the ends of a 95% percentile interval are flagged as noisy.
MIN_BOOT = 1000


def pair_key(prompt: Any, chosen: Any, rejected: Any) -> str:
    """Canonical text of a pair (prompt messages + the two reply texts) for overlap checks."""
    from empirical.engine import render
    from empirical.stages.train import _reply_text

    msgs = render.as_messages(prompt if not isinstance(prompt, tuple) else list(prompt))
    return json.dumps([msgs, _reply_text(chosen, "pair"), _reply_text(rejected, "pair")], sort_keys=True)


def _norm(text: Any) -> str:
    return " ".join(str(text).split())


def pair_fingerprint(prompt: Any) -> str:
    """Canonical text of a prompt (messages with whitespace runs collapsed) used to index pairs by content."""
    from empirical.engine import render

    msgs = render.as_messages(prompt if not isinstance(prompt, tuple) else list(prompt))
    return json.dumps([[m["role"], _norm(m["content"])] for m in msgs])


def check_disjoint(heldout: list[Any], train_recs: list[dict[str, Any]], train_name: str = "the training subset") -> None:
    """``LLSError`` naming the first held-out pair that also occurs in the training subset (by content).

    Same prompt (whitespace-normalised) and each training reply equal to, or the start of, the held-out
    reply of the same label or of the opposite one. Ids are not compared (see the module doc).
    """
    from empirical.stages.train import _reply_text

    index: dict[str, list[tuple[str, str, str]]] = {}
    for k, r in enumerate(train_recs):
        where = r.get("_where", f"training pair {k}")
        index.setdefault(pair_fingerprint(r["prompt"]), []).append(
            (_norm(_reply_text(r["chosen"], where)), _norm(_reply_text(r["rejected"], where)), where))
    for k, p in enumerate(heldout):
        hits = index.get(pair_fingerprint(p.messages))
        if not hits:
            continue
        c, r = _norm(p.chosen), _norm(p.rejected)
        for tc, tr, where in hits:
            if (c.startswith(tc) and r.startswith(tr)) or (c.startswith(tr) and r.startswith(tc)):
                raise LLSError(f"held-out pair {k} (id {p.id!r}, {p.where}) is in {train_name} ({where}): same text "
                               "(prompt and replies); give held-out pairs that were never selected nor trained on")


class Progress:
    """Progress of a multi-stage scoring job on stderr: one line per stage with the elapsed time, e.g.
    ``correlate [3/7] arm lls, checkpoint step 40: scoring 500 pairs (12 s)``, and tqdm bars inside a
    stage (``bar``) only when stderr is a terminal, so logs get plain lines and terminals get bars."""

    def __init__(self, total: int, enabled: bool = True, log: Callable[[str], None] | None = None,
                 name: str = "correlate"):
        self.total, self.k, self.t0, self.enabled, self.name = max(int(total), 1), 0, time.time(), enabled, name
        self.log = log if log is not None else (lambda m: print(m, file=sys.stderr, flush=True))

    @property
    def bar(self) -> bool:
        return self.enabled and bool(getattr(sys.stderr, "isatty", lambda: False)())

    def stage(self, what: str) -> None:
        self.k += 1
        if self.enabled:
            self.log(f"{self.name} [{min(self.k, self.total)}/{self.total}] {what} ({time.time() - self.t0:.0f} s)")

    def note(self, what: str) -> None:
        if self.enabled:
            self.log(f"{self.name}: {what}")


def sample_warnings(n: int, n_boot: int, n_perm: int, level: float = 0.95) -> list[str]:
    """The statistics printed by correlate whose sample is too small for them (empty when none).

    ``n`` < :data:`MIN_N_FOR_CI` pairs: bootstrap CIs of a correlation too narrow to trust;
    ``n_boot`` < :data:`MIN_BOOT`: noisy interval ends; ``n_perm``: the smallest attainable permutation
    p-value is 1 / (n_perm + 1), flagged when it is above 0.01.
    """
    out = []
    if n < MIN_N_FOR_CI:
        out.append(f"n = {n} held-out pairs: bootstrap {level:.0%} CIs of a correlation are unreliable below "
                   f"{MIN_N_FOR_CI} pairs (they under-cover); treat the intervals and p-values as rough (paper: 500)")
    if n_boot < MIN_BOOT:
        out.append(f"n_boot = {n_boot}: a {level:.0%} percentile interval from fewer than {MIN_BOOT} resamples "
                   "has noisy ends")
    if 1.0 / (n_perm + 1) > 0.01:
        out.append(f"n_perm = {n_perm}: the smallest attainable permutation p-value is {1.0 / (n_perm + 1):.3g}")
    return out


def _degenerate_warnings(refs: dict[str, Any]) -> list[str]:
    import numpy as np

    return [f"{name} is constant (every pair the same margin): its correlations are undefined (NaN)"
            for name, v in refs.items() if np.ptp(np.asarray(v, dtype=np.float64)) == 0]


def _vec(x: Any) -> Any:
    import numpy as np

    return np.asarray(x, dtype=np.float64)


def checkpoint_margins(model: Any, tok: Any, recs: list[dict[str, Any]], base: Any, run: str | Path,
                       cache_dir: str | Path | None = None, progress: Progress | None = None,
                       arm: str = "", reference: str = "auto") -> dict[int, Any]:
    """z_M for every adapter checkpoint of ``run``: ``{step: array (n,)}``.

    ``base`` = :class:`empirical.engine.scoring.PairScores` of the initial student without system prompt on
    ``recs``. ``model`` is wrapped by PEFT in place and unwrapped before returning (pass a private copy).
    With ``cache_dir`` each checkpoint's log-probs are saved (atomically) with their key and reused on a
    re-run only for the same key: the pairs and reference rendering, the content of the adapter
    (:func:`adapter_digest`) and the base model (:func:`model_identity`) -- a retrained adapter or another
    model never returns old log-probs.
    ``progress``: a :class:`Progress` that gets one stage per checkpoint.
    """
    import hashlib

    import numpy as np
    from peft import PeftModel

    from empirical.engine import scoring
    from empirical.stages.train import require_checkpoints
    from lls_common.io import atomic_write_json
    from lls_theory.margins import margin

    cks = require_checkpoints(run)
    digest = hashlib.sha256(json.dumps([reference, recs], sort_keys=True, default=str).encode()).hexdigest()
    base_id = model_identity(model)
    out: dict[int, Any] = {}
    peft_model = None
    try:
        for step, path in cks:
            cache = Path(cache_dir) / f"{Path(run).name}-step{step}.json" if cache_dir is not None else None
            label = f"arm {arm}, " if arm else ""
            key = {"recs": digest, "adapter": adapter_digest(path), "model": base_id}
            if cache is not None and cache.is_file():
                try:
                    saved = json.loads(cache.read_text())
                except (OSError, ValueError):
                    saved = {}
                if isinstance(saved, dict) and saved.get("key") == key:
                    try:
                        lc, lr = _vec(saved["logp_chosen"]), _vec(saved["logp_rejected"])
                        if lc.shape != (len(recs),) or lr.shape != (len(recs),) \
                                or not (np.isfinite(lc).all() and np.isfinite(lr).all()):
                            raise ValueError("cache does not match the pairs")
                        out[step] = margin(lc, lr, base.logp_chosen, base.logp_rejected)
                    except (KeyError, TypeError, ValueError):  # a damaged cache file: score again
                        pass
                    else:
                        if progress is not None:
                            progress.stage(f"{label}checkpoint step {step}: saved log-probs reused")
                        continue
            name = f"step{step}"
            src = getattr(model, "_lls_source", None)
            if isinstance(src, dict) and src.get("spec"):  # an adapter of another base model is refused
                from empirical.stages.train import check_adapter_base

                check_adapter_base(path, src["spec"], src.get("revision"))
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
            else:
                peft_model.load_adapter(str(path), adapter_name=name)
            peft_model.set_adapter(name)
            peft_model.eval()
            if progress is not None:
                progress.stage(f"{label}checkpoint step {step}: scoring {len(recs)} pairs")
            tr = scoring.score_pairs(peft_model, tok, recs, None, progress=progress is not None and progress.bar,
                                     reference=reference)
            if cache is not None:
                atomic_write_json(cache, {"key": key, "adapter_path": str(path),
                                          "logp_chosen": [float(v) for v in tr.logp_chosen],
                                          "logp_rejected": [float(v) for v in tr.logp_rejected]})
            out[step] = margin(tr.logp_chosen, tr.logp_rejected, base.logp_chosen, base.logp_rejected)
    finally:
        if peft_model is not None:
            peft_model.unload()
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def adapter_digest(folder: str | Path) -> str:
    """SHA-256 over a LoRA adapter folder's weights and configuration (what a cached score depends on).

    The configuration enters as canonical JSON with ``target_modules`` sorted: PEFT writes that list from a set,
    so its order follows the process's hash seed, and the same adapter saved twice must give one digest."""
    import hashlib

    from lls_common.io import folder_digest

    weights = folder_digest(folder, ("adapter_model.*",))
    f = Path(folder) / "adapter_config.json"
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError):
        cfg = None
    if isinstance(cfg, dict) and isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    return hashlib.sha256((weights + json.dumps(cfg, sort_keys=True)).encode()).hexdigest()


def model_identity(model: Any) -> Any:
    """The fingerprint of the model a loaded ``model`` came from (:func:`empirical.engine.models.model_fingerprint`
    of the spec :func:`empirical.engine.models.load` recorded on it); None for a model built in memory."""
    from empirical.engine import models

    src = getattr(model, "_lls_source", None)
    if not isinstance(src, dict) or not src.get("spec"):
        return None
    try:
        return models.model_fingerprint(src["spec"], src.get("revision"))
    except (ValueError, OSError):
        return {"spec": src["spec"]}


def arm_report(refs: dict[str, Any], z_m: dict[int, Any], n_boot: int = 2000, n_perm: int = 2000,
               seed: int = 0) -> dict[str, Any]:
    """Correlation reports of each reference vector (``{"z_s": ..., "z_T": ...}``) with z_M per checkpoint.

    Returns ``{"checkpoints": [{step, mean_z_M, frac_z_M_pos, vs: {ref: report}}], "final": {ref: report}}``.
    """
    import numpy as np

    from lls_theory.stats import correlation_report

    rows = []
    for step in sorted(z_m):
        zm = np.asarray(z_m[step])
        rows.append({"step": int(step), "mean_z_M": float(zm.mean()), "frac_z_M_pos": float(np.mean(zm > 0)),
                     "vs": {name: correlation_report(np.asarray(ref), zm, n_boot=n_boot, n_perm=n_perm, seed=seed)
                            for name, ref in refs.items()}})
    return {"checkpoints": rows, "final": rows[-1]["vs"]}


def correlate_arms(model_and_tok: tuple[Any, Any], student_base: Any, student_sys: Any, recs: list[dict[str, Any]],
                   arms: dict[str, str | Path], teacher: tuple[Any, Any] | None = None,
                   cache_dir: str | Path | None = None, n_boot: int = 2000, n_perm: int = 2000,
                   seed: int = 0, progress: Progress | None = None, reference: str = "auto") -> dict[str, Any]:
    """The Table-1 protocol for several training runs ("arms", e.g. LLS and random control) of one student.

    ``student_base`` / ``student_sys``: PairScores of the initial student without / with the system prompt
    on ``recs``; ``teacher``: (base, sys) PairScores of the teacher on the same ``recs``, when the teacher
    is another model. Each arm's training subset must be disjoint from ``recs`` by content (``LLSError``,
    checked for every arm before any checkpoint is scored).
    Returns ``{"n", "z_s", "z_T"?, "teacher_vs_student"?, "arms": {name: arm_report + "z_M"},
    "lls_minus_random"?, "warnings", "device", "dtype"}`` (``lls_minus_random`` when arms "lls" and "random" both exist:
    :func:`arm_contrast`; ``warnings``: :func:`sample_warnings` plus constant reference vectors).
    """
    from lls_theory.margins import margin
    from lls_theory.stats import correlation_report

    model, tok = model_and_tok
    pairs = [_as_pair(r, k) for k, r in enumerate(recs)]
    for name, run in arms.items():  # every overlap refused before any scoring
        check_arm_disjoint(pairs, Path(run), name)
    z_s = margin(student_sys.logp_chosen, student_sys.logp_rejected, student_base.logp_chosen,
                 student_base.logp_rejected)
    refs = {"z_s": z_s}
    res: dict[str, Any] = {"n": len(recs), "z_s": [float(v) for v in z_s], "ids": [p.id for p in pairs]}
    if hasattr(tok, "apply_chat_template"):  # the rendering "auto" resolved to for this tokenizer
        from empirical.engine import render

        res["reference_resolved"] = render.resolve_reference(tok, reference)
    if hasattr(model, "parameters"):  # where the checkpoints are scored (the JSON every command writes)
        from empirical.engine import models

        res.update(models.placement(model))
    if teacher is not None:
        tb, ts = teacher
        z_t = margin(ts.logp_chosen, ts.logp_rejected, tb.logp_chosen, tb.logp_rejected)
        refs["z_T"] = z_t
        res["z_T"] = [float(v) for v in z_t]
    res["warnings"] = sample_warnings(len(recs), n_boot, n_perm) + _degenerate_warnings(refs)
    if progress is not None:
        for w in res["warnings"]:
            progress.note(f"warning: {w}")
    if teacher is not None:
        res["teacher_vs_student"] = correlation_report(refs["z_T"], z_s, n_boot=n_boot, n_perm=n_perm, seed=seed)
    res["arms"] = {}
    for name, run in arms.items():
        run = Path(run)
        z_m = checkpoint_margins(model, tok, recs, student_base, run, cache_dir=cache_dir, progress=progress,
                                 arm=name, reference=reference)
        rep = arm_report(refs, z_m, n_boot=n_boot, n_perm=n_perm, seed=seed)
        rep["run"] = str(run)
        rep["z_M"] = {str(k): [float(v) for v in z] for k, z in z_m.items()}
        res["arms"][name] = rep
    if {"lls", "random"} <= set(res["arms"]):
        res["lls_minus_random"] = arm_contrast(refs, res["arms"], n_boot=n_boot, seed=seed)
    return res


def arm_seed_groups(arms: Any) -> dict[str, list[str]]:
    """The arms grouped by training seed: ``{"lls": ["lls", "lls-1", ...], "random": ["random", "random-1",
    ...]}`` (an arm ``<g>-<k>`` is seed k of group g; groups in first-seen order, seeds in index order)."""
    import re

    groups: dict[str, list[tuple[int, str]]] = {}
    for name in arms:
        m = re.fullmatch(r"(.+)-(\d+)", name)
        g, k = (m.group(1), int(m.group(2))) if m else (name, 0)
        groups.setdefault(g, []).append((k, name))
    return {g: [n for _, n in sorted(v)] for g, v in groups.items()}


def seed_summary(res: dict[str, Any], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Correlations over training seeds from a :func:`correlate_arms` result: for each arm group (``lls``,
    ``random``) and reference vector (z_s, z_T), Pearson of the reference with each seed's final z_M, their mean,
    SD and a CI over pairs and seeds (:func:`lls_theory.stats.seeded_correlation`); and the LLS − random
    difference of the seed means (:func:`lls_theory.stats.seeded_difference`). Every entry says what its CI
    includes."""
    import numpy as np

    from lls_theory.stats import seeded_correlation, seeded_difference

    refs = {"z_s": np.asarray(res["z_s"])} | ({"z_T": np.asarray(res["z_T"])} if res.get("z_T") is not None else {})
    groups = arm_seed_groups(res["arms"])
    final = {a: np.asarray(r["z_M"][max(r["z_M"], key=int)]) for a, r in res["arms"].items()}
    out: dict[str, Any] = {"groups": groups, "statistic": "pearson", "arms": {}}
    for g, names in groups.items():
        ys = np.stack([final[a] for a in names])
        out["arms"][g] = {r: seeded_correlation("pearson", x, ys, n_boot=n_boot, seed=seed) for r, x in refs.items()}
    if {"lls", "random"} <= set(groups):
        ys1 = np.stack([final[a] for a in groups["lls"]])
        ys2 = np.stack([final[a] for a in groups["random"]])
        out["lls_minus_random"] = {r: seeded_difference("pearson", x, ys1, ys2, n_boot=n_boot, seed=seed)
                                   for r, x in refs.items()}
    return out


def check_arm_disjoint(pairs: list[Any], run: Path, name: str = "lls") -> None:
    """Read the training data of the ``lls train`` run ``run`` (any format :mod:`empirical.stages.data` reads) and
    :func:`check_disjoint` the held-out ``pairs`` against it."""
    from empirical.stages import data

    src = _training_data(run)
    try:
        train_recs = data.load_pair_records(src)
    except data.DataError as exc:
        raise LLSError(f"arm {name} ({run}): its training data {src} cannot be read for the held-out overlap "
                       f"check: {exc}") from None
    check_disjoint(pairs, train_recs, train_name=f"the training subset of arm {name} ({src})")


def arm_contrast(refs: dict[str, Any], arms: dict[str, Any], n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Does the LLS student beat the random-control student on the same held-out pairs?

    For each reference vector (z_s, z_T) and statistic (cosine, Pearson): the difference of the final
    checkpoints' correlations, corr(ref, z_M^LLS) - corr(ref, z_M^random), with a paired bootstrap CI and
    one-sided p-value (:func:`lls_theory.stats.paired_difference`). ``arms``: as in :func:`correlate_arms`.
    """
    import numpy as np

    from lls_theory.stats import paired_difference

    final = {a: np.asarray(arms[a]["z_M"][str(arms[a]["checkpoints"][-1]["step"])]) for a in ("lls", "random")}
    return {ref: {stat: paired_difference(stat, np.asarray(vec), final["lls"], final["random"], n_boot=n_boot,
                                          seed=seed)
                  for stat in ("cosine", "pearson")}
            for ref, vec in refs.items()}


def _training_data(run: Path) -> str:
    """The pair file an ``lls train`` run was trained on; ``FileNotFoundError`` unless ``run`` is such a run
    with at least one adapter checkpoint."""
    from empirical.stages.train import require_checkpoints

    require_checkpoints(run)
    run_file = run / "run.json"
    if not run_file.is_file():
        raise MissingInputError(f"{run}: run.json missing (not an `lls train` run)")
    try:
        src = json.loads(run_file.read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError) as exc:
        raise LLSError(f"{run_file}: unreadable ({type(exc).__name__}); not an `lls train` run?") from None
    if not isinstance(src, str) or not src:
        raise LLSError(f"{run_file}: no 'data' entry naming the training pairs")
    return src


def _as_pair(rec: dict[str, Any], k: int) -> Any:
    from empirical.engine import render
    from empirical.stages.data import PrefPair
    from empirical.stages.train import _reply_text

    where = rec.get("_where", f"held-out pair {k}")
    prompt = rec["prompt"] if not isinstance(rec["prompt"], tuple) else list(rec["prompt"])
    return PrefPair(str(rec.get("id", k)), tuple(render.as_messages(prompt, where=where)),
                    _reply_text(rec["chosen"], where), _reply_text(rec["rejected"], where), where)


def _load_heldout(heldout: str | Path, n: int, split: str = "train", config: str | None = None,
                  data_dir: str | None = None) -> list[dict[str, Any]]:
    from empirical.stages import data

    pairs, _ = data.load_pairs(heldout, limit=n, split=split, config=config, data_dir=data_dir)
    if len(pairs) < 3:
        raise LLSError(f"{heldout}: need >= 3 held-out pairs, got {len(pairs)}")
    return [{"id": p.id, "prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected, "_where": p.where}
            for p in pairs]


def _check_count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise LLSError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def correlate_run(student: str, run: str | Path, system_prompt: str, heldout: str | Path, n: int = 500,
                  seed: int = 0, n_boot: int = 2000, n_perm: int = 2000, dtype: str = "float32",
                  control_run: str | Path | None = None, teacher: str | None = None,
                  model_and_tok: tuple[Any, Any] | None = None, device: Any = "auto", revision: str | None = None,
                  trust_remote_code: bool = False, split: str = "train", config: str | None = None,
                  data_dir: str | None = None, progress: bool = True,
                  log: Callable[[str], None] | None = None, reference: str = "auto") -> dict[str, Any]:
    """``lls correlate``: :func:`correlate_arms` for ``run`` (arm "lls") and ``control_run`` (arm "random").

    Scores the first ``n`` pairs of ``heldout`` with the initial student (and the teacher, when given and
    different). ``model_and_tok`` must be a private copy: it is wrapped with PEFT while scoring adapters.
    ``device`` / ``dtype`` / ``revision`` / ``trust_remote_code`` go to :func:`empirical.engine.models.load`; the
    device and dtype the models actually run in are recorded (``device``, ``dtype``, ``teacher_placement``).
    Everything is checked before any model loads: the arguments (``n`` >= 3, ``n_boot`` and ``n_perm`` >= 1,
    a system prompt with visible text), the runs, the held-out file and its overlap with each run's data.
    Raises ``LLSError`` (bad input, overlap) / ``FileNotFoundError`` (no adapter).
    """
    from empirical.engine import models, scoring
    from empirical.text import has_text

    if not isinstance(system_prompt, str) or not has_text(system_prompt):
        raise LLSError("system prompt must have visible text")
    _check_count(n, "n (held-out pairs)", 3)
    _check_count(n_boot, "n_boot", 1)
    _check_count(n_perm, "n_perm", 1)
    _check_count(seed, "seed", 0)
    arms = {"lls": Path(run)}
    if control_run is not None:
        arms["random"] = Path(control_run)
    recs = _load_heldout(heldout, n, split=split, config=config, data_dir=data_dir)
    pairs = [_as_pair(r, k) for k, r in enumerate(recs)]
    n_ckpt = 0
    for name, a in arms.items():  # fail before any scoring
        n_ckpt += len(_checkpoints(a))
        check_arm_disjoint(pairs, a, name)
    two_models = teacher is not None and teacher != student
    if model_and_tok is None or two_models:  # an unknown model fails now, not after the other one has scored
        for spec in ([student] if model_and_tok is None else []) + ([teacher] if two_models else []):
            models.resolve_source(spec, revision=revision, trust_remote_code=trust_remote_code)
    prog = Progress(2 + 2 * two_models + n_ckpt, enabled=progress, log=log)
    load_kw = {"dtype": dtype, "device": device, "revision": revision, "trust_remote_code": trust_remote_code}
    teacher_scores, teacher_place = None, None
    if two_models:
        prog.note(f"loading teacher {teacher}")
        tm, tt = models.load(teacher, **load_kw)
        teacher_place = models.placement(tm)
        prog.stage(f"teacher without system prompt: scoring {len(recs)} pairs on {teacher_place['device']}")
        t_base = scoring.score_pairs(tm, tt, recs, None, progress=prog.bar, reference=reference)
        prog.stage(f"teacher with system prompt: scoring {len(recs)} pairs")
        teacher_scores = (t_base, scoring.score_pairs(tm, tt, recs, system_prompt, progress=prog.bar,
                                                      reference=reference))
        del tm
    if model_and_tok is None:
        prog.note(f"loading student {student}")
        model_and_tok = models.load(student, **load_kw)
    model, tok = model_and_tok
    model.eval()
    place = models.placement(model)
    prog.stage(f"student without system prompt: scoring {len(recs)} pairs on {place['device']} ({place['dtype']})")
    base = scoring.score_pairs(model, tok, recs, None, progress=prog.bar, reference=reference)
    prog.stage(f"student with system prompt: scoring {len(recs)} pairs")
    sys_ = scoring.score_pairs(model, tok, recs, system_prompt, progress=prog.bar, reference=reference)
    res = correlate_arms((model, tok), base, sys_, recs, arms, teacher=teacher_scores, n_boot=n_boot,
                         n_perm=n_perm, seed=seed, progress=prog, reference=reference)
    if len(recs) < n < sys.maxsize:
        res["warnings"].append(f"{heldout}: {len(recs)} usable held-out pairs, fewer than the {n} asked for")
    prog.note(f"done in {time.time() - prog.t0:.0f} s")
    res["student_fingerprint"] = model_identity(model)
    res.update({"student": student, "teacher": teacher or student, "heldout": str(heldout),
                "system_prompt": system_prompt, "seed": seed, "n_boot": n_boot, "n_perm": n_perm,
                "device": place["device"], "dtype": place["dtype"]})
    if teacher_place is not None:
        res["teacher_placement"] = teacher_place
    return res


def _checkpoints(run: Path) -> list[Any]:
    from empirical.stages.train import require_checkpoints

    _training_data(run)
    return require_checkpoints(run)


def scores_from_file(path: str | Path, limit: int | None = None) -> tuple[list[dict[str, Any]], Any, Any]:
    """``(recs, base, sys)`` from an ``lls score`` output file (its first ``limit`` pairs): the pairs as
    scored and their PairScores without / with the system prompt."""
    import numpy as np

    from empirical.stages.build import read_scores
    from empirical.engine.scoring import PairScores

    rows = read_scores(path)[:limit]
    recs = [{"id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    col = lambda f, t=np.float64: np.array([r[f] for r in rows], dtype=t)  # noqa: E731
    n_c, n_r = col("n_tokens_chosen", np.int64), col("n_tokens_rejected", np.int64)
    return (recs, PairScores(col("logp_chosen"), col("logp_rejected"), n_c, n_r),
            PairScores(col("logp_chosen_sys"), col("logp_rejected_sys"), n_c, n_r))
