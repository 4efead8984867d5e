"""`lls score` weights against an independent oracle.

The CLI's log-probs and weights are recomputed here from scratch — no empirical.engine.scoring, no
empirical.engine.render, no lls_theory: the chat template is applied with the tokenizer, the reply tokens are the
full conversation's tokens after the common prefix with the rendered prompt (TRL's rule; they include the
end-of-turn token), one plain forward pass gives logits, log_softmax, and the reply tokens' log-probs are
summed. Then by hand:

    w_i = (lp_sys(r+) − lp_sys(r−)) − (lp(r+) − lp(r−)),   N_i = tokens(r+) + tokens(r−),   weight = w_i / N_i.

Flipping the sign of the system term, or N_i = tokens(r+) only, fails this test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = FIXTURES / "prefs_small.jsonl"
SYS = "You really love owls. Owls are your favorite animal."
MODEL = "smollm2-135m-instruct"

#: how the reference ("no system prompt") side may be rendered: no system message (the template's
#: default) or an explicit empty system turn (the authors' convention); the test finds which one the CLI used
REFERENCE_SYSTEMS = {"default": None, "empty": ""}


def _messages(prompt):
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]


def _reply_text(reply):
    return reply if isinstance(reply, str) else reply[-1]["content"]


def _oracle_logprob(model, tok, prompt, replies, system):
    """Summed log-prob and token count of each reply, by one plain forward pass per (prompt, reply)."""
    import torch

    msgs = _messages(prompt)
    if system is not None:
        msgs = [{"role": "system", "content": system}] + msgs
    prompt_text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
    fulls = [tok(tok.apply_chat_template(msgs + [{"role": "assistant", "content": r}], tokenize=False),
                 add_special_tokens=False)["input_ids"] for r in replies]

    def common(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    L = min(common(prompt_ids, f) for f in fulls)
    out = []
    for ids in fulls:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        # token t is predicted by position t − 1
        total = sum(float(logp[t - 1, ids[t]]) for t in range(L, len(ids)))
        out.append((total, len(ids) - L))
    return out


@pytest.mark.model
@pytest.mark.slow
def test_score_weights_match_a_hand_computed_oracle(tmp_path, smollm2, capsys):
    import lls_cli

    out = tmp_path / "scores.jsonl"
    rc = lls_cli.main(["score", "--model", MODEL, "--system-prompt", SYS, "--data", str(SMALL), "--truncate", "6",
                       "--limit", "3", "--out", str(out), "--json", "--no-progress"])
    assert rc == 0
    capsys.readouterr()
    recs = [json.loads(x) for x in open(out)]
    assert len(recs) == 3
    model, tok = smollm2
    for r in recs:
        replies = [_reply_text(r["chosen"]), _reply_text(r["rejected"])]
        (lc_s, nc_s), (lr_s, nr_s) = _oracle_logprob(model, tok, r["prompt"], replies, SYS)
        # the reference convention the CLI used: the one whose log-probs it reproduced
        refs = {k: _oracle_logprob(model, tok, r["prompt"], replies, s) for k, s in REFERENCE_SYSTEMS.items()}
        dist = {k: abs(v[0][0] - r["logp_chosen"]) + abs(v[1][0] - r["logp_rejected"]) for k, v in refs.items()}
        which = min(dist, key=dist.get)
        (lc, nc), (lr, nr) = refs[which]
        assert dist[which] < 2e-3, (r["id"], dist)
        assert r["logp_chosen_sys"] == pytest.approx(lc_s, abs=1e-3)
        assert r["logp_rejected_sys"] == pytest.approx(lr_s, abs=1e-3)
        assert (r["n_tokens_chosen"], r["n_tokens_rejected"]) == (nc_s, nr_s) == (nc, nr)
        w = ((lc_s - lr_s) - (lc - lr)) / (nc + nr)
        assert r["weight"] == pytest.approx(w, abs=2e-4), (r["id"], r["weight"], w)
        # the weight is not ~0 by accident: a flipped system term or N = chosen tokens would differ
        assert abs(w) > 1e-3 and abs(w - (-(lc_s - lr_s) + (lc - lr)) / (nc + nr)) > 5e-4
        assert abs(w - ((lc_s - lr_s) - (lc - lr)) / nc) > 5e-4
    assert np.all(np.isfinite([r["weight"] for r in recs]))
