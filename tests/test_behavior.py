"""Tests for coverage_sim.behavior (the coverage dial)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis_profiles import examples

from coverage_sim.behavior import mixture, quality_mixture, replay, restrict_support, uniform
from coverage_sim.env import Bandit, optimal_policy
from coverage_sim.instances import random_bandit


def test_restrict_support_hand_values():
    np.testing.assert_allclose(restrict_support([0.1, 0.2, 0.3, 0.4], [True, False, True, False]),
                               [0.25, 0.0, 0.75, 0.0], atol=1e-15)
    np.testing.assert_allclose(restrict_support([0.1, 0.2, 0.3, 0.4], [3]), [0, 0, 0, 1.0])
    pi = np.array([[0.5, 0.25, 0.25], [0.2, 0.2, 0.6]])
    out = restrict_support(pi, np.array([[True, True, False], [False, True, True]]))
    np.testing.assert_allclose(out, [[2 / 3, 1 / 3, 0], [0, 0.25, 0.75]], atol=1e-15)
    # a (K,) mask or index list applies to every context
    np.testing.assert_allclose(restrict_support(pi, [0, 2]), [[2 / 3, 0, 1 / 3], [0.25, 0, 0.75]])
    np.testing.assert_allclose(restrict_support(pi, [True, False, True]),
                               [[2 / 3, 0, 1 / 3], [0.25, 0, 0.75]])
    # every listed index is kept, the last one too
    np.testing.assert_allclose(restrict_support([0.1, 0.2, 0.3, 0.4], [0, 3]), [0.2, 0, 0, 0.8])


def test_mixture_and_uniform_and_replay():
    np.testing.assert_allclose(mixture([0.2, 0.8], [1.0, 0.0], 0.5), [0.6, 0.4])
    np.testing.assert_allclose(mixture([0.2, 0.8], [1.0, 0.0], 0.0), [0.2, 0.8])
    np.testing.assert_allclose(mixture([0.2, 0.8], [1.0, 0.0], 0.25), [0.4, 0.6])
    env = Bandit(reward=np.zeros((2, 4)), ref=np.full((2, 4), 0.25))
    np.testing.assert_array_equal(uniform(env), np.full((2, 4), 0.25))
    three = Bandit(reward=np.zeros((3, 2)), ref=np.full((3, 2), 0.5))    # X != K
    np.testing.assert_array_equal(uniform(three), np.full((3, 2), 0.5))
    np.testing.assert_allclose(replay([[1, 0, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0.5, 0.5]]),
                               [0.25, 0.5, 0.25])
    pis = np.random.default_rng(0).dirichlet(np.ones(3), size=(5, 2))
    np.testing.assert_allclose(replay(list(pis)), pis.mean(0))


def test_quality_mixture_endpoints_and_hand_value():
    env = random_bandit(5, n_contexts=2, seed=0)
    np.testing.assert_allclose(quality_mixture(env, 0.0, 1.0), env.ref, atol=1e-15)
    np.testing.assert_allclose(quality_mixture(env, 1.0, 0.3), optimal_policy(env, 0.3),
                               atol=1e-15)
    env = Bandit(reward=[0.0, np.log(3.0)], ref=[0.5, 0.5])      # pi_q = [1/4, 3/4] at beta 1
    np.testing.assert_allclose(quality_mixture(env, 0.5, 1.0), [0.375, 0.625], atol=1e-15)
    # beta_q = 1/2: pi_q = [1/10, 9/10]; weight k = 0.25 on pi_q
    np.testing.assert_allclose(quality_mixture(env, 0.25, 0.5), [0.4, 0.6], atol=1e-15)


@settings(max_examples=examples(40), deadline=None)
@given(K=st.integers(2, 10), X=st.integers(1, 3), seed=st.integers(0, 10**6),
       k=st.floats(0, 1), beta_q=st.floats(0.05, 5))
def test_quality_mixture_is_a_policy_that_shifts_mass_to_reward(K, X, seed, k, beta_q):
    env = random_bandit(K, n_contexts=X, seed=seed)
    mu = np.atleast_2d(quality_mixture(env, k, beta_q))
    np.testing.assert_allclose(mu.sum(-1), 1.0, atol=1e-12)
    assert (mu > 0).all()                         # full support stays full
    # E_mu r is non-decreasing in k (pi_q has higher expected reward than pi_ref)
    r, ref = env.reward2d, env.ref2d
    v0 = (ref * r).sum(-1)
    vk = (mu * r).sum(-1)
    assert (vk >= v0 - 1e-12).all()


GOOD = [0.5, 0.5]
ENV = Bandit(reward=[0.0, 1.0], ref=[0.5, 0.5])

INVALID = [
    (lambda: restrict_support([0.5, 0.6], [0]), "policy"),
    (lambda: restrict_support([0.5, -0.5, 1.0], [0]), "policy"),
    (lambda: restrict_support([np.nan, 1.0], [0]), "policy"),
    (lambda: restrict_support([1.0, 0.0], [1]), "support"),                 # row loses all mass
    (lambda: restrict_support([[1.0, 0.0], [0.5, 0.5]], [[True, False], [False, False]]),
     "support"),
    (lambda: restrict_support(GOOD, [True, False, True]), "support"),      # wrong mask shape
    (lambda: restrict_support(GOOD, [5]), "support"),
    (lambda: restrict_support(GOOD, []), "support"),
    (lambda: mixture(GOOD, [1.0, 0.0], 1.5), "weight"),
    (lambda: mixture(GOOD, [1.0, 0.0], np.nan), "weight"),
    (lambda: mixture(GOOD, [1.0, 0.0, 0.0], 0.5), "policy_b"),
    (lambda: mixture([0.5, 0.4], GOOD, 0.5), "policy_a"),
    (lambda: quality_mixture(ENV, -0.1, 1.0), "k"),
    (lambda: quality_mixture(ENV, 0.5, 0.0), "beta_q"),
    (lambda: quality_mixture(ENV, 0.5, -1.0), "beta_q"),
    (lambda: replay([]), "policies"),
    (lambda: replay([[0.5, 0.5], [0.2, 0.2]]), "policies"),
    (lambda: replay([[0.5, 0.5], [1.0, 0.0, 0.0]]), "policies"),
    (lambda: replay([[1.5, -0.5], [0.5, 0.5]]), "policies"),
    (lambda: restrict_support(GOOD, [0.5]), "support"),                   # float "indices"
    (lambda: restrict_support(GOOD, [-1]), "support"),
    (lambda: restrict_support([1.0], [0]), "policy"),                       # one response
    (lambda: mixture(GOOD, [1.0, 0.0], -0.5), "weight"),
    (lambda: quality_mixture(ENV, 1.5, 1.0), "k"),
    (lambda: restrict_support([[0.5, 0.5], [0.5, 0.5]], [[True, False]] * 3), "support"),
]


@pytest.mark.parametrize("call,param", INVALID)
def test_invalid_inputs(call, param):
    with pytest.raises(ValueError, match=param):
        call()
