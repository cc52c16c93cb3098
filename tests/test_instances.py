"""Tests for coverage_sim.instances (the seed papers' instances)."""

import numpy as np
import pytest
from scipy.stats import cauchy

from coverage_sim.env import Bandit
from coverage_sim.instances import (AZAR_ARMS, INSTANCES, XU_ARMS, azar_bandit, azar_d1,
                                    make_instance, random_bandit, tajwar_bandit, tajwar_reference,
                                    xu_bandit, xu_features, xu_pairs)


def test_tajwar_reference_published_numbers():
    p = tajwar_reference()
    assert p.shape == (100,) and p.sum() == pytest.approx(1.0, abs=1e-14)
    assert p.argmax() == 0 and p[0] == pytest.approx(0.078, abs=5e-4)
    assert p[99] == pytest.approx(0.042, abs=5e-4)
    assert p.min() == pytest.approx(0.0019, abs=5e-5) and (p > 0).all()
    # second bump around bins 15-20 (~0.027)
    bump = int(np.argmax(p[5:40])) + 5
    assert 15 <= bump <= 20 and p[bump] == pytest.approx(0.027, abs=1e-3)


def test_tajwar_reference_matches_scipy_cdf_and_monte_carlo():
    n = 37
    edges = np.linspace(-1, 1, n + 1)
    with np.errstate(divide="ignore"):
        F = cauchy.cdf(np.arctanh(edges), loc=-0.7, scale=0.4)
    np.testing.assert_allclose(tajwar_reference(n), np.diff(F), atol=1e-14)
    # the authors' construction: histogram of tanh(Cauchy) samples (fixed seed, 5 std errors)
    m = 400_000
    s = np.tanh(cauchy.rvs(loc=-0.7, scale=0.4, size=m, random_state=np.random.default_rng(0)))
    hist = np.histogram(s, bins=100, range=(-1, 1))[0] / m
    p = tajwar_reference()
    assert (np.abs(hist - p) <= 5 * np.sqrt(p * (1 - p) / m)).all()


def test_tajwar_bandit_expected_rewards():
    env70, env20 = tajwar_bandit(70), tajwar_bandit(peak=20)
    assert env70.name == "tajwar-peak70" and env20.name == "tajwar-peak20"
    assert float(env70.ref @ env70.reward) == pytest.approx(0.039, abs=5e-4)
    assert float(env20.ref @ env20.reward) == pytest.approx(0.377, abs=5e-4)
    assert env70.reward[70] == 1.0 and env70.reward[60] == pytest.approx(np.exp(-1.0))
    env = tajwar_bandit(70, width=20.0, n_actions=50)
    assert env.shape == (50,) and env.reward[49] == pytest.approx(np.exp(-(21 / 20) ** 2))


def test_azar_instance_and_d1_variants():
    env = azar_bandit()
    assert AZAR_ARMS == ("a", "b", "c") and env.shape == (3,)
    np.testing.assert_allclose(env.ref, 1 / 3)
    assert env.reward[0] > env.reward[1] > env.reward[2]
    d = azar_d1(env)
    expected = np.zeros((3, 3))
    expected[0, 1] = expected[1, 2] = expected[0, 2] = 1 / 3
    np.testing.assert_allclose(d.weights[0], expected, atol=1e-15)
    assert d.n == 3 and "azar D1" in d.source
    # a pair left out (order ignored)
    w = azar_d1(drop=("c", "a")).weights[0]
    assert w[0, 2] == 0 and w[0, 1] == w[1, 2] == 0.5
    # an action left out
    d = azar_d1(drop="c")
    assert d.weights[0, 0, 1] == 1.0 and d.support.tolist() == [[True, True, False]]
    # a list of drops
    assert azar_d1(drop=[("a", "b"), ("b", "c")]).weights[0, 0, 2] == 1.0
    assert azar_d1(drop=[1]).weights[0, 0, 2] == 1.0


def test_xu_instance():
    env = xu_bandit()
    np.testing.assert_allclose(env.ref, [0.4995, 0.4995, 0.001])
    np.testing.assert_array_equal(env.reward, [1.0, 0.0, -3.0])
    assert XU_ARMS == ("y1", "y2", "y3") and env.name == "xu-eps0.001"
    env0 = xu_bandit(eps=0.0, reward=[2.0, 1.0, -5.0])
    assert env0.ref[2] == 0.0 and env0.ref[0] == 0.5
    phi = xu_features()
    assert phi.shape == (3, 2)
    np.testing.assert_array_equal(phi[2], phi[0] - phi[1])
    d = xu_pairs(env0)
    assert d.weights[0, 0, 1] == 1.0 and d.support.tolist() == [[True, True, False]]


def test_random_bandit():
    env = random_bandit(7, seed=3)
    assert env.shape == (7,) and env.n_contexts == 1
    assert (env.ref >= 1e-3).all() and (np.abs(env.reward) <= 3.0).all()
    envx = random_bandit(7, n_contexts=4, seed=3, reward_scale=0.5, min_ref=0.1)
    assert envx.shape == (4, 7) and (envx.ref >= 0.1).all() and (np.abs(envx.reward) <= 0.5).all()
    assert envx.context_weights.sum() == pytest.approx(1.0) and (envx.context_weights > 0).all()
    assert not np.allclose(envx.context_weights, 0.25)
    np.testing.assert_array_equal(random_bandit(7, seed=3).reward, env.reward)
    assert not np.array_equal(random_bandit(7, seed=4).reward, env.reward)
    # accepts a Generator; does not touch global state
    state = np.random.get_state()[1].copy()
    random_bandit(5, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_random_bandit_rewards_cover_range():
    r = random_bandit(2000, seed=0, min_ref=1e-4).reward
    assert r.min() < -2.9 and r.max() > 2.9                  # uniform on [-3, 3]


def test_registry():
    assert make_instance("tajwar-peak70").name == "tajwar-peak70"
    np.testing.assert_array_equal(make_instance("xu").ref, xu_bandit().ref)
    for name, (factory, summary) in INSTANCES.items():
        env = make_instance(name)
        assert isinstance(env, Bandit) and isinstance(summary, str) and summary
        assert make_instance(name) is not env                 # fresh object each call


INVALID = [
    (lambda: tajwar_reference(1), "n_actions"),
    (lambda: tajwar_reference(10.0), "n_actions"),
    (lambda: tajwar_bandit(peak=np.nan), "peak"),
    (lambda: tajwar_bandit(width=0.0), "width"),
    (lambda: tajwar_bandit(width=-1.0), "width"),
    (lambda: azar_d1(drop="d"), "drop"),
    (lambda: azar_d1(drop=("a", "a")), "drop"),
    (lambda: azar_d1(drop=("a", "b", "c")), "drop"),
    (lambda: azar_d1(drop=["a", "c"]), "drop"),                  # removes every pair
    (lambda: azar_d1(drop=5), "drop"),
    (lambda: azar_d1(env=Bandit(reward=[0.0, 1.0], ref=[0.5, 0.5])), "env"),
    (lambda: azar_d1(env="azar"), "env"),
    (lambda: xu_bandit(eps=1.0), "eps"),
    (lambda: xu_bandit(eps=-0.1), "eps"),
    (lambda: xu_bandit(reward=[1.0, 0.0]), "reward"),
    (lambda: xu_bandit(reward=[1.0, np.nan, 0.0]), "reward"),
    (lambda: xu_pairs(random_bandit(4)), "env"),
    (lambda: random_bandit(1), "n_responses"),
    (lambda: random_bandit(5, n_contexts=0), "n_contexts"),
    (lambda: random_bandit(5, reward_scale=0.0), "reward_scale"),
    (lambda: random_bandit(5, reward_scale=np.inf), "reward_scale"),
    (lambda: random_bandit(5, min_ref=0.2), "min_ref"),
    (lambda: random_bandit(5, min_ref=-0.01), "min_ref"),
    (lambda: random_bandit(5, seed=-1), "seed"),
    (lambda: random_bandit(5, seed="abc"), "seed"),
    (lambda: make_instance("tajwar"), "instance name"),
]


@pytest.mark.parametrize("call,param", INVALID)
def test_invalid_inputs(call, param):
    with pytest.raises(ValueError, match=param):
        call()
