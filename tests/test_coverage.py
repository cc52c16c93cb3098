"""Tests for coverage_sim.coverage (coverage readouts)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis_profiles import examples

from coverage_sim.coverage import concentrability, mass_in_support, pair_concentrability
from coverage_sim.data import offline_pairs, pairs_from_list
from coverage_sim.env import Bandit, optimal_policy
from coverage_sim.instances import azar_d1, random_bandit


def test_concentrability_bandit_is_one_over_mu_of_best_arm():
    mu = np.array([0.5, 0.3, 0.2])
    assert concentrability([0.0, 0.0, 1.0], mu) == pytest.approx(5.0)
    assert concentrability(mu, mu) == pytest.approx(1.0)
    assert concentrability([0.0, 0.5, 0.5], [0.5, 0.5, 0.0]) == np.inf
    # contexts with weight 0 are skipped
    assert concentrability([[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [1.0, 0.0]],
                           context_weights=[1.0, 0.0]) == pytest.approx(2.0)
    # the max over several covered responses (ratios 0.625 and 5; their mean would be 2.8125)
    assert concentrability([0.5, 0.5, 0.0], [0.8, 0.1, 0.1]) == pytest.approx(5.0, rel=1e-14)
    # ... and over contexts (ratios 1.25 | 0.5, 4/3; their mean would be about 1.03)
    assert concentrability([[1.0, 0.0], [0.2, 0.8]], [[0.8, 0.2], [0.4, 0.6]],
                           context_weights=[0.9, 0.1]) == pytest.approx(4.0 / 3.0, rel=1e-14)


def test_pair_concentrability_is_a_max_over_pairs():
    env = Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.3, 0.2])
    mu = np.array([0.6, 0.3, 0.1])
    pi = np.array([0.2, 0.3, 0.5])
    ratios = np.outer(pi, pi) / np.outer(mu, mu)
    assert pair_concentrability(pi, offline_pairs(env, mu)) == pytest.approx(ratios.max(),
                                                                             rel=1e-12)
    assert ratios.max() > 2 * ratios.mean()
    # contexts the data never visits (weight 0) are skipped
    two = Bandit(reward=np.zeros((2, 3)), ref=np.full((2, 3), 1 / 3), context_weights=[1.0, 0.0])
    data = offline_pairs(two, [mu, [1.0, 0.0, 0.0]])
    assert pair_concentrability([pi, [0.0, 0.0, 1.0]], data) == pytest.approx(ratios.max(),
                                                                              rel=1e-12)
    # without the diagonal: pi x pi and q renormalised to their off-diagonal mass
    off = ~np.eye(3, dtype=bool)
    pp, qq = np.outer(pi, pi) * off, np.outer(mu, mu) * off
    expected = ((pp / pp.sum()) / np.where(off, qq / qq.sum(), 1.0))[off].max()
    assert pair_concentrability(pi, offline_pairs(env, mu), diagonal=False) == pytest.approx(
        expected, rel=1e-12)


def test_concentrability_from_pair_data_equals_behavior():
    env = random_bandit(6, n_contexts=2, seed=3)
    mu = np.random.default_rng(1).dirichlet(np.ones(6), size=2)
    target = optimal_policy(env, 0.2)
    d = offline_pairs(env, mu)
    assert concentrability(target, d) == pytest.approx(concentrability(target, mu), rel=1e-12)


def test_mass_in_support():
    assert mass_in_support([0.5, 0.3, 0.2], [True, False, True]) == pytest.approx(0.7)
    assert mass_in_support([[0.5, 0.5], [0.1, 0.9]], [[1.0, 0.0], [0.0, 1.0]],
                           context_weights=[0.25, 0.75]) == pytest.approx(0.25 * 0.5 + 0.75 * 0.9)
    # default: contexts weighted uniformly
    assert mass_in_support([[0.5, 0.5], [0.1, 0.9]], np.array([[True, False], [False, True]])
                           ) == pytest.approx(0.5 * 0.5 + 0.5 * 0.9)
    env = Bandit(reward=[1.0, 0.0, -1.0], ref=np.full(3, 1 / 3))
    d = pairs_from_list(env, [(0, 1)])
    assert mass_in_support([0.2, 0.3, 0.5], d) == pytest.approx(0.5)


def test_pair_concentrability_hand_values():
    env = Bandit(reward=[1.0, 0.0, -1.0], ref=np.full(3, 1 / 3))
    mu = np.array([0.5, 0.25, 0.25])
    d = offline_pairs(env, mu)
    pi = np.array([0.2, 0.2, 0.6])
    expected = max(pi[i] * pi[j] / (mu[i] * mu[j]) for i in range(3) for j in range(3))
    assert pair_concentrability(pi, d) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(concentrability(pi, mu) ** 2)
    # azar D1 has no self-pairs: inf with the diagonal, finite off it
    d1 = azar_d1()
    assert pair_concentrability(np.full(3, 1 / 3), d1) == np.inf
    # off-diagonal: pi x pi restricted to i != j is uniform 1/6 on 6 ordered cells; q = 1/6 too
    assert pair_concentrability(np.full(3, 1 / 3), d1, diagonal=False) == pytest.approx(1.0)
    d2 = azar_d1(drop=("a", "c"))
    assert pair_concentrability(np.full(3, 1 / 3), d2, diagonal=False) == np.inf


@settings(max_examples=examples(40), deadline=None)
@given(K=st.integers(2, 8), X=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_coverage_readouts_are_at_least_one_and_consistent(K, X, seed):
    env = random_bandit(K, n_contexts=X, seed=seed)
    rng = np.random.default_rng(seed)
    mu = rng.dirichlet(np.ones(K), size=X).reshape(env.shape)
    pi = rng.dirichlet(np.ones(K), size=X).reshape(env.shape)
    d = offline_pairs(env, mu)
    c = concentrability(pi, mu)
    assert c >= 1 - 1e-12
    np.testing.assert_allclose(pair_concentrability(pi, d), c ** 2, rtol=1e-10)
    assert mass_in_support(pi, d) == pytest.approx(1.0)


ENV = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
D = offline_pairs(ENV, [0.5, 0.5])

INVALID = [
    (lambda: concentrability([0.5, 0.6], [0.5, 0.5]), "target"),
    (lambda: concentrability([0.5, 0.5], [0.5, 0.5, 0.0]), "behavior"),
    (lambda: concentrability([0.5, 0.5], [-0.5, 1.5]), "behavior"),
    (lambda: concentrability([0.5, 0.5], [0.5, 0.5], context_weights=[0.5]), "context_weights"),
    (lambda: concentrability([0.5, 0.5, 0.0], D), "target"),
    (lambda: mass_in_support([0.5, 0.5], [True]), "support_or_data"),
    (lambda: mass_in_support([0.5, 0.5], [0.5, np.nan]), "support_or_data"),
    (lambda: mass_in_support([np.nan, 0.5], [True, True]), "policy"),
    (lambda: pair_concentrability([0.5, 0.5], [0.5, 0.5]), "data"),
    (lambda: pair_concentrability([0.5, 0.4], D), "policy"),
    (lambda: pair_concentrability([1.0, 0.0], D, diagonal=False), "policy"),
]


@pytest.mark.parametrize("call,param", INVALID)
def test_invalid_inputs(call, param):
    with pytest.raises(ValueError, match=param):
        call()
