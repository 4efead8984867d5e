"""Property tests of the step-6 cosine-perturbation bound; the adversary; the CLI JSON schema."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lls_theory.proof.adversary import AdversaryConfig, run_adversary
from lls_theory.proof.steps import cosine_perturbation_bound
from lls_theory.stats import cosine


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6), st.floats(0, 0.3), st.floats(0, 0.3), st.integers(0, 2**31 - 1))
def test_cosine_perturbation_bound_holds(n, dx, dy, seed):
    """Random perturbations inside the balls (any sign of the numerator)."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    ex, ey = rng.standard_normal(n), rng.standard_normal(n)
    a = x + dx * np.linalg.norm(x) * rng.random() * ex / np.linalg.norm(ex)
    b = y + dy * np.linalg.norm(y) * rng.random() * ey / np.linalg.norm(ey)
    assert cosine(a, b) >= cosine_perturbation_bound(cosine(x, y), dx, dy) - 1e-12


def _rot(v, t):
    c, s = np.cos(t), np.sin(t)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _worst_case(c, dx, dy):
    """The extremal (worst-case) pair in the plane: x = e1 and y at angle t = arccos c; a is the point of
    the ball ‖a − x‖ ≤ dx‖x‖ where it is tangent to the ray turned away from y by arcsin dx
    (a = cos θ_x · R(−θ_x) x, so ‖a − x‖ = sin θ_x = dx), b likewise turned away from x by arcsin dy.
    Then cos(a, b) = cos(t + arcsin dx + arcsin dy): no admissible pair has a smaller cosine. Past π the
    turns are shortened (a smaller turn θ still has ‖a − x‖ = sin θ ≤ dx) so that a, b are opposite."""
    t = math.acos(c)
    tx = min(math.asin(dx), math.pi - t)
    ty = min(math.asin(dy), math.pi - t - tx)
    x, y = np.array([1.0, 0.0]), np.array([math.cos(t), math.sin(t)])
    a = math.cos(tx) * _rot(x, -tx)
    b = math.cos(ty) * _rot(y, ty)
    return x, y, a, b, math.cos(t + tx + ty)


@settings(max_examples=300, deadline=None)
@given(st.floats(-1, 1), st.floats(0, 0.95), st.floats(0, 0.95), st.integers(2, 6), st.integers(0, 2**31 - 1))
def test_cosine_perturbation_bound_against_the_worst_case(c, dx, dy, n, seed):
    """Constructed worst-case perturbations (not random ones), embedded in R^n by a random isometry, in
    both regimes of the numerator c − dx − dy − dx·dy (a false bound such as c − (dx+dy)/2, or the
    (1+dx)(1+dy) denominator used with a negative numerator, fails here)."""
    x2, y2, a2, b2, worst = _worst_case(c, dx, dy)
    Qm, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    x, y, a, b = (Qm[:, :2] @ v for v in (x2, y2, a2, b2))
    assert np.linalg.norm(a - x) <= dx * np.linalg.norm(x) * (1 + 1e-12) + 1e-15
    assert np.linalg.norm(b - y) <= dy * np.linalg.norm(y) * (1 + 1e-12) + 1e-15
    assert cosine(x, y) == pytest.approx(c, abs=1e-12)
    if np.linalg.norm(a) > 1e-9 and np.linalg.norm(b) > 1e-9:
        assert cosine(a, b) == pytest.approx(worst, abs=1e-9)
    bound = cosine_perturbation_bound(c, dx, dy)
    assert -1.0 <= bound <= worst + 1e-12


def test_cosine_perturbation_bound_exact_values():
    assert cosine_perturbation_bound(0.5, 0.1, 0.1) == pytest.approx(0.29 / 1.21, rel=1e-14)
    assert cosine_perturbation_bound(0.5, 0.1, 0.2) == pytest.approx(0.18 / 1.32, rel=1e-14)
    assert cosine_perturbation_bound(-0.1, 0.05, 0.05) == pytest.approx(-0.2025 / 0.9025, rel=1e-14)
    assert cosine_perturbation_bound(-0.9, 0.2, 0.2) == -1.0  # −1.34 / 0.64 < −1
    assert cosine_perturbation_bound(0.9, 1.0, 0.0) == -1.0  # N = −0.1 < 0 and a may be 0
    assert cosine_perturbation_bound(0.5, 1.0, 0.0) == -1.0  # N < 0 and a may be 0
    np.testing.assert_allclose(cosine_perturbation_bound(np.array([0.5, -0.1]), 0.05, 0.05),
                               [0.3975 / 1.1025, -0.2025 / 0.9025], rtol=1e-14)
    # the false candidate bound is above the attained worst case
    *_, worst = _worst_case(0.5, 0.1, 0.1)
    assert 0.5 - 0.5 * (0.1 + 0.1) > worst > cosine_perturbation_bound(0.5, 0.1, 0.1)
    for bad in ((0.5, -0.1, 0.0), (1.5, 0.1, 0.1), (0.5, 0.0, -1.0)):
        with pytest.raises(ValueError, match="need dx, dy >= 0"):
            cosine_perturbation_bound(*bad)


def test_adversary_finds_no_violation_but_can_find_one():
    cfg = AdversaryConfig(n_instances=6, n_directions=400, n_polish_instances=1, n_polish=1)
    res = run_adversary(seed=3, cfg=cfg)
    assert res["n_valid"] == 6 and res["n_violations"] == 0 and not res["conclusion_in_doubt"]
    assert res["min_ratio"] > 1
    # without the Δ-minimiser constraint (any v allowed) the same search must break the bound
    free = run_adversary(seed=3, cfg=AdversaryConfig(n_instances=2, n_directions=400, n_polish_instances=0, unconstrained=True))
    assert free["n_violations"] == 2


def test_adversary_is_seeded():
    cfg = AdversaryConfig(n_instances=2, n_directions=200, n_polish_instances=0)
    assert run_adversary(5, cfg)["min_ratio"] == run_adversary(5, cfg)["min_ratio"]


def _main(argv):
    try:
        import lls_cli
        return lls_cli.main(argv)
    except ModuleNotFoundError:  # another package's command module not written yet
        from lls_cli.commands.proof import register
        p = argparse.ArgumentParser(prog="lls")
        register(p.add_subparsers(dest="command"))
        a = p.parse_args(argv)
        return a.func(a)


def test_cli_json_schema(tmp_path, capsys):
    rc = _main(["check-proof", "--json", "--out", str(tmp_path), "--seed", "1", "--instances", "3"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert {"steps", "chain_holds", "corrected", "adversary"} <= set(out)
    for s in out["steps"]:
        assert set(s) == {"id", "claim", "status", "evidence", "counterexample"}
        assert s["status"] in {"pass", "fail"}
    assert out["chain_holds"] is False and out["corrected"]["K"] == 20
    assert out["corrected"]["strengthening_needed"] is None
    saved = json.loads((tmp_path / "proof.json").read_text())
    assert saved["steps"] == out["steps"] and saved["adversary"]["n_instances"] == 3


def test_cli_rejects_bad_instances(tmp_path, capsys):
    from lls_common.io import LLSError
    import pytest
    with pytest.raises((LLSError, SystemExit)):
        from lls_cli.commands.proof import register
        p = argparse.ArgumentParser(prog="lls")
        register(p.add_subparsers(dest="command"))
        a = p.parse_args(["check-proof", "--out", str(tmp_path), "--instances", "0"])
        a.func(a)
    assert not (tmp_path / "proof.json").exists()


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6), st.floats(0, 0.9), st.integers(0, 2**31 - 1))
def test_ball_angle_lemma(n, r, seed):
    """Sharp route step (5'): ‖x − a‖ ≤ r‖a‖ (r < 1) ⇒ angle(x, a) ≤ arcsin r."""
    rng = np.random.default_rng(seed)
    a, e = rng.standard_normal(n), rng.standard_normal(n)
    x = a + r * np.linalg.norm(a) * rng.random() * e / np.linalg.norm(e)
    ah = a / np.linalg.norm(a)
    assert x @ a > 0  # angle < π/2, so comparing sines compares angles
    sin_angle = np.linalg.norm(x - (x @ ah) * ah) / np.linalg.norm(x)  # stable, unlike arccos near 1
    assert sin_angle <= r * (1 + 1e-9) + 1e-12
