"""Validation of ``lls detect`` on LLS subsets with a known planted trait (``lls detect-validate``).

Pools: the first 64, 256 and 448 pairs of the HH-RLHF harmless-base test split selected by
:func:`empirical.lowrank.lowrank.pair_inputs` (single-turn, prompt 8-64 tokens, responses >= 8 tokens truncated to
20 SmolLM2 tokens, seed 0; each pool is the start of the next). Rows: no system prompt + the paper's 10
animals. Weights come from the cached pair matrices (``--cache``); a detector whose rows are missing is
skipped and says so (``--compute`` computes the teacher's missing rows).

**Same-pool protocol** (``runs``). For each animal a, the LLS subset (Algorithm 1 with the teacher SmolLM2,
``gamma``) of the pool; ``detect_trait`` ranks the 10 candidates with (i) the teacher and (ii) Gemma-3-270M, a
model that did not build the subset, against random same-size subsets **of the same pool**. Random subsets of
the pool are the negative control. With the teacher as detector, "every LLS subset is flagged" holds by
construction: the subset is the top-gamma of the very statistic tested, drawn from the reference itself. Only
top-1 identification (which animal) and the other-model detector carry information.

**Disjoint-reference protocol** (``disjoint``). The largest pool is split at random (``splits`` seeds) into
a *source* half and a *reference* half. LLS subsets are built from the source half and tested against random
subsets of the reference half, which shares no pair with them; random subsets of the source half are the
negative control (a check that the null is calibrated when reference and suspect are different pairs, as in
real use). The same subsets are also tested against the source half itself (the same-pool protocol at the
half size), so the two references can be compared subset by subset. Flagging by the teacher stays nearly
automatic (a top-gamma selection on w_a raises the mean of w_a whichever sample it is compared with); the
disjoint design removes the reference's dependence on the subset, not the selection effect.

Expected identification under a linear-Gaussian model: selecting on the teacher weight t_a shifts the detector
residual r_a by corr(r_a, t_a) times the shift of t_a in null-sd units, ``E[z_specific] ~= corr(r_a, t_a) *
z(t_a on the subset)``, and the target ranks first among K with probability
:func:`p_target_first_quadrature` (:func:`p_target_first_mc`: the same by Monte Carlo, as recorded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lls_common.config import check_types, setting
from lls_common.errors import LLSError
from lls_common.validate import check_int, check_interval, check_positive_int

__all__ = ["DEFAULT_DATA", "DetectValidateConfig", "DetectorRun", "RunRecord", "iter_runs",
           "p_target_first_mc", "p_target_first_quadrature", "run_detect_validation", "validate_detector",
           "z_exact", "z_for_top1"]

DEFAULT_DATA = "../shared/data/hh-rlhf-harmless-base-test.jsonl.gz"
"""Default ``--data``, relative to the repository root (the data is never copied into the repository)."""
TEACHER, OTHER = "smollm2-135m-instruct", "gemma3-270m"
ALPHA = 0.05  # detect_trait's default level, the one the validation uses


# ------------------------------------------------------------------------------------------------ statistics
def z_exact(x: np.ndarray, idx: np.ndarray) -> float:
    """z of mean(x[idx]) against uniform same-size subsets of x (exact mean and sd, finite population):
    Var = sigma^2 / n * (N - n) / (N - 1), sigma^2 the population variance (ddof 0). (Before this module the
    validation used the sample variance (ddof 1) with the same factor, an sd too large by sqrt(N / (N - 1)).)"""
    n, N = idx.size, x.size
    return float((x[idx].mean() - x.mean()) / (x.std(ddof=0) / np.sqrt(n) * np.sqrt((N - n) / (N - 1))))


def p_target_first_mc(mu: float, K: int, rng: np.random.Generator, m: int = 100_000) -> float:
    """P(mu + Z_0 > max(Z_1 .. Z_{K-1})), Z iid N(0, 1), by Monte Carlo with ``m`` draws (the recorded values)."""
    Z = rng.standard_normal((m, K))
    return float(np.mean(mu + Z[:, 0] > Z[:, 1:].max(axis=1)))


def p_target_first_quadrature(mu: float, K: int) -> float:
    """The same probability by quadrature: integral of phi(x - mu) Phi(x)^(K-1) dx."""
    x = np.linspace(mu - 12.0, mu + 12.0, 24001)
    Phi = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    return float(np.sum(np.exp(-0.5 * (x - mu) ** 2) / math.sqrt(2 * math.pi) * Phi ** (K - 1)) * (x[1] - x[0]))


def z_for_top1(goal: float, K: int) -> float:
    """The expected target z at which the target ranks first among K with probability ``goal`` (bisection)."""
    lo, hi = 0.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_target_first_quadrature(mid, K) < goal else (lo, mid)
    return (lo + hi) / 2


# ------------------------------------------------------------------------------------------------ records
@dataclass
class DetectorRun:
    """One (validation run, detector) record of detect-validation.json (legacy key names kept)."""

    n_targets: int
    top1_correct: int  # raw mean-weight statistic (the ranking before the specific statistic)
    mean_target_rank: float
    all_targets_significant: bool
    random_any_significant: int
    top1_correct_specific: int  # candidate-specific statistic: what `lls detect` ranks by
    mean_target_rank_specific: float
    n_targets_significant_specific: int
    random_any_significant_specific: int
    random_any_p_specific_holm_below_alpha: int  # the same without the gate
    chance: dict
    expected_top1_correct_specific: float
    mean_expected_target_z_specific: float
    targets: list[dict]
    n_random: int
    random: list[dict]
    loadings_beta: list[float] = field(default_factory=list)

    @classmethod
    def from_rows(cls, targets: list[dict], rand: list[dict], K: int) -> "DetectorRun":
        n = len(targets)
        return cls(n_targets=n, top1_correct=sum(r["top_raw"] == r["target"] for r in targets),
                   mean_target_rank=float(np.mean([r["target_rank_raw"] for r in targets])),
                   all_targets_significant=bool(all(r["target_p_holm"] < ALPHA for r in targets)),
                   random_any_significant=sum(r["n_significant"] > 0 for r in rand),
                   top1_correct_specific=sum(r["top_specific"] == r["target"] for r in targets),
                   mean_target_rank_specific=float(np.mean([r["target_rank_specific"] for r in targets])),
                   n_targets_significant_specific=sum(r["target_significant_specific"] for r in targets),
                   random_any_significant_specific=sum(r["n_significant_specific"] > 0 for r in rand),
                   random_any_p_specific_holm_below_alpha=sum(r["min_p_specific_holm"] < ALPHA for r in rand),
                   chance={"top1_correct": n / K, "mean_target_rank": (K + 1) / 2},
                   expected_top1_correct_specific=float(sum(r["expected_p_target_first"] for r in targets)),
                   mean_expected_target_z_specific=float(np.mean([r["expected_target_z_specific"] for r in targets])),
                   targets=targets, n_random=len(rand), random=rand)

    @classmethod
    def from_json(cls, d: dict) -> "DetectorRun":
        return cls(**d)

    def to_json(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @property
    def n_targets_raw_significant(self) -> int:
        return sum(t["target_p_holm"] < ALPHA for t in self.targets)


@dataclass
class RunRecord:
    """A detector run with where it sits in detect-validation.json (for readers: report, figures, notebook)."""

    kind: str  # "pool" or "disjoint"
    pool: int
    detector: str
    reference: str  # "same pool" | "other half" | "same half"
    run: DetectorRun

    @property
    def label(self) -> str:
        """Two-line label: where the subsets come from / what they are tested against."""
        if self.kind == "pool":
            return f"pool of {self.pool}\nref = the pool"
        return f"{self.pool - self.pool // 2}-pair half\nref = {self.reference}"

    def __getattr__(self, name: str) -> Any:  # the DetectorRun's fields and properties
        if name == "run":
            raise AttributeError(name)
        return getattr(self.run, name)


def iter_runs(val: dict) -> Iterator[RunRecord]:
    """Every detector run of a detect-validation.json record (skipped runs, stored as strings, left out)."""
    for d in val["runs"].values():
        if isinstance(d, dict):
            for k, v in d.items():
                if k.startswith("detector=") and isinstance(v, dict):
                    yield RunRecord("pool", d["pool"], k[9:], "same pool", DetectorRun.from_json(v))
    dis = val.get("disjoint")
    if isinstance(dis, dict):
        for k, v in dis.items():
            if k.startswith("detector=") and isinstance(v, dict):
                for ref, key in (("same half", "same_pool"), ("other half", "disjoint")):
                    yield RunRecord("disjoint", dis["pool"], k[9:], ref, DetectorRun.from_json(v[key]))


# ------------------------------------------------------------------------------------------------ protocol
def _target_row(a: str, k: int, idx: np.ndarray, t_src: np.ndarray, r_src: np.ndarray, det: Any,
                rng_pred: np.random.Generator, K: int) -> dict:
    """One LLS subset's result: the target's ranks, z and p under both statistics, and the expectation."""
    row = next(r for r in det.table if r["candidate"] == a)
    mu = float(np.corrcoef(r_src[k], t_src[k])[0, 1] * z_exact(t_src[k], idx))
    return {"target": a, "subset_size": int(idx.size), "expected_target_z_specific": mu,
            "expected_p_target_first": p_target_first_mc(mu, K, rng_pred),
            "top_raw": det.top_raw, "target_rank_raw": row["rank_raw"], "target_z": row["z"],
            "target_p_holm": row["p_holm"], "n_significant": len(det.significant),
            "top_specific": det.top, "target_rank_specific": row["rank"],
            "target_z_specific": row["z_specific"], "target_p_specific_holm": row["p_specific_holm"],
            "target_significant_specific": row["significant_specific"],
            "n_significant_specific": len(det.significant_specific)}


def _random_row(det: Any, size: int) -> dict:
    top_raw = next(r for r in det.table if r["rank_raw"] == 1)
    return {"size": size, "top_raw": det.top_raw, "top_z": top_raw["z"],
            "min_p_holm": min(r["p_holm"] for r in det.table), "n_significant": len(det.significant),
            "top_specific": det.top, "top_z_specific": det.table[0]["z_specific"],
            "min_p_specific_holm": min(r["p_specific_holm"] for r in det.table),
            "n_significant_specific": len(det.significant_specific)}  # gated by the raw test


def validate_detector(t_src: np.ndarray, w_src: np.ndarray, w_ref: np.ndarray | None, names: list[str], *,
                      gamma: float, seed0: int, n_random: int = 20, n_draws: int = 20000) -> tuple[list, list]:
    """LLS subsets (one per candidate, selected on the teacher weights ``t_src`` (K, n_src)) and ``n_random``
    random subsets of the source, each tested with the detector weights: suspect = ``w_src`` columns, reference
    = ``w_ref`` (K, N_ref), or the source itself when ``w_ref`` is None (same-pool protocol).

    Returns (target rows, random rows) for :meth:`DetectorRun.from_rows`. Seeds: detection ``seed0 + k`` and
    ``seed0 + 100 + j``, random subsets ``default_rng(seed0)``, expectation ``default_rng(12345)``."""
    from empirical.lowrank.detect import common_factor_residuals, detect_trait
    from lls_theory.selection import select_top

    ref = w_src if w_ref is None else w_ref
    K = len(names)
    rows, sizes = [], []
    r_src = common_factor_residuals(w_src, w_src)[1]
    rng_pred = np.random.default_rng(12345)
    for k, a in enumerate(names):
        idx = np.asarray(select_top(t_src[k], gamma), dtype=int)
        sizes.append(int(idx.size))
        det = detect_trait(w_src[:, idx], ref, names, n_draws=n_draws, seed=seed0 + k)
        rows.append(_target_row(a, k, idx, t_src, r_src, det, rng_pred, K))
    rng = np.random.default_rng(seed0)
    rand = []
    for j in range(n_random):
        idx = rng.choice(w_src.shape[1], sizes[j % len(sizes)], replace=False)
        det = detect_trait(w_src[:, idx], ref, names, n_draws=n_draws, seed=seed0 + 100 + j)
        rand.append(_random_row(det, int(idx.size)))
    return rows, rand


# ------------------------------------------------------------------------------------------------ settings
@dataclass(kw_only=True)
class DetectValidateConfig:
    data: str = setting(DEFAULT_DATA, "HH-RLHF pairs the pools are drawn from (relative to the repository root "
                                      "by default)")
    cache: Path = setting(Path("results/lowrank/cache"), "row cache with the pool matrices", metavar="DIR")
    teacher: str = setting(TEACHER, "model that builds the LLS subsets (and the first detector)")
    other: str = setting(OTHER, "a second detector that did not build the subsets")
    pools: tuple[str, ...] = setting(("64", "256", "448"), "pool sizes (each the start of the next)",
                                     metavar="N")
    demo_pool: int = setting(64, "pool of the committed CLI demo subsets (subsets/owl-lls.jsonl, random.jsonl)")
    gamma: float = setting(0.25, "Algorithm 1's gamma for the LLS subsets", aliases=("quantile",))
    n_random: int = setting(20, "random subsets per run (negative control)")
    n_draws: int = setting(20000, "random reference subsets per detect_trait call")
    splits: int = setting(3, "random source/reference splits of the largest pool (disjoint-reference protocol; "
                             "0 = skip)")
    compute: bool = setting(False, "compute the teacher's missing pool rows (SmolLM2, about 10 min per pool on "
                                   "2 CPU cores) instead of skipping the pool")
    out: Path = setting(Path("results/lowrank"), "results folder", cli=False)
    seed: int = setting(0, "random seed", cli=False)

    def __post_init__(self) -> None:
        from empirical.lowrank.detect import MIN_DRAWS
        from empirical.lowrank.lowrank import check_model

        check_types(self, "")
        if not Path(self.data).is_file():
            raise LLSError(f"--data {self.data}: file not found (the default is relative to the repository root)")
        for p in self.pool_sizes:
            check_int(p, "pools", low=8)
        check_int(self.demo_pool, "demo_pool", low=1)
        check_interval(self.gamma, "gamma", 0, 1, closed="right")
        check_positive_int(self.n_random, "n_random")
        check_int(self.n_draws, "n_draws", low=MIN_DRAWS)
        check_int(self.splits, "splits", low=0)
        check_model(self.teacher, "teacher")

    @property
    def pool_sizes(self) -> list[int]:
        try:
            return sorted({int(p) for p in self.pools})
        except ValueError:
            raise LLSError(f"--pools must be integers, got {list(self.pools)}") from None


# ------------------------------------------------------------------------------------------------ run
@dataclass
class ValidationResult:
    """detect-validation.json (``record``), the CLI demo subsets and the progress lines."""

    record: dict
    demo: tuple[list, list] | None = None  # (owl LLS subset, random subset) of the demo pool, PrefPairs
    lines: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {f"{r.label.replace(chr(10), ', ')} / {r.detector}": {"top1_correct_specific": r.top1_correct_specific,
                                               "n_targets": r.n_targets,
                                               "targets_raw_significant": r.n_targets_raw_significant,
                                               "random_flagged": r.random_any_significant, "n_random": r.n_random}
                for r in iter_runs(self.record)}

    def text(self) -> str:
        return "\n".join(self.lines)

    def write(self, run: Any) -> None:
        from empirical.lowrank.lowrank_figures import plot_detect_validation

        run.write_json("detect-validation.json", self.record)
        if self.demo is not None:
            from lls_common.io import atomic_write_jsonl

            rec = lambda p: {"id": p.id, "prompt": [dict(m) for m in p.prompt], "chosen": p.chosen,  # noqa: E731
                             "rejected": p.rejected}
            for name, pairs in zip(("owl-lls.jsonl", "random.jsonl"), self.demo):
                atomic_write_jsonl(run.path("subsets") / name, [rec(p) for p in pairs])
        plot_detect_validation(list(iter_runs(self.record)), run.path("detect-validation.png"))


def _weights(spec: str, pool: list, systems: list, cfg: DetectValidateConfig, compute: bool = False):
    """Length-normalised LLS weights (K, pool) of ``spec`` from the row cache; ``compute`` fills missing rows."""
    from empirical.lowrank.logprob_matrix import compute_matrix, pair_columns
    from empirical.lowrank.lowrank import load_model
    from empirical.lowrank.pair_check import margin_shifts

    res = compute_matrix(None, None, systems, pair_columns(pool), store=cfg.cache, model_name=spec, only_cached=True)
    if not all(res.cached):
        if not compute:
            return None
        model, tok = load_model(spec, "float32")
        res = compute_matrix(model, tok, systems, pair_columns(pool), store=cfg.cache, model_name=spec, progress=True)
    return margin_shifts(res.X, res.n_tokens).weights


def _line(where: str, det: str, v: DetectorRun) -> str:
    return (f"{where}, detector {det}: top-1 correct raw {v.top1_correct}/{v.n_targets} -> specific "
            f"{v.top1_correct_specific}/{v.n_targets} (mean rank {v.mean_target_rank:.1f} -> "
            f"{v.mean_target_rank_specific:.1f}); targets Holm-significant raw all={v.all_targets_significant}, "
            f"specific {v.n_targets_significant_specific}/{v.n_targets}; random subsets with a significant "
            f"candidate raw {v.random_any_significant}/{v.n_random}, specific {v.random_any_significant_specific}/"
            f"{v.n_random} (ungated {v.random_any_p_specific_holm_below_alpha}/{v.n_random}); linear-Gaussian "
            f"expectation: target z_specific {v.mean_expected_target_z_specific:.2f}, top-1 "
            f"{v.expected_top1_correct_specific:.1f}/{v.n_targets}")


def _disjoint(cfg: DetectValidateConfig, n_pool: int, t: np.ndarray, ws: dict, names: list[str],
              lines: list[str]) -> dict:
    """The disjoint-reference protocol on the pool of ``n_pool`` pairs (module doc)."""
    half = n_pool // 2
    acc = {det: {"disjoint": ([], []), "same_pool": ([], [])} for det in ws}
    for s in range(cfg.splits):
        perm = np.random.default_rng(cfg.seed + 1000 + s).permutation(n_pool)
        ref, src = np.sort(perm[:half]), np.sort(perm[half:])
        for det, w in ws.items():
            for key, w_ref in (("disjoint", w[:, ref]), ("same_pool", None)):
                rows, rand = validate_detector(t[:, src], w[:, src], w_ref, names, gamma=cfg.gamma,
                                               seed0=10_000 * (s + 1), n_random=cfg.n_random, n_draws=cfg.n_draws)
                acc[det][key][0].extend({"split": s, **r} for r in rows)
                acc[det][key][1].extend({"split": s, **r} for r in rand)
    out: dict = {"pool": n_pool, "splits": cfg.splits, "source_size": n_pool - half, "reference_size": half,
                 "split_seeds": [cfg.seed + 1000 + s for s in range(cfg.splits)],
                 "protocol": "LLS subsets of the source half tested against random subsets of the disjoint "
                             "reference half ('disjoint') and, for comparison, of the source half itself "
                             "('same_pool'); random subsets of the source half are the negative control"}
    for det in ws:
        out[f"detector={det}"] = {}
        for key in ("same_pool", "disjoint"):
            v = DetectorRun.from_rows(*acc[det][key], len(names))
            out[f"detector={det}"][key] = v.to_json()
            lines.append(_line(f"{n_pool}-pair pool split {n_pool - half}/{half}, reference {key}", det, v))
    return out


def _header(cfg: DetectValidateConfig) -> dict:
    return {"gamma": cfg.gamma, "n_draws": cfg.n_draws, "correction": "Holm over the 10 candidates",
            "statistics": {"raw": "z of the subset's mean w_c/N_i (significance: is a trait planted?)",
                           "specific": "z of the subset's mean common-factor residual w_c - beta_c m, m = mean over "
                                       "the 10 candidates, beta_c fitted on the pool (ranking: which one?); "
                                       "significant_specific is gated by the raw test"},
            "selection": "Algorithm 1 (select_top of SmolLM2's w_i/N_i) inside the pool", "runs": {}}


def run_detect_validation(cfg: DetectValidateConfig) -> ValidationResult:
    """Both protocols of the module doc from the cached pool matrices."""
    from empirical.lowrank.detect import common_factor_residuals
    from empirical.lowrank.lowrank import load_data, load_tokenizer, pair_inputs
    from empirical.systems import ANIMALS, animal_prompt
    from lls_theory.selection import select_top

    tok = load_tokenizer(cfg.teacher)
    all_pairs = load_data(cfg.data, skip_bad=True)
    names, systems = list(ANIMALS), [None] + [animal_prompt(a) for a in ANIMALS]
    res = ValidationResult(_header(cfg))
    runs, largest = res.record["runs"], None
    for n_pool in cfg.pool_sizes:
        pool = pair_inputs(all_pairs, tok, n_pairs=n_pool, seed=cfg.seed, truncate=20, prompt_tokens=(8, 64))
        t = _weights(cfg.teacher, pool, systems, cfg, compute=cfg.compute)
        if t is None:
            res.lines.append(f"pool {n_pool}: teacher matrix not cached; skipped")
            runs[f"pool={n_pool}"] = "teacher matrix not cached; skipped"
            continue
        corr = np.corrcoef(t)
        runs[f"pool={n_pool}"] = {"pool": n_pool,
                                  "mean_corr_between_animal_weights": float(corr[np.triu_indices(len(names), 1)].mean())}
        ws = {}
        for det in (cfg.teacher, cfg.other):
            w = t if det == cfg.teacher else _weights(det, pool, systems, cfg)
            if w is None:
                runs[f"pool={n_pool}"][f"detector={det}"] = "not cached; skipped"
                continue
            ws[det] = w
            v = DetectorRun.from_rows(*validate_detector(t, w, None, names, gamma=cfg.gamma, seed0=n_pool,
                                                         n_random=cfg.n_random, n_draws=cfg.n_draws), len(names))
            v.loadings_beta = [float(b) for b in common_factor_residuals(w, w)[0]]
            runs[f"pool={n_pool}"][f"detector={det}"] = v.to_json()
            res.lines.append(_line(f"pool {n_pool}", det, v))
        if n_pool == cfg.demo_pool:
            owl = [pool[i] for i in np.asarray(select_top(t[0], cfg.gamma), dtype=int)]
            ridx = np.random.default_rng(1).choice(len(pool), len(owl), replace=False)
            res.demo = (owl, [pool[i] for i in ridx])
        largest = (n_pool, t, ws)
    if largest is None:  # nothing cached and nothing computed: an all-"skipped" result would look like a run
        raise LLSError(f"--cache {cfg.cache}: no teacher pool matrix of {cfg.teacher} is cached for pools "
                       f"{', '.join(map(str, cfg.pool_sizes))}; run with --compute, or give the cache of a computed run")
    if cfg.splits and largest is not None:
        res.record["disjoint"] = _disjoint(cfg, *largest, names, res.lines)
    return res
