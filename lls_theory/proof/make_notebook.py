"""Builds notebooks/02-proof-check.ipynb: ``python -m lls_theory.proof.make_notebook [PATH] [--execute]``
(from the repo root; ``--execute`` runs it, about 30 s, and saves the outputs).

nbformat is imported inside :func:`build` so importing this module costs nothing.
"""

from __future__ import annotations

import sys


def build(path: str = "notebooks/02-proof-check.ipynb", execute: bool = False) -> None:
    """Write the notebook to ``path`` (and run it when ``execute``): the introduction, the step table, the
    failing step and its repair, and the numerical adversary (:func:`_cells`)."""
    from lls_common.notebook import write_notebook

    write_notebook([(kind, _unindent(src)) for kind, src in _cells()], path, execute=execute, timeout=600)


def _md(text: str) -> tuple[str, str]:
    return ("md", text)


def _code(text: str) -> tuple[str, str]:
    return ("code", text)


def _unindent(src: str) -> str:
    """The cell sources below are written indented inside their functions: drop 4 spaces from every line but
    the first."""
    return "\n".join([src.split("\n")[0]] + [ln[4:] if ln.startswith("    ") else ln for ln in src.split("\n")[1:]])


def _cells() -> list[tuple[str, str]]:
    """Every cell of the notebook, in order, as ``(kind, indented source)``."""
    return _intro_cells() + _table_cells() + _repair_cells() + _adversary_cells()


def _intro_cells() -> list[tuple[str, str]]:
    """What is checked and how, and the call that runs the check."""
    return [
        _md("""# 02 — Checking the proof of Theorem C.1, step by step

    Theorem C.1 (lls-notes §4): if the selected pairs have teacher margins α ≤ z_s(i) ≤ Cα, α > 20C²ε, the
    difference vectors φ_i are C-well-behaved and Δ + 8βε ≤ 1/(10C)³, then every Δ-approximate minimiser M of the
    DPO loss has Corr(z_s, z_M) ≥ 1/(10 C^1.5).

    `lls_theory.proof` encodes every step of the paper's proof (Prop C.3, Lemma C.4, Lemma C.5 (a)–(c), proof
    steps (1)–(6)) as a scalar inequality that must hold for *all* parameters the hypotheses allow at that point,
    and decides it exactly: constant comparisons over ℚ, sympy identities, mpmath interval bounds, and one-variable
    polynomials shown ≥ 0 on C ≥ 1 (or on y = C^(-1/2) ∈ (0, 1]) by non-negative coefficients after a shift or
    by exact real-root isolation. A failing step comes with parameter values at which the inequality is false.
    The same report is produced by `lls check-proof --out DIR`.

    **What is machine-checked and what is not.** The scalar inequalities are machine-checked. The reductions
    from the vector statements of the proof (about m-dimensional margin vectors, norms and cosines) to those
    scalar inequalities — Cauchy–Schwarz, the triangle inequality, and the worst-case (monotonicity) arguments
    that remove the unbounded parameters — are written by hand into each step's encoding and stated in its
    evidence; they are not derived by the checker. The vector lemmas used there are additionally property-tested
    (including constructed worst cases, e.g. for the cosine-perturbation lemma of step (6)), which is evidence,
    not proof. So this is a machine check of the proof's arithmetic, not a formal proof."""),
        _code("""from lls_theory.proof import run_proof_check, format_table
    from lls_theory.proof.adversary import AdversaryConfig

    report = run_proof_check(seed=0, adversary_cfg=AdversaryConfig(n_instances=12))
    print(format_table(report, width=110))"""),
    ]


def _table_cells() -> list[tuple[str, str]]:
    """The per-step report as a Markdown table."""
    return [
        _md("""## The table"""),
        _code("""from IPython.display import Markdown

    def esc(s):
        return str(s).replace("|", "\\\\|")

    rows = ["| step | status | claim | evidence |", "|---|---|---|---|"]
    for s in report["steps"]:
        ev = s["evidence"] + ("" if s["counterexample"] is None else f" **Counterexample:** {s['counterexample']}")
        rows.append(f"| {s['id']} | **{s['status']}** | {esc(s['claim'])} | {esc(ev)} |")
    Markdown("\\n".join(rows))"""),
    ]


def _repair_cells() -> list[tuple[str, str]]:
    """Step (5a), its counterexample and the three certified repairs."""
    return [
        _md("""## What fails, and the repair

    Only step (5a) fails: from α > 20C²ε the proof has ‖y_u − z_s‖ ≤ 4ε√m and ‖y_u‖ ≥ (α − 4ε)√m, and these do
    not give ‖y_u − z_s‖ ≤ ‖y_u‖/(20C²) (counterexample: C = 1, m = 1, ε = 1, α = z_s = 21, y_u = 17). Taken
    literally, step (5a) needs α ≥ (80C² + 4)ε, i.e. K = 84 in α > K·C²ε. Three certified repairs:

    * keeping the paper's proof structure (steps 2–4 unchanged, the (1+δ)² cosine lemma, (5a) re-derived as
      δ_u = 4/(KC² − 4)), the final inequality holds for every C ≥ 1 iff K ≥ K* ≈ 33.58 → α > 34C²ε (exact polynomials);
    * a sharper route (Lemma C.5 with the actual band ratio C_K = (C + 4/(KC²))/(1 − 4/(KC²)), angles added on the
      sphere instead of the (1+δ)² lemma) needs K ≥ ≈ 21.51 → α > 22C²ε (interval arithmetic);
    * re-running Lemma C.5 (a)–(c) inside the theorem with the actual Δ' ≤ 1/(1000C³) (not 1/(100C'³)) and the
      well-behavedness constant C (not C') for y_v gives cos(y_u, y_v) ≥ (1 − (1 + C_K)/(√200·C))/(C_K√C);
      with the angle steps this certifies **the paper's own hypothesis α > 20C²ε** (even α > 13C²ε).

    So the theorem is true as stated; only its proof needs the repair."""),
        _code("""c = report["corrected"]
    print(c["statement"])
    print("certified:", c["certified"], "| route:", c["route"], "| its threshold K* in", c["K_bracket"])
    print("K per route: repaired", c["K_repaired_route"], "| sharp", c["K_sharp_route"], "| paper structure",
          c["K_paper_route"], "| step (5a) as written needs K >=", c["K_step5_as_written"])
    for line in c["proof_changes"]:
        print(" -", line)"""),
    ]


def _adversary_cells() -> list[tuple[str, str]]:
    """The numerical adversary's search for instances that break the conclusion."""
    return [
        _md("""## Is the conclusion itself in doubt? A numerical adversary

    Small instances (d = 2, 3; m ≤ 10) with exactly computed well-behavedness constant, ε, β, Δ at the edge of the
    hypotheses, and adversarial ε-errors on both margin vectors; the Δ-approximate minimiser is chosen to minimise
    the cosine. `ratio` = min Corr found / guaranteed 1/(10C^1.5)."""),
        _code("""a = report["adversary"]
    print(f"{a['n_valid']} valid instances, {a['n_violations']} violations, min ratio {a['min_ratio']:.2f}")
    print("worst instance:", {k: round(v, 4) if isinstance(v, float) else v for k, v in a['worst'].items()})"""),
    ]


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--execute"]
    build(*args[:1], execute="--execute" in sys.argv[1:])
