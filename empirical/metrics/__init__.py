"""Behaviour metrics of ``lls eval`` / the experiment's eval stage: one module per metric, one registry.

A metric is a :class:`Metric` (:mod:`empirical.metrics.base`): a ``name`` (its key in every condition of
``eval.json``), what it ``needs`` (``"logprobs"``: the loaded model and tokenizer; ``"answers"``: the sampled
answers, drawn once per condition and shared by every metric that needs them), ``enabled(options)`` (on or off
for these eval options), ``measure(condition)`` (a JSON-able dict) and ``summary(result)`` (one line for
reports). Optional: ``warnings(n_answers)`` (what ``n_answers`` per condition is too few for) and
``versus_base(result, base)`` (entries of ``eval.json``'s ``vs_base``).

The built-in metrics, in the order they are measured and written:

| name | module | needs | on when |
|---|---|---|---|
| ``probe`` | :mod:`empirical.metrics.probe` | logprobs | ``eval.probe`` |
| ``mention`` | :mod:`empirical.metrics.mention` | answers | ``eval.mention`` |
| ``language`` | :mod:`empirical.metrics.language` | answers | ``eval.mention`` and a target language |

:func:`empirical.stages.evaluate.evaluate_conditions` loops over :func:`enabled` (or the names it is given) and
calls nothing metric-specific. Add a metric: a module here defining a :class:`Metric` subclass and
``METRIC = <instance>``, and its module in :func:`_register_builtin` below (or :func:`register` an instance
from anywhere). ARCHITECTURE.md, "Add a behaviour metric", has the recipe.

May import: lls_common, lls_theory, ground, empirical.engine.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from empirical.metrics.base import NEEDS, Condition, Metric

__all__ = ["Condition", "Metric", "METRICS", "NEEDS", "BUILTIN", "register", "get", "enabled", "names", "measured",
           "switches"]

METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` to :data:`METRICS` (measured after the ones already there); returns it. A metric's name
    and what it needs are checked here, so a typo fails at import, not after a model loaded."""
    name, needs = getattr(metric, "name", None), getattr(metric, "needs", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a metric's name must be an identifier, got {name!r}")
    if name in METRICS or name in ("answers", "adapter", "device", "dtype", "system_prompt"):
        raise ValueError(f"metric name {name!r} is taken")
    if needs not in NEEDS:
        raise ValueError(f"metric {name}: needs must be one of {', '.join(NEEDS)}, got {needs!r}")
    METRICS[name] = metric
    return metric


def get(name: str) -> Metric:
    """The registered metric ``name`` (``KeyError`` naming the known ones)."""
    if name not in METRICS:
        raise KeyError(f"no behaviour metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]


def names() -> tuple[str, ...]:
    """Every registered metric's name, in measurement order."""
    return tuple(METRICS)


def enabled(options: Mapping[str, Any], only: Iterable[str] | None = None) -> list[Metric]:
    """The metrics to measure, in registry order: those named in ``only`` (every registered one when None)
    that are :meth:`Metric.enabled` for ``options``."""
    wanted = set(METRICS) if only is None else {get(n).name for n in only}
    return [m for n, m in METRICS.items() if n in wanted and m.enabled(options)]


def measured(record: Mapping[str, Any], skip: Iterable[str] = ()) -> list[tuple[Metric, Any]]:
    """``(metric, its result)`` for each registered metric recorded in one condition of ``eval.json``
    (``record``), in registry order, less the names in ``skip`` (the reports lay out :data:`BUILTIN` in
    columns of their own and list the rest by :meth:`Metric.summary`)."""
    skip = set(skip)
    return [(m, record[n]) for n, m in METRICS.items() if n not in skip and isinstance(record.get(n), Mapping)]


def switches(eval_config: Any) -> dict[str, bool]:
    """The on/off settings of the metrics beyond :data:`BUILTIN`: ``{name: eval_config.<name>}`` for each
    registered metric that has a field of its name in ``eval_config`` (:class:`empirical.config.EvalConfig`),
    handed to :func:`empirical.stages.evaluate.evaluate_conditions` as ``switches`` (empty today)."""
    return {n: getattr(eval_config, n) for n in METRICS if n not in BUILTIN and hasattr(eval_config, n)}


#: The metrics every report has columns for.
BUILTIN = ("probe", "mention", "language")


def _register_builtin() -> None:
    from empirical.metrics import language, mention, probe

    for module in (probe, mention, language):  # the order of eval.json's keys
        register(module.METRIC)


_register_builtin()
