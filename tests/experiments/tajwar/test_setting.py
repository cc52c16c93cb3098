"""Tajwar et al. 2024 (arXiv:2404.14367): the exact training loop with an objective rebuilt from the
current policy (refresh_train) equals the core's training where it should."""

from __future__ import annotations

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim.experiments.tajwar.setting import refresh_train


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.01), ("gd", 0.5)])
def test_refresh_train_with_fixed_data_equals_core_train(optimizer, lr):
    env = cs.tajwar_bandit(peak=70)
    data = cs.offline_pairs(env, env.ref, labels="deterministic")
    obj = cs.objective("ipo", beta=0.05)
    ours = refresh_train(env, lambda pi: [(1.0, obj, data)], steps=200, lr=lr,
                         refresh_every=10**6, optimizer=optimizer)
    core = cs.train(env, obj, data, steps=200, lr=lr, optimizer=optimizer,
                    record=list(range(201)))
    assert np.abs(ours - core.snapshots).max() < 1e-12


def test_refresh_every_step_equals_exact_online_objective():
    env = cs.tajwar_bandit(peak=70)
    frozen = cs.objective("ipo", beta=0.05)
    ours = refresh_train(
        env, lambda pi: [(1.0, frozen, cs.policy_pairs(env, pi, labels="deterministic"))],
        steps=150, lr=0.01, refresh_every=1)
    core = cs.train(env, cs.objective("online_ipo", beta=0.05, labels="deterministic"),
                    steps=150, lr=0.01, record=list(range(151)))
    assert np.abs(ours - core.snapshots).max() < 1e-12
