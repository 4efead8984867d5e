"""What an ``lls experiment`` will cost before it runs (``lls experiment --plan``): its units, which are done,
and the remaining time estimated from token counts and this machine's measured rates.

Work is counted in tokens the models process, from the run's own pairs (``data/*.jsonl`` when the split is
done, else the same split computed in memory, nothing written), with each model's own tokenizer:

* score (teacher, one unit per trait and part): prompt + both replies per pair, one forward (the engine scores
  the prompt once for both replies);
* train (student, LLS and random arms): ``ceil(pairs · epochs · repeat / batch)`` steps of ``batch`` pairs; TRL's
  forward sees the prompt twice (prompt + chosen, prompt + rejected); a step costs a forward and a backward
  (≈ 3 forwards), plus one reference forward over the data;
* correlate: each arm's checkpoints score the held-out pairs (+ the held-out scores of a student of another
  family); eval: the probe (4 questions × 11 one-word answers × 4 conditions) and, when on, the sampled
  answers (generated tokens at the measured generation rate); split, select, report: seconds.

Rates (forward tokens/s, generated tokens/s) are measured once per (model, device, dtype, threads) by timing
the scoring engine and ``generate`` on a few of the run's pairs, and kept in ``$LLS_CACHE/rates.json``
(``~/.cache/lls``) for the next plan, with the time and the load average they were measured under (a rate
measured on a busy machine is slow: delete the file to measure again). LLS subset sizes are not known before selection; the plan assumes
γ · pool / 2 (half the weights positive) until the select stage has run, and says so.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["plan_experiment", "plan_text", "measure_rates"]

FIXED_S = {"split": 10.0, "select": 2.0, "report": 20.0}
"""Seconds per unit of the stages whose cost is not in model tokens (measured here: split ≈ 5-10 s of
tokenising, select ≈ 1 s, a report ≈ 20 s of figures)."""


def _rates_file() -> Path:
    return Path(os.environ.get("LLS_CACHE") or Path.home() / ".cache" / "lls") / "rates.json"


def _rate_key(model: Any) -> str:
    import torch

    from empirical.engine import models

    device = models.resolve_device(model.device)
    return json.dumps({"model": model.model, "revision": model.revision, "device": str(device),
                       "dtype": str(model.dtype), "threads": torch.get_num_threads(), "torch": torch.__version__},
                      sort_keys=True)


def measure_rates(model: Any, pairs: list[dict[str, Any]], log: Callable[[str], None]) -> dict[str, float]:
    """``{"forward": tokens/s, "generate": tokens/s}`` of ``model`` (ModelArgs) on this machine, cached."""
    from lls_common.io import atomic_write_json

    f = _rates_file()
    try:
        cache = json.loads(f.read_text())
    except (OSError, ValueError):
        cache = {}
    key = _rate_key(model)
    if key in cache:
        return cache[key]
    import torch

    from empirical.engine import models, scoring

    log(f"measuring {model.model}'s token rates on this machine (once; cached in {f})")
    m, tok = models.load(model.model, **model.load_kwargs())
    sample = pairs[:8]
    prompts = [p["prompt"] for p in sample]
    replies = [[_text(p["chosen"]), _text(p["rejected"])] for p in sample]
    scoring.score_completions(m, tok, prompts[:1], replies[:1])  # warm-up
    t = time.perf_counter()
    _, n = scoring.score_completions(m, tok, prompts, replies)
    fwd_s = time.perf_counter() - t
    n_tok = sum(_tokens(tok, p) for p in sample)
    ids = tok(["Tell me about rivers."] * 4, return_tensors="pt").to(m.device)
    t = time.perf_counter()
    with torch.inference_mode():
        m.generate(**ids, max_new_tokens=16, min_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
    gen_s = time.perf_counter() - t
    rates = {"forward": n_tok / fwd_s, "generate": 4 * 16 / gen_s, "measured": time.strftime("%Y-%m-%d %H:%M"),
             "load_average": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
    cache[key] = rates
    atomic_write_json(f, cache)
    return rates


def _text(messages: Any) -> str:
    """A prompt or reply as plain text: a string as it is, a list of chat messages joined."""
    return messages if isinstance(messages, str) else " ".join(m.get("content", "") for m in messages)


def _tokens(tok: Any, pair: dict[str, Any], prompt_copies: int = 1) -> int:
    """Tokens the models process for one pair: prompt_copies × prompt + both replies."""
    lens = [len(tok(x, add_special_tokens=False)["input_ids"]) for x in
            (_text(pair["prompt"]), _text(pair["chosen"]), _text(pair["rejected"]))]
    return prompt_copies * lens[0] + lens[1] + lens[2]


def _pairs(run: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(held-out, pool) pair records: the split's files, else the same split in memory."""
    from empirical.orchestration.experiment import split_pairs

    d = run.root / "data"
    if (d / "heldout.jsonl").is_file() and (d / "pool.jsonl").is_file():
        read = lambda f: [json.loads(x) for x in f.read_text().splitlines() if x.strip()]  # noqa: E731
        return read(d / "heldout.jsonl"), read(d / "pool.jsonl")
    held, pool, _ = split_pairs(run.cfg.data, run.cfg.filters, run.cfg.seed, run.tokenizer(run.cfg.teacher))
    return held, pool


def plan_experiment(cfg: Any, out: str | Path, until: str = "report", measure: bool = True,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Units per stage, which are done, and the estimated seconds of the rest (see the module doc).

    Returns ``{"stages": {stage: {"units", "done", "todo", "estimate_s"}}, "todo": [labels], "estimate_s",
    "rates", "assumptions"}``; ``estimate_s`` is None where a rate is missing (``measure=False``).
    Writes nothing in ``out``.
    """
    from empirical.orchestration.experiment import STAGES, _UNITS, Run, _finished, random_size

    run = Run(cfg, Path(out), log)
    stages = STAGES[:STAGES.index(until) + 1]
    plan = {s: _UNITS[s](run) for s in stages}
    held, pool = _pairs(run)
    models = {json.dumps(m.model): m for m in [cfg.teacher, *cfg.students]}
    rates = {k: measure_rates(m, pool, log) for k, m in models.items()} if measure else {}
    toks: dict[str, dict[str, float]] = {}
    for k, m in models.items():
        tok = run.tokenizer(m)
        toks[k] = {"score": _mean(tok, pool), "train": _mean(tok, pool, 2)}
    n_held = min(cfg.correlate.n or cfg.data.heldout, len(held))
    assumptions = []
    sel_sizes = {}
    for tr in cfg.traits:
        f = run.tdir(tr) / "select" / "summary.json"
        if f.is_file():
            sel_sizes[tr.name] = json.loads(f.read_text())["n_selected"]
        else:
            sel_sizes[tr.name] = max(1, math.ceil(cfg.select.gamma * len(pool) / 2))
            assumptions.append(f"{tr.name}: LLS subset of {sel_sizes[tr.name]} pairs assumed (gamma · pool / 2)")
    t = cfg.train
    steps = lambda n: math.ceil(n * t.epochs * t.repeat / t.batch_size)  # noqa: E731

    def seconds(u: Any) -> float | None:
        if u.stage in FIXED_S:
            return FIXED_S[u.stage]
        if u.stage == "score":
            part = held if u.step.endswith("heldout") else pool
            return _fwd(rates, cfg.teacher, len(part) * toks[json.dumps(cfg.teacher.model)]["score"])
        student = next((s for s in cfg.students if s.name == u.student), None)
        if student is None:
            return None
        k = json.dumps(student.model)
        if u.stage == "train":
            n = random_size(cfg, len(pool)) if u.trait is None else sel_sizes[u.trait]
            per_pair = toks[k]["train"]
            return _fwd(rates, student, steps(n) * t.batch_size * per_pair * 3 + n * per_pair)
        if u.stage == "correlate":
            if u.step in ("base", "scores"):
                return _fwd(rates, student, n_held * toks[k]["score"])
            return _fwd(rates, student, 2 * t.checkpoints * n_held * toks[k]["score"])
        if u.stage == "eval":
            ev = cfg.eval
            probe = _fwd(rates, student, 4 * 11 * 4 * 30)
            gen = 0.0
            if ev.mention:
                r = rates.get(k, {}).get("generate")
                gen = None if r is None else 4 * ev.samples * len(ev.prompts or ()) * ev.max_new_tokens / r
            return None if probe is None or gen is None else probe + gen
        return None

    out_stages, todo, total, unknown = {}, [], 0.0, False
    for s, units in plan.items():
        left = [u for u in units if _finished(run, u) is None]
        est = [seconds(u) for u in left]
        unknown |= any(e is None for e in est)
        stage_s = sum(e for e in est if e is not None)
        total += stage_s
        todo += [f"{s}/{u.label}" for u in left]
        out_stages[s] = {"units": len(units), "done": len(units) - len(left), "todo": len(left),
                         "estimate_s": None if any(e is None for e in est) else stage_s}
    return {"stages": out_stages, "todo": todo, "estimate_s": None if unknown else total,
            "rates": {json.loads(k): v for k, v in rates.items()}, "n_pool": len(pool), "n_heldout": len(held),
            "assumptions": assumptions}


def _mean(tok: Any, pairs: list[dict[str, Any]], prompt_copies: int = 1) -> float:
    sample = pairs[:200]
    return sum(_tokens(tok, p, prompt_copies) for p in sample) / max(1, len(sample))


def _fwd(rates: dict[str, dict[str, float]], model: Any, tokens: float) -> float | None:
    r = rates.get(json.dumps(model.model), {}).get("forward")
    return None if r is None else tokens / r


def plan_text(p: dict[str, Any]) -> str:
    """The plan as a table: stage, units, done, to do, estimated time."""
    def hms(s: float | None) -> str:
        if s is None:
            return "?"
        s = int(round(s))
        return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"

    L = [f"{'stage':<10} {'units':>5} {'done':>5} {'to do':>6} {'estimate':>9}"]
    for s, v in p["stages"].items():
        L.append(f"{s:<10} {v['units']:>5} {v['done']:>5} {v['todo']:>6} {hms(v['estimate_s']):>9}")
    L.append(f"remaining: {len(p['todo'])} unit(s), about {hms(p['estimate_s'])} on this machine "
             f"({p['n_pool']} pool, {p['n_heldout']} held-out pairs)")
    for k, r in p["rates"].items():
        L.append(f"  rate {k}: {r['forward']:.0f} forward tokens/s, {r['generate']:.1f} generated tokens/s "
                 f"(measured {r.get('measured', '?')}, load average {r.get('load_average', '?')} on "
                 f"{r.get('cores', '?')} cores; delete {_rates_file()} to measure again)")
    L += [f"  assumed: {a}" for a in p["assumptions"]]
    return "\n".join(L)
