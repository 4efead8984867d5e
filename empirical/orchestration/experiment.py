"""``lls experiment``: the whole LLS pipeline on real models, for one or many traits, under one run folder.

Stages (each resumable; a finished step is skipped when its settings have not changed)::

    split     filter the source, truncate replies with the teacher tokenizer, shuffle (seed), hold out
              ``data.heldout`` pairs, keep ``data.pool`` of the rest          -> data/{heldout,pool}.jsonl
    score     the teacher's reference (no-system) log-probs of pool and held-out pairs, once
              (score/{pool,heldout}-base.jsonl); per trait the system-prompted ones -> <T>/score/*.jsonl
    select    per trait Algorithm 1 on the pool -> <T>/select/{lls,bottom}.jsonl; the random control:
              one trait: same size as the LLS subset (select/random.jsonl); many traits: one subset of
              ``select.random_size`` pairs that serves every trait
    train     per student: DPO on the random control (once) and on each trait's LLS subset
                                                                  -> students/<s>/random/, <T>/students/<s>/lls/
    correlate per (trait, student) the Table-1 protocol on the held-out pairs; a student other than the
              teacher scores its reference held-out log-probs once (students/<s>/heldout-base.jsonl)
                                                                  -> <T>/students/<s>/correlate.json
    eval      per (trait, student): base, base + system prompt, LLS student, random student
                                                                  -> <T>/students/<s>/eval.json
    report    per trait report.md, summary.json and the figures   -> <T>/report.md

``<T>`` is the run folder itself for a single-trait config (``[teacher] system_prompt``, the committed
``results/e2e`` layout) and ``traits/<name>/`` when the config lists traits (``[[trait]]`` tables or
``[traits] file``); a many-trait run also gets the run-level ``report.md`` with Table 1 and the Figure-19
view. Every step is a unit, identified by (stage, trait, student, step) -- trait None for the shared units, step a
fixed word of the code -- with a marker ``stages/units/<stage>/shared/[students/<s>/]<step>.json`` or
``stages/units/<stage>/traits/<T>/[students/<s>/]<step>.json`` (:meth:`Run.marker`) holding its key (the
settings it depends on, input fingerprints included) and result; no trait name can reach a shared unit's marker or
another trait's; a trait added later runs only its own units.
A unit whose saved key differs from the config is refused up front unless ``overwrite`` (reports excepted:
they are re-drawn from the stored JSON, so a trait or student added later needs no ``overwrite``). Each trait folder
also gets ``stages/<stage>.json`` (its view of each stage) so that :func:`empirical.report.write_report`
reads it like a single-trait run.

Within a unit, work resumes at the finest saved unit: scoring chunks (:mod:`empirical.stages.build`), training
checkpoints (:mod:`empirical.stages.train`), per-checkpoint held-out scores, per-condition generations. Every formula
comes from :mod:`lls_theory`. Settings come from :mod:`empirical.config` (one dataclass per TOML section).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

from empirical.config import (
    CorrelateConfig, DataConfig, EvalConfig, ExperimentConfig, Filters, ModelArgs, ScoreConfig, SelectConfig,
    StudentConfig, TraitConfig, TrainConfig,
)
from lls_common.config import describe, from_table, table_keys
from lls_common.errors import LLSError

__all__ = ["ExperimentConfig", "StudentConfig", "TraitConfig", "load_config", "STAGES", "run_experiment",
           "toml_keys", "SECTIONS"]

STAGES = ("split", "score", "select", "train", "correlate", "eval", "report")
ARMS = ("lls", "random")

#: TOML section -> the settings classes that share it (a key goes to the class that declares it).
SECTIONS: dict[str, tuple[type, ...]] = {
    "data": (DataConfig, Filters), "teacher": (ModelArgs,), "score": (ScoreConfig,), "select": (SelectConfig,),
    "train": (TrainConfig,), "correlate": (CorrelateConfig,), "eval": (EvalConfig,),
}
_ATTR = {DataConfig: "data", Filters: "filters", ModelArgs: "teacher", ScoreConfig: "score",
         SelectConfig: "select", TrainConfig: "train", CorrelateConfig: "correlate", EvalConfig: "eval"}


def toml_keys() -> str:
    """Every TOML key of an experiment config with its type, default and help (for ``--help``)."""
    parts = ["name = (the file's stem)  # string; experiment name", "seed = 0  # integer >= 0"]
    for sec, classes in SECTIONS.items():
        body = "\n".join(describe(c, "", indent="  ") for c in classes)
        extra = {"teacher": "\n  system_prompt = (one trait)  # string; the system prompt s (single-trait configs)"}
        parts.append(f"[{sec}]\n{body}{extra.get(sec, '')}")
    parts.append("[[student]]  (one or more)\n" + describe(StudentConfig, "", indent="  "))
    parts.append("[[trait]]  (many traits; or [traits] file = \"empirical/systems/animals.txt\", only = [...]; a "
                 "[[trait]] with only a library name -- owl ... giraffe, football, french, evil-ruler -- takes its "
                 "system_prompt, target and language from empirical.systems.named_prompts)\n"
                 + describe(TraitConfig, "", indent="  "))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------ loading
def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LLSError(f"{path}: no such config file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LLSError(f"{path}: {str(exc).splitlines()[0]}") from None


def _section(path: Path, name: str, table: Any, extra_keys: tuple[str, ...] = ()) -> dict[type, dict[str, Any]]:
    """Split one TOML table among the classes of :data:`SECTIONS` (unknown keys refused with the allowed list)."""
    if not isinstance(table, dict):
        raise LLSError(f"{path}: [{name}] must be a table")
    classes = SECTIONS[name]
    owner = {k: c for c in classes for k in table_keys(c)}
    parts: dict[type, dict[str, Any]] = {c: {} for c in classes}
    for k, v in table.items():
        if k in extra_keys:
            continue
        if k not in owner:
            allowed = sorted(set(owner) | set(extra_keys))
            raise LLSError(f"{path}: unknown key {name}.{k}; [{name}] allows {', '.join(allowed)}")
        parts[owner[k]][k] = v
    return parts


def _resolve_data_path(path: Path, table: dict[str, Any]) -> None:
    """A relative data path is tried against the current folder, then against the config file's folder."""
    p = table.get("path")
    if isinstance(p, str):
        d = Path(p).expanduser()
        if not d.is_absolute() and not d.exists() and (path.parent / d).exists():
            table["path"] = str((path.parent / d).resolve())


def _traits_from_file(path: Path, table: dict[str, Any]) -> list[TraitConfig]:
    """``[traits] file = "..."`` (``category<TAB>text`` lines, ``#`` comments), optional ``only = [names]`` and
    ``seeds = {name = N}`` (training seeds of a trait's LLS students: :attr:`TraitConfig.seeds`).

    The library's named prompts are recognised (:func:`empirical.systems.named_prompts`: the paper's animal
    prompts with name and target = the animal, the control traits with their target and language); other
    lines are named ``s001``, ``s002``, ... and have no target word.
    """
    from empirical.systems import named_prompts

    unknown = set(table) - {"file", "only", "seeds"}
    if unknown:
        raise LLSError(f"{path}: unknown key traits.{sorted(unknown)[0]}; [traits] allows file, only, seeds")
    f = table.get("file")
    if not isinstance(f, str) or not f.strip():
        raise LLSError(f"{path}: traits.file must be a file name")
    src = Path(f).expanduser()
    if not src.is_absolute() and not src.exists() and (path.parent / src).exists():
        src = path.parent / src
    if not src.is_file():
        raise LLSError(f"{path}: traits.file {f}: no such file")
    from empirical.systems import _read_text

    known = {p.text: p for p in named_prompts().values()}
    out = []
    for lineno, line in enumerate(_read_text(src).splitlines(), 1):  # not UTF-8: one line naming file:line
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = line.split("\t", 1)[1].strip() if "\t" in line else line.strip()
        named = known.get(text)
        try:
            out.append(TraitConfig(name=named.name, system_prompt=text, target=named.target, language=named.language)
                       if named is not None else TraitConfig(name=f"s{len(out) + 1:03d}", system_prompt=text))
        except LLSError as exc:
            raise LLSError(f"{src}:{lineno}: {exc}") from None
    only = table.get("only")
    if only is not None:
        if not isinstance(only, list) or not all(isinstance(x, str) for x in only):
            raise LLSError(f"{path}: traits.only must be a list of trait names")
        missing = [x for x in only if x not in {t.name for t in out}]
        if missing:
            raise LLSError(f"{path}: traits.only names {missing[0]!r}, not in {src}")
        out = [t for t in out if t.name in only]
    seeds = table.get("seeds", {})
    if not isinstance(seeds, dict):
        raise LLSError(f"{path}: traits.seeds must be a table of trait name = number of training seeds "
                       "(e.g. seeds = {{ owl = 3 }})")
    names = {t.name for t in out}
    for name, n in seeds.items():
        if name not in names:
            raise LLSError(f"{path}: traits.seeds names {name!r}, not a trait of {src}")
        try:
            out = [replace(t, seeds=n) if t.name == name else t for t in out]
        except LLSError as exc:
            raise LLSError(f"{path}: traits.seeds.{name}: {exc}") from None
    return out


def load_config(path: str | Path) -> ExperimentConfig:
    """Parse and validate an experiment TOML file; :class:`LLSError` naming the file and the bad key."""
    path = Path(path)
    raw = _read_toml(path)
    students = raw.pop("student", None)
    trait_tables = raw.pop("trait", None)
    traits_file = raw.pop("traits", None)
    top: dict[str, Any] = {}
    for key in list(raw):
        if key in ("name", "seed"):
            top[key] = raw.pop(key)
        elif key not in SECTIONS:
            kind = "section" if isinstance(raw[key], dict) else "top-level key"
            shown = f"[{key}]" if kind == "section" else repr(key)
            raise LLSError(f"{path}: unknown {kind} {shown}; allowed: name, seed, "
                           + ", ".join(f"[{s}]" for s in SECTIONS) + ", [[student]], [[trait]], [traits]")
    if "data" in raw:
        _resolve_data_path(path, raw["data"])
    kw: dict[str, Any] = {}
    for sec in SECTIONS:
        extra = {"teacher": ("system_prompt",)}.get(sec, ())
        for cls, table in _section(path, sec, raw.get(sec, {}), extra).items():
            if cls in (DataConfig, ModelArgs) and not table.get("path" if cls is DataConfig else "model"):
                raise LLSError(f"{path}: missing {'data.path' if cls is DataConfig else 'teacher.model'}")
            kw[_ATTR[cls]] = from_table(cls, table, str(path), sec)
    kw["students"] = _students(path, students)
    kw["traits"], kw["multi"] = _traits(path, raw, kw["eval"], trait_tables, traits_file, top)
    kw["name"] = top.get("name", path.stem)
    try:
        return ExperimentConfig(seed=top.get("seed", 0), source=str(path), **kw)
    except LLSError as exc:
        raise LLSError(f"{path}: {exc}") from None


def _students(path: Path, students: Any) -> list[StudentConfig]:
    if not isinstance(students, list) or not students:
        raise LLSError(f"{path}: needs at least one [[student]] with name and model")
    return [from_table(StudentConfig, s if isinstance(s, dict) else {}, str(path), f"student[{k}]")
            for k, s in enumerate(students)]


def _traits(path: Path, raw: dict[str, Any], ev: EvalConfig, tables: Any, file_table: Any,
            top: dict[str, Any]) -> tuple[list[TraitConfig], bool]:
    """The traits: the single ``[teacher] system_prompt`` (+ ``[eval] target/language``) or the listed ones."""
    sp = raw.get("teacher", {}).get("system_prompt")
    if tables is None and file_table is None:
        if sp is None:
            raise LLSError(f"{path}: missing teacher.system_prompt (or list [[trait]] tables)")
        name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(top.get("name", path.stem))).strip("-.") or "trait"
        try:
            return [TraitConfig(name=name, system_prompt=sp, target=ev.target, language=ev.language)], False
        except LLSError as exc:
            raise LLSError(f"{path}: {str(exc).replace('trait.system_prompt', 'teacher.system_prompt')}") from None
    if sp is not None or ev.target is not None or ev.language is not None:
        raise LLSError(f"{path}: with [[trait]] / [traits], set system_prompt, target and language per trait "
                       "(not in [teacher] / [eval])")
    out: list[TraitConfig] = []
    if file_table is not None:
        if not isinstance(file_table, dict):
            raise LLSError(f"{path}: [traits] must be a table with file (and only)")
        out += _traits_from_file(path, file_table)
    if tables is not None:
        if not isinstance(tables, list):
            raise LLSError(f"{path}: trait must be an array of tables ([[trait]])")
        out += [from_table(TraitConfig, _library_trait(path, t, k), str(path), f"trait[{k}]")
                for k, t in enumerate(tables)]
    if not out:
        raise LLSError(f"{path}: no traits listed")
    return out, True


def _library_trait(path: Path, table: Any, k: int) -> dict[str, Any]:
    """A ``[[trait]]`` table; without ``system_prompt`` its ``name`` must be a library prompt
    (:func:`empirical.systems.named_prompts`), whose text, target word and language fill what the table leaves out."""
    if not isinstance(table, dict):
        return {}
    if "system_prompt" in table or not isinstance(table.get("name"), str):
        return table
    from empirical.systems import named_prompt

    try:
        p = named_prompt(table["name"], f"trait[{k}].name")
    except LLSError as exc:
        raise LLSError(f"{path}: {exc} (or give trait[{k}].system_prompt)") from None
    return {"system_prompt": p.text, "target": p.target, "language": p.language} | table


# ------------------------------------------------------------------------------------------------- keys
def _plain(obj: Any, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    d = asdict(obj)
    for k in drop:
        d.pop(k, None)
    return d


def _model_plain(m: ModelArgs, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """``m``'s settings with a local model path resolved (a relative and an absolute spelling of one folder
    are the same setting)."""
    from empirical.engine import models

    d = _plain(m, drop)
    spec = d.get("model")
    if isinstance(spec, str) and spec not in models.REGISTRY and Path(spec).expanduser().exists():
        d["model"] = str(Path(spec).expanduser().resolve())
    return d


def model_fp(m: ModelArgs) -> Any:
    """:func:`empirical.engine.models.model_fingerprint` of ``m`` (None when it cannot be resolved: the up-front model
    check names that problem)."""
    from empirical.engine import models

    try:
        return models.model_fingerprint(m.model, m.revision)
    except (ValueError, OSError):
        return None


#: Key entries that older run folders lack: a recorded key without them still matches (the model check of
#: :func:`check_model_record` covers those folders).
_NEW_KEY_ENTRIES = ("teacher_fingerprint", "student_fingerprint")


def _comparable(recorded: Any, current: Any) -> Any:
    """``current`` as a plain JSON value, less the :data:`_NEW_KEY_ENTRIES` a recorded key lacks."""
    from lls_common.io import json_key

    current = json_key(current)
    if isinstance(recorded, dict) and isinstance(current, dict):
        current = {k: v for k, v in current.items() if k in recorded or k not in _NEW_KEY_ENTRIES}
    return current


def same_key(recorded: Any, current: Any) -> bool:
    """True when a unit's recorded key equals ``current`` (entries of :data:`_NEW_KEY_ENTRIES` missing from the
    recorded key are not compared)."""
    return recorded == _comparable(recorded, current)


def unit_key(cfg: ExperimentConfig, stage: str, trait: TraitConfig | None = None,
             student: StudentConfig | None = None) -> dict[str, Any]:
    """The settings a step of ``stage`` depends on: cumulative over the stages up to it, restricted to one trait
    and one student where given (a shared step passes neither). Models are identified by their content too
    (``teacher_fingerprint``, ``student_fingerprint``: :func:`empirical.engine.models.model_fingerprint`)."""
    from lls_common.io import fingerprint

    groups: dict[str, dict[str, Any]] = {
        "split": {"seed": cfg.seed, "data": {**_plain(cfg.data), "path": fingerprint(cfg.data.path)},
                  "filters": _plain(cfg.filters),
                  "tokenizer": _model_plain(cfg.teacher, ("dtype", "device")),
                  "teacher_fingerprint": model_fp(cfg.teacher)},
        "score": {"teacher": _model_plain(cfg.teacher), "score": _plain(cfg.score, ("progress",))}
        | ({"system_prompt": trait.system_prompt} if trait else {}),
        "select": _select_key(cfg, trait),
        # packed is in the key only when off (same numbers either way): runs made before it existed keep resuming
        "train": {"train": _plain(cfg.train, ("packed",) if cfg.train.packed else ())}
        | ({"student": _model_plain(student), "student_fingerprint": model_fp(student)} if student else {}),
        "correlate": {"correlate": _plain(cfg.correlate)},
        "eval": {"eval": _plain(cfg.eval, ("target", "language"))}
        | ({"target": trait.target, "language": trait.language} if trait else {}),
        "report": {},
    }
    key: dict[str, Any] = {}
    for s in STAGES[:STAGES.index(stage) + 1]:
        key.update(groups[s])
    return key


def _select_key(cfg: ExperimentConfig, trait: TraitConfig | None) -> dict[str, Any]:
    """The select settings of one trait's steps (its own contrast and what it is contrasted with), or of the
    shared steps (trait None: the random control does not depend on the contrast settings)."""
    if trait is None:
        return {"select": replace(cfg.select, contrast="none", baseline=None).key()}
    mode = cfg.contrast_of(trait)
    sel = replace(cfg.select, contrast=mode, baseline=cfg.select.baseline if mode == "baseline" else None)
    return {"select": sel.key()} | _contrast_key(cfg, trait)


def _contrast_key(cfg: ExperimentConfig, trait: TraitConfig) -> dict[str, Any]:
    """What a trait's contrastive selection depends on beyond its own scores: the reference system prompts
    (the other traits of its contrast group, or the baseline); empty for plain selection (the key it always had)."""
    mode = cfg.contrast_of(trait)
    if mode == "none":
        return {}
    against = ([t.system_prompt for t in cfg.contrast_group(trait)] if mode == "others"
               else [_baseline_trait(cfg).system_prompt])
    return {"contrast": {"mode": mode, "against": against}}


def _baseline_trait(cfg: ExperimentConfig) -> TraitConfig:
    """The ``select.baseline`` library prompt as the system prompt of one shared scoring unit."""
    from empirical.config import baseline_text

    return TraitConfig(name=f"baseline-{cfg.select.baseline}",
                       system_prompt=baseline_text(cfg.select.baseline, "select.baseline"))


def stage_key(cfg: ExperimentConfig, stage: str) -> dict[str, Any]:
    """A whole stage's key (every trait and student): recorded in ``stages/<stage>.json``."""
    key = unit_key(cfg, stage)
    if STAGES.index(stage) >= STAGES.index("score"):
        key["traits"] = [_plain(t, ("seeds",) if t.seeds == 1 else ()) for t in cfg.traits]
    if STAGES.index(stage) >= STAGES.index("train"):
        key["students"] = [_plain(s) for s in cfg.students]
    return key


# ------------------------------------------------------------------------------------------------- units
#: Unit identity: (trait, student, step). ``trait`` None = a shared unit (the split, the reference scores, the
#: random controls and their students, a student's reference held-out scores, the run-level report); ``step`` is
#: a fixed word of the code (:data:`STEPS`), never a name from the config, so no trait or student name can make
#: two units one.
UnitId = tuple[str | None, str | None, str]

#: The steps of each stage (``random-<k>`` / ``lls-<k>`` for the further random controls and training seeds).
STEPS: dict[str, tuple[str, ...]] = {
    "split": ("split",), "score": ("base-pool", "base-heldout", "baseline-pool", "pool", "heldout"),
    "select": ("select", "random", "overlap"), "train": ("random", "lls"),
    "correlate": ("base", "scores", "correlate"), "eval": ("eval",), "report": ("report", "table1"),
}


def _check_step(stage: str, step: str) -> None:
    """A step is one of :data:`STEPS` (or ``random-<k>`` / ``lls-<k>``): a bug otherwise, not a user error."""
    if step not in STEPS[stage] and not re.fullmatch(r"(random|lls)-[1-9][0-9]*", step):
        raise ValueError(f"no step {step!r} in stage {stage}")


@dataclass
class Unit:
    """One resumable step: ``compute()`` runs unless ``marker`` holds ``key`` and every output exists.

    Identified by ``(stage, trait, student, step)`` (:attr:`uid` within its stage): ``trait`` None is a shared
    unit, ``student`` the student model it concerns (or None), ``step`` a fixed word (:data:`STEPS`). The marker
    path is derived from the identity (:meth:`Run.marker`); :attr:`label` is its display name only."""

    stage: str
    step: str
    marker: Path
    key: dict[str, Any]
    compute: Callable[[], Any]
    outputs: tuple[Path, ...] = ()
    clear: tuple[Path, ...] = ()  # removed before a recompute with other settings
    trait: str | None = None  # None: shared by every trait
    student: str | None = None
    inputs: tuple[Path, ...] = ()  # files / folders of the run it reads (their digests are recorded)
    wave: int = 0  # within a stage, a unit runs after every unit of a lower wave (it reads their outputs)
    redraw: bool = False  # a summary of other units' outputs: recomputed, without asking, when its key changes

    @property
    def uid(self) -> UnitId:
        """The unit's identity within its stage: ``(trait, student, step)``."""
        return (self.trait, self.student, self.step)

    @property
    def label(self) -> str:
        """Display name (logs, ``--plan``, the ``shared`` entries of ``stages/<stage>.json``): ``[<trait>/]
        [<student>/]<step>``. Distinct within a stage (a trait's steps without a student -- pool, heldout, select,
        report -- are not steps of a shared student's unit), but the identity is :attr:`uid`."""
        return "/".join(p for p in self.uid if p is not None)


class Run:
    """The run folder, its layout and the loaded models of one ``run_experiment`` call."""

    def __init__(self, cfg: ExperimentConfig, root: Path, log: Callable[[str], None]):
        self.cfg, self.root, self.log = cfg, root, log
        self._models: dict[str, Any] = {}

    def tdir(self, trait: TraitConfig) -> Path:
        """The trait's folder (the run folder itself for a single-trait config)."""
        return self.root / "traits" / trait.name if self.cfg.multi else self.root

    def random_pairs(self, k: int = 0) -> Path:
        """The random control ``k`` (0: ``select/random.jsonl``; k >= 1 drawn with its own seed)."""
        return self.root / "select" / ("random.jsonl" if k == 0 else f"random-{k}.jsonl")

    def arms(self, trait: TraitConfig) -> tuple[str, ...]:
        """The trained arms of ``trait``'s students: ``lls``, ``lls-1``, ... (``trait.seeds``) then ``random``,
        ``random-1``, ... (``select.random_controls``)."""
        return (("lls",) + tuple(f"lls-{k}" for k in range(1, trait.seeds)) + ("random",)
                + tuple(f"random-{k}" for k in range(1, self.cfg.select.random_controls)))

    def baseline_scores(self) -> Path:
        """The teacher's scores of the pool under the ``select.baseline`` prompt (one shared unit)."""
        return self.root / "score" / f"pool-baseline-{self.cfg.select.baseline}.jsonl"

    def arm_dir(self, trait: TraitConfig, student: StudentConfig, arm: str) -> Path:
        base = self.tdir(trait) if arm == "lls" or arm.startswith("lls-") else self.root
        return base / "students" / student.name / arm

    def marker(self, stage: str, trait: str | None, student: str | None, step: str) -> Path:
        """``stages/units/<stage>/shared/[students/<student>/]<step>.json`` for a shared unit,
        ``stages/units/<stage>/traits/<trait>/[students/<student>/]<step>.json`` for a trait's: shared and
        per-trait markers in disjoint folders, one path per identity (names are folder names; a step is a fixed
        word, never ``students``)."""
        _check_step(stage, step)
        d = self.root / "stages" / "units" / stage
        d = d / "shared" if trait is None else d / "traits" / trait
        if student is not None:
            d = d / "students" / student
        return d / f"{step}.json"

    def unit(self, stage: str, step: str, key: dict[str, Any], compute: Callable[[], Any],
             outputs: tuple[Path, ...] = (), clear: tuple[Path, ...] = (), trait: str | None = None,
             student: str | None = None, **kw: Any) -> Unit:
        """The :class:`Unit` of ``(stage, trait, student, step)`` with its marker."""
        return Unit(stage, step, self.marker(stage, trait, student, step), key, compute, outputs, clear, trait,
                    student, **kw)

    def model_spec(self, role: str) -> str:
        """The model spec of ``role`` ("teacher" or "student <name>") in the current config."""
        if role == "teacher":
            return self.cfg.teacher.model
        return next((s.model for s in self.cfg.students if f"student {s.name}" == role), role)

    def release(self) -> None:
        self._models.clear()

    def model(self, args: ModelArgs) -> tuple[Any, Any]:
        """Load a model once per process; at most one in memory (2-core, small-RAM machines)."""
        from empirical.engine import models

        spec = json.dumps(asdict(args), sort_keys=True)
        if spec not in self._models:
            self._models.clear()
            self._models[spec] = models.load(args.model, **args.load_kwargs())
        return self._models[spec]

    def tokenizer(self, args: ModelArgs) -> Any:
        """The tokenizer of ``args`` (the loaded model's when it is in memory, else the tokenizer alone: no
        weights, so checks that need only tokens run before the model loads)."""
        from empirical.engine import models

        spec = json.dumps(asdict(args), sort_keys=True)
        if spec in self._models:
            return self._models[spec][1]
        return models.load_tokenizer(args.model, revision=args.revision, trust_remote_code=args.trust_remote_code)


def _score_job(run: Run, model: ModelArgs, src: Path, out: Path, trait: TraitConfig | None,
               base: Path | None = None, limit: int | None = None) -> Any:
    from empirical.stages.build import ScoreJob

    return ScoreJob(model=model, data=DataConfig(path=str(src), heldout=3, limit=limit), trait=trait,
                    out=out, score=run.cfg.score, base=base)


def _score(run: Run, job: Any) -> dict[str, Any]:
    """Score (or reuse a finished file with the same settings and input: ``<out>.run.json``)."""
    from empirical.stages.build import run_score

    res = run_score(job, overwrite=True, model_and_tok=run.model(job.model))
    return {"file": str(Path(res["out"]).relative_to(run.root)), "n_scored": res["scored"],
            "chunks_resumed": res["chunks_resumed"]}


# ----------------------------------------------------------------------------------------------- split
def _pair_record(p: Any, tok: Any, truncate: int | None) -> dict[str, Any] | None:
    from empirical.engine import render

    c = render.truncate_response(tok, p.chosen, truncate).strip()
    r = render.truncate_response(tok, p.rejected, truncate).strip()
    if not c or not r or c == r:
        return None
    return {"id": p.id, "prompt": p.messages, "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}]}


def split_pairs(d: DataConfig, filters: Any, seed: int, tok: Any = None) -> tuple[list[dict], list[dict], dict]:
    """The one held-out split rule (the ``split`` stage and ``lls split``): read ``d.path`` with ``filters``,
    truncate replies to ``d.truncate`` tokens of ``tok`` (needed only for truncation and the token-length
    filters), drop pairs whose replies became equal, shuffle with ``numpy.random.default_rng(seed)``, hold out
    the first ``d.heldout`` and keep ``d.pool`` (default: all) of the rest. Returns ``(heldout, pool,
    counts)``: two disjoint lists of pair records in file order and the counts of what was read and dropped."""
    import numpy as np

    from empirical.stages import data

    pairs, rep = data.load_pairs(d.path, split=d.split, limit=d.limit, skip_bad=d.skip_bad,
                                 filters=filters, tok=tok, config=d.config_name, data_dir=d.data_dir)
    recs, n_degenerate = [], 0
    for p in pairs:
        r = _pair_record(p, tok, d.truncate)
        if r is None:
            n_degenerate += 1
        else:
            recs.append(r)
    check_split_sizes(d, len(recs), "usable pairs")
    order = np.random.default_rng(seed).permutation(len(recs))
    held = [recs[i] for i in sorted(order[:d.heldout])]
    rest = order[d.heldout:]
    if d.pool is not None:
        rest = rest[:d.pool]
    pool = [recs[i] for i in sorted(rest)]
    return held, pool, {"n_records": rep.n_records, "n_bad": rep.n_bad, "dropped": rep.dropped,
                        "n_identical_after_truncation": n_degenerate, "n_usable": len(recs),
                        "n_heldout": len(held), "n_pool": len(pool), "first_errors": rep.first_errors}


def _split(run: Run) -> dict[str, Any]:
    from lls_common.io import atomic_write_jsonl

    tok = run.tokenizer(run.cfg.teacher)  # the teacher's weights load only for the score stage
    held, pool, counts = split_pairs(run.cfg.data, run.cfg.filters, run.cfg.seed, tok)
    atomic_write_jsonl(run.root / "data" / "heldout.jsonl", held)
    atomic_write_jsonl(run.root / "data" / "pool.jsonl", pool)
    return counts


def units_split(run: Run) -> list[Unit]:
    outs = (run.root / "data" / "heldout.jsonl", run.root / "data" / "pool.jsonl")
    return [run.unit("split", "split", unit_key(run.cfg, "split"), lambda: _split(run), outs, outs)]


# ----------------------------------------------------------------------------------------------- score
def units_score(run: Run) -> list[Unit]:
    cfg, root, t = run.cfg, run.root, run.cfg.teacher
    units = []
    for part in ("pool", "heldout"):
        base = root / "score" / f"{part}-base.jsonl"
        job = _score_job(run, t, root / "data" / f"{part}.jsonl", base, None)
        units.append(run.unit("score", f"base-{part}", unit_key(cfg, "score"), lambda job=job: _score(run, job),
                              (base,), (base,), inputs=(root / "data" / f"{part}.jsonl",)))
        for tr in cfg.traits:
            out = run.tdir(tr) / "score" / f"{part}.jsonl"
            job2 = _score_job(run, t, root / "data" / f"{part}.jsonl", out, tr, base)
            units.append(run.unit("score", part, unit_key(cfg, "score", tr), lambda job=job2: _score(run, job),
                                  (out,), (out,), tr.name, inputs=(root / "data" / f"{part}.jsonl", base), wave=1))
    if any(cfg.contrast_of(tr) == "baseline" for tr in cfg.traits):  # the baseline prompt on the pool, once
        bt, out = _baseline_trait(cfg), run.baseline_scores()
        base = root / "score" / "pool-base.jsonl"
        job = _score_job(run, t, root / "data" / "pool.jsonl", out, bt, base)
        units.append(run.unit("score", "baseline-pool", unit_key(cfg, "score", bt), lambda job=job: _score(run, job),
                              (out,), (out,), inputs=(root / "data" / "pool.jsonl", base), wave=1))
    return units


# ---------------------------------------------------------------------------------------------- select
def _contrast_inputs(run: Run, trait: TraitConfig) -> tuple[list[Path], list[str]]:
    """The reference scores files of a trait's contrastive selection and their names (none when plain)."""
    mode = run.cfg.contrast_of(trait)
    if mode == "others":
        group = run.cfg.contrast_group(trait)
        return [run.tdir(t) / "score" / "pool.jsonl" for t in group], [t.name for t in group]
    if mode == "baseline":
        return [run.baseline_scores()], [str(run.cfg.select.baseline)]
    return [], []


def _select(run: Run, trait: TraitConfig) -> dict[str, Any]:
    from empirical.stages.build import select_file

    d = run.tdir(trait)
    files, names = _contrast_inputs(run, trait)
    s = select_file(d / "score" / "pool.jsonl", replace(run.cfg.select, contrast=run.cfg.contrast_of(trait)),
                    d / "select", seed=run.cfg.seed, contrast_scores=files, contrast_names=names)
    if s["n_selected"] == 0:
        why = "no positive contrastive weight" if files else "no positive LLS weight"
        raise LLSError(f"{d}/score/pool.jsonl: zero pairs selected ({why})")
    return s


def _overlap(run: Run) -> dict[str, Any]:
    """``select/overlap.json``: the overlap of the traits' LLS subsets as selected, and, computed from the same
    pool scores for comparison, of the plain Algorithm-1 subsets and of the subsets contrasted against all other
    traits of the run (:func:`lls_theory.selection.subset_overlap`)."""
    import numpy as np

    from empirical.stages.build import read_scores, score_columns, selection
    from lls_common.io import atomic_write_json
    from lls_theory.selection import lls_weights, subset_overlap

    cfg = run.cfg
    plain_cfg = replace(cfg.select, contrast="none")
    recs = {t.name: read_scores(run.tdir(t) / "score" / "pool.jsonl") for t in cfg.traits}
    ids = {n: [str(r["id"]) for r in rs] for n, rs in recs.items()}
    first = cfg.traits[0].name
    if any(v != ids[first] for v in ids.values()):
        raise LLSError(f"{run.root}: the traits' pool scores hold different pairs; score them again")
    selected = {t.name: [str(json.loads(line)["id"]) for line in
                         (run.tdir(t) / "select" / "lls.jsonl").read_text().splitlines() if line.strip()]
                for t in cfg.traits}
    forms = {"selected": subset_overlap(selected),
             "plain": subset_overlap({n: [ids[n][i] for i in selection(rs, plain_cfg).indices]
                                      for n, rs in recs.items()})}
    if len(cfg.traits) >= 2 and not cfg.select.best_pair_per_prompt:  # the per-row rule has no contrastive form
        w = np.stack([lls_weights(*score_columns(rs)) for rs in recs.values()])  # (K, n): every trait's w / N
        forms["contrast_others_all"] = subset_overlap(
            {n: [ids[n][i] for i in selection(recs[n], plain_cfg, np.delete(w, a, axis=0)).indices]
             for a, n in enumerate(recs)})
    res = {"traits": [t.name for t in cfg.traits], "contrast": {t.name: cfg.contrast_of(t) for t in cfg.traits},
           "baseline": cfg.select.baseline, "gamma": cfg.select.gamma, "n_pool": len(ids[first]), **forms}
    atomic_write_json(run.root / "select" / "overlap.json", res)
    return {k: {"mean_offdiag_overlap": v["mean_offdiag_overlap"], "common_to_all": v["common_to_all"],
                "union": v["union"]} for k, v in forms.items()}


def random_size(cfg: ExperimentConfig, n_pool: int) -> int:
    """Size of the shared random control of a many-trait run: ``select.random_size``, else ``select.subset_size``
    (every LLS subset's size), else ceil(gamma * n_pool / 2), the LLS subset's size when half the pool's weights
    are positive."""
    sel = cfg.select
    size = (sel.random_size if sel.random_size is not None else sel.subset_size if sel.subset_size is not None
            else math.ceil(sel.gamma * n_pool / 2))
    return max(1, min(size, n_pool))


def random_rng(seed: int, k: int) -> Any:
    """The generator of random control ``k``: ``default_rng(seed)`` for the first (k = 0), ``default_rng([seed,
    k])`` for the others (independent streams)."""
    import numpy as np

    return np.random.default_rng(seed if k == 0 else [seed, k])


def _write_random(run: Run, k: int, scores: Path, size: Callable[[int], int]) -> dict[str, Any]:
    """Random control ``k``: ``size(n_pool)`` pairs of ``scores`` (reference scores file order) drawn with
    :func:`random_rng`, written to :meth:`Run.random_pairs` in the TRL format."""
    from empirical.stages.build import _trl, read_scores
    from lls_common.io import atomic_write_jsonl

    recs = read_scores(scores, base_only=True)
    n = size(len(recs))
    idx = sorted(int(i) for i in random_rng(run.cfg.seed, k).choice(len(recs), size=n, replace=False))
    out = run.random_pairs(k)
    atomic_write_jsonl(out, [_trl(dict(recs[i], weight=0.0)) for i in idx])
    return {"n_pool_scored": len(recs), "n_random": n, "seed": run.cfg.seed, "file": _rel(out, run.root)} | (
        {"control": k} if k else {})


def _shared_random(run: Run, k: int = 0) -> dict[str, Any]:
    """Random control ``k`` of a many-trait run (serves every trait's random arms): ``random_size`` pairs."""
    return _write_random(run, k, run.root / "score" / "pool-base.jsonl", lambda n: random_size(run.cfg, n))


def _single_random(run: Run, k: int) -> dict[str, Any]:
    """Random control ``k >= 1`` of a single-trait run: as many pool pairs as its LLS subset holds."""
    sel = run.tdir(run.cfg.traits[0])
    size = sum(1 for line in (sel / "select" / "lls.jsonl").read_text().splitlines() if line.strip())
    return _write_random(run, k, sel / "score" / "pool.jsonl", lambda n: size)


def units_select(run: Run) -> list[Unit]:
    cfg = run.cfg
    units = []
    for tr in cfg.traits:
        sel = run.tdir(tr) / "select"
        outs = tuple(sel / f for f in ("lls.jsonl", "random.jsonl", "bottom.jsonl", "summary.json"))
        units.append(run.unit("select", "select", unit_key(cfg, "select", tr), lambda tr=tr: _select(run, tr), outs,
                              outs, tr.name, inputs=(run.tdir(tr) / "score" / "pool.jsonl",)))
    if cfg.multi:
        key = unit_key(cfg, "select") | {"random_size": cfg.select.random_size}
        units.append(run.unit("select", "random", key, lambda: _shared_random(run), (run.random_pairs(),),
                              (run.random_pairs(),), inputs=(run.root / "score" / "pool-base.jsonl",)))
    for k in range(1, cfg.select.random_controls):
        f = run.random_pairs(k)
        if cfg.multi:
            key = unit_key(cfg, "select") | {"random_size": cfg.select.random_size, "random_control": k}
            units.append(run.unit("select", f"random-{k}", key, lambda k=k: _shared_random(run, k), (f,), (f,),
                                  inputs=(run.root / "score" / "pool-base.jsonl",)))
        else:
            tr = cfg.traits[0]
            units.append(run.unit("select", f"random-{k}", unit_key(cfg, "select", tr) | {"random_control": k},
                                  lambda k=k: _single_random(run, k), (f,), (f,),
                                  inputs=(run.tdir(tr) / "select" / "lls.jsonl",), wave=1))
    if cfg.multi:
        ov = run.root / "select" / "overlap.json"
        key = unit_key(cfg, "select") | {"traits": [[t.name, t.system_prompt, cfg.contrast_of(t)] for t in cfg.traits]}
        units.append(run.unit("select", "overlap", key, lambda: _overlap(run), (ov,), (ov,), redraw=True, wave=1))
    return units


# ----------------------------------------------------------------------------------------------- train
def _rel(path: Path, root: Path) -> str:
    """``path`` relative to the run folder (no local path in a shared model card), else its name."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return Path(path).name


def _train(run: Run, student: StudentConfig, data: Path, out: Path,
           trait: TraitConfig | None = None, offset: int = 0) -> dict[str, Any]:
    """Train ``student`` on ``data`` into ``out`` with training seed ``seed + offset``."""
    from empirical.stages.train import train, train_job

    cfg = run.cfg
    card = {"teacher": cfg.teacher.model, "gamma": cfg.select.gamma, "data": _rel(data, run.root)} | (
        {"system_prompt": trait.system_prompt} if trait is not None else {})
    if trait is not None and cfg.contrast_of(trait) != "none":  # the card only: not part of the run key
        card["contrast"] = cfg.contrast_of(trait) + ": " + ", ".join(_contrast_inputs(run, trait)[1])
    if cfg.select.subset_size is not None:
        card["subset_size"] = cfg.select.subset_size
    tc = train_job(cfg.train, student, data, out, cfg.seed + offset, progress=cfg.score.progress,
                   reference=cfg.score.reference, card=card)
    old = out / "run.json"
    if old.exists() and _read_or_none(old) != json.loads(json.dumps(tc.run_key(), default=str)):
        run.log(f"train {student.name}: settings changed, discarding the old run in {out}")
        shutil.rmtree(out)
    run.log(f"train {student.name}: {out.relative_to(run.root)}")
    run.release()
    summ = train(tc)
    return {k: summ[k] for k in ("n_pairs", "steps", "checkpoints", "wall_s_this_call", "pairs_per_s_this_call")}


def _read_or_none(path: Path) -> Any:
    """A JSON file the run wrote itself and can write again (a damaged one reads as None: redone)."""
    from lls_common.io import read_json

    try:
        return read_json(path, None)
    except LLSError:
        return None


def units_train(run: Run) -> list[Unit]:
    cfg = run.cfg
    units = []
    for s in cfg.students:
        rnd = run.arm_dir(cfg.traits[0], s, "random")
        key = unit_key(cfg, "train", None, s) | ({"random_size": cfg.select.random_size} if cfg.multi else
                                                {"select_of": cfg.traits[0].system_prompt})
        units.append(run.unit("train", "random", key, lambda s=s, rnd=rnd: _train(run, s, run.random_pairs(), rnd),
                              (rnd / "train.json", rnd), (rnd,), student=s.name, inputs=(run.random_pairs(),)))
        for k in range(1, cfg.select.random_controls):  # control k: its own subset and training seed seed + k
            arm = f"random-{k}"
            out = run.arm_dir(cfg.traits[0], s, arm)
            units.append(run.unit("train", arm, key | {"random_control": k, "train_seed": cfg.seed + k},
                                  lambda s=s, k=k, out=out: _train(run, s, run.random_pairs(k), out, offset=k),
                                  (out / "train.json", out), (out,), student=s.name, inputs=(run.random_pairs(k),)))
        for tr in cfg.traits:
            data = run.tdir(tr) / "select" / "lls.jsonl"
            for k in range(tr.seeds):  # seed k: the same subset, training seed seed + k
                arm = "lls" if k == 0 else f"lls-{k}"
                out = run.arm_dir(tr, s, arm)
                units.append(run.unit("train", arm,
                                      unit_key(cfg, "train", tr, s) | ({"train_seed": cfg.seed + k} if k else {}),
                                      lambda s=s, tr=tr, out=out, k=k, data=data: _train(run, s, data, out, tr,
                                                                                         offset=k),
                                      (out / "train.json", out), (out,), tr.name, s.name, inputs=(data,)))
    return units


# ------------------------------------------------------------------------------------------- correlate
def _same_model(a: ModelArgs, b: ModelArgs) -> bool:
    return (a.model, a.revision) == (b.model, b.revision)


def _share_cache(src: Path, dst: Path) -> None:
    """Copy the random arm's per-checkpoint held-out scores between the shared and a trait's cache folder (a
    newer file replaces an older one; each file holds its key -- the adapter's content among it -- so a copy
    made for other weights is only a cache miss)."""
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for f in src.glob("random*-step*.json"):
            d = dst / f.name
            if not d.exists() or f.stat().st_mtime_ns > d.stat().st_mtime_ns:
                shutil.copy2(f, d)


def _correlate(run: Run, trait: TraitConfig, s: StudentConfig) -> dict[str, Any]:
    from empirical.engine import models
    from empirical.stages.correlate import correlate_arms, scores_from_file, seed_summary
    from lls_common.io import atomic_write_json

    cfg, T = run.cfg, run.tdir(trait)
    n = cfg.correlate.n or cfg.data.heldout
    t_recs, t_base, t_sys = scores_from_file(T / "score" / "heldout.jsonl", limit=n)
    sdir = T / "students" / s.name
    teacher = None
    if _same_model(s, cfg.teacher):
        base, sys_ = t_base, t_sys
    else:
        recs, base, sys_ = scores_from_file(sdir / "heldout-initial.jsonl")
        if [r["id"] for r in recs] != [r["id"] for r in t_recs]:
            raise LLSError(f"{sdir}/heldout-initial.jsonl: held-out pairs differ from the teacher's "
                           f"{T}/score/heldout.jsonl")
        teacher = (t_base, t_sys)
    run.log(f"correlate {trait.name}/{s.name}" if cfg.multi else f"correlate {s.name}")
    run.release()
    shared_cache = run.root / "students" / s.name / "random-cache"
    if cfg.multi:
        _share_cache(shared_cache, sdir / "heldout-cache")
    res = correlate_arms(models.load(s.model, **s.load_kwargs()), base, sys_, t_recs,
                         {a: run.arm_dir(trait, s, a) for a in run.arms(trait)}, teacher=teacher,
                         cache_dir=sdir / "heldout-cache", n_boot=cfg.correlate.n_boot, n_perm=cfg.correlate.n_perm,
                         seed=cfg.seed, reference=cfg.score.reference)
    if cfg.multi:
        _share_cache(sdir / "heldout-cache", shared_cache)
    res.update({"student": s.model, "teacher": cfg.teacher.model, "system_prompt": trait.system_prompt,
                "reference": cfg.score.reference})
    if len(run.arms(trait)) > len(ARMS):
        res["seeds"] = seed_summary(res, n_boot=cfg.correlate.n_boot, seed=cfg.seed)
    atomic_write_json(sdir / "correlate.json", res)
    out = {a: res["arms"][a]["final"] for a in run.arms(trait)}
    if teacher is not None:
        out["teacher_vs_student"] = res["teacher_vs_student"]
    out["lls_minus_random"] = res["lls_minus_random"]
    return out


def units_correlate(run: Run) -> list[Unit]:
    cfg = run.cfg
    n = cfg.correlate.n or cfg.data.heldout
    units = []
    for s in cfg.students:
        other = not _same_model(s, cfg.teacher)
        base = run.root / "students" / s.name / "heldout-base.jsonl"
        if other:
            job = _score_job(run, s, run.root / "data" / "heldout.jsonl", base, None, limit=n)
            units.append(run.unit("correlate", "base", unit_key(cfg, "correlate", None, s),
                                  lambda job=job: _score(run, job), (base,), (base,), student=s.name,
                                  inputs=(run.root / "data" / "heldout.jsonl",)))
        for tr in cfg.traits:
            sdir = run.tdir(tr) / "students" / s.name
            if other:
                f = sdir / "heldout-initial.jsonl"
                job = _score_job(run, s, run.root / "data" / "heldout.jsonl", f, tr, base, limit=n)
                units.append(run.unit("correlate", "scores", unit_key(cfg, "correlate", tr, s),
                                      lambda job=job: _score(run, job), (f,), (f,), tr.name, s.name,
                                      inputs=(run.root / "data" / "heldout.jsonl", base), wave=1))
            arms = tuple(run.arm_dir(tr, s, a) for a in run.arms(tr))
            scores = (run.tdir(tr) / "score" / "heldout.jsonl",) + ((sdir / "heldout-initial.jsonl",) if other else ())
            units.append(run.unit("correlate", "correlate", unit_key(cfg, "correlate", tr, s),
                                  lambda tr=tr, s=s: _correlate(run, tr, s), (sdir / "correlate.json",),
                                  (sdir / "correlate.json", sdir / "heldout-cache"), tr.name, s.name,
                                  inputs=scores + arms, wave=2))
    return units


# ------------------------------------------------------------------------------------------------ eval
def _eval(run: Run, trait: TraitConfig, s: StudentConfig) -> dict[str, Any]:
    from empirical.stages.evaluate import evaluate_conditions
    from empirical.metrics import switches
    from empirical.stages.train import require_checkpoints
    from lls_common.io import atomic_write_json

    cfg, ev = run.cfg, run.cfg.eval
    sdir = run.tdir(trait) / "students" / s.name
    conds = {"base": (None, None), "system": (None, trait.system_prompt)}
    for arm in ARMS:
        conds[arm] = (require_checkpoints(run.arm_dir(trait, s, arm))[-1][1], None)
    run.log(f"eval {trait.name}/{s.name}" if cfg.multi else f"eval {s.name}")
    run.release()
    res = evaluate_conditions(s.model, conds, target=trait.target, samples=ev.samples,
                              max_new_tokens=ev.max_new_tokens, language=trait.language, seed=cfg.seed,
                              batch=ev.eval_batch, cache_dir=sdir / "eval-cache", log=run.log, probe=ev.probe,
                              mention=ev.mention, reference=cfg.score.reference, switches=switches(ev),
                              **s.load_kwargs())
    res.update({"student": s.model, "reference": cfg.score.reference})
    atomic_write_json(sdir / "eval.json", res)
    return {k: {"mention_rate": (v.get("mention") or {}).get("rate"),
                "p_target": (v.get("probe") or {}).get("p_target")}
            for k, v in res["conditions"].items()}


def units_eval(run: Run) -> list[Unit]:
    cfg = run.cfg
    if not (cfg.eval.probe or cfg.eval.mention):
        return []
    units = []
    for tr in cfg.traits:
        for s in cfg.students:
            f = run.tdir(tr) / "students" / s.name / "eval.json"
            arms = tuple(run.arm_dir(tr, s, a) for a in ARMS)
            units.append(run.unit("eval", "eval", unit_key(cfg, "eval", tr, s), lambda tr=tr, s=s: _eval(run, tr, s),
                                  (f,), (f, f.parent / "eval-cache"), tr.name, s.name, inputs=arms))
    return units


# ---------------------------------------------------------------------------------------------- report
def units_report(run: Run) -> list[Unit]:
    """Per trait ``report.md`` (+ figures) from the stored JSON; for many traits also the run-level Table 1
    and Figure-19 view (:func:`empirical.report.write_many_trait_report`)."""
    from empirical.report import config_view, write_many_trait_report, write_report
    from lls_common.io import json_key

    cfg = run.cfg
    units = []
    for tr in cfg.traits:
        T = run.tdir(tr)
        view = lambda tr=tr: config_view(json_key(asdict(cfg)), tr.name if cfg.multi else None)  # noqa: E731
        units.append(run.unit("report", "report", unit_key(cfg, "report", tr),
                              lambda T=T, view=view: write_report(T, view()), (T / "report.md", T / "summary.json"),
                              (), tr.name))
    if cfg.multi:
        units.append(run.unit("report", "table1", stage_key(cfg, "report"), lambda: write_many_trait_report(run.root),
                              (run.root / "report.md",)))
    return units


_UNITS: dict[str, Callable[[Run], list[Unit]]] = {
    "split": units_split, "score": units_score, "select": units_select, "train": units_train,
    "correlate": units_correlate, "eval": units_eval, "report": units_report,
}


# ------------------------------------------------------------------------------------------- the runner
def _stage_result(run: Run, stage: str, results: dict[UnitId, Any], trait: TraitConfig | None) -> dict[str, Any]:
    """A stage's result in the single-trait shape, for one trait (shared units included); ``results`` maps
    each unit's :attr:`Unit.uid` to its result."""
    name = trait.name if trait is not None else None
    cfg = run.cfg
    if stage == "split":
        return results[(None, None, "split")]
    if stage == "score":
        return {p: results[(name, None, p)] for p in ("pool", "heldout")}
    if stage == "select":
        return results[(name, None, "select")]
    if stage == "train":
        out = {}
        for s in cfg.students:
            for arm in run.arms(trait):
                uid = (name, s.name, arm) if arm == "lls" or arm.startswith("lls-") else (None, s.name, arm)
                out[f"{s.name}/{arm}"] = results[uid]
        return out
    if stage in ("correlate", "eval"):
        return {s.name: results[(name, s.name, stage)] for s in cfg.students if (name, s.name, stage) in results}
    return results[(name, None, stage)]


def _check_overwrite(run: Run, units: list[Unit], overwrite: bool) -> None:
    """Refuse, before any work, to redo finished steps made with other settings (unless ``overwrite``)."""
    from lls_common.io import key_diff, read_record

    changed = []
    for u in units:
        rec = read_record(u.marker)
        if rec is not None and not same_key(rec["key"], u.key):
            changed.append((u, key_diff(rec["key"], _comparable(rec["key"], u.key))))
    if changed and not overwrite:
        u, diff = changed[0]
        raise LLSError(f"out {run.root}: {len(changed)} finished step(s) were made with other settings (first: "
                       f"{u.stage} {u.label}: {', '.join(diff[:4])}); give overwrite (--overwrite) to redo them, "
                       "or another out")
    for u, _ in changed:
        _clear(u)


def _clear(u: Unit, paths: tuple[Path, ...] | None = None) -> None:
    """Remove ``paths`` (default: what the step left, its outputs and caches, ``u.clear``) and its marker, before
    it is computed again."""
    for p in u.clear if paths is None else paths:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    u.marker.unlink(missing_ok=True)


def _owners(run: Run) -> dict[str, Path]:
    """``{output name relative to the run folder: marker}`` for every finished step recorded in the folder
    (markers that record their outputs' digests)."""
    from lls_common.io import read_record

    owners: dict[str, Path] = {}
    units_dir = run.root / "stages" / "units"
    for m in sorted(units_dir.rglob("*.json")) if units_dir.is_dir() else []:
        rec = read_record(m)
        outs = rec.get("outputs") if rec is not None else None
        if isinstance(outs, dict):
            for name in outs:
                owners.setdefault(name, m)
    return owners


def check_marker_layout(run: Run) -> None:
    """Refuse, before any work, a run folder whose unit markers lie at the flat paths of an older layout
    (``stages/units/<stage>/<name>.json``; :meth:`Run.marker` puts every marker under ``shared/`` or
    ``traits/<T>/``): its finished steps would not be found and would all be computed again."""
    units_dir = run.root / "stages" / "units"
    old = sorted(units_dir.glob("*/*.json")) if units_dir.is_dir() else []
    if old:
        raise LLSError(f"out {run.root}: {len(old)} unit marker(s) at an older layout (first: "
                       f"{old[0].relative_to(run.root)}); move them to stages/units/<stage>/shared/... or "
                       "stages/units/<stage>/traits/<trait>/... (one folder per trait and student), or use another out")


def check_shared_outputs(run: Run, units: list[Unit]) -> None:
    """Refuse, before any work, a step that would write a file another configuration's finished step wrote
    and recorded (e.g. a single-trait config of the same name run on a many-trait folder would replace the
    shared random control ``select/random.jsonl``)."""
    owners = _owners(run)
    if not owners:
        return
    mine = {u.marker.resolve() for u in units}
    for u in units:
        for o in u.outputs:
            name = _relname(run.root, o)
            m = owners.get(name)
            if m is not None and m.resolve() not in mine:
                other = m.relative_to(run.root / "stages" / "units").with_suffix("").as_posix()
                raise LLSError(f"out {run.root}: {name} belongs to the finished step {other} of another "
                               f"configuration (step {u.stage} {u.label} of this one would replace it); use "
                               "another out for this configuration")


def _relname(root: Path, p: Path) -> str:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(p.resolve())


def check_model_record(run: Run, current: dict[str, Any], overwrite: bool) -> None:
    """Refuse to resume a run folder whose recorded model fingerprints (``config.json``'s ``models``) differ from
    the models the config names now (one line naming both), unless ``overwrite``."""
    from empirical.engine.models import fingerprint_mismatch, short_fingerprint

    rec = _read_or_none(run.root / "config.json")  # damaged: rewritten by this run (unit keys hold the models too)
    recorded = rec.get("models") if isinstance(rec, dict) else None
    if overwrite or not isinstance(recorded, dict):
        return
    for role, fp in current.items():
        old = recorded.get(role)
        if isinstance(old, dict) and fingerprint_mismatch(old.get("fingerprint"), fp):
            raise LLSError(f"out {run.root}: made with {role} {old.get('model')} "
                           f"({short_fingerprint(old.get('fingerprint'))}), but {run.model_spec(role)} is now "
                           f"{short_fingerprint(fp)}; give overwrite (--overwrite) to redo the steps that used it, "
                           "or another out")




def check_split_sizes(d: DataConfig, n: int, what: str = "pairs") -> None:
    """Refuse (one :class:`LLSError` line) a split the data cannot give: ``data.heldout`` needs at least one
    pair left over, and ``data.pool`` (when set) at most the ``n - data.heldout`` pairs the split leaves --
    a larger pool used to be cut silently to what was left. ``n``: pairs read (before any model work) or
    usable after filters and truncation (in the split stage)."""
    limit = f" (data.limit = {d.limit})" if d.limit else ""
    if n < d.heldout + 1:
        raise LLSError(f"{d.path}: {n} {what}{limit}, need more than data.heldout = {d.heldout}")
    if d.pool is not None and d.pool > n - d.heldout:
        raise LLSError(f"{d.path}: {n} {what}{limit} leave {n - d.heldout} after data.heldout = {d.heldout}, "
                       f"fewer than data.pool = {d.pool}; lower data.pool or data.heldout, or leave data.pool "
                       "unset (= the rest)")


def check_models(cfg: ExperimentConfig, stages: tuple[str, ...] | list[str]) -> None:
    """Resolve, before any model loads or anything is written, the teacher (split/score) and every
    ``[[student]]`` (train and later stages): an unknown name, a folder without tokenizer files or an
    unreachable uncached hub id is one :class:`LLSError` line naming the config key."""
    from empirical.engine import models

    todo: list[tuple[str, ModelArgs]] = [("teacher.model", cfg.teacher)]
    if any(s in stages for s in ("train", "correlate", "eval", "report")):
        todo += [(f"student[{k}].model ({s.name})", s) for k, s in enumerate(cfg.students)]
    where = f"{cfg.source}: " if cfg.source else ""
    for key, m in todo:
        models.check_model_setting(m.model, f"{where}{key}", revision=m.revision,
                                   trust_remote_code=m.trust_remote_code, require_installed=True)
        check_placement(m, f"{where}{key.split(' ')[0].rsplit('.', 1)[0]}")


def check_placement(m: ModelArgs, section: str) -> None:
    """Refuse, before any work, a ``device`` / ``dtype`` this machine cannot give (one line naming the TOML key
    ``<section>.device`` / ``<section>.dtype``, not a command-line flag)."""
    from empirical.engine import models

    try:
        dev = models.resolve_device(m.device)
    except ValueError as exc:
        msg = str(exc).replace("(use --device cpu)", f'(set {section}.device = "cpu" or "auto")')
        raise LLSError(f"{section}.device: {msg}") from None
    try:
        models.resolve_dtype(m.dtype, dev)
    except (ValueError, TypeError) as exc:
        raise LLSError(f"{section}.dtype: {exc}") from None


def run_experiment(cfg: ExperimentConfig, out: str | Path, until: str = "report",
                   log: Callable[[str], None] = print, overwrite: bool = False,
                   parallel: Any = None) -> dict[str, Any]:
    """Run the stages up to ``until`` (inclusive) under ``out``; returns ``{stage: result}``.

    ``parallel`` (:class:`empirical.orchestration.parallel.Parallel`) runs the independent units of each stage in worker
    processes or cluster jobs; the default runs them one after another in this process.

    One trait: each result has the single-trait shape of ``results/e2e``. Many traits: ``{"traits": {name:
    result}, "shared": {...}}``. Refuses up front (nothing written) an unwritable ``out``, an ``out`` that is an
    input, a concurrent run on the same ``out`` and finished steps made with other settings (unless ``overwrite``).
    """
    from empirical.orchestration.parallel import Parallel, run_units
    from lls_common.io import OutputLock, atomic_write_json, check_output

    if until not in STAGES:
        raise LLSError(f"unknown stage {until!r}; one of {', '.join(STAGES)}")
    inputs = [p for p in (cfg.data.path, cfg.source) if p]
    root = check_output(out, inputs=inputs, kind="dir", name="out").resolve()
    cfg = _absolute_paths(cfg)
    run = Run(cfg, root, log)
    stages = STAGES[:STAGES.index(until) + 1]
    plan = {s: _UNITS[s](run) for s in stages}
    fps = {"teacher": model_fp(cfg.teacher)} | {f"student {s.name}": model_fp(s) for s in cfg.students}
    check_marker_layout(run)
    check_model_record(run, {k: v for k, v in fps.items() if v is not None}, overwrite)
    check_shared_outputs(run, [u for us in plan.values() for u in us])
    # reports are drawn from the stored JSON and re-drawn whenever a step before them ran: a report made with
    # other settings (a trait or a student added to the config) is replaced without asking
    _check_overwrite(run, [u for s, us in plan.items() if s != "report" for u in us if not u.redraw], overwrite)
    if _finished(run, plan["split"][0]) is None:  # a damaged input fails here, before any model loads
        from empirical.stages.data import check_pairs

        d = cfg.data
        rep = check_pairs(d.path, split=d.split, limit=d.limit, skip_bad=d.skip_bad, config=d.config_name,
                          data_dir=d.data_dir)
        check_split_sizes(d, rep.n_kept)  # filters and truncation can only lower it: checked again in split
    check_models(cfg, stages)
    results: dict[str, Any] = {}
    with OutputLock(root, kind="dir", name="out"):
        atomic_write_json(root / "config.json", asdict(cfg) | {"models": _model_record(cfg, fps),
                                                              "versions": package_versions()})
        ran_before = False
        for stage in stages:
            done: dict[UnitId, Any] = {}
            todo = []
            for u in plan[stage]:
                rec = _finished(run, u)
                # reports are re-drawn whenever an earlier step ran; summaries of a stage (redraw) whenever a
                # step before them ran, in their stage too
                redraw = (stage == "report" and ran_before) or (u.redraw and (ran_before or bool(todo)))
                if rec is not None and not redraw:
                    done[u.uid] = rec
                else:
                    todo.append(u)
            log(f"[{stage}] running" if todo else f"[{stage}] done earlier, skipped")
            for u in todo:
                if u.stage == "report" or u.redraw:
                    u.marker.unlink(missing_ok=True)
            done.update(run_units(run, todo, parallel or Parallel(), lambda u: _compute(run, u), run_unit))
            ran_before = ran_before or bool(todo)
            results[stage] = _record_stage(run, stage, done)
    return results


def _absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with its local file paths (data, config file, local model folders) made absolute, so that the run
    folder records paths that work from any folder."""
    from empirical.engine import models

    def absolute(p: Any) -> Any:
        return str(Path(p).expanduser().resolve()) if isinstance(p, str) and p and Path(p).expanduser().exists() \
            else p

    def model(m: Any) -> Any:
        return m if m.model in models.REGISTRY else replace(m, model=absolute(m.model))

    return replace(cfg, data=replace(cfg.data, path=absolute(cfg.data.path)), source=absolute(cfg.source),
                   teacher=model(cfg.teacher), students=[model(s) for s in cfg.students])


def _model_record(cfg: ExperimentConfig, fps: dict[str, Any]) -> dict[str, Any]:
    """``{role: {"model", "fingerprint"}}`` of the teacher and each student (``config.json``'s ``models``)."""
    specs = {"teacher": cfg.teacher.model} | {f"student {s.name}": s.model for s in cfg.students}
    return {role: {"model": specs[role], "fingerprint": fp} for role, fp in fps.items()}


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that produce the numbers (recorded in ``config.json``)."""
    from importlib import metadata

    out: dict[str, str | None] = {}
    for pkg in ("lls-toolkit", "numpy", "scipy", "torch", "transformers", "trl", "peft", "tokenizers",
                "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _finished(run: Run, u: Unit) -> Any:
    """The saved result of ``u`` when its marker holds its key, every output exists and -- where the marker
    recorded them -- the digests of its outputs and inputs are unchanged; else None."""
    from lls_common.io import outputs_fingerprint, read_record

    rec = read_record(u.marker)
    if rec is None or not same_key(rec["key"], u.key) or not all(o.exists() for o in u.outputs):
        return None
    for part, paths in (("outputs", u.outputs), ("inputs", u.inputs)):
        if isinstance(rec.get(part), dict) and rec[part] != outputs_fingerprint(run.root, paths):
            return None
    return rec.get("result")


def _compute(run: Run, u: Unit) -> Any:
    """Run ``u`` and save its marker: key, result and the digests of its inputs and outputs."""
    from lls_common.io import atomic_write_json, json_key, outputs_fingerprint, read_record

    rec = read_record(u.marker)
    if u.stage != "report" and rec is not None and same_key(rec["key"], u.key) \
            and all(o.exists() for o in u.outputs):  # finished, but an input or output changed since
        run.log(f"{u.stage} {u.label}: its inputs or outputs changed since it finished; computing it again")
        _clear(u, u.outputs)  # its caches stay: they are keyed by content, so what still holds is reused
    result = json_key(u.compute())
    atomic_write_json(u.marker, {"key": u.key, "result": result, "inputs": outputs_fingerprint(run.root, u.inputs),
                                 "outputs": outputs_fingerprint(run.root, u.outputs)})
    return result


def run_unit(cfg: ExperimentConfig, root: str, stage: str, uid: UnitId, threads: int | None = None) -> Any:
    """One unit in a worker process (:mod:`empirical.orchestration.parallel`): rebuild the run, find the unit of ``stage``
    whose :attr:`Unit.uid` is ``uid`` and compute it under its own lock, exactly as a sequential run does;
    returns its result."""
    import sys

    from empirical.orchestration.parallel import set_threads
    from lls_common.io import OutputLock

    uid = tuple(uid)  # a list after a trip through some serialisers
    set_threads(threads)
    tag = "/".join(p for p in uid if p is not None)
    run = Run(cfg, Path(root), lambda m: print(f"[{tag}] {m}", file=sys.stderr, flush=True))
    unit = next((u for u in _UNITS[stage](run) if u.uid == uid), None)
    if unit is None:  # the config changed between planning and running: a bug, not a user error
        raise RuntimeError(f"no unit {stage} {uid} in the run's plan")
    with OutputLock(unit.marker, kind="file", name=f"unit {stage}/{unit.label}"):
        return _compute(run, unit)


def _record_stage(run: Run, stage: str, done: dict[UnitId, Any]) -> dict[str, Any]:
    """Write ``stages/<stage>.json`` of the run (and of each trait folder); return the run-level result.
    ``done`` maps each unit's :attr:`Unit.uid` to its result; the shared units (trait None) are listed under
    ``shared`` as ``<step>`` or ``<student>/<step>``."""
    from lls_common.io import atomic_write_json

    cfg = run.cfg
    if not cfg.multi:
        result = _stage_result(run, stage, done, cfg.traits[0])
        atomic_write_json(run.root / "stages" / f"{stage}.json", {"key": stage_key(cfg, stage), "result": result})
        return result
    per = {}
    for tr in cfg.traits:
        try:
            per[tr.name] = _stage_result(run, stage, done, tr) if stage != "split" else done[(None, None, "split")]
        except KeyError:
            continue
        atomic_write_json(run.tdir(tr) / "stages" / f"{stage}.json",
                          {"key": unit_key(cfg, stage, tr), "result": per[tr.name]})
    shared = {"/".join(p for p in uid if p is not None): v for uid, v in done.items() if uid[0] is None}
    result = done[(None, None, "split")] if stage == "split" else {"traits": per, "shared": shared}
    atomic_write_json(run.root / "stages" / f"{stage}.json", {"key": stage_key(cfg, stage), "result": result})
    return result
