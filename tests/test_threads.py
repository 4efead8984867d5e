"""CPU thread choice (``empirical.engine.threads``): as many threads as free cores unless the user chose, recorded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from empirical.engine import threads


@given(st.integers(1, 256), st.floats(0, 512, allow_nan=False))
def test_auto_threads_is_the_free_cores_at_least_one(cores, busy):
    n = threads.auto_threads(cores, busy)
    assert 1 <= n <= cores
    assert n == max(1, cores - int(busy + 0.5))


@given(st.integers(1, 64), st.floats(0, 100, allow_nan=False), st.floats(0, 100, allow_nan=False))
def test_auto_threads_never_grows_with_load(cores, a, b):
    lo, hi = sorted((a, b))
    assert threads.auto_threads(cores, hi) <= threads.auto_threads(cores, lo)


def test_auto_threads_examples():
    assert threads.auto_threads(2, 0.0) == 2  # idle: a thread per core, torch's default
    assert threads.auto_threads(2, 1.0) == 1  # one busy process on two cores: one thread
    assert threads.auto_threads(2, 5.5) == 1
    assert threads.auto_threads(16, 3.4) == 13
    with pytest.raises(ValueError):
        threads.auto_threads(0, 0.0)
    with pytest.raises(ValueError):
        threads.auto_threads(2, float("nan"))


@pytest.fixture
def fresh(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_RECORD", None)
    yield
    torch.set_num_threads(before)


def test_configure_follows_free_cores_when_the_user_did_not_choose(fresh, monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "busy_cores", lambda: 2.6)
    rec = threads.configure()
    assert rec == {"threads": 1, "source": "free cores", "cores": 4, "busy": 2.6}
    assert torch.get_num_threads() == 1 and threads.record() == rec
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)
    assert threads.configure() == rec  # chosen once per process


def test_configure_keeps_the_users_setting(fresh, monkeypatch):
    import torch

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "busy_cores", lambda: pytest.fail("load must not be read"))
    torch.set_num_threads(1)
    assert threads.configure()["source"] == "OMP_NUM_THREADS"
    assert threads.configure(2)["threads"] == 2 == torch.get_num_threads()
    with pytest.raises(ValueError):
        threads.configure(0)


def test_busy_cores_reads_the_runnable_count(monkeypatch):
    seq = iter([3, 1, 2, 9, 2])
    monkeypatch.setattr(threads, "_runnable", lambda: next(seq))
    assert threads.busy_cores(samples=5, interval=0) == 1.0  # median of (2, 0, 1, 8, 1), self excluded
    monkeypatch.setattr(threads, "_runnable", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.5, 0.0, 0.0))
    assert threads.busy_cores() == 1.5
