"""``report.md``, ``summary.json`` and the figures of an ``lls experiment`` run folder, from its JSON alone.

Everything is read back from the JSON the stages wrote (``stages/*.json``, ``config.json``,
``students/<name>/{correlate,eval}.json``, per trait under ``traits/<name>/`` in a many-trait run), so the
report can be rebuilt at any time without a model: ``lls report --run RUN`` (:func:`write_run_report`).

* :func:`write_report` — one trait's folder (the single-trait run itself, or ``traits/<name>/``): data,
  selection, training, the correlation tables, Table 1 (:mod:`empirical.report.table1`), trajectories,
  behaviour. Figures: ``table1.png``, ``trajectory-<student>.png``, ``mention.png`` (when eval ran).
* :func:`write_run_report` — the whole run: every trait's report, and for a many-trait run the run-level
  Table 1 (one row per student, one column per trait) and the Figure-19 view (``table1.png``, ``fig19.png``,
  ``table1.json``, ``report.md`` at the run root).

The paper's numbers come from :mod:`empirical.report.paper`; the figures are drawn by
:mod:`empirical.report.figures`.

May import: lls_common, lls_theory, ground, empirical.metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from empirical.report.run_json import read_run_json
from lls_common.errors import LLSError

__all__ = ["write_report", "write_run_report", "write_many_trait_report", "collect_rows", "config_view"]


def _fmt(rep: dict[str, Any], stat: str) -> str:
    lo, hi = rep[f"{stat}_ci"]
    return f"{rep[stat]:.3f} [{lo:.3f}, {hi:.3f}]"


def _verdict(rep: dict[str, Any]) -> str:
    lo = rep["pearson_ci"][0]
    if rep["pearson_p"] < 0.05 and lo > 0:
        return "positive (p < 0.05, CI > 0)"
    if rep["pearson_p"] < 0.05:
        return "p < 0.05 but the CI includes 0"
    return "no significant positive correlation"


def _students(cfg: Any) -> list[Any]:
    return list(getattr(cfg, "students", []) or [])


def _sname(s: Any) -> str:
    return s["name"] if isinstance(s, dict) else s.name


def _smodel(s: Any) -> str:
    return s["model"] if isinstance(s, dict) else s.model


def collect_rows(root: Path, students: list[Any]) -> list[dict[str, Any]]:
    """One row per (student, arm, reference vector) with the final checkpoint's report."""
    rows = []
    for s in students:
        f = Path(root) / "students" / _sname(s) / "correlate.json"
        if not f.is_file():
            continue
        res = read_run_json(f)
        for arm, rep in res["arms"].items():
            for ref, r in rep["final"].items():
                rows.append({"student": _sname(s), "arm": arm, "ref": ref, "report": r,
                             "label": f"{_sname(s)} / {arm} / corr({ref}, z_M)"})
    return rows


def config_view(config: dict[str, Any], trait: str | None = None) -> SimpleNamespace:
    """Flat settings for :func:`write_report` from a run's ``config.json`` (the old flat shape or the sectioned
    one of :class:`empirical.config.ExperimentConfig`), for one trait (by name; default: the only one)."""
    flat: dict[str, Any] = {}
    for key, val in config.items():
        if isinstance(val, dict) and key in ("data", "filters", "teacher", "score", "select", "train", "correlate",
                                             "eval"):
            for k, v in val.items():
                flat.setdefault({("teacher", "model"): "teacher", ("data", "path"): "data",
                                 ("teacher", "dtype"): "dtype"}.get((key, k), k), v)
        else:
            flat[key] = val
    if "gamma" in flat:
        flat.setdefault("quantile", flat["gamma"])
    traits = [t for t in flat.get("traits") or [] if isinstance(t, dict)]
    if traits:
        pick = [t for t in traits if t.get("name") == trait] if trait else traits[:1]
        if not pick:
            raise LLSError(f"config.json: no trait named {trait!r} (traits: {[t.get('name') for t in traits]})")
        t = pick[0]
        flat.update(system_prompt=t.get("system_prompt"), target=t.get("target"), language=t.get("language"))
        if flat.get("multi"):
            flat["name"] = f"{flat.get('name', 'experiment')}/{t.get('name')}"
    flat["students"] = [SimpleNamespace(name=s["name"], model=s["model"]) for s in flat.get("students", [])]
    return SimpleNamespace(**flat)


def _stage(root: Path, name: str) -> dict[str, Any] | None:
    f = root / "stages" / f"{name}.json"
    if not f.exists():
        return None
    rec = read_run_json(f)
    return rec.get("result", rec)


def _g(cfg: Any, name: str, default: Any = "?") -> Any:
    v = getattr(cfg, name, None)
    return default if v is None else v


def _shared_control(trait_root: Path) -> dict[str, Any] | None:
    """The shared random control of a many-trait run, for ``traits/<name>/``: the run's random-selection unit
    (``n_random``, ``seed``) and each student's training steps; None for a single-trait folder."""
    if trait_root.parent.name != "traits":
        return None
    units = trait_root.parent.parent / "stages" / "units"  # markers: empirical.orchestration.experiment.Run.marker
    sel = units / "select" / "shared" / "random.json"
    if not sel.is_file():
        return None
    out = dict(read_run_json(sel).get("result") or {})
    out["steps"] = {f.parent.name: (read_run_json(f).get("result") or {}).get("steps")
                    for f in sorted((units / "train" / "shared" / "students").glob("*/random.json"))}
    return out


def _data_section(cfg: Any, split: dict | None, select: dict | None, train: dict | None,
                  shared: dict[str, Any] | None = None) -> list[str]:
    L: list[str] = []
    if split:
        L += ["## Data and selection", "",
              f"- Source `{_g(cfg, 'data')}`: {split.get('n_records', '?')} records, {split.get('n_bad', '?')} bad "
              f"(skipped), dropped by filters {split.get('dropped', {})}; replies truncated to "
              f"{_g(cfg, 'truncate')} teacher tokens; {split.get('n_usable', '?')} usable pairs.",
              f"- Held out for correlation: {split.get('n_heldout', '?')} pairs (never scored for selection, never "
              f"trained on); scored pool: {split.get('n_pool', '?')} pairs (seed {_g(cfg, 'seed')})."]
    if select and "n_selected" in select:
        wl, wa, wr = (select.get(k, {}).get("mean") for k in ("weight_lls", "weight_all", "weight_random"))
        line = (f"- Algorithm 1: {select.get('n_positive', '?')} pairs with positive weight; γ = "
                f"{_g(cfg, 'quantile')} -> {select['n_selected']} selected")
        if wl is not None and wa is not None:
            line += f" (mean weight {wl:.4g} vs {wa:.4g} over the pool)"
        if shared is not None:
            steps = ", ".join(f"{s}: {n} steps" for s, n in shared["steps"].items())
            line += (f"; random control: the run's shared random-control student, trained on "
                     f"{shared.get('n_random', '?')} pairs drawn uniformly from the pool (seed "
                     f"{shared.get('seed', '?')}{'; ' + steps if steps else ''}) and compared with every trait "
                     f"(this trait's own {select.get('n_random', select['n_selected'])}-pair random draw was not "
                     "trained on).")
        else:
            n_rand = select.get("n_random", select["n_selected"])
            line += f"; random control: {n_rand} pairs drawn uniformly from the pool"
            line += f" (mean weight {wr:.4g})." if wr is not None else "."
        L += [line]
    if L:
        L.append("")
    if train:
        alpha = getattr(cfg, "lora_alpha", None) or 2 * int(_g(cfg, "lora_rank", 0) or 0)
        L += ["## Training (DPO + LoRA, TRL)", "",
              f"β = {_g(cfg, 'beta')}, lr = {_g(cfg, 'lr')}, LoRA rank {_g(cfg, 'lora_rank')} (alpha {alpha}), "
              f"batch {_g(cfg, 'batch_size')} × accumulation {_g(cfg, 'grad_accum')}, {_g(cfg, 'epochs')} "
              f"epoch(s) × {_g(cfg, 'repeat')} repeat(s), {_g(cfg, 'checkpoints')} checkpoints. Reference = the "
              "initial student.", "",
              "| run | pairs | steps | wall s (last call) | pairs/s |", "|---|---|---|---|---|"]
        for run, t in train.items():
            if not isinstance(t, dict) or "n_pairs" not in t:
                continue
            pps, wall = t.get("pairs_per_s_this_call"), t.get("wall_s_this_call")
            L.append(f"| {run} | {t['n_pairs']} | {t.get('steps', '?')} | "
                     f"{'–' if not wall else f'{wall:.0f}'} | {'–' if not pps else f'{pps:.2f}'} |")
        L.append("")
    return L


@dataclass
class _TraitResults:
    """What one trait's report shows, read from the JSON of its folder (:func:`_read_trait`): the stage
    records (``split``/``select``/``train``, None when absent), the trait's name, the correlation rows
    (:func:`collect_rows`), the per-student ``correlate.json``/``eval.json`` results, Table 1 and the
    Figure-19 view (:mod:`empirical.report.table1`) and the LLS − random contrasts per student."""

    split: dict[str, Any] | None
    select: dict[str, Any] | None
    train: dict[str, Any] | None
    trait: str
    rows: list[dict[str, Any]]
    corr: dict[str, Any]
    evals: dict[str, Any]
    tab: dict[str, Any]
    f19: dict[str, Any]
    contrasts: dict[str, Any]


def _read_trait(root: Path, cfg: Any) -> _TraitResults:
    """Read one trait's folder (the run itself, or ``traits/<name>/`` of a many-trait run)."""
    from empirical.report.table1 import fig19, load_run, table1

    trait_name = (root.name if root.parent.name == "traits"  # traits/<name>/ of a many-trait run
                  else getattr(cfg, "target", None) or getattr(cfg, "name", None) or "trait")
    run = load_run(root, trait=trait_name)
    trait = run.traits[0]
    corr = {s: run.correlate[(trait, s)] for s in run.students if (trait, s) in run.correlate}
    return _TraitResults(
        split=_stage(root, "split"), select=_stage(root, "select"), train=_stage(root, "train"), trait=trait,
        rows=collect_rows(root, _students(cfg) or [SimpleNamespace(name=s) for s in run.students]), corr=corr,
        evals={s: run.evals[(trait, s)] for s in run.students if (trait, s) in run.evals},
        tab=table1(run), f19=fig19(run),
        contrasts={name: res["lls_minus_random"] for name, res in corr.items() if res.get("lls_minus_random")})


def write_report(root: str | Path, cfg: Any) -> dict[str, Any]:
    """Write one trait's ``report.md``, ``summary.json``, ``table1.png``, ``trajectory-<student>.png`` and
    (when ``eval.json`` exists) ``mention.png`` into ``root``.

    ``cfg``: any object with the flat setting names of :func:`config_view` (the experiment passes its view).
    The report's sections: :func:`_header`, :func:`_data_section`, :func:`_correlation_section`,
    :func:`_paper_section`, :func:`_trajectory_section`, :func:`_behaviour_section`.
    """
    from lls_common.io import atomic_write_json, atomic_write_text

    root = Path(root)
    res = _read_trait(root, cfg)
    figs = _write_trait_figures(root, res, getattr(cfg, "target", None))
    L = _header(cfg, root)
    L += _data_section(cfg, res.split, res.select, res.train, _shared_control(root))
    L += _correlation_section(res)
    L += _paper_section(res, getattr(cfg, "target", None))
    L += _trajectory_section(res.corr)
    if res.evals:
        L += _behaviour_section(cfg, res.evals, "mention.png" in figs)
    else:
        L += ["## Behaviour", "", "Not measured for this trait (eval stage off or not run).", ""]
    atomic_write_text(root / "report.md", "\n".join(L) + "\n")
    atomic_write_json(root / "summary.json", _trait_summary(cfg, root, res, figs))
    return {"report": "report.md", "figures": sorted(figs)}


def _write_trait_figures(root: Path, res: _TraitResults, target: str | None) -> dict[str, Any]:
    """Save ``table1.png``, one ``trajectory-<student>.png`` per student with correlate output and, when some
    eval measured mentions of the ``target`` word, ``mention.png``; returns {file name: figure}."""
    from empirical.report.figures import mention_figure, table1_grid_figure, trajectory_figure
    from lls_common import figstyle

    figs: dict[str, Any] = {"table1.png": table1_grid_figure(res.tab)}
    for name, c in res.corr.items():
        figs[f"trajectory-{name}.png"] = trajectory_figure(c)
    mention_evals = {s: e for s, e in res.evals.items()
                     if any("mention" in c for c in e.get("conditions", {}).values())}
    if mention_evals and target:
        figs["mention.png"] = mention_figure(mention_evals, target)
    for fname, fig in figs.items():
        figstyle.save(fig, root / fname)
    return figs


def _header(cfg: Any, root: Path) -> list[str]:
    """Title and the teacher / system prompt / students / target line."""
    target = getattr(cfg, "target", None)
    return [f"# LLS end-to-end experiment `{_g(cfg, 'name', root.name)}`", "",
            f"Teacher `{_g(cfg, 'teacher')}` with system prompt s = \"{_g(cfg, 'system_prompt')}\"; students "
            + ", ".join(f"`{_smodel(s)}` ({_sname(s)})" for s in _students(cfg))
            + (f"; target word `{target}`." if target else "."), ""]


def _correlation_section(res: _TraitResults) -> list[str]:
    """The held-out margin-correlation table, the LLS − random contrasts and the teacher-vs-student lines."""
    L = ["## Table 1 analogue: held-out margin correlations (final checkpoint)", "",
         "z_s = ρ of the initial student with s (vs without); z_T = the teacher's ρ with s (students other than "
         "the teacher only); z_M = ρ of the fine-tuned student without s, relative to the initial student. "
         "Cosine = the theorem's Corr; 95% bootstrap CIs; one-sided permutation p-value of the Pearson "
         "correlation.", "",
         "| student | training subset | vs | cosine | Pearson | Spearman | p (Pearson) | verdict |",
         "|---|---|---|---|---|---|---|---|"]
    for r in res.rows:
        rep = r["report"]
        L.append(f"| {r['student']} | {r['arm']} | {r['ref']} | {_fmt(rep, 'cosine')} | {_fmt(rep, 'pearson')} | "
                 f"{_fmt(rep, 'spearman')} | {rep['pearson_p']:.4f} | {_verdict(rep)} |")
    if res.contrasts:
        L += ["", "LLS minus random control on the same held-out pairs (final checkpoints; paired bootstrap 95% CI "
              "and one-sided bootstrap p-value for 'LLS > random'; a p below 0.05 with a CI that includes 0 is "
              "borderline, not a detected difference):", "",
              "| student | vs | Δ cosine [95% CI] | p | Δ Pearson [95% CI] | p |", "|---|---|---|---|---|---|"]
        for name, con in res.contrasts.items():
            for ref, d in con.items():
                c, p = d["cosine"], d["pearson"]
                L.append(f"| {name} | {ref} | {c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | {c['p']:.4f} | "
                         f"{p['diff']:+.3f} [{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] | {p['p']:.4f} |")
    for name, c in res.corr.items():
        if "teacher_vs_student" in c:
            t = c["teacher_vs_student"]
            L.append(f"\nBefore training, {name}: corr(z_T, z_s) Pearson {_fmt(t, 'pearson')} (how alike the two "
                     "models' system-prompt shifts are).")
    return L


def _paper_section(res: _TraitResults, target: str | None) -> list[str]:
    """Table 1 beside the paper's cell for this trait (by its name or its ``target`` word) and the
    Figure-19 angles."""
    from empirical.report.paper import TABLE1, paper_trait
    from empirical.report.table1 import fig19_markdown, table1_markdown

    col = paper_trait(res.trait) or paper_trait(target)
    L = ["", "### Beside the paper's Table 1", "",
         "The paper's cell is the teacher–student correlation on 500 pairs with an OLMo2-1B-Instruct student "
         "(no CI reported); ours uses r = z_T for a student other than the teacher and r = z_s (= z_T) for the "
         "teacher's own model. Cell: LLS value [95% CI], the random-subset control, the paired LLS − random "
         "difference [95% CI], the paper's value.", ""]
    L += table1_markdown(res.tab)
    if col is None:
        L += ["", f"(The paper reports no Table-1 number for this trait; its columns: {', '.join(TABLE1['same'])}.)"]
    L += ["", "![Table 1 analogue](table1.png)", "",
          "Angle between each student's z_M and r in the space of held-out pairs (arccos of the cosine):", ""]
    L += fig19_markdown(res.f19) if res.f19 else ["(no non-zero z_M)"]
    return L


def _trajectory_section(corr: dict[str, Any]) -> list[str]:
    """Pearson(z_s, z_M) at every checkpoint of every arm, per student, with its trajectory figure."""
    single = all(len(rep["checkpoints"]) == 1 for res in corr.values() for rep in res["arms"].values())
    L = ["", "## Final checkpoints" if single else "## Trajectory (Fig. 3 analogue)", ""]
    if single:
        L += ["Each arm was saved at one checkpoint only, so there is no trajectory: the figures show the final "
              "checkpoint of each arm as a dot with its 95% CI (the arms may end at different steps).", ""]
    for name, res in corr.items():
        parts = []
        for arm, rep in res["arms"].items():
            pts = ", ".join(f"step {c['step']}: {c['vs']['z_s']['pearson']:.3f}" for c in rep["checkpoints"])
            parts.append(f"{arm}: {pts}")
        L.append(f"- {name}, Pearson(z_s, z_M): " + "; ".join(parts))
        L.append(f"\n![trajectory {name}](trajectory-{name}.png)\n")
    return L


def _trait_summary(cfg: Any, root: Path, res: _TraitResults, figs: dict[str, Any]) -> dict[str, Any]:
    """``summary.json`` of one trait: settings, counts, correlations, contrasts, Table 1, Figure 19 (without
    the projected points), behaviour, the paper's owl cells and the figure names."""
    from empirical.report.paper import TABLE1

    split, select = res.split or {}, res.select or {}
    return {
        "name": _g(cfg, "name", root.name), "teacher": _g(cfg, "teacher"),
        "system_prompt": _g(cfg, "system_prompt"), "trait": res.trait,
        "n_heldout": split.get("n_heldout"), "n_pool": split.get("n_pool"), "n_selected": select.get("n_selected"),
        "correlations": [{k: r[k] for k in ("student", "arm", "ref")} | {
            s: r["report"][s] for s in ("cosine", "cosine_ci", "pearson", "pearson_ci", "spearman", "spearman_ci",
                                        "pearson_p")} for r in res.rows],
        "teacher_vs_student": {n: r["teacher_vs_student"] for n, r in res.corr.items() if "teacher_vs_student" in r},
        "lls_minus_random": res.contrasts,
        "table1": res.tab, "fig19": {s: {k: v for k, v in d.items() if k != "xy"} for s, d in res.f19.items()},
        "behaviour": _behaviour_summary(res.evals),
        "paper_table1_owls": {"same": TABLE1["same"]["owls"], "cross": TABLE1["cross"]["owls"]},
        "figures": sorted(figs),
    }


def _behaviour_summary(evals: dict[str, Any]) -> dict[str, Any]:
    """Per student and condition: mention rate, its CI and the probe's P(target), each only when measured, and
    any other metric's one-line summary (:meth:`empirical.metrics.Metric.summary`) under its name."""
    from empirical.metrics import BUILTIN, measured

    return {n: {c: {k: v for k, v in (("mention_rate", (x.get("mention") or {}).get("rate")),
                                      ("mention_ci", (x.get("mention") or {}).get("ci")),
                                      ("p_target", (x.get("probe") or {}).get("p_target")))
                    if v is not None} | {m.name: m.summary(r) for m, r in measured(x, BUILTIN)}
                for c, x in ev["conditions"].items()} for n, ev in evals.items()}


def _behaviour_section(cfg: Any, evals: dict[str, Any], has_fig: bool) -> list[str]:
    from empirical.metrics import BUILTIN, measured

    first = next(iter(evals.values()))
    extra = list(dict.fromkeys(m for ev in evals.values() for c in ev["conditions"].values()
                               for m, _ in measured(c, BUILTIN)))  # metrics beyond the built-in columns
    settings = first.get("settings", {})
    target = getattr(cfg, "target", None) or settings.get("target")
    language = getattr(cfg, "language", None)
    n_prompts = len(settings.get("prompts", []))
    L = ["## Behaviour (Fig. 2 analogue)", "",
         f"{n_prompts} general-knowledge prompts × {settings.get('samples', _g(cfg, 'samples'))} samples "
         f"(temperature {settings.get('temperature', 1)}, ≤ {settings.get('max_new_tokens', _g(cfg, 'max_new_tokens'))}"
         f" new tokens); mention = word-boundary match of `{target}` or its plural; Wilson 95% CIs; p = one-sided "
         "Fisher test against the base model. Probe = probability of the target among the candidate animal names "
         "for the 'favourite animal' questions. 0 mentions in n answers has a Wilson 95% upper bound of "
         "3.84/(n + 3.84) (0.037 for n = 100): a zero rules out only rates above that.", "",
         "| student | condition | mentions | rate [95% CI] | p vs base | probe P(target) |"
         + (" target-language share |" if language else "") + "".join(f" {m.name} |" for m in extra),
         "|---|---|---|---|---|---|" + ("---|" if language else "") + "---|" * len(extra)]
    for name, ev in evals.items():
        for cond, c in ev["conditions"].items():
            m = c.get("mention")
            p = ev.get("vs_base", {}).get(cond, {}).get("mention_p_greater")
            probe = (c.get("probe") or {}).get("p_target")
            mtxt = (f"{m['k']}/{m['n']} | {m['rate']:.3f} [{m['ci'][0]:.3f}, {m['ci'][1]:.3f}]" if m
                    else "– | –")
            line = (f"| {name} | {cond} | {mtxt} | {'–' if p is None else f'{p:.3g}'} | "
                    f"{'–' if probe is None else f'{probe:.3f}'} |")
            if language:
                lg = c.get("language")
                line += (f" {lg['mean_share']:.3f} [{lg['ci'][0]:.3f}, {lg['ci'][1]:.3f}] |" if lg else " – |")
            line += "".join(f" {m.summary(c[m.name]) if isinstance(c.get(m.name), dict) else '–'} |" for m in extra)
            L.append(line)
    if has_fig:
        L += ["", "![mention rates](mention.png)"]
    return L + [""]


def _trait_dirs(root: Path) -> dict[str, Path]:
    tdir = root / "traits"
    if not tdir.is_dir():
        return {}
    return {p.name: p for p in sorted(tdir.iterdir()) if p.is_dir() and (p / "students").is_dir()}


def write_run_report(root: str | Path) -> dict[str, Any]:
    """Regenerate every report and figure of a finished run from its JSON (``lls report --run ROOT``).

    Single-trait run: :func:`write_report` on the folder. Many-trait run: :func:`write_report` on every
    ``traits/<name>/`` that has correlate output, then :func:`write_many_trait_report`. Returns
    ``{"reports": [...], "figures": [...]}`` (paths relative to ``root``).
    """
    from lls_common.errors import write_failure

    root = Path(root)
    if not (root / "config.json").exists():  # never a report from a partial configuration
        from empirical.report.table1 import load_run

        load_run(root)  # a folder with no results at all says so first
        raise LLSError(f"{root / 'config.json'}: missing, so the report would lack the run's settings; restore it "
                       "(re-running `lls experiment` with the run's config and out rewrites it)")
    config = read_run_json(root / "config.json")
    traits = _trait_dirs(root)
    for folder in [root, *traits.values()]:
        check_report_outputs(folder)
    try:
        if not traits:
            out = write_report(root, config_view(config))
            return {"reports": ["report.md"], "figures": out["figures"]}
        reports, figures = [], []
        for name, tdir in traits.items():
            if any((tdir / "students").glob("*/correlate.json")):
                out = write_report(tdir, config_view(config, name))
                reports.append(f"traits/{name}/report.md")
                figures += [f"traits/{name}/{f}" for f in out["figures"]]
        out = write_many_trait_report(root)
    except OSError as exc:  # no space, a read-only folder: the earlier files are intact (atomic writes)
        raise write_failure(exc, exc.filename or root / "report.md") from None
    return {"reports": reports + out["reports"], "figures": figures + out["figures"]}


def _specificity(root: Path, run: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The trait-specificity measurement of a many-trait run (written beside the report), or None and the
    reason it cannot be measured yet (fewer than 2 traits, a student not finished for every trait)."""
    from empirical.report.specificity import write_specificity

    if len(run.traits) < 2:
        return None, "the run has fewer than 2 traits"
    try:
        return write_specificity(root), None
    except LLSError as exc:  # a partial run: the report still shows what is there
        return None, str(exc)


#: The files a report writes into a run (or trait) folder, besides ``trajectory-<student>.png``.
REPORT_FILES = ("report.md", "summary.json", "table1.json", "table1.png", "fig19.png", "mention.png",
                "specificity.json")


def check_report_outputs(folder: Path) -> None:
    """Refuse, before anything is written, a report output that is a folder, or a folder where nothing can be
    created (read-only)."""
    from lls_common.io import _can_create_in

    for p in [folder / n for n in REPORT_FILES] + sorted(folder.glob("trajectory-*.png")) \
            + sorted(folder.glob("specificity-*.png")):
        if p.is_dir():
            raise LLSError(f"{p}: is a folder where the report writes a file; move it away and run again")
    if not _can_create_in(folder):
        raise LLSError(f"{folder}: not writable; make it writable (the report is written there) and run again")


def write_many_trait_report(root: str | Path) -> dict[str, Any]:
    """The run-level outputs of a many-trait run (``traits/<name>/students/<s>/correlate.json``): Table 1 (one
    row per student, one column per trait; ``table1.png``), the Figure-19 view (``fig19.png``), one trajectory
    figure per student with a panel per trait (``trajectory-<student>.png``), ``table1.json`` and ``report.md``
    at ``root``. Traits without a ``correlate.json`` yet are left out. Reads JSON only."""
    from empirical.report.figures import fig19_figure, table1_grid_figure, trajectory_figure
    from empirical.report.specificity import specificity_markdown
    from empirical.report.table1 import fig19, fig19_markdown, load_run, seeds_markdown, table1, table1_markdown
    from lls_common import figstyle
    from lls_common.io import atomic_write_json, atomic_write_text

    root = Path(root)
    config = read_run_json(root / "config.json")
    run = load_run(root)
    tab, f19 = table1(run), fig19(run)
    spec, spec_missing = _specificity(root, run)
    for row in tab["rows"]:
        st = (spec or {}).get("students", {}).get(row["student"])
        row["independence"] = None if st is None else {k: st["cells"][k] for k in ("n_eff", "K", "control_shared")}
    figstyle.save(table1_grid_figure(tab), root / "table1.png")
    figures = ["table1.png"]
    if f19:
        figstyle.save(fig19_figure(f19), root / "fig19.png")
        figures.append("fig19.png")
    for s in run.students:
        by_trait = {t: run.correlate[(t, s)] for t in run.traits if (t, s) in run.correlate}
        figstyle.save(trajectory_figure(by_trait=by_trait, student=s), root / f"trajectory-{s}.png")
        figures.append(f"trajectory-{s}.png")
    if spec is not None:
        figures += list(spec["files"]["figures"].values())
    atomic_write_json(root / "table1.json", {"table1": tab, "fig19": f19})
    teacher = config.get("teacher", {})
    teacher = teacher.get("model") if isinstance(teacher, dict) else teacher
    n_random = int((config.get("select") or {}).get("random_controls") or 1)
    L = [f"# LLS experiment `{config.get('name', root.name)}`: {len(run.traits)} traits × {len(run.students)} "
         "students", "",
         f"Teacher `{teacher}`; students " + ", ".join(f"`{s}`" for s in run.students) + "; traits "
         + ", ".join(f"[{t}](traits/{t}/report.md)" for t in run.traits) + ".", "",
         "## Table 1", "",
         "Cell: held-out Pearson r of the reference with z_M for the LLS-trained student [95% bootstrap CI], the "
         "random-subset control student (" + ("one random subset serves" if n_random <= 1 else
                                              f"the same {n_random} random subsets, each its own student, serve")
         + " every trait), the paired LLS − random "
         "difference [95% CI], and the paper's value (OLMo2-1B-Instruct student; no CI reported). Reference r = "
         "z_T (the teacher's shift) for a student other than the teacher, z_s (= z_T) for the teacher's own model.",
         ""]
    L += table1_markdown(tab)
    L += ["", "![Table 1](table1.png)", ""]
    seeds = seeds_markdown(tab)
    L += seeds + ([""] if seeds else [])
    L += ["## Figure 19 view", "",
          "Each student's 2K margin vectors (K traits × {fine-tuned z_M, reference r}), scaled to unit length, on "
          "their top-2 singular vectors; the angle between a trait's two vectors is measured in the full space "
          "(90° = unrelated directions).", ""]
    L += fig19_markdown(f19) if f19 else ["(no trait has a non-zero z_M yet)"]
    L += ["", "![Figure 19 view](fig19.png)" if f19 else "", "", "## Trajectories", ""]
    L += [f"![trajectory {s}](trajectory-{s}.png)" for s in run.students]
    L += [""] + (specificity_markdown(spec, spec["files"]["figures"]) if spec is not None
                 else ["## Trait specificity", "", f"Not measured: {spec_missing}."])
    atomic_write_text(root / "report.md", "\n".join(L) + "\n")
    return {"reports": ["report.md"], "figures": figures}
