"""``lls spectrum | angles | pair-check | detect | detect-validate``: low logit rank on real models (paper's
Appendix C.1). Each handler is settings -> run -> write; the work is in :mod:`empirical.lowrank.lowrank` and
:mod:`empirical.lowrank.detect_validation`, the figures in :mod:`empirical.lowrank.lowrank_figures`.

Cheap to import: the settings modules import numpy only; torch and transformers load inside the runs.
"""

from __future__ import annotations

import argparse
from typing import Any


def _config(cls: type, args: argparse.Namespace) -> Any:
    """The command's settings from its flags (validated before any data or model is touched)."""
    from lls_common.config import from_namespace

    return from_namespace(cls, args, out=args.out, seed=args.seed)


def _finish(result: Any, out: Any, as_json: bool) -> int:
    """Write the result into ``out`` and print its summary (``--json``) or its text."""
    from lls_common.io import RunDir, emit_summary

    run = RunDir(out)
    result.write(run)
    emit_summary({**result.summary(), "out": str(run.root)}, as_json, f"{result.text()}\nResults in {run.root}")
    return 0


def _handler(module: str, config: str, run: str):
    """The handler of one command: ``module.config`` settings from the flags -> models resolved
    (:func:`empirical.lowrank.lowrank.check_model_specs`) -> ``module.run`` -> write."""

    def handle(args: argparse.Namespace) -> int:
        import importlib

        from empirical.lowrank.lowrank import check_model_specs

        mod = importlib.import_module(module)
        cfg = _config(getattr(mod, config), args)
        check_model_specs(cfg)
        return _finish(getattr(mod, run)(cfg), cfg.out, args.json)

    return handle


_run_spectrum = _handler("empirical.lowrank.lowrank", "SpectrumConfig", "run_spectrum")
_run_angles = _handler("empirical.lowrank.lowrank", "AnglesConfig", "run_angles")
_run_pair_check = _handler("empirical.lowrank.lowrank", "PairCheckConfig", "run_pair_check")
_run_detect = _handler("empirical.lowrank.lowrank", "DetectConfig", "run_detect")
_run_detect_validate = _handler("empirical.lowrank.detect_validation", "DetectValidateConfig", "run_detect_validation")


# ----------------------------------------------------------------------------------------------- register
def _bounds(p: argparse.ArgumentParser, flag: str, help_: str) -> None:
    p.add_argument(flag, type=int, nargs=2, default=argparse.SUPPRESS, metavar=("LO", "HI"), help=help_)


def _parser(sub: Any, name: str, cls: type, default_out: str, bounds: tuple[str, ...], **kw: Any):
    from lls_cli.args import add_output_args
    from lls_common.config import add_arguments

    p = sub.add_parser(name, **kw)
    add_arguments(p, cls)
    helps = {"--prompt-tokens": "prompt length bounds, tokens (default 8 64)",
             "--response-tokens": "response length bounds, tokens (default 8 64)",
             "--rank-window": "1-based inclusive ranks of the power-law fit (default 2 .. 0.75 min(S, P))"}
    for flag in bounds:
        _bounds(p, flag, helps[flag])
    add_output_args(p, default_out=default_out)
    return p


def register(sub: Any) -> None:
    from empirical.lowrank import detect_validation as dv
    from empirical.lowrank import lowrank as lr

    lib = ("--prompt-tokens", "--response-tokens", "--rank-window")
    _parser(sub, "spectrum", lr.SpectrumConfig, "lls-spectrum", lib,
            help="singular-value spectrum of a log-prob matrix X_M (power-law slope)",
            description="X_M[s, (p, r)] = log Pr_M[r|s,p] over a system-prompt library x prompt-response pairs; "
                        "singular values on log-log axes and the fitted power-law slope.").set_defaults(func=_run_spectrum)
    _parser(sub, "angles", lr.AnglesConfig, "lls-angles", lib,
            help="principal angles between two models' top-r row subspaces (Fig. 18)",
            description="Same system prompts (rows) and the same (p, r) texts (columns, selected with the first "
                        "model's tokenizer) for both models; cosines vs a random baseline.").set_defaults(func=_run_angles)
    _parser(sub, "pair-check", lr.PairCheckConfig, "lls-pair-check", ("--prompt-tokens",),
            help="pre-training agreement of teacher and student system-prompt margin shifts",
            description="Correlation of teacher and student system-prompt margin shifts on held-out pairs "
                        "(corr(z_T, z_s) before training: a heuristic screen, not the post-training transfer "
                        "corr(z_T, z_M)), selection agreement, and subspace overlap of their X matrices. Needs at "
                        "least one system prompt: --system-prompt TEXT (repeatable) and/or --system-prompts FILE. "
                        "Warns when the pairs are too few for the verdict, and when teacher and student are the "
                        "same model (r = 1 by construction). Columns of the table: "
                        + lr.PairCheckResult.COLUMNS + ".").set_defaults(func=_run_pair_check)
    _parser(sub, "detect", lr.DetectConfig, "lls-detect", ("--prompt-tokens",),
            help="inverse LLS: which candidate system-prompt trait does a dataset carry?",
            description="For each candidate, the dataset's mean normalised LLS weight (is a trait planted?) and its "
                        "candidate-specific part, the residual after removing the candidates' common factor (which "
                        "one? ranks by this), each against random same-size subsets of a reference dataset (z, "
                        "Monte-Carlo p, Holm correction). Warns (and records it) when the samples are too small for "
                        "the claim.").set_defaults(func=_run_detect)
    _parser(sub, "detect-validate", dv.DetectValidateConfig, "results/lowrank", (),
            help="validate lls detect on LLS subsets with a planted animal (cached matrices)",
            description="LLS subsets built with the teacher for each of the 10 animals, detected by the teacher and "
                        "by a second model, against random subsets of the same pool and of a disjoint reference "
                        "half; random subsets as the negative control. Writes detect-validation.json, the demo "
                        "subsets and detect-validation.png.").set_defaults(func=_run_detect_validate)
