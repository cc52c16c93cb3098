"""Progress bars: when they show, that the test session hides them, and that showing one (the
fused loop then runs in chunks) changes no result."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim import _progress

# the module (coverage_sim.train is the function of the same name)
train_module = importlib.import_module("coverage_sim.train")


def test_the_test_session_hides_automatic_bars():
    assert os.environ["COVERAGE_SIM_PROGRESS"] == "0"
    assert not _progress.wants_progress(None, 1e9)
    assert _progress.wants_progress(True, 0.0)          # an explicit request still shows one


def test_automatic_bar_follows_the_expected_duration(monkeypatch):
    monkeypatch.delenv("COVERAGE_SIM_PROGRESS")
    assert not _progress.wants_progress(None, _progress.AUTO_SECONDS / 2)
    assert _progress.wants_progress(None, 2 * _progress.AUTO_SECONDS)
    assert not _progress.wants_progress(False, 1e9)
    monkeypatch.setenv("COVERAGE_SIM_PROGRESS", "1")
    assert _progress.wants_progress(None, 0.0)


def test_bad_progress_settings_name_themselves(monkeypatch):
    with pytest.raises(ValueError, match="progress must be None"):
        _progress.wants_progress("yes", 0.0)
    monkeypatch.setenv("COVERAGE_SIM_PROGRESS", "sometimes")
    with pytest.raises(ValueError, match="COVERAGE_SIM_PROGRESS must be 0 or 1"):
        _progress.wants_progress(None, 0.0)
    env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
    with pytest.raises(ValueError, match="progress must be"):
        cs.train(env, "rlhf", steps=1, lr=0.1, progress="on")


def test_no_bar_on_stderr_in_tests_even_for_long_estimates(monkeypatch, capsys):
    monkeypatch.setattr(_progress, "AUTO_SECONDS", 0.0)    # every call now counts as long
    env = cs.random_bandit(20, seed=0)
    cs.train(env, cs.objective("sigmoid", beta=0.5), cs.offline_pairs(env, env.ref), steps=20,
             lr=0.05)
    assert capsys.readouterr().err == ""
    cs.train(env, "rlhf", steps=20, lr=0.05, progress=True)
    assert "train rlhf" in capsys.readouterr().err


CHUNKED = [("sigmoid", {}), ("ipo", {}), ("online_dpo", {}), ("rlhf", {}), ("iterative_dpo", {}),
           ("kto", {}), ("nash_md", {}), ("xpo", {}), ("rpo", {}),
           # TR-DPO: the moving reference must carry over chunk boundaries with Adam's state
           ("sigmoid", dict(sync_ref_model=True, ref_model_sync_steps=7)),
           ("ipo", dict(sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=1.0))]


@pytest.mark.parametrize("name,extra", CHUNKED,
                         ids=[f"{n}-{'-'.join(map(str, e.values()))}" for n, e in CHUNKED])
def test_chunked_runs_behind_a_bar_give_the_same_bits(monkeypatch, name, extra):
    """With a bar the fused loop runs in chunks that carry Adam's state; nothing may change."""
    monkeypatch.setattr(train_module, "_CHUNK_SECONDS", 1e-7)  # a chunk of a step or two
    env = cs.random_bandit(30, n_contexts=2, seed=1)
    obj = cs.objective(name, beta=0.5, **extra)
    data = cs.offline_pairs(env, env.ref) if obj.needs_data else None
    whole = cs.train(env, obj, data, steps=60, lr=0.05, progress=False)
    chunked = cs.train(env, obj, data, steps=60, lr=0.05, progress=True)
    assert whole.history.equals(chunked.history)
    np.testing.assert_array_equal(whole.params, chunked.params)
    if obj.ref_sync is not None:
        np.testing.assert_array_equal(whole.references, chunked.references)
        assert not np.array_equal(whole.references[-1], whole.references[0])
    if name != "iterative_dpo":
        many = cs.train_many(env, [obj, obj], data, steps=60, lr=[0.05, 0.1], progress=False)
        many_chunked = cs.train_many(env, [obj, obj], data, steps=60, lr=[0.05, 0.1],
                                     progress=True)
        for a, b in zip(many, many_chunked):
            assert a.history.equals(b.history)
            if obj.ref_sync is not None:
                np.testing.assert_array_equal(a.references, b.references)
        assert many[0].history.equals(whole.history)
