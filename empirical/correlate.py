"""The paper's Table 1 protocol: correlation of the trained student's margins with the system prompt's.

On held-out pairs i (never selected nor trained on):

    z_M(i) = rho_{M_k}(i)        = margin(log pi_k(+|p), log pi_k(-|p), log pi_0(+|p), log pi_0(-|p))
    z_s(i) = rho_{M_0, s}(i)     = margin(log pi_0(+|s,p), log pi_0(-|s,p), log pi_0(+|p), log pi_0(-|p))

where pi_0 is the initial student, pi_k the student with the LoRA adapter of checkpoint k, s the system
prompt. Every formula comes from :func:`lls_theory.margins.margin` and
:func:`lls_theory.stats.correlation_report` (uncentred cosine = the theorem's Corr, Pearson, Spearman,
bootstrap CIs, permutation p-value). Log-probs via :func:`empirical.scoring.score_pairs` (fast scorer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["pair_key", "check_disjoint", "correlate_run"]


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


def correlate_run(student: str, run: str | Path, system_prompt: str, heldout: str | Path, n: int = 500,
                  seed: int = 0, n_boot: int = 2000, n_perm: int = 2000, dtype: str = "float32",
                  model_and_tok: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Report per checkpoint of ``run`` (steps ascending; the last one is the final model).

    Returns ``{"n", "system_prompt", "checkpoints": [{step, report}], "final": report, "z_s": [...],
    "z_M": {step: [...]}}``. Raises ``ValueError`` (bad data, overlap, no adapter) / ``FileNotFoundError``.
    ``model_and_tok`` must be a private copy: it is wrapped with PEFT.
    """
    import numpy as np

    from empirical import data, models, scoring
    from empirical.train import list_checkpoints, load_pairs_file
    from lls_theory.margins import margin
    from lls_theory.stats import correlation_report

    if not system_prompt or not system_prompt.strip():
        raise ValueError("empty system prompt")
    if n < 3:
        raise ValueError("--n must be >= 3")
    run = Path(run)
    cks = list_checkpoints(run)
    if not cks:
        raise FileNotFoundError(f"{run}: no LoRA adapter checkpoint (checkpoint-*/adapter_config.json) found")
    run_file = run / "run.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"{run}: run.json missing (not an `lls train` run)")
    train_data = json.loads(run_file.read_text())["data"]
    train_recs = load_pairs_file(train_data)
    pairs, _ = data.load_pairs(heldout, limit=n)
    if len(pairs) < 3:
        raise ValueError(f"{heldout}: need >= 3 held-out pairs, got {len(pairs)}")
    check_disjoint(pairs, train_recs)
    recs = [{"prompt": p.messages, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]

    model, tok = model_and_tok if model_and_tok is not None else models.load(student, dtype=dtype)
    model.eval()
    base = scoring.score_pairs(model, tok, recs, None)
    sys_ = scoring.score_pairs(model, tok, recs, system_prompt)
    z_s = margin(sys_.logp_chosen, sys_.logp_rejected, base.logp_chosen, base.logp_rejected)

    from peft import PeftModel

    peft_model = None
    out_cks, z_m_all = [], {}
    for step, path in cks:
        name = f"step{step}"
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        else:
            peft_model.load_adapter(str(path), adapter_name=name)
        peft_model.set_adapter(name)
        peft_model.eval()
        tr = scoring.score_pairs(peft_model, tok, recs, None)
        z_m = margin(tr.logp_chosen, tr.logp_rejected, base.logp_chosen, base.logp_rejected)
        rep = correlation_report(np.asarray(z_s), np.asarray(z_m), n_boot=n_boot, n_perm=n_perm, seed=seed)
        out_cks.append({"step": step, "checkpoint": path.name, "report": rep,
                        "mean_z_M": float(np.mean(z_m)), "frac_z_M_pos": float(np.mean(np.asarray(z_m) > 0))})
        z_m_all[str(step)] = [float(v) for v in z_m]
    return {"student": student, "run": str(run), "heldout": str(heldout), "n": len(pairs),
            "system_prompt": system_prompt, "seed": seed, "checkpoints": out_cks, "final": out_cks[-1]["report"],
            "mean_z_s": float(np.mean(z_s)), "z_s": [float(v) for v in z_s], "z_M": z_m_all,
            "ids": [p.id for p in pairs]}
