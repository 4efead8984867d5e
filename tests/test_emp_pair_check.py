"""Pair-check: margin shifts from a pair matrix, verdicts, subspace overlap, Fig. 19 projection."""

from __future__ import annotations

import numpy as np
import pytest

from empirical.lowrank.pair_check import margin_projection, margin_shifts, pair_check, subspace_overlap, verdict


def _pair_matrix(K=3, n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = -rng.uniform(5, 50, size=(1 + K, 2 * n))
    N = rng.integers(3, 20, size=(1 + K, 2 * n))
    N[:] = N[0]  # token counts do not depend on the system prompt
    return X, N


def test_margin_shifts_match_definition():
    X, N = _pair_matrix()
    ms = margin_shifts(X, N)
    k, i = 2, 7
    rho = (X[k, 2 * i] - X[k, 2 * i + 1]) - (X[0, 2 * i] - X[0, 2 * i + 1])
    assert ms.rho.shape == (3, 40)
    assert ms.rho[k - 1, i] == pytest.approx(rho)
    assert ms.weights[k - 1, i] == pytest.approx(rho / (N[0, 2 * i] + N[0, 2 * i + 1]))
    # invariance (notes §1): adding any function of (s, p) to the log-probs leaves rho unchanged
    Y = X.copy()
    Y += np.random.default_rng(1).normal(size=(4, 40)).repeat(2, axis=1)
    np.testing.assert_allclose(margin_shifts(Y, N).rho, ms.rho, atol=1e-9)


def test_margin_shifts_errors():
    X, N = _pair_matrix()
    with pytest.raises(ValueError, match="shape"):
        margin_shifts(X[:1], N[:1])
    with pytest.raises(ValueError, match="shape"):
        margin_shifts(X[:, :-1], N[:, :-1])
    X[1, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        margin_shifts(X, N)


def test_pair_check_identical_and_independent_models():
    X, N = _pair_matrix(seed=2)
    T = margin_shifts(X, N)
    same = pair_check(T, T, ["a", "b", "c"], n_boot=200)
    assert all(r["pearson"] == pytest.approx(1.0) and r["verdict"] == "strong" for r in same.rows)
    assert all(r["student_positive_on_selected"] == 1.0 for r in same.rows)
    Y, _ = _pair_matrix(seed=3)
    other = pair_check(T, margin_shifts(Y, N), ["a", "b", "c"], n_boot=200)
    assert all(abs(r["pearson"]) < 0.5 for r in other.rows)
    with pytest.raises(ValueError, match="names"):
        pair_check(T, T, ["a"])
    with pytest.raises(ValueError, match="gamma"):
        pair_check(T, T, ["a", "b", "c"], gamma=1.5)


def test_verdict_thresholds():
    assert verdict(0.6) == "strong" and verdict(0.3) == "moderate" and verdict(0.1) == "weak"
    assert verdict(0.01) == "none" and verdict(0.6, (-0.1, 0.9)) == "none" and verdict(0.25, (0.1, 0.4)) == "moderate"


def test_subspace_overlap_identical_vs_random():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(30, 60))
    same = subspace_overlap(A, 3.0 * A, 5)
    assert same["overlap"] == pytest.approx(1.0, abs=1e-6)
    rand = subspace_overlap(A, rng.normal(size=(30, 60)), 5)
    assert rand["overlap"] < 0.5
    with pytest.raises(ValueError, match="same columns"):
        subspace_overlap(A, A[:, :10], 3)


def test_margin_projection():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 50))
    V = np.concatenate([base, base + 0.01 * rng.normal(size=(2, 50))])
    P = margin_projection(V)
    assert P.shape == (4, 2)
    np.testing.assert_allclose(P[:2], P[2:], atol=0.5)
    with pytest.raises(ValueError):
        margin_projection(np.zeros(5))


def test_verdict_band_and_range():
    from empirical.lowrank.pair_check import verdict_band

    assert [verdict_band(x) for x in (-0.3, 0.0, 0.05, 0.19, 0.2, 0.5, 0.9)] == \
        ["none", "none", "weak", "weak", "moderate", "strong", "strong"]
    X, N = _pair_matrix(seed=2, n=40)
    T = margin_shifts(X, N)
    chk = pair_check(T, T, ["a", "b", "c"], n_boot=200)
    assert all(r["verdict_range"] == "strong" for r in chk.rows)  # identical shifts: CI is [1, 1]


def test_small_sample_warnings():
    """n < MIN_PAIRS always warns; a CI spanning two verdict bands warns; a narrow CI with many pairs does not."""
    from empirical.lowrank.pair_check import MIN_PAIRS, PAIRS_FOR_BAND, sample_size_warnings

    X, N = _pair_matrix(seed=2, n=40)
    T = margin_shifts(X, N)
    chk = pair_check(T, T, ["a", "b", "c"], n_boot=200)
    assert len(chk.warnings) == 1 and f"only 40 held-out pairs (< {MIN_PAIRS})" in chk.warnings[0]
    wide = {"system_prompt": "owl", "pearson_ci": [-0.04, 0.21], "verdict_range": "none..moderate"}
    narrow = {"system_prompt": "dog", "pearson_ci": [0.25, 0.4], "verdict_range": "moderate"}
    w = sample_size_warnings([wide, narrow], 256)
    assert len(w) == 1 and "1 of 2 prompts" in w[0] and str(PAIRS_FOR_BAND) in w[0]
    assert sample_size_warnings([narrow], 800) == []


def test_pair_check_warns_on_noisy_independent_models():
    """Independent teacher and student on 150 pairs: the CI of a near-zero correlation spans two bands."""
    X, N = _pair_matrix(seed=4, n=150)
    Y, _ = _pair_matrix(seed=5, n=150)
    chk = pair_check(margin_shifts(X, N), margin_shifts(Y, N), ["a", "b", "c"], n_boot=500)
    assert any("spanning more than one verdict band" in w for w in chk.warnings)


def test_gamma_one_is_accepted():
    X, N = _pair_matrix(seed=2)
    T = margin_shifts(X, N)
    assert len(pair_check(T, T, ["a", "b", "c"], gamma=1.0, n_boot=100).rows) == 3


def test_same_model_warning_for_one_spec_or_two_paths_to_one_folder(tmp_path):
    from empirical.lowrank.pair_check import same_model_warning

    assert "r = 1" in same_model_warning("smollm2-135m-instruct", "smollm2-135m-instruct")
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "link").symlink_to(folder)
    assert same_model_warning(str(folder), str(tmp_path / "link")) is not None
    assert same_model_warning(str(folder), "smollm2-135m-instruct") is None


def test_pair_check_text_defines_every_column_and_warns_for_teacher_equal_student(tmp_path, monkeypatch):
    """With teacher == student the result carries the trivial-r warning; the printed table defines each column,
    the verdict words and why 'specific' is nan with one system prompt."""
    from empirical.lowrank import lowrank

    X, N = _pair_matrix(K=1, n=40, seed=2)
    T = margin_shifts(X, N)
    monkeypatch.setattr(lowrank, "load_data", lambda *a, **k: [])
    monkeypatch.setattr(lowrank, "_pair_check_matrices",
                        lambda cfg, systems, pairs: ([], {cfg.teacher: T, cfg.student: T}, {}, None))
    (tmp_path / "d.jsonl").write_text("")
    cfg = lowrank.PairCheckConfig(data=str(tmp_path / "d.jsonl"), teacher="smollm2-135m-instruct",
                                  student="smollm2-135m-instruct", system_prompt=("You love owls.",),
                                  library_systems=0, n_pairs=40)
    res = lowrank.run_pair_check(cfg)
    assert res.rows[0]["pearson"] == pytest.approx(1.0) and "pearson_specific" not in res.rows[0]
    assert any("same model" in w and "r = 1" in w for w in res.warnings)
    text = res.text()
    header = text.splitlines()[1]
    for column in ("pearson", "95% CI", "spearman", "specific", "S>0|sel", "S>0|all", "verdict", "CI spans"):
        assert column in header and f"{column}" in text.split("columns:", 1)[1], column
    assert "nan with one" in text and "strong" in text.split("columns:", 1)[1]
    assert " nan " in text.splitlines()[2]  # the specific column of the one prompt
