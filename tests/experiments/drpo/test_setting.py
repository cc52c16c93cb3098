"""DR-PO (Chang et al. 2024, arXiv:2404.08495): the exact reset objective and its gradient."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from coverage_sim.experiments.drpo.setting import reset_objective
from coverage_sim.sequences import AutoregressiveTabular, combination_lock, prefix_nodes


def test_reset_objective_gradient_matches_finite_differences():
    """W = dJ/d log pi(y_t | y_<t) for a general reward over every sequence (token log-probs are
    treated as free variables; J is multilinear in their exponentials)."""
    rng = np.random.default_rng(0)
    V, L = 3, 3
    tokens = np.array(list(itertools.product(range(V), repeat=L)))
    lp = np.log(rng.uniform(0.05, 1.0, size=tokens.shape))
    reward = rng.normal(size=len(tokens))
    target = np.array([2, 0, 1])
    rho = np.array([0.2, 0.5, 0.3])
    J, W = reset_objective(lp, tokens, reward, target, rho)
    # J by its definition: sum_h rho_h sum_{y: y_<h = y*_<h} prod_{t>=h} p_t r(y)
    p = np.exp(lp)
    expected = sum(rho[h] * sum(p[i, h:].prod() * reward[i] for i in range(len(tokens))
                                if np.array_equal(tokens[i, :h], target[:h]))
                   for h in range(L))
    assert J == pytest.approx(expected, rel=1e-12)
    eps = 1e-6
    for i, t in [(0, 0), (len(tokens) - 1, 2), (int(np.flatnonzero(
            (tokens == target).all(axis=1))[0]), 1), (7, 1)]:
        up, dn = lp.copy(), lp.copy()
        up[i, t] += eps
        dn[i, t] -= eps
        fd = (reset_objective(up, tokens, reward, target, rho)[0]
              - reset_objective(dn, tokens, reward, target, rho)[0]) / (2 * eps)
        assert W[i, t] == pytest.approx(fd, abs=1e-8)


def test_reset_objective_on_reward_support_equals_full_sum():
    """For the lock, summing over y* alone gives the same J and the same W on y*'s row."""
    env = combination_lock(vocab=3, length=4, seed=2)
    pol = AutoregressiveTabular(env, init="random")
    theta = pol.init_params(env, np.random.default_rng(1))
    node_lp = pol.node_logp(theta)[0]
    tokens = np.asarray(env.tokens)
    nodes = prefix_nodes(3, 4)
    lp = node_lp[nodes, tokens]                             # (N, L) own-token log-probs
    reward = env.reward_of(np.zeros(len(tokens), dtype=np.int64), tokens)
    secret = np.asarray(env.secret)
    row = int(np.flatnonzero((tokens == secret).all(axis=1))[0])
    rho = np.full(4, 0.25)
    J_all, W_all = reset_objective(lp, tokens, reward, secret, rho)
    J_one, W_one = reset_objective(lp[row:row + 1], secret[None], np.ones(1), secret, rho)
    assert J_one == pytest.approx(J_all, rel=1e-12)
    assert np.allclose(W_all[row], W_one[0]) and np.all(np.delete(W_all, row, axis=0) == 0)


@pytest.mark.parametrize("field", ["token_logp", "reward", "rho"])
def test_reset_objective_rejects_bad_inputs(field):
    args = {"token_logp": np.zeros((1, 3)), "tokens": np.zeros((1, 3), dtype=int),
            "reward": np.ones(1), "target": np.zeros(3, dtype=int), "rho": np.full(3, 1 / 3)}
    args[field] = {"token_logp": np.zeros((2, 3)), "reward": np.ones(2),
                   "rho": np.array([0.5, 0.5, 0.5])}[field]
    with pytest.raises(ValueError, match=field):
        reset_objective(**args)
