"""Tang et al. 2024 (arXiv:2405.08448): the shared task's helpers (proxy relabelling, sign
accuracy)."""

from __future__ import annotations

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim.experiments.tang import setting as tang


def test_helpers():
    cfg = tang.TangConfig(n_responses=6, n_pairs=40)
    env = tang.tang_bandit(cfg)
    data, r_hat, _ = tang.seed_inputs(env, cfg, 0)
    relabelled = tang.proxy_relabel(env, data, r_hat)
    w, v = np.asarray(data.weights)[0], np.asarray(relabelled.weights)[0]
    np.testing.assert_allclose(v + v.T, w + w.T)                 # same pairs, new labels
    off = ~np.eye(6, dtype=bool) & (w + w.T > 0)
    np.testing.assert_allclose(v[off] / (v + v.T)[off],
                               (1 / (1 + np.exp(-(r_hat[:, None] - r_hat[None, :]))))[off])
    held_out = cs.offline_pairs(env, env.ref)
    assert tang.sign_accuracy(env, env.ref[None], held_out)[0] == 0.5
    gold = tang.sign_accuracy(env, cs.optimal_policy(env, 1.0)[None], held_out)[0]
    flipped = tang.sign_accuracy(env, cs.optimal_policy(env, 1.0, reward=-env.reward)[None],
                                 held_out)[0]
    assert gold > 0.5 and gold + flipped == pytest.approx(1.0)
