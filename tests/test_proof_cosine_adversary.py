"""Property tests of the step-6 cosine-perturbation bound; the adversary; the CLI JSON schema."""

from __future__ import annotations

import argparse
import json

import numpy as np
from hypothesis import given, settings, strategies as st

from lls_theory.proof.adversary import AdversaryConfig, run_adversary
from lls_theory.proof.steps import cosine_perturbation_bound
from lls_theory.stats import cosine


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 6), st.floats(0, 0.3), st.floats(0, 0.3), st.integers(0, 2**31 - 1))
def test_cosine_perturbation_bound_holds(n, dx, dy, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(n), rng.standard_normal(n)
    ex, ey = rng.standard_normal(n), rng.standard_normal(n)
    a = x + dx * np.linalg.norm(x) * rng.random() * ex / np.linalg.norm(ex)
    b = y + dy * np.linalg.norm(y) * rng.random() * ey / np.linalg.norm(ey)
    c = cosine(x, y)
    bound = cosine_perturbation_bound(c, dx, dy)
    if c - dx - dy - dx * dy >= 0:
        assert cosine(a, b) >= bound - 1e-12


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
