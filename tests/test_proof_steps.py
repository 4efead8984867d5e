"""Every encoded proof step passes with the paper's constants (except step 5a, which fails), and
flips its verdict when a constant is made slightly stronger — so the checker is able to fail."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sympy as sp

from lls_theory.proof import steps as S
from lls_theory.proof.certify import poly_nonneg

PAPER = S.Constants()

# (step function, {constant: stronger value}) — a stronger claim must FAIL
PERTURB = [
    (S.step_c3_gap, {"gap": 3.9}),
    (S.step_c3_lipschitz, {"lip": 0.99}),
    (S.step_c3_transfer, {"transfer": 7.9}),
    (S.step_c4_gain, {"c4_gain": 0.28}),
    (S.step_c4_count, {"c4_count": 4.9}),
    (S.step_c5a, {"c5_count": 4.9}),
    (S.step_c5b, {"c5_count": 5.1}),
    (S.step_c5c_split, {"c5_coef": 0.9}),
    (S.step_c5c_half, {"c5_half": 0.56}),
    (S.step_c5c_half, {"c5_delta": 79}),  # 80 is exactly enough: the paper has slack here
    (S.step_c5c_final, {"c5_final": 1.9}),
    (S.step_t1, {"transfer": 7.9}),
    (S.step_t2, {"K": 19}),
    (S.step_t2, {"band": 0.19}),
    (S.step_t3_band, {"cprime": 0.45}),
    (S.step_t3_delta, {"delta_cond": 300}),
    (S.step_t3_final, {"step3_final": 3}),
    (S.step_t4, {"gap": 3.9}),
    (S.step_t5a, {"step5_rel": 20}),  # fails already as written; see test below for the flip to pass
    (S.step_t5b, {"delta_cond": 20}),
    (S.step_t6_lemma, {"cos_p": 1}),
    (S.step_t6_lemma, {"cos_p": 1.5}),
    (S.step_t6_final, {"final": 6}),
    (S.step_t6_final, {"step3_final": 8}),
]


@pytest.fixture(scope="module")
def paper_results():
    return {r.id: r for r in S.check_steps(PAPER)}


def test_paper_verdicts(paper_results):
    failing = {i for i, r in paper_results.items() if r.status == "fail"}
    assert failing == {"T5a"}
    for r in paper_results.values():
        assert r.status in {"pass", "fail"} and r.evidence
        assert (r.counterexample is None) == (r.status == "pass")


@pytest.mark.parametrize("func,change", PERTURB, ids=[f"{f.__name__}-{list(c)[0]}={list(c.values())[0]}" for f, c in PERTURB])
def test_stronger_constant_flips_to_fail(func, change):
    res = func(replace(PAPER, **change))
    assert res.status == "fail", res
    assert res.counterexample, res


def test_t5a_counterexample_is_real(paper_results):
    """The paper's step (5a) is false at C=1, m=1, ε=1, α=21, z_s=21, y_u=17 (hypotheses hold)."""
    cex = paper_results["T5a"].counterexample
    C, eps, alpha, zs, yu = cex["C"], cex["eps"], cex["alpha"], cex["z_s"], cex["y_u"]
    assert C >= 1 and alpha > 20 * C**2 * eps and alpha <= zs <= C * alpha and abs(yu - zs) <= 4 * eps
    assert abs(yu - zs) > abs(yu) / (20 * C**2)


def test_t5a_flips_to_pass_with_k84():
    assert S.step_t5a(replace(PAPER, K=84)).status == "pass"
    assert S.step_t5a(replace(PAPER, K=83.9)).status == "fail"


def test_weaker_constants_still_pass():
    weak = replace(PAPER, c4_gain=0.1, c5_half=0.4, final=12, step3_final=5, K=25, band=0.2)
    for f in (S.step_c4_gain, S.step_c5c_half, S.step_t6_final, S.step_t3_final, S.step_t2):
        assert f(weak).status == "pass", f.__name__


def test_corrected_theorem_is_certified_and_tight():
    c = S.corrected_theorem()
    assert c["found"] and c["certified"] and c["route"] == "repaired"
    assert c["K"] == 20 and c["strengthening_needed"] is None  # the statement survives; only the proof changes
    assert c["K_repaired_route"] == 13 and c["K_sharp_route"] == 22 and c["K_paper_route"] == 34
    paper = c["paper_route"]
    lo, hi = paper["K_bracket"]
    assert 33 < lo < hi < 34 and hi - lo <= 0.01
    assert paper["certificates"]["fails_below"]["counterexample"] is not None
    lo, hi = c["sharp_route"]["K_bracket"]
    assert 21 < lo < hi < 22 and c["sharp_route"]["fails_below"]["at"]["C"] == 1.0
    lo, hi = c["repaired_route"]["K_bracket"]
    assert 12 < lo < hi < 13 and c["repaired_route"]["fails_below"]["at"]["C"] == 1.0
    assert c["K_step5_as_written"] == 84


def test_sharp_route_flips_at_its_threshold():
    assert S._sharp_certify(22)[0]
    ok, _, where = S._sharp_certify(21)
    assert not ok and where["G"] < 0
    assert not S._sharp_certify(20)[0]  # the paper's constant is not reached by this route


def test_repaired_route_flips():
    """The repaired route certifies the paper's K = 20 and 1/(10C^1.5); a stronger claim must fail."""
    assert S._sharp_certify(20, route="repaired")[0]
    ok, _, where = S._sharp_certify(12, route="repaired")  # weaker hypothesis α > 12C²ε: route fails at C = 1
    assert not ok and where["C"] == 1.0 and where["G"] < 0
    assert S._sharp_certify(20, route="repaired", final=2.8)[0]
    assert not S._sharp_certify(20, route="repaired", final=2.6)[0]  # Corr ≥ 1/(2.6C^1.5) is out of its reach


def test_repaired_theta0_bound_numerically():
    """cos(y_u, y_v) ≥ h/(C_K√C) (re-run Lemma C.5) on random instances: y_u in the band, v with few negatives."""
    import numpy as np
    from lls_theory.wellbehaved import wb_ratio
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = int(rng.integers(5, 40))
        yu = rng.uniform(1.0, rng.uniform(1.0, 3.0), m)
        CK = yu.max() / yu.min()
        yv = np.abs(rng.standard_normal(m)) * rng.uniform(0.5, 2.0)
        n_neg = int(rng.integers(0, max(1, m // 10) + 1))
        yv[:n_neg] *= -rng.uniform(0, 3.0)
        C = max(float(wb_ratio(np.eye(m), yv)), 1.0)  # C for the single direction y_v (what step (b) uses)
        delta = max(n_neg / (5 * m), 1e-12)            # smallest Δ' with |A| ≤ 5Δ'm
        h = 1 - (1 + CK) * np.sqrt(5 * delta * C)
        if h > 0:
            cos = yu @ yv / (np.linalg.norm(yu) * np.linalg.norm(yv))
            assert cos >= h / (CK * np.sqrt(C)) - 1e-12


def test_poly_nonneg_exact_cases():
    x = sp.Symbol("x")
    assert poly_nonneg((x - 2) ** 2, x, 0).ok  # double root inside the range
    bad = poly_nonneg((x - 2) * (x - 3), x, 0)
    assert not bad.ok and 2 < bad.counterexample["x"] < 3
    assert poly_nonneg(1 - x, x, 0, 1).ok and not poly_nonneg(1 - x, x, 0, 2).ok
    assert not poly_nonneg(x**3 - 100 * x, x, 1).ok  # negative on (1, 10)


def test_t6_lemma_unrefuted_form_is_not_called_pass():
    """(c − 2δ − δ²)/(1+δ) is not what was derived; the checker must not report it as pass."""
    assert S.step_t6_lemma(replace(PAPER, cos_k=1)).status != "pass"
