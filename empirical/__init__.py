"""Real-model measurements of LLS: scoring, selection, DPO training, correlation, evaluation, experiments.

The package is split by role; each subpackage's docstring says what it holds and ends with a ``May import:``
line naming the parts of the project it may import (tests/test_architecture.py checks the import graph
against those lines). From the bottom up:

* ground -- the modules every part may read: ``empirical.config`` (the settings), ``empirical.text`` (rules for
  user text), ``empirical.language`` (language codes), ``empirical.systems`` (the prompt library). They import
  only ``lls_common`` and each other.
* ``empirical.engine`` -- the model engine: loading, chat rendering, batching, log-prob scoring, threads.
* ``empirical.metrics`` -- the behaviour metrics of ``lls eval``.
* ``empirical.stages`` -- the pipeline stages: pair data, score/select, DPO training, correlate, evaluate.
* ``empirical.lowrank`` -- log-probability matrices and the low-rank commands (spectrum, angles, pair-check,
  detect, detect-validate) with their figures and write-up.
* ``empirical.report`` -- a run folder's report, tables and figures, from its JSON alone.
* ``empirical.orchestration`` -- ``lls experiment`` (units, parallel execution, cost plan) and ``lls split``.

``empirical.build_notebook`` writes notebooks/03-empirical.ipynb; it imports no other module of the package.
"""
