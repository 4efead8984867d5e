"""Low logit rank on real models (the paper's Appendix C.1) and the commands built on it.

* :mod:`empirical.lowrank.logprob_matrix` -- log-probability matrices ``X_M[s, j] = log Pr_M[r_j | s, p_j]``.
* :mod:`empirical.lowrank.lowrank` -- settings, inputs and analyses of ``lls spectrum | angles | pair-check |
  detect``.
* :mod:`empirical.lowrank.pair_check` -- the pre-training transfer check of a teacher/student pair.
* :mod:`empirical.lowrank.detect` -- inverse LLS: which system-prompt trait a preference dataset carries.
* :mod:`empirical.lowrank.detect_validation` -- ``lls detect-validate`` on subsets with a planted trait.
* :mod:`empirical.lowrank.lowrank_figures` -- the figures, drawn from the JSON records.
* :mod:`empirical.lowrank.lowrank_replot` -- ``python -m empirical.lowrank.lowrank_replot``: redraw every figure.
* :mod:`empirical.lowrank.lowrank_report` -- ``python -m empirical.lowrank.lowrank_report``: the write-up.

May import: lls_common, lls_theory, ground, empirical.engine, empirical.stages.
"""
