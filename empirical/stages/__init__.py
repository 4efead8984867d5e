"""The pipeline stages: the steps of ``lls experiment``, each also a command (``lls score | select | train | ...``).

* :mod:`empirical.stages.data` -- the one reader of pair files, record conversion, the paper's filters.
* :mod:`empirical.stages.build` -- score a pair file under a teacher, then select the LLS subset.
* :mod:`empirical.stages.train` -- DPO training of a student (TRL + PEFT LoRA), resumable.
* :mod:`empirical.stages.packed_dpo` -- DPO's policy forward in the scoring engine's packed form.
* :mod:`empirical.stages.correlate` -- the paper's Table 1 protocol (student margins vs the prompt's).
* :mod:`empirical.stages.evaluate` -- behaviour evaluation of a student by the enabled metrics.

A stage reads its settings from ground (``empirical.config``) and never the orchestration that chains them.

May import: lls_common, lls_theory, ground, empirical.engine, empirical.metrics.
"""
