"""The default demo suite and resumable parameter sweeps."""

from __future__ import annotations

import hashlib
import itertools
import json
import sys
import time
import tomllib
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np

from lls_common.io import RunDir, LLSError, dumps, emit_summary, to_jsonable
from lls_common.validate import check_choice, check_int, check_interval
from lls_theory.stats import cosine, pearson

from .progress import Progress
from .threads import blas_threads
from .train import gradient_trajectory, pad_batch, train_with_moving_features
from .trial import TrialConfig, _prepare, find_violations, run_trials
from .world import PHI_FAMILIES, WorldConfig

__all__ = ["demo_settings", "run_demo", "load_sweep_config", "run_sweep", "demo_summary"]

DEMO_OVERLAPS = (12, 8, 4, 0)
SPARSE_SETTING = "sparse phi (coherent)"


def demo_settings() -> list[tuple[str, TrialConfig]]:
    """(name, config) of the demo suite: d = 16, 2,000 prompts × 4 responses, γ = 0.2, β = 0.1, Δ = 1e-8."""
    base = TrialConfig(world=WorldConfig(d=16, n_prompts=2000))
    out = [("same-teacher", base)]
    out += [(f"cross-teacher k={k}", replace(base, world=replace(base.world, overlap=k))) for k in DEMO_OVERLAPS]
    out.append(("same-teacher eps=0.02 random", replace(base, world=replace(base.world, eps=0.02, perturbation="random"))))
    # coherent features: the WB constant is certified far above the Gaussian case's (see the summary's
    # "sparse_wb"); whether it exceeds what the theorem needs is measured per trial, not assumed
    out.append((SPARSE_SETTING, replace(base, world=replace(base.world, family="sparse"))))
    return out


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def demo_summary(records: list[dict], seed: int) -> dict:
    def arm(setting, a):
        return [r for r in records if r["setting"] == setting and r["arm"] == a]

    viol = find_violations(records)
    return {
        "seed": seed,
        "solver": solver_counts(records),
        "sparse_wb": sparse_wb_summary([r for r in records if r["setting"] == SPARSE_SETTING]),
        "violations": len(viol),
        "counterexamples": [{k: r[k] for k in ("setting", "arm", "seed", "C", "bound", "corr_selected")} for r in viol],
        "trials_total": len(records),
        "hypotheses_hold": sum(bool(r["holds"]) for r in records),
        "same_teacher_corr": _mean(r["heldout_pearson"] for r in arm("same-teacher", "lls")),
        "cross_teacher_corr": [{"overlap": k, "corr": _mean(r["heldout_pearson"] for r in arm(f"cross-teacher k={k}", "lls"))}
                               for k in DEMO_OVERLAPS],
        "random_control_corr": _mean(r["heldout_pearson"] for r in arm("same-teacher", "random")),
        "bottom_control_corr": _mean(r["heldout_pearson"] for r in arm("same-teacher", "bottom")),
        "trait_mass": {
            "base": _mean(r["trait_mass_base"] for r in arm("same-teacher", "lls")),
            "prompted": _mean(r["trait_mass_prompted"] for r in arm("same-teacher", "lls")),
            "student": _mean(r["trait_mass_student"] for r in arm("same-teacher", "lls")),
            "random_control_student": _mean(r["trait_mass_student"] for r in arm("same-teacher", "random")),
        },
        "trials": records,
    }


def solver_counts(records: list[dict]) -> dict:
    """How the trials' Δ-approximate minimisers were proven: counts by certificate.

    "loss": L(v) ≤ Δ (inf L ≥ 0); "duality-gap": L(v) − (dual lower bound on inf L) ≤ Δ;
    "none": no certificate (stopped by the Newton-decrement rule or the iteration cap).
    """
    by = {k: sum(r.get("solver_certificate", "loss" if r["solver_certified"] else "none") == k for r in records)
          for k in ("loss", "duality-gap", "none")}
    return {"trials": len(records), "certified": by["loss"] + by["duality-gap"], "by_loss": by["loss"],
            "by_duality_gap": by["duality-gap"], "not_certified": by["none"]}


def sparse_wb_summary(records: list[dict]) -> dict | None:
    """What the sparse-φ setting establishes about well-behavedness: the range of the certified lower
    and upper bounds on C*(Φ), the largest C the Δ-hypothesis admits, and in how many trials the
    lower bound alone exceeds it (then no admissible C exists: WB fails at the theorem's need)."""
    if not records:
        return None
    lo = [r["C_lower"] for r in records]
    hi = [r["C_upper"] for r in records]
    need = records[0].get("C_max_admissible")
    return {"trials": len(records), "C_lower_min": float(min(lo)), "C_lower_max": float(max(lo)),
            "C_upper_min": float(min(hi)), "C_upper_max": float(max(hi)), "C_max_admissible": need,
            "lower_bound_exceeds_admissible": sum(bool(r.get("wb_rules_out_theorem")) for r in records)}


def table(records: list[dict]) -> str:
    """Setting × arm: C bounds, bound, held-out Pearson with mean CI, hypotheses hold / trials, violations."""
    head = f"{'setting':30s} {'arm':7s} {'C lower..upper':>15s} {'bound':>8s} {'Corr sel':>8s} {'held-out r [95% CI]':>24s} {'fresh r':>7s} {'hold':>5s} {'viol':>4s}"
    lines = [head, "-" * len(head)]
    keys = list(dict.fromkeys((r["setting"], r["arm"]) for r in records))
    for s, a in keys:
        rs = [r for r in records if r["setting"] == s and r["arm"] == a]
        lo = np.mean([r["heldout_pearson_ci"][0] for r in rs])
        hi = np.mean([r["heldout_pearson_ci"][1] for r in rs])
        lines.append(
            f"{s:30s} {a:7s} {np.mean([r['C_lower'] for r in rs]):6.2f}..{np.mean([r['C_upper'] for r in rs]):7.2f} "
            f"{np.mean([r['bound'] for r in rs]):8.1e} {np.mean([r['corr_selected'] for r in rs]):8.3f} "
            f"{np.mean([r['heldout_pearson'] for r in rs]):7.3f} [{lo:6.3f},{hi:6.3f}]  "
            f"{np.mean([r['fresh_pearson'] for r in rs]):7.3f} {sum(r['holds'] for r in rs):2d}/{len(rs):<2d} "
            f"{sum(r['violation'] for r in rs):4d}"
        )
    return "\n".join(lines)


def trajectory(cfg: TrialConfig, seed: int, steps=(0, 1, 3, 10, 30, 100, 300, 1000), lr: float = 0.3):
    """Adam from v = 0 on the LLS-selected pairs of one world: Corr on selected and held-out Pearson per step."""
    prep = _prepare(cfg, seed)
    world, idx, h = prep["world"], prep["arms"]["lls"], prep["heldout"]
    Phi, mask = pad_batch([world.diff_features("student", idx)])
    V = gradient_trajectory(Phi, mask, cfg.beta, np.array(steps), lr=lr, optimizer="adam")[:, 0]
    D_sel, D_h = world.diff_features("student", idx), world.diff_features("student", h)
    u = world.u_student
    sel, held = [], []
    for v in V:
        zm = D_sel @ v  # ρ_M = ⟨v, φ_i⟩ exactly: normalisers and the unprompted η cancel
        sel.append(cosine(D_sel @ u, zm) if np.any(zm) else 0.0)
        hm = D_h @ v
        held.append(pearson(prep["teacher_margin"][h], hm) if np.std(hm) > 0 else 0.0)
    return list(steps), sel, held


def moving_features(cfg: TrialConfig, seed: int, steps: int = 300, lr: float = 1.0, lr_features: float = 0.1) -> dict:
    """Robustness mode (b): train v *and* a shared feature map A (φ ↦ (I + A)φ) on the LLS pairs of one
    world, violating the theorem's fixed-φ assumption; compare with the same GD run with A frozen.

    Held-out margins of the trained model: ρ_M(j) = ⟨(I + A)ᵀ(ψ0 + v) − ψ0, φ_j⟩ (normalisers cancel).
    Returns held-out Pearson with the teacher margin for both runs and the size ‖A‖_F.
    """
    prep = _prepare(cfg, seed)
    world, idx, h = prep["world"], prep["arms"]["lls"], prep["heldout"]
    Phi = world.diff_features("student", idx)
    D_h = world.diff_features("student", h)
    psi0 = world.psi0
    out = {"seed": seed, "steps": steps, "lr": lr, "lr_features": lr_features}
    for name, lrf in (("fixed_phi", 0.0), ("moving_phi", lr_features)):
        v, A = train_with_moving_features(Phi, psi0, cfg.beta, steps=steps, lr=lr, lr_features=lrf)
        eff = (np.eye(psi0.size) + A).T @ (psi0 + v) - psi0
        hm = D_h @ eff
        out[f"{name}_heldout_pearson"] = pearson(prep["teacher_margin"][h], hm) if np.std(hm) > 0 else 0.0
        out[f"{name}_A_norm"] = float(np.linalg.norm(A))
    return out


def _figures(run: RunDir, records, summary, traj, d):
    from . import plots

    run.save_figure("corr_vs_overlap.png", plots.corr_vs_overlap(records, d))
    run.save_figure("corr_vs_bound.png", plots.corr_vs_bound(records))
    run.save_figure("corr_vs_step.png", plots.corr_vs_step(*traj))
    tm = summary["trait_mass"]
    run.save_figure("trait_mass.png", plots.trait_mass([("base", tm["base"]), ("base + system prompt", tm["prompted"]),
                                                         ("LLS student", tm["student"]), ("random-subset student", tm["random_control_student"])]))


def run_demo(out, seed: int = 0, n_trials: int = 4, as_json: bool = False, threads: int | str | None = "auto") -> int:
    """The demo suite (:func:`demo_settings`); ``threads``: BLAS threads (simulations.threads policy)."""
    check_int(seed, "seed", 0, 2**32 - 1)
    check_int(n_trials, "trials", 1, 10_000)
    run = RunDir(out)
    t0 = time.time()
    records = []
    settings = demo_settings()
    with blas_threads(threads) as thread_note:
        prog = Progress(len(settings), "lls demo", "settings")
        for i, (name, cfg) in enumerate(settings):
            seeds = [seed * 1000 + 100 * i + j for j in range(n_trials)]
            records += run_trials(cfg, seeds, setting=name)
            prog.update(name)
        prog.close()
        summary = demo_summary(records, seed)
        traj = trajectory(settings[0][1], seed * 1000)
        summary["trajectory"] = {"steps": traj[0], "corr_selected": traj[1], "heldout_pearson": traj[2]}
        summary["moving_features"] = moving_features(settings[0][1], seed * 1000)
    summary["threads"] = thread_note
    summary["seconds"] = round(time.time() - t0, 2)
    run.write_json("summary.json", summary)
    _figures(run, records, summary, traj, settings[0][1].world.d)
    text = table(records)
    cross = ", ".join(f"k={c['overlap']}: {c['corr']:.3f}" for c in summary["cross_teacher_corr"])
    sv = summary["solver"]
    text += (f"\n\nheld-out Pearson: same-teacher {summary['same_teacher_corr']:.3f}; cross-teacher {cross}; "
             f"random control {summary['random_control_corr']:.3f}; bottom control {summary['bottom_control_corr']:.3f}\n"
             f"solver: certified Δ-approximate minimiser (Δ = {settings[0][1].delta:g}) in {sv['certified']}/{sv['trials']} "
             f"trials (loss ≤ Δ: {sv['by_loss']}; duality gap ≤ Δ: {sv['by_duality_gap']}; not certified: {sv['not_certified']})\n"
             + (NOT_CERTIFIED_HINT + "\n" if sv["not_certified"] else "") +
             f"hypotheses hold in {summary['hypotheses_hold']}/{summary['trials_total']} (setting, arm, seed) trials; "
             f"violations: {summary['violations']}\n")
    sw = summary["sparse_wb"]
    if sw is not None:
        text += (f"sparse φ: certified WB constant lower bound {sw['C_lower_min']:.1f}–{sw['C_lower_max']:.1f}, upper "
                 f"bound {sw['C_upper_min']:.1f}–{sw['C_upper_max']:.1f}; the Δ-hypothesis admits C ≤ "
                 f"{sw['C_max_admissible']:.1f}; lower bound above it (WB fails at the theorem's need) in "
                 f"{sw['lower_bound_exceeds_admissible']}/{sw['trials']} trials\n")
    for c in summary["counterexamples"]:
        text += f"COUNTEREXAMPLE: setting={c['setting']} arm={c['arm']} seed={c['seed']} C={c['C']:.3g} Corr={c['corr_selected']:.4g} < bound {c['bound']:.3g}\n"
    tm = summary["trait_mass"]
    text += (f"trait-response mass: base {tm['base']:.3f}, system-prompted {tm['prompted']:.3f}, "
             f"LLS student {tm['student']:.3f}, random-control student {tm['random_control_student']:.3f}\n"
             f"robustness (features also trained, one world): held-out Pearson "
             f"{summary['moving_features']['moving_phi_heldout_pearson']:.3f} vs {summary['moving_features']['fixed_phi_heldout_pearson']:.3f} with φ fixed\n"
             f"wrote {run.root}/summary.json and figures in {summary['seconds']} s")
    if not as_json:
        for c in summary["counterexamples"]:
            print(f"COUNTEREXAMPLE seed={c['seed']}", file=sys.stderr)
    emit_summary(summary, as_json, text)
    return 0


# ---------------------------------------------------------------------------------------------- sweeps
#: The legend printed under ``lls simulate``'s table (each column, in order).
SWEEP_COLUMNS = ("columns: params = the swept settings of the point; hold = share of its LLS trials whose solve is "
                 "certified and where every hypothesis of Theorem C.1 holds; viol = trials where the hypotheses hold "
                 "but Corr(z_s, z_M) on the selected pairs is below the theorem's bound 1/(10 C^1.5) (should be 0); held-out r = mean held-out Pearson of the LLS arm; "
                 "random r = the same for the random control; slack = median log10(corr_selected / bound) over the "
                 "trials where the hypotheses hold (how far above the theorem's guaranteed correlation the "
                 "measured one lies: 1 = ten times; '-' = no such trial)")
#: What "not certified: N" means and what to do about it.
NOT_CERTIFIED_HINT = ("not certified = trials whose solver stopped with neither loss ≤ Δ nor a duality gap ≤ Δ: "
                      "they never count as hold, so hold is a lower bound there. Fix: a larger delta in the "
                      "config (e.g. delta = 1e-6; the theorem's bound changes with it) and rerun")


def shorten(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` characters at a ``", "`` boundary (whole ``key=value`` items), with
    ``"…"`` when something was left out; a single item longer than ``width`` is cut and marked the same way."""
    if len(text) <= width:
        return text
    items, out = text.split(", "), ""
    for item in items:
        nxt = item if not out else out + ", " + item
        if len(nxt) + 3 > width:  # room for ", …"
            break
        out = nxt
    return (out + ", …") if out else text[:width - 1] + "…"


_WORLD_KEYS = {f.name for f in fields(WorldConfig)}
_TRIAL_KEYS = {f.name for f in fields(TrialConfig)} - {"world"}
_SWEEP_KEYS = _WORLD_KEYS | _TRIAL_KEYS | {"trials"}


# every key a sweep TOML may set: (check, arguments) with lls_common.validate's one-line errors.
# Integers refuse floats (even 4.0) and booleans; numbers must be finite; the caps keep one point
# within memory (see _MEMORY_LIMIT) and are far above anything the demo uses.
_INT_RANGES = {"d": (1, 4096), "n_prompts": (2, 10_000_000), "k_responses": (2, 1024), "overlap": (0, 4096),
               "n_heldout": (3, 10_000_000), "n_fresh": (1, 1_000_000), "n_boot": (1, 100_000),
               "wb_starts": (1, 100_000), "trials": (1, 100_000)}
_FLOAT_RANGES = {"cond": (1.0, 1e12, "both"), "trait_strength": (0.0, 1e6, "both"),
                 "quality_strength": (0.0, 1e6, "both"), "eps": (0.0, 1e3, "both"), "gamma": (0.0, 1.0, "right"),
                 "beta": (0.0, 1e6, "right"), "delta": (0.0, 1e3, "right")}
_CHOICES = {"family": PHI_FAMILIES, "perturbation": ("none", "random", "adversarial")}
_MEMORY_LIMIT = 8 * 2**30  # bytes one sweep point may need (estimate below)


def _check_value(key: str, value, name: str):
    """Validate one TOML value of ``key`` (``name`` = "file: [section] key" for the message)."""
    if key in _INT_RANGES:
        lo, hi = _INT_RANGES[key]
        return check_int(value, name, lo, hi)
    if key in _FLOAT_RANGES:
        lo, hi, closed = _FLOAT_RANGES[key]
        return check_interval(value, name, lo, hi, closed=closed)
    if key in _CHOICES:
        return check_choice(value, name, _CHOICES[key])
    if key == "tokens":
        if not isinstance(value, list) or len(value) != 2:
            raise LLSError(f"{name} must be a list [lo, hi] of two integers, got {value!r}"[:200])
        lo = check_int(value[0], f"{name}[0]", 1, 1_000_000)
        hi = check_int(value[1], f"{name}[1]", 1, 1_000_000)
        if lo > hi:
            raise LLSError(f"{name} must have lo <= hi, got [{lo}, {hi}]")
        return [lo, hi]
    raise LLSError(f"{name}: unknown key")  # unreachable: keys are checked first


def _memory_estimate(cfg: TrialConfig, n_trials: int) -> int:
    """Rough peak bytes of one point: the world's feature tables and the batched solve of all arms."""
    w = cfg.world
    world = w.n_prompts * w.k_responses * (w.d * 8 * (2 if w.overlap not in (None, w.d) else 1) + 8 * 6)
    m = max(1, int(np.ceil(cfg.gamma * w.n_prompts)))
    solve = n_trials * 3 * m * w.d * 8 * 3
    return world + solve


def _build(params: dict, where: str) -> tuple[TrialConfig, int]:
    params = dict(params)
    n_trials = params.pop("trials", 4)
    wk = {k: v for k, v in params.items() if k in _WORLD_KEYS}
    if "tokens" in wk and wk["tokens"] is not None:
        wk["tokens"] = tuple(wk["tokens"])
    tk = {k: v for k, v in params.items() if k in _TRIAL_KEYS}
    try:
        cfg = TrialConfig(world=WorldConfig(**wk), **tk)
    except (ValueError, TypeError) as e:
        raise LLSError(f"{where}: {e}") from None
    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise LLSError(f"{where}: key 'trials' must be a positive integer")
    need = _memory_estimate(cfg, n_trials)
    if need > _MEMORY_LIMIT:
        raise LLSError(f"{where}: needs about {need / 2**30:.0f} GiB of memory (limit {_MEMORY_LIMIT / 2**30:.0f} GiB); "
                       "lower n_prompts, d, k_responses or trials")
    return cfg, n_trials


def load_sweep_config(path) -> dict:
    """Read and fully validate a sweep TOML before any work: [base] fixed keys, [sweep] key = [values...]
    (grid), optional [plot] x/y naming keys of the grid. Every value is type- and range-checked (one
    line naming the file, section and key), then every grid point is built (cross-key checks such as
    overlap ≤ d) and its memory estimated."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LLSError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LLSError(f"{path}: is a folder, expected a TOML file") from None
    except UnicodeDecodeError as e:
        raise LLSError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise LLSError(f"{path}: cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise LLSError(f"{path}: invalid TOML: {e}") from None
    for sec, val in raw.items():
        if sec not in ("base", "sweep", "plot"):
            raise LLSError(f"{path}: unknown section [{sec}] (expected base, sweep, plot)")
        if not isinstance(val, dict):
            raise LLSError(f"{path}: '{sec}' must be a table [{sec}], got {type(val).__name__}")
    base, sweep = dict(raw.get("base", {})), dict(raw.get("sweep", {}))
    for sec, table_ in (("base", base), ("sweep", sweep)):
        for k, v in table_.items():
            if k not in _SWEEP_KEYS:
                raise LLSError(f"{path}: [{sec}] unknown key '{k}' (allowed: {', '.join(sorted(_SWEEP_KEYS))})")
            if sec == "base":
                base[k] = _check_value(k, v, f"{path}: [base] {k}")
                continue
            if not isinstance(v, list) or not v:
                raise LLSError(f"{path}: [sweep] key '{k}' must be a non-empty list")
            sweep[k] = [_check_value(k, x, f"{path}: [sweep] {k}[{i}]") for i, x in enumerate(v)]
            if k in base:
                raise LLSError(f"{path}: key '{k}' is in both [base] and [sweep]; keep one")
    n_points = int(np.prod([len(v) for v in sweep.values()])) if sweep else 1
    if n_points > 10_000:
        raise LLSError(f"{path}: [sweep] makes {n_points} points (limit 10000); shorten the lists")
    points = [dict(base, **dict(zip(sweep, combo))) for combo in itertools.product(*sweep.values())] if sweep else [dict(base)]
    for p in points:  # build every point before running anything
        _build(p, f"{path}: point {p}")
    plot = raw.get("plot", {})
    for k in plot:
        if k not in ("x", "y"):
            raise LLSError(f"{path}: [plot] unknown key '{k}' (allowed: x, y)")
    keys = list(sweep) or list(base)
    axes = {}
    for axis, default in (("x", keys[0] if keys else "d"), ("y", keys[1] if len(keys) > 1 else (keys[0] if keys else "d"))):
        val = plot.get(axis, default)
        if not isinstance(val, str) or val not in _SWEEP_KEYS:
            raise LLSError(f"{path}: [plot] {axis} must name a sweep key ({', '.join(sorted(_SWEEP_KEYS))}), got {val!r}"[:300])
        axes[axis] = val
    return {"path": str(path), "points": points, "x": axes["x"], "y": axes["y"]}


def _effective(params: dict) -> dict:
    """Every key's value at a point, the defaults included (what the plots use)."""
    cfg, n = _build(params, "point")
    out = {k: v for k, v in asdict(cfg.world).items()}
    out.update({k: v for k, v in asdict(cfg).items() if k != "world"})
    out["trials"] = n
    if out.get("overlap") is None:
        out["overlap"] = out["d"]
    return out


def _point_summary(params, records) -> dict:
    lls = [r for r in records if r["arm"] == "lls"]
    slack = [np.log10(r["corr_selected"] / r["bound"]) for r in lls if r["holds"] and r["corr_selected"] > 0]
    return {
        "params": params,
        "effective": _effective(params),
        "trials": len(lls),
        "frac_hold": float(np.mean([r["holds"] for r in lls])) if lls else 0.0,
        "violations": len(find_violations(records)),
        "median_log10_slack": float(np.median(slack)) if slack else None,
        "heldout_pearson": _mean(r["heldout_pearson"] for r in lls),
        "random_pearson": _mean(r["heldout_pearson"] for r in records if r["arm"] == "random"),
        "corr_selected": _mean(r["corr_selected"] for r in lls),
        "bound": _mean(r["bound"] for r in lls),
    }


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def run_sweep(spec: dict, out, seed: int = 0, as_json: bool = False, threads: int | str | None = "auto") -> int:
    """Run (or resume) the grid of :func:`load_sweep_config`; ``threads``: simulations.threads policy."""
    from . import plots

    check_int(seed, "seed", 0, 2**32 - 1)
    run = RunDir(out)
    pdir = run.path("points")
    pdir.mkdir(exist_ok=True)
    summaries, all_records = [], []
    with blas_threads(threads) as thread_note:
        prog = Progress(len(spec["points"]), "lls simulate", "points")
        for params in spec["points"]:
            key = hashlib.sha1(json.dumps([params, seed], sort_keys=True).encode()).hexdigest()[:16]
            f = pdir / f"{key}.json"
            data = None
            if f.exists():  # resume: per-point results are written atomically as they complete
                try:
                    data = json.loads(f.read_text())
                    data["summary"]["params"], data["records"]  # noqa: B018 - shape check
                except (ValueError, KeyError, TypeError):
                    raise LLSError(f"{f}: unreadable saved point (delete it to recompute that point)") from None
            if data is None:
                cfg, n = _build(params, spec["path"])
                seeds = [int.from_bytes(hashlib.sha1(f"{key}-{j}".encode()).digest()[:4], "little") for j in range(n)]
                recs = run_trials(cfg, seeds, setting=key)
                data = {"summary": _point_summary(params, recs), "records": recs}
                run.write_json(f"points/{key}.json", to_jsonable(data))
            data["summary"].setdefault("effective", _effective(params))
            summaries.append(data["summary"])
            all_records += data["records"]
            prog.update(shorten(", ".join(f"{k}={v}" for k, v in params.items()), 80))
        prog.close()
    total_v = sum(s["violations"] for s in summaries)
    summary = {"config": spec["path"], "points": summaries, "violations": total_v,
               "trials": sum(s["trials"] for s in summaries), "solver": solver_counts(all_records),
               "threads": thread_note}
    run.write_json("summary.json", summary)
    run.save_figure("phase_diagram.png", plots.phase_diagram(summaries, spec["x"], spec["y"]))
    run.save_figure("corr_vs_bound.png", plots.corr_vs_bound(all_records))
    run.save_figure("corr_vs_overlap.png", plots.corr_vs_overlap(all_records, summaries[0]["effective"]["d"]))
    lines = [f"{'params':60s} {'hold':>5s} {'viol':>4s} {'held-out r':>10s} {'random r':>8s} {'slack':>6s}"]
    varying = [k for k in summaries[0]["params"] if len({json.dumps(p["params"].get(k)) for p in summaries}) > 1]
    for s in summaries:
        shown = ", ".join(f"{k}={s['params'][k]}" for k in varying) or "(single point)"
        lines.append(f"{shorten(shown, 60):60s} {s['frac_hold']:5.2f} {s['violations']:4d} "
                     f"{_fmt(s['heldout_pearson'], '10.3f'):>10s} {_fmt(s['random_pearson'], '8.3f'):>8s} "
                     f"{_fmt(s['median_log10_slack'], '.2f'):>6s}")
    sv = summary["solver"]
    lines.append(SWEEP_COLUMNS)
    lines.append(f"solver: certified Δ-approximate minimiser in {sv['certified']}/{sv['trials']} trials "
                 f"(loss ≤ Δ: {sv['by_loss']}; duality gap ≤ Δ: {sv['by_duality_gap']}; not certified: {sv['not_certified']})")
    if sv["not_certified"]:
        lines.append(NOT_CERTIFIED_HINT)
    lines.append(f"violations: {total_v}; wrote {run.root}")
    emit_summary(summary, as_json, "\n".join(lines))
    return 0
