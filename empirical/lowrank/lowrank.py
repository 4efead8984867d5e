"""Low logit rank on real models (paper's Appendix C.1): the settings, inputs and analyses behind
``lls spectrum | angles | pair-check | detect``.

Each command is ``settings -> run_<command>(settings) -> result``; the result is a typed record with
``to_json()`` (the file the command writes), ``summary()`` (its ``--json`` line) and ``text()`` (its
human-readable lines), and ``write(run)`` writes the JSON and the figures (:mod:`empirical.lowrank.lowrank_figures`).

Settings are validated when they are built (``__post_init__``), before any data or model is touched: model
specs are installed / exist, windows and ranks are in range, ``gamma`` in (0, 1), ``n_draws`` >= 100, input
files exist. Data, tokenizers and models are loaded through :mod:`empirical.stages.data` and
:func:`empirical.engine.models.load` (one model-spec resolution, pad token set).

Inputs:

* *library matrices* (spectrum, angles, pair-check's subspace overlap): rows = the empty prompt + a seeded,
  category-stratified sample of the system-prompt library (:func:`empirical.systems.select_systems`),
  columns = one random response per single-turn prompt within token bounds
  (:func:`empirical.lowrank.logprob_matrix.select_columns`, the first model's tokenizer);
* *pair matrices* (pair-check, detect): rows = no system prompt + the given prompts, columns = (chosen,
  rejected) of each pair (:func:`empirical.lowrank.logprob_matrix.pair_columns`), responses truncated to
  ``truncate`` teacher tokens (paper: 20).

Every matrix goes through the shared row cache (``cache``, default ``OUT/cache``): killed runs resume and
``cached_only`` analyses what is finished without loading a model.
"""

from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lls_common.config import check_types, setting
from lls_common.errors import LLSError
from lls_common.validate import check_interval, check_int, check_positive_int, check_seed

__all__ = [
    "AnglesConfig", "AnglesResult", "DetectConfig", "DetectResult", "MatrixInputs", "MatrixSettings",
    "PairCheckConfig", "PairCheckResult", "SpectrumConfig", "SpectrumResult", "check_model", "check_model_specs",
    "library_inputs",
    "load_data", "load_model", "load_tokenizer", "model_slug", "pair_inputs", "run_angles", "run_detect",
    "run_pair_check", "run_spectrum",
]

DEFAULT_PROMPT_TOKENS = (8, 64)
DEFAULT_RESPONSE_TOKENS = (8, 64)


# ------------------------------------------------------------------------------------------------ settings
def _check_bounds(value: Any, name: str, low: int = 1) -> tuple[int, int]:
    """A pair of integers ``(lo, hi)`` with ``low <= lo <= hi``."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise LLSError(f"{name} must be two integers LO HI, got {value!r}")
    lo, hi = (check_int(v, f"{name}[{k}]") for k, v in enumerate(value))
    if not low <= lo <= hi:
        raise LLSError(f"{name} must satisfy {low} <= LO <= HI, got {lo} {hi}")
    return lo, hi


def _check_window(value: Any, name: str, S: int | None, P: int | None) -> tuple[int, int] | None:
    """A rank window for the power-law fit: ``1 <= lo < hi <= min(S, P)`` (bounds known before any model work)."""
    if value is None:
        return None
    lo, hi = _check_bounds(value, name)
    if lo == hi:
        raise LLSError(f"{name} must satisfy LO < HI (a fit needs two ranks), got {lo} {hi}")
    if S is not None and P is not None and hi > min(S, P):
        raise LLSError(f"{name} HI = {hi} exceeds min(rows, columns) = {min(S, P)} of the {S}x{P} matrix")
    return lo, hi


def check_model(spec: str, name: str) -> str:
    """Refuse, before any work, a model spec that cannot load: an uninstalled registry model (with the install
    command), a missing ``.gguf`` file, a folder without ``config.json``, or a spec that is neither a registry
    name, a path nor a hub id (:func:`empirical.engine.models.resolve_source`, the one spec resolution)."""
    from empirical.engine import models

    if not isinstance(spec, str) or not spec.strip():
        raise LLSError(f"{name} must name a model")
    if spec in models.REGISTRY:  # checked without resolve_source, which would convert the GGUF file now
        if not (models.is_installed(spec) or (models.cache_root() / spec / "lls-model.json").is_file()):
            raise LLSError(f"{name} {spec}: not installed; run `lls models install {spec}`")
        return spec
    try:
        src = models.resolve_source(spec)
    except (ValueError, FileNotFoundError) as exc:
        msg = str(exc).removeprefix(f"model {spec!r}: ").removeprefix(f"{spec}: ")
        raise LLSError(f"{name} {spec}: {msg}") from None
    if src.kind == "folder" and not (Path(spec) / "config.json").is_file():
        raise LLSError(f"{name} {spec}: folder has no config.json (not a Hugging Face model folder)")
    return spec


def _check_file(path: Any, name: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise LLSError(f"{name} {path}: file not found")
    return str(path)


@dataclass(kw_only=True)
class MatrixSettings:
    """What every low-rank command shares: data, dtype, the row cache, columns, output."""

    data: str = setting(help="preference data (JSONL/JSON/Parquet, TRL or HH-RLHF form)")
    skip_bad: bool = setting(False, "skip malformed records instead of failing")
    dtype: str = setting("float32", "model dtype", choices=("float32", "bfloat16"))
    cache: Path | None = setting(None, "row cache shared by the commands (finished rows are reused; default "
                                       "OUT/cache)", metavar="DIR")
    batch_tokens: int = setting(2048, "padded tokens per forward batch",
                                reason="on CPU smaller length-sorted batches waste less on padding; raise it on a GPU")
    n_pairs: int = setting(256, "columns / pairs")
    cached_only: bool = setting(False, "compute nothing: use the rows already in --cache (spectrum/angles drop "
                                       "missing rows)")
    out: Path = setting(Path("lls-lowrank"), "results folder", cli=False)
    seed: int = setting(0, "random seed", cli=False)

    def __post_init__(self) -> None:
        check_types(self, "")
        self.validate()

    def validate(self) -> None:
        """Checks of the shared fields; subclasses extend it (called once, from ``__post_init__``)."""
        self.data = _check_file(self.data, "data")
        check_positive_int(self.batch_tokens, "batch_tokens")
        check_positive_int(self.n_pairs, "n_pairs")
        check_seed(self.seed)
        if self.out.exists() and not self.out.is_dir():
            raise LLSError(f"--out {self.out}: exists and is not a folder")
        if self.cache and Path(self.cache).exists() and not Path(self.cache).is_dir():
            raise LLSError(f"--cache {self.cache}: exists and is not a folder")

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache) if self.cache else Path(self.out) / "cache"


@dataclass(kw_only=True)
class LibrarySettings(MatrixSettings):
    """Rows and column bounds of a library matrix."""

    systems: str | None = setting(None, "system prompts (category<TAB>text lines, plain lines or JSON list); "
                                        "default: the library", metavar="FILE")
    n_systems: int = setting(64, "rows incl. the empty prompt (stratified sample of the file)")
    prompt_tokens: Any = setting(DEFAULT_PROMPT_TOKENS, "prompt length bounds, tokens", cli=False)
    response_tokens: Any = setting(DEFAULT_RESPONSE_TOKENS, "response length bounds, tokens", cli=False)

    def validate(self) -> None:
        super().validate()
        if self.systems is not None:
            _check_file(self.systems, "systems")
            from empirical.systems import load_systems

            try:  # a damaged or empty file fails here, before any model loads
                load_systems(self.systems)
            except ValueError as exc:
                raise LLSError(f"systems {exc}") from None
        check_int(self.n_systems, "n_systems", low=2)
        self.prompt_tokens = _check_bounds(self.prompt_tokens, "prompt_tokens")
        self.response_tokens = _check_bounds(self.response_tokens, "response_tokens")


@dataclass(kw_only=True)
class SpectrumConfig(LibrarySettings):
    model: str = setting(help="registry name, local folder, file.gguf or hub id")
    rank_window: Any = setting(None, "1-based inclusive ranks of the fit (default 2 .. 0.75 min(S, P))", cli=False)

    def validate(self) -> None:
        super().validate()
        check_model(self.model, "model")
        self.rank_window = _check_window(self.rank_window, "rank_window", self.n_systems, self.n_pairs)


@dataclass(kw_only=True)
class AnglesConfig(LibrarySettings):
    model: tuple[str, ...] = setting((), "give twice: --model A --model B")
    rank: int = setting(10, "r of the top-r subspaces")
    rank_window: Any = setting(None, "1-based inclusive ranks of the fit", cli=False)

    def validate(self) -> None:
        super().validate()
        if len(self.model) != 2:
            raise LLSError("give exactly two models: --model A --model B")
        for spec in self.model:
            check_model(spec, "model")
        check_int(self.rank, "rank", low=1, high=min(self.n_systems, self.n_pairs))
        self.rank_window = _check_window(self.rank_window, "rank_window", self.n_systems, self.n_pairs)


@dataclass(kw_only=True)
class PairCheckConfig(MatrixSettings):
    teacher: str = setting(help="teacher model (builds the LLS dataset)")
    student: str = setting(help="student model")
    system_prompt: tuple[str, ...] = setting((), "a system prompt (at least one of --system-prompt / "
                                                 "--system-prompts is needed)")
    system_prompts: str | None = setting(None, "more system prompts from a file", metavar="FILE")
    n_pairs: int = setting(64, "held-out pairs")
    truncate: int | None = setting(20, "response truncation, teacher tokens")
    prompt_tokens: Any = setting((8, 64), "prompt length bounds, tokens", cli=False)
    gamma: float = setting(0.25, "fraction of the teacher's positive-weight pairs selected (Algorithm 1's gamma)",
                           aliases=("quantile",))
    library_systems: int = setting(40, "rows of the library matrices for the subspace overlap (0 = skip)")
    library_pairs: int = setting(64, "columns of the library matrices")
    rank: int = setting(10, "r of the top-r subspaces")

    def validate(self) -> None:
        super().validate()
        check_model(self.teacher, "teacher")
        check_model(self.student, "student")
        if self.system_prompts is not None:
            _check_file(self.system_prompts, "system_prompts")
        if self.truncate is not None:
            check_positive_int(self.truncate, "truncate")
        self.prompt_tokens = _check_bounds(self.prompt_tokens, "prompt_tokens")
        check_interval(self.gamma, "gamma", 0, 1, closed="right")
        check_int(self.library_systems, "library_systems", low=0)
        if self.library_systems:
            check_int(self.library_systems, "library_systems", low=2)
            check_positive_int(self.library_pairs, "library_pairs")
        check_positive_int(self.rank, "rank")
        self.system_prompt_list()  # refuse empty / duplicate prompts now

    def system_prompt_list(self) -> list[str]:
        """``--system-prompt`` values then the file's prompts; refuses none, empty and duplicates."""
        from empirical.systems import load_systems
        from lls_common.validate import check_text

        out = list(self.system_prompt or [])
        for k, text in enumerate(out):
            if isinstance(text, str) and text.strip():
                check_text(text, f"system_prompt[{k}]")  # bytes that are not UTF-8: one line, not a TypeError
        if self.system_prompts:
            try:
                out += [s.text for s in load_systems(self.system_prompts, include_empty=False)]
            except ValueError as exc:
                raise LLSError(str(exc)) from None
        if not out:
            raise LLSError("give --system-prompt TEXT (repeatable) or --system-prompts FILE")
        if any(not s.strip() for s in out):
            raise LLSError("empty --system-prompt")
        if len(set(out)) != len(out):
            raise LLSError("duplicate system prompts")
        return out


@dataclass(kw_only=True)
class DetectConfig(MatrixSettings):
    model: str = setting(help="detector model")
    candidates: str = setting(help="candidate system prompts", metavar="FILE")
    reference: str = setting(help="reference preference data (the null population)", metavar="FILE")
    truncate: int | None = setting(None, "truncate reference responses (teacher tokens)")
    prompt_tokens: Any = setting((8, 64), "prompt length bounds, tokens", cli=False)
    n_draws: int = setting(20000, "random same-size reference subsets (>= 100)")
    alpha: float = setting(0.05, "family-wise level of the Holm correction")

    def validate(self) -> None:
        from empirical.lowrank.detect import MIN_DRAWS

        super().validate()
        check_model(self.model, "model")
        _check_file(self.candidates, "candidates")
        self.reference = _check_file(self.reference, "reference")
        if self.truncate is not None:
            check_positive_int(self.truncate, "truncate")
        self.prompt_tokens = _check_bounds(self.prompt_tokens, "prompt_tokens")
        check_int(self.n_draws, "n_draws", low=MIN_DRAWS)
        check_interval(self.alpha, "alpha", 0, 1, closed="neither")


# ------------------------------------------------------------------------------------------------ inputs
#: the settings of these commands that name a model (``--model`` may be given twice for angles)
MODEL_FIELDS = ("model", "teacher", "student", "other")


def check_model_specs(cfg: Any) -> None:
    """Resolve every model the settings name with :func:`empirical.engine.models.check_spec` before any data or model
    work: an uncached hub id with the hub offline or unreachable is one line after one 3 s connect (not
    a minute of download retries when the tokenizer loads), and the hub's "no such repository" is one
    line too. Registry names and local paths were checked by the settings already; they are skipped."""
    from empirical.engine import models

    for name in MODEL_FIELDS:
        value = getattr(cfg, name, None)
        for spec in (value if isinstance(value, (tuple, list)) else (value,)):
            if not isinstance(spec, str) or not spec.strip() or spec in models.REGISTRY \
                    or spec.endswith(".gguf") or Path(spec).exists():
                continue  # checked by the settings (a local folder's data errors still come first)
            models.check_model_setting(spec, f"--{name}")


def model_slug(spec: str) -> str:
    """A folder-safe name for a model spec."""
    base = Path(spec).name if ("/" in spec or spec.endswith(".gguf")) else spec
    return "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in base) or "model"


def load_data(path: str, skip_bad: bool, name: str = "data") -> list[Any]:
    """Preference pairs from ``path`` through :func:`empirical.stages.data.load_pairs` (LLSError on bad input)."""
    from empirical.stages import data

    if not Path(path).exists():
        raise LLSError(f"{name} {path}: file not found")
    try:
        pairs, _ = data.load_pairs(path, skip_bad=skip_bad)
    except ValueError as exc:
        raise LLSError(f"{exc} (use --skip-bad to skip bad records)") from None
    if not pairs:
        raise LLSError(f"{name} {path}: no usable preference pairs")
    return pairs


def load_model(spec: str, dtype: str) -> tuple[Any, Any]:
    """``(model, tokenizer)`` through :func:`empirical.engine.models.load` (LLSError naming the spec on failure)."""
    from empirical.engine import models

    try:
        return models.load(spec, dtype=dtype)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise LLSError(f"--model {spec}: {exc}") from None


def load_tokenizer(spec: str) -> Any:
    """The tokenizer of ``spec`` (:func:`empirical.engine.models.load_tokenizer`: same resolution, pad token set)."""
    from empirical.engine import models

    try:
        return models.load_tokenizer(spec)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise LLSError(f"--model {spec}: {exc}") from None


@dataclass
class MatrixInputs:
    systems: list[Any]  # empirical.systems.SystemPrompt
    columns: list[Any]  # empirical.lowrank.logprob_matrix.Column


def library_inputs(pairs: list[Any], tok: Any, *, n_systems: int | None, n_pairs: int, systems_file: str | None,
                   seed: int, prompt_tokens=DEFAULT_PROMPT_TOKENS, response_tokens=DEFAULT_RESPONSE_TOKENS
                   ) -> MatrixInputs:
    """Rows: the empty prompt + a seeded, category-stratified sample of the library; columns: one random
    response per single-turn prompt within the token bounds (``tok`` = the first model's tokenizer)."""
    from empirical.lowrank.logprob_matrix import select_columns
    from empirical.systems import load_systems, select_systems

    try:
        systems = select_systems(load_systems(systems_file), n_systems, seed=seed)
        cols = select_columns(pairs, tok, n_pairs, prompt_tokens=tuple(prompt_tokens),
                              response_tokens=tuple(response_tokens), seed=seed)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    return MatrixInputs(systems, cols)


def pair_inputs(pairs: list[Any], tok: Any, *, n_pairs: int | None, seed: int, truncate: int | None,
                prompt_tokens=(8, 64), min_response_tokens: int = 8) -> list[Any]:
    """Preference pairs for margin shifts (pair-check, detect): single-turn, prompt within bounds, both raw
    responses >= ``min_response_tokens``, responses truncated to ``truncate`` teacher tokens (paper: 20)."""
    from empirical.lowrank.logprob_matrix import select_pairs

    try:
        return select_pairs(pairs, tok, n_pairs, prompt_tokens=tuple(prompt_tokens),
                            response_tokens=(min_response_tokens, 10**9), truncate=truncate, seed=seed)
    except ValueError as exc:
        raise LLSError(str(exc)) from None


def _matrix(spec: str, cfg: MatrixSettings, systems: list, columns: list, model_tok=None):
    """X of one model through the shared row cache (computes nothing with ``cached_only``)."""
    from empirical.lowrank.logprob_matrix import compute_matrix

    model, tok = (None, None) if cfg.cached_only else (model_tok or load_model(spec, cfg.dtype))
    try:
        return compute_matrix(model, tok, systems, columns, store=cfg.cache_dir, model_name=spec, dtype=cfg.dtype,
                              batch_tokens=cfg.batch_tokens, progress=True, only_cached=cfg.cached_only)
    except ValueError as exc:
        raise LLSError(f"{spec}: {exc}") from None


def _model_or_tokenizer(spec: str, cfg: MatrixSettings) -> tuple[Any, Any]:
    """``(model, tok)``, or ``(None, tok)`` with ``cached_only``."""
    return (None, load_tokenizer(spec)) if cfg.cached_only else load_model(spec, cfg.dtype)


def _keep_rows(inp: MatrixInputs, results: list) -> tuple[MatrixInputs, list]:
    """``cached_only``: keep the rows that every matrix has in the cache (in order)."""
    from empirical.lowrank.logprob_matrix import MatrixResult

    keep = [i for i in range(len(inp.systems)) if all(r.cached[i] for r in results)]
    if len(keep) < 4:
        raise LLSError(f"--cached-only: only {len(keep)} rows are cached for every model (need >= 4)")
    sub = lambda xs: [xs[i] for i in keep]  # noqa: E731
    out = [MatrixResult(r.X[keep], r.n_tokens[keep], sub(r.prefix_tokens), sub(r.seconds), sub(r.cached))
           for r in results]
    return MatrixInputs(sub(inp.systems), inp.columns), out


def _library(cfg: LibrarySettings, pairs: list, tok: Any) -> MatrixInputs:
    return library_inputs(pairs, tok, n_systems=cfg.n_systems, n_pairs=cfg.n_pairs, systems_file=cfg.systems,
                          seed=cfg.seed, prompt_tokens=cfg.prompt_tokens, response_tokens=cfg.response_tokens)


# ------------------------------------------------------------------------------------------------ spectrum
@dataclass
class SpectrumResult:
    """Spectrum of one model's X: fits of X and of X minus its column means (``spectrum_fit`` dicts)."""

    model: str
    shape: list[int]
    raw: dict
    column_centred: dict
    compute_seconds: float
    rows_from_cache: int
    matrix: dict = field(repr=False, default_factory=dict)  # matrix-<slug>.json: systems, columns, X, ...

    @property
    def slug(self) -> str:
        return model_slug(self.model)

    def to_json(self) -> dict:
        return {"model": self.model, "shape": self.shape, "raw": self.raw, "column_centred": self.column_centred,
                "compute_seconds": self.compute_seconds, "rows_from_cache": self.rows_from_cache}

    def summary(self) -> dict:
        return {"model": self.model, "shape": self.shape, "slope": self.raw["slope"],
                "rank_window": self.raw["rank_window"], "r2": self.raw["r2"],
                "slope_column_centred": self.column_centred["slope"]}

    def text(self) -> str:
        r, c = self.raw, self.column_centred
        return (f"{self.model}: X {self.shape[0]}x{self.shape[1]}, power-law slope {r['slope']:.3f} over ranks "
                f"{r['rank_window']} (R² {r['r2']:.3f}); column-centred {c['slope']:.3f}; paper ≈ −0.6")

    def write(self, run: Any, figure: bool = True) -> None:
        from empirical.lowrank.lowrank_figures import plot_spectra

        run.write_json(f"matrix-{self.slug}.json", self.matrix)
        run.write_json(f"spectrum-{self.slug}.json", self.to_json())
        if figure:
            plot_spectra({self.slug: self.to_json()}, run.path(f"spectrum-{self.slug}.png"))


def _column_record(column: Any) -> dict[str, str]:
    """A matrix column as recorded in ``matrix-<slug>.json``: its pair id and the sha256 of its prompt and response
    (canonical JSON), never the dataset text itself."""
    import hashlib

    text = json.dumps({"prompt": column.prompt, "response": column.response}, sort_keys=True, ensure_ascii=False)
    return {"id": column.id, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def _spectrum_result(spec: str, inp: MatrixInputs, res: Any, window) -> SpectrumResult:
    from empirical.lowrank.logprob_matrix import spectrum_fit

    try:
        raw, cen = spectrum_fit(res.X, window), spectrum_fit(res.X, window, center=True)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    matrix = {"model": spec,
              "systems": [{"id": s.id, "category": s.category, "text": s.text} for s in inp.systems],
              "columns": [_column_record(c) for c in inp.columns],
              "X": res.X, "n_tokens": res.n_tokens, "prefix_tokens": res.prefix_tokens, "row_seconds": res.seconds}
    return SpectrumResult(spec, list(res.X.shape), raw, cen, float(sum(res.seconds)), int(sum(res.cached)), matrix)


def run_spectrum(cfg: SpectrumConfig) -> SpectrumResult:
    """Library matrix of one model and its spectrum fits (raw and column-centred)."""
    pairs = load_data(cfg.data, cfg.skip_bad)
    inp = _library(cfg, pairs, load_tokenizer(cfg.model))  # rows and columns checked before the weights load
    model, tok = _model_or_tokenizer(cfg.model, cfg)
    res = _matrix(cfg.model, cfg, [s.text for s in inp.systems], inp.columns, (model, tok))
    if cfg.cached_only:
        inp, (res,) = _keep_rows(inp, [res])
    return _spectrum_result(cfg.model, inp, res, cfg.rank_window)


# ------------------------------------------------------------------------------------------------ angles
@dataclass
class AnglesResult:
    """Principal angles between two models' top-r row subspaces, raw and column-centred, per r."""

    models: list[str]
    shape: list[int]
    rank: int
    angles: dict  # {"raw" | "column_centred": {str(r): subspace_overlap dict}}
    fits: list[SpectrumResult]
    rows_requested: int
    rows_used: list[str]

    def to_json(self) -> dict:
        return {"models": self.models, "shape": self.shape, "rank": self.rank, "angles": self.angles,
                "slopes": {f.slug: {"raw": f.raw["slope"], "column_centred": f.column_centred["slope"]}
                           for f in self.fits},
                "columns_selected_with": self.models[0], "rows_requested": self.rows_requested,
                "rows_used": self.rows_used}

    def _at_rank(self) -> tuple[dict, dict]:
        return self.angles["raw"][str(self.rank)], self.angles["column_centred"][str(self.rank)]

    def summary(self) -> dict:
        a, c = self._at_rank()
        return {"models": self.models, "shape": self.shape, "rank": self.rank, "mean_cos": a["mean_cos"],
                "mean_baseline": a["mean_baseline"], "overlap": a["overlap"], "mean_cos_centred": c["mean_cos"],
                "overlap_centred": c["overlap"], "slopes": self.to_json()["slopes"]}

    def text(self) -> str:
        a, c = self._at_rank()
        S, P = self.shape
        return (f"top-{self.rank} row subspaces of {self.models[0]} vs {self.models[1]} (X {S}x{P}): mean cos "
                f"{a['mean_cos']:.3f} vs random {a['mean_baseline']:.3f} (overlap {a['overlap']:.2f}); "
                f"column-centred {c['mean_cos']:.3f} vs {c['mean_baseline']:.3f}")

    def write(self, run: Any) -> None:
        from empirical.lowrank.lowrank_figures import plot_angles, plot_spectra

        for f in self.fits:
            f.write(run, figure=False)
        run.write_json("angles.json", self.to_json())
        plot_spectra({f.slug: f.to_json() for f in self.fits}, run.path("spectra.png"))
        plot_angles(self.angles, self.rank, self.models, run.path("angles.png"))


def angles_for(XA: np.ndarray, XB: np.ndarray, ranks: list[int], seed: int) -> dict:
    """:func:`empirical.lowrank.pair_check.subspace_overlap` of ``XA``, ``XB`` at each rank, raw and column-centred."""
    from empirical.lowrank.pair_check import subspace_overlap

    return {("column_centred" if center else "raw"): {str(r): subspace_overlap(XA, XB, r, seed=seed, center=center)
                                                       for r in ranks} for center in (False, True)}


def run_angles(cfg: AnglesConfig) -> AnglesResult:
    """Same rows and columns (chosen with the first model's tokenizer) for both models; angles at r, 5, 10, 20."""
    pairs = load_data(cfg.data, cfg.skip_bad)
    inp, results = _library(cfg, pairs, load_tokenizer(cfg.model[0])), []  # checked before any weights load
    for spec in cfg.model:
        model, tok = _model_or_tokenizer(spec, cfg)
        results.append(_matrix(spec, cfg, [s.text for s in inp.systems], inp.columns, (model, tok)))
        del model, tok
        gc.collect()
    n_requested = len(inp.systems)
    if cfg.cached_only:
        inp, results = _keep_rows(inp, results)
    fits = [_spectrum_result(spec, inp, res, cfg.rank_window) for spec, res in zip(cfg.model, results)]
    S, P = results[0].X.shape
    if cfg.rank > min(S, P):
        raise LLSError(f"--rank {cfg.rank} exceeds min(S, P) = {min(S, P)} (rows x columns {S}x{P})")
    ranks = sorted({r for r in (cfg.rank, 5, 10, 20) if 1 <= r <= min(S, P)})
    ang = angles_for(results[0].X, results[1].X, ranks, cfg.seed)
    return AnglesResult(list(cfg.model), [S, P], cfg.rank, ang, fits, n_requested, [s.id for s in inp.systems])


# ------------------------------------------------------------------------------------------------ pair-check
@dataclass
class PairCheckResult:
    """pair-check.json: per system prompt the teacher/student margin-shift agreement, plus warnings."""

    teacher: str
    student: str
    n_pairs: int
    truncate: int | None
    gamma: float
    rows: list[dict]
    subspace: dict | None
    rho_teacher: np.ndarray
    rho_student: np.ndarray
    projection: np.ndarray | None
    pair_ids: list[str]
    warnings: list[str] = field(default_factory=list)
    placement: dict = field(default_factory=dict)  # {"device", "dtype"} the models were (or would be) run with

    THRESHOLDS = ("Pearson of margin shifts: >=0.5 strong, >=0.2 moderate, >=0.05 weak, else none; CI containing "
                  "0 -> none (heuristic, from the paper's Table 1)")
    ESTIMATES = ("corr(rho_T, rho_S) = corr(z_T, z_s) before training: the two models' own system-prompt margin "
                 "shifts; not the post-training transfer corr(z_T, z_M)")
    #: What each column of the table means (printed under it and in ``lls pair-check --help``).
    COLUMNS = ("pearson, spearman = correlation over the pairs of the teacher's and the student's margin shifts "
               "rho (margin with the system prompt minus without); 95% CI = bootstrap CI of pearson; specific = "
               "pearson of (shift - mean shift over the given prompts), the part particular to this prompt (needs "
               "two or more system prompts: nan with one); S>0|sel = share of the teacher's top-gamma selection "
               "where the student's own shift is positive; S>0|all = that share over all pairs; verdict = band of "
               "pearson (>=0.5 strong, >=0.2 moderate, >=0.05 weak, else none; a CI containing 0 -> none); "
               "(CI spans) = the bands of the CI's two ends")

    @classmethod
    def from_json(cls, d: dict) -> "PairCheckResult":
        """A pair-check.json record (files written before ``warnings`` existed read as no warnings)."""
        arr = lambda x: None if x is None else np.asarray(x, float)  # noqa: E731
        return cls(d["teacher"], d["student"], d["n_pairs"], d["truncate"], d["gamma"], d["rows"], d.get("subspace"),
                   arr(d["rho_teacher"]), arr(d["rho_student"]), arr(d.get("projection")), d.get("pair_ids", []),
                   d.get("warnings", []), {k: d[k] for k in ("device", "dtype") if k in d})

    def row(self, word: str) -> dict:
        """The row whose system prompt contains ``word`` (case-insensitive), e.g. ``row("owl")``."""
        return next(r for r in self.rows if word.lower() in r["system_prompt"].lower())

    def to_json(self) -> dict:
        return {"teacher": self.teacher, "student": self.student, "n_pairs": self.n_pairs, "truncate": self.truncate,
                "gamma": self.gamma, "thresholds": self.THRESHOLDS, "estimates": self.ESTIMATES, "rows": self.rows,
                "subspace": self.subspace, "rho_teacher": self.rho_teacher, "rho_student": self.rho_student,
                "projection": self.projection, "pair_ids": self.pair_ids, "warnings": self.warnings,
                **self.placement}

    def summary(self) -> dict:
        keys = ("system_prompt", "pearson", "spearman", "cosine", "pearson_specific", "verdict", "verdict_range",
                "student_positive_on_selected", "student_positive_overall")
        return {"teacher": self.teacher, "student": self.student, "n_pairs": self.n_pairs,
                "rows": [{k: r.get(k) for k in keys} for r in self.rows],
                "subspace_overlap": None if self.subspace is None else self.subspace["raw"]["overlap"],
                "warnings": self.warnings, **self.placement}

    def text(self) -> str:
        lines = [f"pair-check {self.teacher} -> {self.student} on {self.n_pairs} held-out pairs",
                 f"{'system prompt':40s} {'pearson':>8s} {'95% CI':>17s} {'spearman':>8s} {'specific':>8s} "
                 f"{'S>0|sel':>8s} {'S>0|all':>8s}  verdict (CI spans)"]
        for row in self.rows:
            ci = row.get("pearson_ci") or (float("nan"), float("nan"))
            lines.append(f"{row['system_prompt'][:40]:40s} {row['pearson']:8.3f} [{ci[0]:6.3f}, {ci[1]:6.3f}] "
                         f"{row['spearman']:8.3f} {row.get('pearson_specific', float('nan')):8.3f} "
                         f"{row['student_positive_on_selected']:8.2f} {row['student_positive_overall']:8.2f}  "
                         f"{row['verdict']} ({row.get('verdict_range', '?')})")
        lines.append(f"columns: {self.COLUMNS} (gamma = {self.gamma:g})")
        lines.append(f"estimates: {self.ESTIMATES}")
        sub = self.subspace
        if sub is not None:
            lines.append(f"subspace overlap (top-{sub['raw']['r']}, X {sub['shape'][0]}x{sub['shape'][1]}): mean cos "
                         f"{sub['raw']['mean_cos']:.3f} vs random {sub['raw']['mean_baseline']:.3f} -> overlap "
                         f"{sub['raw']['overlap']:.2f}; column-centred {sub['column_centred']['overlap']:.2f}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def write(self, run: Any) -> None:
        from empirical.lowrank.lowrank_figures import plot_pair_check

        run.write_json("pair-check.json", self.to_json())
        plot_pair_check(self.to_json(), run.root)


def _pair_check_matrices(cfg: PairCheckConfig, systems: list[str], pairs: list) -> tuple[list, dict, dict, Any]:
    """Held-out pairs (teacher's tokenizer), each model's margin shifts and (optionally) library matrices."""
    from empirical.lowrank.logprob_matrix import pair_columns
    from empirical.lowrank.pair_check import margin_shifts

    lib_inp, shifts, lib_res = None, {}, []
    tok = load_tokenizer(cfg.teacher)  # the teacher's tokenizer selects and truncates, before any weights load
    sel = pair_inputs(pairs, tok, n_pairs=cfg.n_pairs, seed=cfg.seed, truncate=cfg.truncate,
                      prompt_tokens=cfg.prompt_tokens)
    if cfg.library_systems:
        lib_inp = library_inputs(pairs, tok, n_systems=cfg.library_systems, n_pairs=cfg.library_pairs,
                                 systems_file=None, seed=cfg.seed)
    for spec in (cfg.teacher, cfg.student):
        model, tok = _model_or_tokenizer(spec, cfg)
        res = _matrix(spec, cfg, [None] + systems, pair_columns(sel), (model, tok))
        try:
            shifts[spec] = margin_shifts(res.X, res.n_tokens)
        except ValueError as exc:
            raise LLSError(str(exc)) from None
        if lib_inp is not None:
            lib_res.append(_matrix(spec, cfg, [s.text for s in lib_inp.systems], lib_inp.columns, (model, tok)))
        del model, tok
        gc.collect()
    libs = {}
    if lib_inp is not None:
        if cfg.cached_only:
            lib_inp, lib_res = _keep_rows(lib_inp, lib_res)
        libs = {cfg.teacher: lib_res[0].X, cfg.student: lib_res[1].X}
    return sel, shifts, libs, lib_inp


def run_pair_check(cfg: PairCheckConfig) -> PairCheckResult:
    """Teacher vs student margin shifts on held-out pairs (:func:`empirical.lowrank.pair_check.pair_check`), the subspace
    overlap of their library matrices and the Fig. 19 projection."""
    from empirical.lowrank.pair_check import margin_projection, pair_check, subspace_overlap

    systems = cfg.system_prompt_list()
    pairs = load_data(cfg.data, cfg.skip_bad)
    sel, shifts, libs, _ = _pair_check_matrices(cfg, systems, pairs)
    T, S = shifts[cfg.teacher], shifts[cfg.student]
    try:
        chk = pair_check(T, S, systems, gamma=cfg.gamma, seed=cfg.seed)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    from empirical.lowrank.pair_check import same_model_warning

    same = same_model_warning(cfg.teacher, cfg.student)
    chk.warnings = ([same] if same else []) + chk.warnings
    sub = None
    if libs:
        A, B = libs[cfg.teacher], libs[cfg.student]
        r = min(cfg.rank, *A.shape)
        sub = {"raw": subspace_overlap(A, B, r, seed=cfg.seed),
               "column_centred": subspace_overlap(A, B, r, seed=cfg.seed, center=True), "shape": list(A.shape)}
    vecs = np.concatenate([T.rho, S.rho])
    proj = margin_projection(vecs) if vecs.shape[0] >= 2 else None
    from empirical.engine import models

    where = {"device": str(models.resolve_device("auto")), "dtype": cfg.dtype}  # low-rank commands: auto device
    return PairCheckResult(cfg.teacher, cfg.student, len(sel), cfg.truncate, cfg.gamma, chk.rows, sub, T.rho, S.rho,
                           proj, [p.id for p in sel], chk.warnings, where)


# ------------------------------------------------------------------------------------------------ detect
@dataclass
class DetectResult:
    """detect.json: both statistics per candidate (``empirical.lowrank.detect``), the verdict lines and warnings."""

    model: str
    data: str
    reference: str
    n_suspect: int
    n_reference: int
    n_suspect_outside_reference: int
    detection: Any  # empirical.lowrank.detect.Detection
    names: list[str]
    candidate_projection: np.ndarray | None

    STATISTICS = {"raw": "z of the mean w_c/N_i (significant: is a trait planted at all?)",
                  "specific": "z of the mean common-factor residual w_c - beta_c m, m = mean over the candidates "
                              "(rank, top, significant_specific: which one?)"}

    @classmethod
    def from_json(cls, d: dict) -> "DetectResult":
        """A detect.json record (files written before ``warnings`` existed read as no warnings)."""
        from empirical.lowrank.detect import Detection

        det = Detection(d["table"], d["n_suspect"], d["n_reference"], d["n_draws"], d["alpha"], d.get("warnings", []))
        proj = d.get("candidate_projection")
        return cls(d["model"], d["data"], d["reference"], d["n_suspect"], d["n_reference"],
                   d["n_suspect_outside_reference"], det, [r["candidate"] for r in d["table"]],
                   None if proj is None else np.asarray(proj, float))

    def to_json(self) -> dict:
        d = self.detection
        return {"model": self.model, "data": self.data, "reference": self.reference, "n_suspect": self.n_suspect,
                "n_reference": self.n_reference, "n_suspect_outside_reference": self.n_suspect_outside_reference,
                "n_draws": d.n_draws, "alpha": d.alpha, "correction": "Holm", "statistics": self.STATISTICS,
                "table": d.table, "top": d.top, "top_raw": d.top_raw, "significant": d.significant,
                "significant_specific": d.significant_specific, "candidate_projection": self.candidate_projection,
                "warnings": d.warnings, "small_sample": bool(d.warnings)}

    def summary(self) -> dict:
        d = self.detection
        keys = ("rank", "candidate", "z_specific", "p_specific_mc", "p_specific_holm", "significant_specific",
                "rank_raw", "z", "p_mc", "p_holm", "significant")
        return {"top": d.top, "top_raw": d.top_raw, "significant": d.significant,
                "significant_specific": d.significant_specific,
                "table": [{k: r[k] for k in keys} for r in d.table], "warnings": d.warnings,
                "small_sample": bool(d.warnings)}

    def text(self) -> str:
        d, K = self.detection, len(self.names)
        lines = [f"detect on {self.data}: {self.n_suspect} pairs vs {d.n_draws} random same-size subsets of "
                 f"{self.n_reference} reference pairs ({self.model}); Holm over {K} candidates",
                 f"{'rank':>4s} {'z_spec':>7s} {'p_holm':>8s} {'z_raw':>7s} {'p_holm':>8s} sig  candidate"]
        for r in d.table:
            zs = "" if r["z_specific"] is None else f"{r['z_specific']:7.2f} {r['p_specific_holm']:8.4f}"
            lines.append(f"{r['rank']:4d} {zs:>16s} {r['z']:7.2f} {r['p_holm']:8.4f} "
                         f"{'yes' if r['significant'] else ' no'}  {r['candidate'][:70]}")
        caveat = " -- but see the warnings: the sample is small" if d.warnings else ""
        if d.significant:
            lines.append(f"trait planted (raw test): {len(d.significant)} of {K} candidates significant{caveat}")
        else:
            lines.append("trait planted (raw test): no candidate significant -- no evidence of a planted trait; the "
                         "ranking below is not meaningful")
        lines.append(self._first_line())
        lines += [f"warning: {w}" for w in d.warnings]
        return "\n".join(lines)

    def _first_line(self) -> str:
        d = self.detection
        first = d.table[0]
        if first["z_specific"] is None:
            return f"first (raw z; one candidate, nothing to contrast): {first['candidate'][:70]}"
        verdict = ("significant against the other candidates" if first["significant_specific"] else
                   "not claimed: the raw test detected no trait" if first["p_specific_holm"] < d.alpha else
                   "not significant against the other candidates")
        return (f"first by the candidate-specific statistic: {first['candidate'][:70]} (z_spec "
                f"{first['z_specific']:.2f}, Holm p {first['p_specific_holm']:.4f}, {verdict}); first by raw z: "
                f"{d.top_raw[:70]}")

    def write(self, run: Any) -> None:
        from empirical.lowrank.lowrank_figures import plot_detect

        run.write_json("detect.json", self.to_json())
        plot_detect(self.to_json(), self.names, run.path("detect.png"))


def _pair_key(p: Any) -> tuple:
    return tuple((m["role"], m["content"]) for m in p.prompt), p.chosen, p.rejected


def _suspect_columns(suspect: list, ref: list) -> tuple[list, np.ndarray, int]:
    """Reference pairs + the suspect pairs not in the reference (text-identical pairs reuse the reference
    columns); returns (all pairs, the suspect's indices into them, how many suspect pairs were added)."""
    from empirical.stages import data

    ref_index = {_pair_key(p): i for i, p in enumerate(ref)}
    ids = {p.id for p in ref}
    extra = [data.PrefPair(p.id if p.id not in ids else f"suspect:{p.id}", p.prompt, p.chosen, p.rejected, p.where)
             for p in suspect if _pair_key(p) not in ref_index]
    allp = ref + extra
    all_index = {_pair_key(p): i for i, p in enumerate(allp)}
    return allp, np.array([all_index[_pair_key(p)] for p in suspect]), len(extra)


def run_detect(cfg: DetectConfig) -> DetectResult:
    """Inverse LLS (:func:`empirical.lowrank.detect.detect_trait`) of the suspect data against random subsets of the
    reference, with the detector's weights for each candidate."""
    from empirical.lowrank.detect import detect_trait
    from empirical.lowrank.logprob_matrix import pair_columns
    from empirical.lowrank.pair_check import margin_projection, margin_shifts
    from empirical.systems import load_systems

    try:
        names = [c.text for c in load_systems(cfg.candidates, include_empty=False)]
    except ValueError as exc:
        raise LLSError(f"--candidates: {exc}") from None
    if not names:
        raise LLSError("--candidates: no system prompts")
    suspect = load_data(cfg.data, cfg.skip_bad)
    ref_all = load_data(cfg.reference, cfg.skip_bad, "reference")
    ref = pair_inputs(ref_all, load_tokenizer(cfg.model), n_pairs=cfg.n_pairs, seed=cfg.seed,
                      truncate=cfg.truncate, prompt_tokens=cfg.prompt_tokens)  # checked before the weights load
    if len(suspect) > len(ref):
        raise LLSError(f"suspect dataset ({len(suspect)} pairs) is larger than the reference ({len(ref)})")
    model, tok = _model_or_tokenizer(cfg.model, cfg)
    allp, s_idx, n_extra = _suspect_columns(suspect, ref)
    res = _matrix(cfg.model, cfg, [None] + names, pair_columns(allp), (model, tok))
    try:
        ms = margin_shifts(res.X, res.n_tokens)
        det = detect_trait(ms.weights[:, s_idx], ms.weights[:, : len(ref)], names, n_draws=cfg.n_draws,
                           alpha=cfg.alpha, seed=cfg.seed)
    except ValueError as exc:
        raise LLSError(str(exc)) from None
    proj = margin_projection(ms.rho[:, : len(ref)]) if len(names) >= 2 else None
    return DetectResult(cfg.model, cfg.data, cfg.reference, len(suspect), len(ref), n_extra, det, names, proj)
