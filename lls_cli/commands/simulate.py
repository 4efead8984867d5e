"""`lls demo` and `lls simulate`: the synthetic log-linear simulator's commands (cheap to import)."""

from __future__ import annotations

from lls_cli.args import add_output_args, positive_int

__all__ = ["register"]


def register(sub) -> None:
    p = sub.add_parser("demo", help="default simulator suite: same/cross teacher, controls, theorem check",
                       description="Run the default LLS simulation suite (<60 s) and check Theorem C.1.")
    add_output_args(p, default_out="lls-demo")
    p.add_argument("--trials", type=positive_int, default=4, help="seeds per setting (default 4)")
    _threads_arg(p)
    p.set_defaults(func=_run_demo)
    q = sub.add_parser("simulate", help="resumable parameter sweep from a TOML config",
                       description="Sweep simulator parameters from a TOML config (resumable).")
    q.add_argument("--config", required=True, help="sweep config (TOML)")
    add_output_args(q, default_out="lls-sim")
    _threads_arg(q)
    q.set_defaults(func=_run_simulate)


def _threads_arg(p) -> None:
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="BLAS threads of the simulator (default: 1, or what OMP_NUM_THREADS / MKL_NUM_THREADS / "
                        "OPENBLAS_NUM_THREADS say; simulations.threads)")


def _run_demo(args) -> int:
    from simulations.sweep import run_demo

    return run_demo(args.out, seed=args.seed, n_trials=args.trials, as_json=args.json,
                    threads="auto" if args.threads is None else args.threads)


def _run_simulate(args) -> int:
    from simulations.sweep import load_sweep_config, run_sweep

    spec = load_sweep_config(args.config)
    return run_sweep(spec, args.out, seed=args.seed, as_json=args.json,
                     threads="auto" if args.threads is None else args.threads)
