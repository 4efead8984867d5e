"""Chaining the stages into runs.

* :mod:`empirical.orchestration.experiment` -- ``lls experiment``: the whole pipeline for one or many traits
  under one run folder, as resumable units (and the split rule of its ``split`` stage).
* :mod:`empirical.orchestration.parallel` -- the units in parallel: worker processes, one unit per GPU, cluster
  jobs.
* :mod:`empirical.orchestration.plan` -- ``lls experiment --plan``: the units, which are done, the time left.
* :mod:`empirical.orchestration.split` -- ``lls split``: the experiment's split rule as a command of its own
  (it calls :func:`empirical.orchestration.experiment.split_pairs`, so it sits here and not among the stages).

Nothing else in the package imports this subpackage.

May import: lls_common, lls_theory, ground, empirical.engine, empirical.metrics, empirical.stages,
empirical.report.
"""
