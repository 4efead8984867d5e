"""``lls experiment``: the whole LLS pipeline on real models, stage by stage, under one run directory.

Stages (each resumable; a finished stage is skipped when its settings have not changed)::

    split     filter the source, truncate replies with the teacher tokenizer, shuffle (seed), hold out
              ``heldout`` pairs, keep ``pool`` of the rest         -> data/{heldout,pool}.jsonl
    score     teacher log-probs with/without the system prompt on the pool (selection) and on the
              held-out pairs (teacher-side vector z_T)           -> score/{pool,heldout}.jsonl
    select    Algorithm 1 on the pool: LLS subset + same-size random control -> select/{lls,random}.jsonl
    train     for every student, DPO on the LLS subset and on the random control
                                                                  -> students/<name>/{lls,random}/
    correlate for every student, the Table-1 protocol on the held-out pairs (every checkpoint of both
              arms; student-side z_s and teacher-side z_T)       -> students/<name>/correlate.json
    eval      for every student: base, base + system prompt, LLS student, random student; log-prob
              probe, sampled mention rate, target-language share (when a language is set)
                                                                  -> students/<name>/eval.json
    report    report.md, summary.json and the figures (Table-1, Fig-2, Fig-3 analogues)

Within a stage, work resumes at the finest saved unit: scoring chunks (:mod:`empirical.pipeline`),
training checkpoints (:mod:`empirical.train`), per-checkpoint held-out scores, per-condition
generations. Every formula comes from :mod:`lls_theory` (margins, weights, correlation statistics).

The configuration is a TOML file (see ``empirical/configs/``); relative data paths are resolved against
the current directory first and then against the config file's folder.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["ExperimentConfig", "StudentConfig", "load_config", "STAGES", "run_experiment"]

STAGES = ("split", "score", "select", "train", "correlate", "eval", "report")


@dataclass
class StudentConfig:
    name: str
    model: str


@dataclass
class ExperimentConfig:
    """Everything one experiment needs. Sections of the TOML file map to the prefixes below."""

    name: str
    data: str
    teacher: str
    system_prompt: str
    students: list[StudentConfig]
    target: str
    seed: int = 0
    # [data]
    split: str = "train"
    skip_bad: bool = True
    heldout: int = 500
    pool: int | None = None
    truncate: int | None = 20
    single_turn: bool = False
    max_prompt_tokens: int | None = None
    exclude_words: tuple[str, ...] = ()
    exclude_language: str | None = None
    # [teacher]
    dtype: str = "float32"
    # [select]
    quantile: float = 0.1
    best_pair_per_prompt: bool = False
    # [train]
    beta: float = 0.1
    lr: float = 5e-4
    lora_rank: int = 64
    epochs: int = 1
    repeat: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    checkpoints: int = 3
    # [correlate]
    n: int | None = None  # held-out pairs used (default: all of data.heldout)
    n_boot: int = 2000
    n_perm: int = 2000
    # [eval]
    samples: int = 16
    max_new_tokens: int = 96
    language: str | None = None
    eval_batch: int = 32
    source: str = ""

    def validate(self) -> None:
        if not self.students:
            raise ValueError("no [[student]] in the config")
        names = [s.name for s in self.students]
        if len(set(names)) != len(names):
            raise ValueError(f"student names must be unique, got {names}")
        if self.heldout < 3:
            raise ValueError("data.heldout must be >= 3")
        if self.n is not None and not 3 <= self.n <= self.heldout:
            raise ValueError(f"correlate.n must be in [3, data.heldout = {self.heldout}], got {self.n}")
        if self.pool is not None and self.pool < 1:
            raise ValueError("data.pool must be >= 1")
        if not 0 < self.quantile <= 1:
            raise ValueError(f"select.quantile must be in (0, 1], got {self.quantile}")
        if not self.system_prompt.strip() or not self.target.strip():
            raise ValueError("teacher.system_prompt and eval.target must be non-empty")
        if self.samples < 1 or self.max_new_tokens < 1:
            raise ValueError("eval.samples and eval.max_new_tokens must be >= 1")

    def stage_key(self, stage: str) -> dict[str, Any]:
        """The settings a stage's output depends on (a change re-runs that stage and the later ones)."""
        d = asdict(self)
        groups = {
            "split": ["data", "split", "skip_bad", "heldout", "pool", "truncate", "single_turn",
                      "max_prompt_tokens", "exclude_words", "exclude_language", "seed", "teacher"],
            "score": ["system_prompt", "dtype"],
            "select": ["quantile", "best_pair_per_prompt"],
            "train": ["students", "beta", "lr", "lora_rank", "epochs", "repeat", "batch_size", "grad_accum",
                      "checkpoints"],
            "correlate": ["n", "n_boot", "n_perm"],
            "eval": ["target", "samples", "max_new_tokens", "language", "eval_batch"],
            "report": [],
        }
        keys: list[str] = []
        for s in STAGES:
            keys += groups[s]
            if s == stage:
                break
        return json.loads(json.dumps({k: d[k] for k in keys}, default=str))


_SECTIONS = {
    None: {"name", "seed"},
    "data": {"path", "split", "skip_bad", "heldout", "pool", "truncate", "single_turn", "max_prompt_tokens",
             "exclude_words", "exclude_language"},
    "teacher": {"model", "system_prompt", "dtype"},
    "select": {"quantile", "best_pair_per_prompt"},
    "train": {"beta", "lr", "lora_rank", "epochs", "repeat", "batch_size", "grad_accum", "checkpoints"},
    "correlate": {"n", "n_boot", "n_perm"},
    "eval": {"target", "samples", "max_new_tokens", "language", "batch"},
}
_RENAME = {("data", "path"): "data", ("teacher", "model"): "teacher", ("eval", "batch"): "eval_batch"}


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate an experiment TOML file; ``ValueError`` naming the file and the bad key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    kw: dict[str, Any] = {}
    students = raw.pop("student", None)
    for key, value in raw.items():
        if isinstance(value, dict):
            if key not in _SECTIONS:
                raise ValueError(f"{path}: unknown section [{key}]")
            for k, v in value.items():
                if k not in _SECTIONS[key]:
                    raise ValueError(f"{path}: unknown key {key}.{k}")
                kw[_RENAME.get((key, k), k)] = v
        elif key in _SECTIONS[None]:
            kw[key] = value
        else:
            raise ValueError(f"{path}: unknown top-level key {key!r}")
    if not isinstance(students, list) or not students:
        raise ValueError(f"{path}: needs at least one [[student]] with name and model")
    studs = []
    for k, s in enumerate(students):
        if set(s) != {"name", "model"}:
            raise ValueError(f"{path}: [[student]] {k} must have exactly 'name' and 'model'")
        studs.append(StudentConfig(str(s["name"]), str(s["model"])))
    for req in ("data", "teacher", "system_prompt", "target"):
        if req not in kw:
            raise ValueError(f"{path}: missing {dict(data='data.path', teacher='teacher.model', system_prompt='teacher.system_prompt', target='eval.target')[req]}")
    kw.setdefault("name", path.stem)
    kw["exclude_words"] = tuple(kw.get("exclude_words", ()))
    data = Path(kw["data"]).expanduser()
    if not data.is_absolute() and not data.exists() and (path.parent / data).exists():
        kw["data"] = str((path.parent / data).resolve())
    try:
        cfg = ExperimentConfig(students=studs, source=str(path), **kw)
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    try:
        cfg.validate()
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return cfg


# ------------------------------------------------------------------------------------------ stage helpers
class _Stages:
    """Stage bookkeeping: ``<run>/stages/<stage>.json`` = {key, result}; skipped when the key matches."""

    def __init__(self, cfg: ExperimentConfig, root: Path, log: Callable[[str], None]):
        self.cfg, self.root, self.log = cfg, root, log
        self._models: dict[str, Any] = {}

    def outputs(self, stage: str) -> list[Path]:
        """Files a finished stage leaves behind (a stage marker without them does not count as done)."""
        per_student = {"train": ["{s}/lls/train.json", "{s}/random/train.json"], "correlate": ["{s}/correlate.json"],
                       "eval": ["{s}/eval.json"]}
        if stage in per_student:
            return [self.root / "students" / f.format(s=s.name) for s in self.cfg.students for f in per_student[stage]]
        fixed = {"split": ["data/heldout.jsonl", "data/pool.jsonl"], "score": ["score/pool.jsonl", "score/heldout.jsonl"],
                 "select": ["select/lls.jsonl", "select/random.jsonl"], "report": ["report.md", "summary.json"]}
        return [self.root / f for f in fixed[stage]]

    def done(self, stage: str) -> dict[str, Any] | None:
        f = self.root / "stages" / f"{stage}.json"
        if f.is_file() and all(p.is_file() for p in self.outputs(stage)):
            rec = json.loads(f.read_text())
            if rec.get("key") == self.cfg.stage_key(stage):
                return rec["result"]
        return None

    def mark(self, stage: str, result: dict[str, Any]) -> dict[str, Any]:
        from lls_common.io import atomic_write_json

        atomic_write_json(self.root / "stages" / f"{stage}.json", {"key": self.cfg.stage_key(stage), "result": result})
        return result

    def release(self) -> None:
        self._models.clear()

    def model(self, spec: str):
        """Load a model once per process (a fresh copy each time it is wrapped by PEFT is not needed)."""
        from empirical import models

        if spec not in self._models:
            self._models.clear()  # keep at most one model in memory (2-core, small-RAM machines)
            self._models[spec] = models.load(spec, dtype=self.cfg.dtype)
        return self._models[spec]


def _pair_record(p: Any, tok: Any, truncate: int | None) -> dict[str, Any] | None:
    from empirical import render

    c = render.truncate_response(tok, p.chosen, truncate).strip()
    r = render.truncate_response(tok, p.rejected, truncate).strip()
    if not c or not r or c == r:
        return None
    return {"id": p.id, "prompt": p.messages, "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}]}


def stage_split(st: _Stages) -> dict[str, Any]:
    import numpy as np

    from empirical import data
    from lls_common.io import atomic_write_jsonl

    cfg = st.cfg
    tok = st.model(cfg.teacher)[1]
    filters = data.Filters(single_turn=cfg.single_turn, max_prompt_tokens=cfg.max_prompt_tokens,
                           exclude_words=cfg.exclude_words, exclude_language=cfg.exclude_language)
    pairs, rep = data.load_pairs(cfg.data, split=cfg.split, skip_bad=cfg.skip_bad, filters=filters, tok=tok)
    recs, n_degenerate = [], 0
    for p in pairs:
        r = _pair_record(p, tok, cfg.truncate)
        if r is None:
            n_degenerate += 1
        else:
            recs.append(r)
    order = np.random.default_rng(cfg.seed).permutation(len(recs))
    if len(recs) < cfg.heldout + 1:
        raise ValueError(f"{cfg.data}: {len(recs)} usable pairs, need more than data.heldout = {cfg.heldout}")
    held = [recs[i] for i in sorted(order[:cfg.heldout])]
    rest = order[cfg.heldout:]
    if cfg.pool is not None:
        rest = rest[:cfg.pool]
    pool = [recs[i] for i in sorted(rest)]
    atomic_write_jsonl(st.root / "data" / "heldout.jsonl", held)
    atomic_write_jsonl(st.root / "data" / "pool.jsonl", pool)
    return {"n_records": rep.n_records, "n_bad": rep.n_bad, "dropped": rep.dropped,
            "n_identical_after_truncation": n_degenerate, "n_usable": len(recs), "n_heldout": len(held),
            "n_pool": len(pool), "first_errors": rep.first_errors}


def _score(st: _Stages, model: str, name: str, out: Path, limit: int | None = None) -> dict[str, Any]:
    """Score ``data/<name>`` into ``out``; a finished file with the same settings and input is kept as is.

    ``score_file`` resumes an interrupted file from its chunks but removes them once the file is complete;
    ``<out>.key.json`` (its run key, which holds the input file's size and time) lets a later stage re-run
    (e.g. correlate after a lost marker) reuse a finished file instead of scoring it again.
    """
    from empirical.pipeline import ScoreConfig, score_file
    from lls_common.io import atomic_write_json

    cfg = ScoreConfig(model=model, system_prompt=st.cfg.system_prompt, data=str(st.root / "data" / name),
                      out=out, dtype=st.cfg.dtype, max_batch=16, chunk_size=64, limit=limit)
    marker = out.with_name(out.name + ".key.json")
    key = json.loads(json.dumps(cfg.run_key(), default=str))
    if out.is_file() and marker.is_file():
        saved = json.loads(marker.read_text())
        if saved.get("key") == key:
            return saved["result"]
    res = score_file(cfg, model_and_tok=st.model(model))
    result = {"file": str(out.relative_to(st.root)), "n_scored": res.n_scored, "chunks_resumed": res.chunks_resumed}
    atomic_write_json(marker, {"key": key, "result": result})
    return result


def stage_score(st: _Stages) -> dict[str, Any]:
    t = st.cfg.teacher
    return {"pool": _score(st, t, "pool.jsonl", st.root / "score" / "pool.jsonl"),
            "heldout": _score(st, t, "heldout.jsonl", st.root / "score" / "heldout.jsonl")}


def stage_select(st: _Stages) -> dict[str, Any]:
    from empirical.pipeline import select_file

    s = select_file(st.root / "score" / "pool.jsonl", st.cfg.quantile, st.root / "select", seed=st.cfg.seed,
                    best_pair_per_prompt=st.cfg.best_pair_per_prompt)
    if s["n_selected"] == 0:
        raise ValueError(f"{st.root}/score/pool.jsonl: zero pairs selected (no positive LLS weight)")
    return s


ARMS = ("lls", "random")


def stage_train(st: _Stages) -> dict[str, Any]:
    from empirical.train import TrainConfig, train

    c = st.cfg
    out = {}
    for s in c.students:
        for arm in ARMS:
            tc = TrainConfig(student=s.model, data=str(st.root / "select" / f"{arm}.jsonl"),
                             out=st.root / "students" / s.name / arm, beta=c.beta, lr=c.lr, lora_rank=c.lora_rank,
                             epochs=c.epochs, repeat=c.repeat, batch_size=c.batch_size, grad_accum=c.grad_accum,
                             checkpoints=c.checkpoints, seed=c.seed, dtype=c.dtype)
            old = tc.out / "run.json"
            if old.is_file() and json.loads(old.read_text()) != tc.run_key():
                st.log(f"train {s.name}/{arm}: settings changed, discarding the old run in {tc.out}")
                shutil.rmtree(tc.out)
            st.log(f"train {s.name}/{arm}")
            summ = train(tc)
            out[f"{s.name}/{arm}"] = {k: summ[k] for k in ("n_pairs", "steps", "checkpoints", "wall_s_this_call",
                                                            "pairs_per_s_this_call")}
    return out


def stage_correlate(st: _Stages) -> dict[str, Any]:
    from empirical import models
    from empirical.correlate import correlate_arms, scores_from_file
    from lls_common.io import atomic_write_json

    c = st.cfg
    out = {}
    n = c.n or c.heldout
    t_recs, t_base, t_sys = scores_from_file(st.root / "score" / "heldout.jsonl", limit=n)
    for s in c.students:
        sdir = st.root / "students" / s.name
        teacher = None
        if s.model == c.teacher:
            base, sys_ = t_base, t_sys
        else:
            f = sdir / "heldout-initial.jsonl"
            _score(st, s.model, "heldout.jsonl", f, limit=n)
            recs, base, sys_ = scores_from_file(f)
            if [r["id"] for r in recs] != [r["id"] for r in t_recs]:
                raise ValueError(f"{f}: held-out pairs differ from the teacher's {st.root}/score/heldout.jsonl")
            teacher = (t_base, t_sys)
        st.log(f"correlate {s.name}")
        st.release()
        res = correlate_arms(models.load(s.model, dtype=c.dtype), base, sys_, t_recs,
                             {a: sdir / a for a in ARMS}, teacher=teacher, cache_dir=sdir / "heldout-cache",
                             n_boot=c.n_boot, n_perm=c.n_perm, seed=c.seed)
        res.update({"student": s.model, "teacher": c.teacher, "system_prompt": c.system_prompt})
        atomic_write_json(sdir / "correlate.json", res)
        out[s.name] = {a: res["arms"][a]["final"] for a in ARMS}
        if teacher is not None:
            out[s.name]["teacher_vs_student"] = res["teacher_vs_student"]
        out[s.name]["lls_minus_random"] = res["lls_minus_random"]
    return out


def stage_eval(st: _Stages) -> dict[str, Any]:
    from empirical.evaluate import evaluate_conditions
    from empirical.train import require_checkpoints
    from lls_common.io import atomic_write_json

    c = st.cfg
    out = {}
    for s in c.students:
        sdir = st.root / "students" / s.name
        conds = {"base": (None, None), "system": (None, c.system_prompt)}
        for arm in ARMS:
            conds[arm] = (require_checkpoints(sdir / arm)[-1][1], None)
        st.log(f"eval {s.name}")
        st.release()
        res = evaluate_conditions(s.model, conds, target=c.target, samples=c.samples,
                                  max_new_tokens=c.max_new_tokens, language=c.language, seed=c.seed,
                                  batch=c.eval_batch, dtype=c.dtype, cache_dir=sdir / "eval-cache", log=st.log)
        res.update({"student": s.model})
        atomic_write_json(sdir / "eval.json", res)
        out[s.name] = {k: {"mention_rate": v["mention"]["rate"], "p_target": v["probe"]["p_target"]}
                       for k, v in res["conditions"].items()}
    return out


def stage_report(st: _Stages) -> dict[str, Any]:
    from empirical.report import write_report

    return write_report(st.root, st.cfg)


_RUNNERS: dict[str, Callable[[_Stages], dict[str, Any]]] = {
    "split": stage_split, "score": stage_score, "select": stage_select, "train": stage_train,
    "correlate": stage_correlate, "eval": stage_eval, "report": stage_report,
}


def run_experiment(cfg: ExperimentConfig, out: str | Path, until: str = "report",
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the stages up to ``until`` (inclusive) under ``out``; returns ``{stage: result}``.

    A stage whose saved key matches the config is skipped; once one stage re-runs, the later ones do too.
    """
    from lls_common.io import atomic_write_json

    if until not in STAGES:
        raise ValueError(f"unknown stage {until!r}; one of {', '.join(STAGES)}")
    cfg.validate()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(root / "config.json", asdict(cfg))
    st = _Stages(cfg, root, log)
    results: dict[str, Any] = {}
    rerun = False
    for stage in STAGES[:STAGES.index(until) + 1]:
        prev = None if rerun else st.done(stage)
        if prev is not None:
            log(f"[{stage}] done earlier, skipped")
            results[stage] = prev
            continue
        rerun = True
        log(f"[{stage}] running")
        results[stage] = st.mark(stage, _RUNNERS[stage](st))
    return results
