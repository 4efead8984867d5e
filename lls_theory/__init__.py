"""The mathematics of Logit-Linear Selection (numpy only; no torch).

Modules: margins (ρ, DPO loss), selection (Algorithm 1), representation (Def. 2.1, Fact 2.1),
wellbehaved (Def. C.3 bounds), theorem (Theorem C.1 hypotheses and bound), stats (correlations,
bootstrap, permutation), lowrank (spectra, principal angles), proof (machine-checked scalar inequalities
of each proof step; the vector-to-scalar reductions are hand-encoded).
"""

from lls_theory.margins import dpo_loss, dpo_loss_grad, log_sigmoid, margin
from lls_theory.selection import Selection, lls_select, lls_weights, select_top
from lls_theory.stats import (bootstrap_ci, correlation_report, cosine, difference_pvalue, paired_difference,
                              pearson, permutation_pvalue, spearman, wilson_interval)
from lls_theory.theorem import check_hypotheses, guaranteed_correlation, proxy_loss
from lls_theory.wellbehaved import band_constant, well_behaved_bounds, wb_ratio

__all__ = [
    "margin", "dpo_loss", "dpo_loss_grad", "log_sigmoid",
    "lls_weights", "select_top", "lls_select", "Selection",
    "cosine", "pearson", "spearman", "bootstrap_ci", "permutation_pvalue", "correlation_report",
    "wilson_interval", "difference_pvalue", "paired_difference",
    "check_hypotheses", "guaranteed_correlation", "proxy_loss",
    "well_behaved_bounds", "wb_ratio", "band_constant",
]
