"""The policy config field: policy construction, features, and train_each equals train_many for
engine policies and cs.train problem by problem for the others."""

from __future__ import annotations

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim.experiments.policy_classes import (POLICY_CLASSES, check_policy_class,
                                                     make_policy, random_features, rbf_features,
                                                     train_each)
from coverage_sim.experiments.tajwar.setting import peak_env, refresh_train


def test_rbf_features_are_smooth_bumps():
    phi = rbf_features(100, 20)
    assert phi.shape == (100, 20)
    assert np.all(phi.max(axis=0) > 0.9) and phi.min() >= 0
    centres = phi.argmax(axis=0)
    assert centres[0] == 0 and centres[-1] == 99 and np.all(np.diff(centres) > 0)
    assert np.array_equal(random_features(5, 3, seed=1), random_features(5, 3, seed=1))


def test_make_policy_and_bad_class():
    assert isinstance(make_policy("tabular"), cs.TabularSoftmax)
    assert isinstance(make_policy("loglinear", features=np.eye(3)), cs.LogLinear)
    with pytest.raises(ValueError, match="features"):
        make_policy("loglinear")
    with pytest.raises(ValueError, match="policy"):
        check_policy_class("deep")
    assert POLICY_CLASSES == ("tabular", "loglinear", "mlp")


def test_train_each_engine_policy_is_train_many():
    env = cs.random_bandit(6, seed=0)
    objs = [cs.objective("rlhf", beta=b) for b in (0.5, 1.0)]
    a = train_each(env, objs, policy=cs.TabularSoftmax(), steps=50, lr=0.1, seed=3)
    b = cs.train_many(env, objs, steps=50, lr=0.1, seed=3)
    for ra, rb in zip(a, b):
        assert np.array_equal(ra.policy, rb.policy)


def test_train_each_other_policy_is_train_per_problem():
    pytest.importorskip("torch")
    env = cs.random_bandit(4, seed=1)
    pol = make_policy("mlp", mlp=dict(hidden=(4,), input_dim=3, sft_steps=5))
    objs = [cs.objective("rlhf", beta=b) for b in (0.5, 1.0)]
    runs = train_each(env, objs, policy=pol, steps=5, lr=0.01, seed=2)
    for b, r in enumerate(runs):
        ref = cs.train(env, objs[b], policy=pol, steps=5, lr=0.01, seed=2 + b)
        assert np.array_equal(r.params, ref.params)


def test_refresh_train_with_a_policy_matches_cs_train():
    """A fixed build through refresh_train's Policy path equals cs.train with that policy."""
    env = peak_env(70.0)
    pol = cs.LogLinear(rbf_features(100, 20))
    obj = cs.objective("online_ipo", beta=0.05, labels="deterministic")
    snaps = refresh_train(env, lambda pi: [(1.0, obj, None)], steps=30, lr=0.01,
                          refresh_every=1, policy=pol, record=[30])
    run = cs.train(env, obj, steps=30, lr=0.01, policy=pol, record=[30])
    assert np.allclose(snaps[-1], run.policy, rtol=1e-10, atol=1e-14)
    # the tabular policy at pi_ref takes the original (logit) path: the same numbers
    tab = refresh_train(env, lambda pi: [(1.0, obj, None)], steps=30, lr=0.01, refresh_every=1,
                        policy=cs.TabularSoftmax(), record=[30])
    plain = refresh_train(env, lambda pi: [(1.0, obj, None)], steps=30, lr=0.01,
                          refresh_every=1, record=[30])
    assert np.array_equal(tab, plain)
