"""The paper's Table 1 protocol: correlation of the trained student's margins with the system prompt's.

On held-out pairs i (never selected nor trained on):

    z_M(i) = rho_{M_k}(i)        = margin(log pi_k(+|p), log pi_k(-|p), log pi_0(+|p), log pi_0(-|p))
    z_s(i) = rho_{M_0, s}(i)     = margin(log pi_0(+|s,p), log pi_0(-|s,p), log pi_0(+|p), log pi_0(-|p))

where pi_0 is the initial student, pi_k the student with the LoRA adapter of checkpoint k, s the system
prompt. Every formula comes from :func:`lls_theory.margins.margin` and
:func:`lls_theory.stats.correlation_report` (uncentred cosine = the theorem's Corr, Pearson, Spearman,
bootstrap CIs, permutation p-value). Log-probs via :func:`empirical.scoring.score_pairs` (fast scorer).

Beyond the theorem's pair (z_s, z_M) two more vectors are reported when they exist:

- the random-control run ("arms"): the same protocol for a student trained on a same-size random subset,
  the baseline any LLS effect must beat, and the paired difference LLS - random on the same pairs
  (:func:`arm_contrast`);
- the teacher-side vector z_T(i) = rho_{T, s}(i) (the teacher's own system-prompt margin shift) when
  the teacher is not the student. corr(z_T, z_M) is what the paper's Table 1 reports across teachers;
  corr(z_T, z_s) says how alike the two models' system-prompt shifts are before any training (the
  quantity ``lls pair-check`` estimates).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["pair_key", "check_disjoint", "checkpoint_margins", "arm_report", "arm_contrast", "correlate_arms",
           "correlate_run", "scores_from_file"]


def pair_key(prompt: Any, chosen: Any, rejected: Any) -> str:
    """Canonical text of a pair (prompt messages + the two reply texts) for overlap checks."""
    from empirical import render
    from empirical.train import _reply_text

    msgs = render.as_messages(prompt if not isinstance(prompt, tuple) else list(prompt))
    return json.dumps([msgs, _reply_text(chosen, "pair"), _reply_text(rejected, "pair")], sort_keys=True)


def check_disjoint(heldout: list[Any], train_recs: list[dict[str, Any]]) -> None:
    """``ValueError`` naming the first held-out pair whose id or text also occurs in the training subset."""
    ids = {str(r.get("id")) for r in train_recs if r.get("id") is not None}
    texts = {pair_key(r["prompt"], r["chosen"], r["rejected"]) for r in train_recs}
    for k, p in enumerate(heldout):
        if str(p.id) in ids:
            raise ValueError(f"held-out pair {k} (id {p.id!r}, {p.where}) is in the training subset (same id)")
        if pair_key(p.messages, p.chosen, p.rejected) in texts:
            raise ValueError(f"held-out pair {k} (id {p.id!r}, {p.where}) is in the training subset (same text)")


def _vec(x: Any) -> Any:
    import numpy as np

    return np.asarray(x, dtype=np.float64)


def checkpoint_margins(model: Any, tok: Any, recs: list[dict[str, Any]], base: Any, run: str | Path,
                       cache_dir: str | Path | None = None) -> dict[int, Any]:
    """z_M for every adapter checkpoint of ``run``: ``{step: array (n,)}``.

    ``base`` = :class:`empirical.scoring.PairScores` of the initial student without system prompt on
    ``recs``. ``model`` is wrapped by PEFT in place and unwrapped before returning (pass a private copy).
    With ``cache_dir`` each checkpoint's log-probs are saved (atomically) and reused on a re-run.
    """
    import hashlib

    import numpy as np
    from peft import PeftModel

    from empirical import scoring
    from empirical.train import require_checkpoints
    from lls_common.io import atomic_write_json
    from lls_theory.margins import margin

    cks = require_checkpoints(run)
    digest = hashlib.sha256(json.dumps(recs, sort_keys=True).encode()).hexdigest()[:16]
    out: dict[int, Any] = {}
    peft_model = None
    try:
        for step, path in cks:
            cache = Path(cache_dir) / f"{Path(run).name}-step{step}.json" if cache_dir is not None else None
            if cache is not None and cache.is_file():
                saved = json.loads(cache.read_text())
                if saved.get("recs") == digest:
                    out[step] = margin(_vec(saved["logp_chosen"]), _vec(saved["logp_rejected"]),
                                       base.logp_chosen, base.logp_rejected)
                    continue
            name = f"step{step}"
            if peft_model is None:
                peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
            else:
                peft_model.load_adapter(str(path), adapter_name=name)
            peft_model.set_adapter(name)
            peft_model.eval()
            tr = scoring.score_pairs(peft_model, tok, recs, None)
            if cache is not None:
                atomic_write_json(cache, {"recs": digest, "adapter": str(path),
                                          "logp_chosen": [float(v) for v in tr.logp_chosen],
                                          "logp_rejected": [float(v) for v in tr.logp_rejected]})
            out[step] = margin(tr.logp_chosen, tr.logp_rejected, base.logp_chosen, base.logp_rejected)
    finally:
        if peft_model is not None:
            peft_model.unload()
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


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
                   seed: int = 0) -> dict[str, Any]:
    """The Table-1 protocol for several training runs ("arms", e.g. LLS and random control) of one student.

    ``student_base`` / ``student_sys``: PairScores of the initial student without / with the system prompt
    on ``recs``; ``teacher``: (base, sys) PairScores of the teacher on the same ``recs``, when the teacher
    is another model. Each arm's training subset must be disjoint from ``recs`` (``ValueError``).
    Returns ``{"n", "z_s", "z_T"?, "teacher_vs_student"?, "arms": {name: arm_report + "z_M"},
    "lls_minus_random"?}`` (the last when arms "lls" and "random" both exist: :func:`arm_contrast`).
    """
    from empirical.train import load_pairs_file
    from lls_theory.margins import margin
    from lls_theory.stats import correlation_report

    model, tok = model_and_tok
    pairs = [_as_pair(r, k) for k, r in enumerate(recs)]
    z_s = margin(student_sys.logp_chosen, student_sys.logp_rejected, student_base.logp_chosen,
                 student_base.logp_rejected)
    refs = {"z_s": z_s}
    res: dict[str, Any] = {"n": len(recs), "z_s": [float(v) for v in z_s], "ids": [p.id for p in pairs]}
    if teacher is not None:
        tb, ts = teacher
        z_t = margin(ts.logp_chosen, ts.logp_rejected, tb.logp_chosen, tb.logp_rejected)
        refs["z_T"] = z_t
        res["z_T"] = [float(v) for v in z_t]
        res["teacher_vs_student"] = correlation_report(z_t, z_s, n_boot=n_boot, n_perm=n_perm, seed=seed)
    res["arms"] = {}
    for name, run in arms.items():
        run = Path(run)
        check_disjoint(pairs, load_pairs_file(_training_data(run)))
        z_m = checkpoint_margins(model, tok, recs, student_base, run, cache_dir=cache_dir)
        rep = arm_report(refs, z_m, n_boot=n_boot, n_perm=n_perm, seed=seed)
        rep["run"] = str(run)
        rep["z_M"] = {str(k): [float(v) for v in z] for k, z in z_m.items()}
        res["arms"][name] = rep
    if {"lls", "random"} <= set(res["arms"]):
        res["lls_minus_random"] = arm_contrast(refs, res["arms"], n_boot=n_boot, seed=seed)
    return res


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
    from empirical.train import require_checkpoints

    require_checkpoints(run)
    run_file = run / "run.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"{run}: run.json missing (not an `lls train` run)")
    return json.loads(run_file.read_text())["data"]


def _as_pair(rec: dict[str, Any], k: int) -> Any:
    from empirical.data import PrefPair
    from empirical.train import _reply_text

    where = rec.get("_where", f"held-out pair {k}")
    return PrefPair(str(rec.get("id", k)), tuple(rec["prompt"]), _reply_text(rec["chosen"], where),
                    _reply_text(rec["rejected"], where), where)


def _load_heldout(heldout: str | Path, n: int) -> list[dict[str, Any]]:
    from empirical import data

    pairs, _ = data.load_pairs(heldout, limit=n)
    if len(pairs) < 3:
        raise ValueError(f"{heldout}: need >= 3 held-out pairs, got {len(pairs)}")
    return [{"id": p.id, "prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected, "_where": p.where}
            for p in pairs]


def correlate_run(student: str, run: str | Path, system_prompt: str, heldout: str | Path, n: int = 500,
                  seed: int = 0, n_boot: int = 2000, n_perm: int = 2000, dtype: str = "float32",
                  control_run: str | Path | None = None, teacher: str | None = None,
                  model_and_tok: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """``lls correlate``: :func:`correlate_arms` for ``run`` (arm "lls") and ``control_run`` (arm "random").

    Scores the first ``n`` pairs of ``heldout`` with the initial student (and the teacher, when given and
    different). ``model_and_tok`` must be a private copy: it is wrapped with PEFT while scoring adapters.
    Raises ``ValueError`` (bad data, overlap) / ``FileNotFoundError`` (no adapter, unknown model).
    """
    from empirical import models, scoring

    if not system_prompt or not system_prompt.strip():
        raise ValueError("empty system prompt")
    if n < 3:
        raise ValueError("--n must be >= 3")
    arms = {"lls": Path(run)}
    if control_run is not None:
        arms["random"] = Path(control_run)
    for a in arms.values():  # fail before any scoring
        _training_data(a)
    recs = _load_heldout(heldout, n)
    teacher_scores = None
    if teacher is not None and teacher != student:
        tm, tt = models.load(teacher, dtype=dtype)
        teacher_scores = (scoring.score_pairs(tm, tt, recs, None), scoring.score_pairs(tm, tt, recs, system_prompt))
        del tm
    model, tok = model_and_tok if model_and_tok is not None else models.load(student, dtype=dtype)
    model.eval()
    base = scoring.score_pairs(model, tok, recs, None)
    sys_ = scoring.score_pairs(model, tok, recs, system_prompt)
    res = correlate_arms((model, tok), base, sys_, recs, arms, teacher=teacher_scores, n_boot=n_boot,
                         n_perm=n_perm, seed=seed)
    res.update({"student": student, "teacher": teacher or student, "heldout": str(heldout),
                "system_prompt": system_prompt, "seed": seed})
    return res


def scores_from_file(path: str | Path, limit: int | None = None) -> tuple[list[dict[str, Any]], Any, Any]:
    """``(recs, base, sys)`` from an ``lls score`` output file (its first ``limit`` pairs): the pairs as
    scored and their PairScores without / with the system prompt."""
    import numpy as np

    from empirical.pipeline import read_scores
    from empirical.scoring import PairScores

    rows = read_scores(path)[:limit]
    recs = [{"id": r["id"], "prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    col = lambda f, t=np.float64: np.array([r[f] for r in rows], dtype=t)  # noqa: E731
    n_c, n_r = col("n_tokens_chosen", np.int64), col("n_tokens_rejected", np.int64)
    return (recs, PairScores(col("logp_chosen"), col("logp_rejected"), n_c, n_r),
            PairScores(col("logp_chosen_sys"), col("logp_rejected_sys"), n_c, n_r))
