"""Tests for coverage_sim.data (PairData, offline_pairs, policy_pairs, pairs_from_list, UnpairedData,
unpaired_from_pairs, unpaired_data)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis_profiles import examples
from scipy.special import expit, log_expit

import coverage_sim as cs
from coverage_sim.data import PairData, offline_pairs, pairs_from_list, policy_pairs
from coverage_sim.env import Bandit
from coverage_sim.instances import random_bandit

S1 = expit(1.0)


def test_exact_bt_weights_hand_computed():
    env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
    d = offline_pairs(env, [0.3, 0.7])
    expected = [[0.09, 2 * 0.21 * S1], [2 * 0.21 * (1 - S1), 0.49]]
    np.testing.assert_allclose(d.weights[0], expected, atol=1e-15)
    assert d.n is None and d.labels == "bradley_terry" and "exact" in d.source
    np.testing.assert_allclose(d.behavior, [[0.3, 0.7]])
    np.testing.assert_allclose(d.chosen, [[0.09 + 0.42 * S1, 0.49 + 0.42 * (1 - S1)]], atol=1e-15)
    np.testing.assert_allclose(d.response_mass, [[0.3, 0.7]], atol=1e-15)
    np.testing.assert_allclose(d.pair_mass[0], [[0.18, 0.42], [0.42, 0.98]], atol=1e-15)
    assert d.support.tolist() == [[True, True]]


def test_population_dpo_loss_matches_the_guide_formula():
    """sum w * (-log sigma(beta h)) == the exact population DPO loss (docs/theory.md, "Objectives")."""
    env = random_bandit(5, n_contexts=2, seed=4)
    rng = np.random.default_rng(0)
    mu = rng.dirichlet(np.ones(5), size=2)
    d = offline_pairs(env, mu)
    beta = 0.7
    g = rng.normal(size=(2, 5))                       # log pi/pi_ref of some policy
    h = g[:, :, None] - g[:, None, :]
    ours = -(d.weights * log_expit(beta * h)).sum()
    P = expit(env.reward2d[:, :, None] - env.reward2d[:, None, :])
    formula = 0.0
    for x in range(2):
        for y in range(5):
            for yp in range(5):
                formula -= env.context_weights[x] * mu[x, y] * mu[x, yp] * (
                    P[x, y, yp] * log_expit(beta * h[x, y, yp])
                    + P[x, yp, y] * log_expit(-beta * h[x, y, yp]))
    np.testing.assert_allclose(ours, formula, rtol=1e-13)


@settings(max_examples=examples(30), deadline=None)
@given(K=st.integers(2, 8), X=st.integers(1, 3), seed=st.integers(0, 10**6),
       labels=st.sampled_from(["bradley_terry", "deterministic"]), noise=st.floats(0, 0.5))
def test_exact_marginals(K, X, seed, labels, noise):
    env = random_bandit(K, n_contexts=X, seed=seed)
    mu = np.random.default_rng(seed).dirichlet(np.ones(K), size=X).reshape(env.shape)
    d = offline_pairs(env, mu, labels=labels, label_noise=noise)
    rho = env.context_weights
    mu2 = mu.reshape(X, K)
    np.testing.assert_allclose(d.weights.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(d.context_weights, rho, atol=1e-12)
    np.testing.assert_allclose(d.response_mass, rho[:, None] * mu2, atol=1e-12)
    np.testing.assert_allclose(d.pair_mass / 2, rho[:, None, None] * mu2[:, :, None]
                               * mu2[:, None, :], atol=1e-12)
    # conditional win rate of i over j equals P_ij where the pair is observed
    P = (expit(env.reward2d[:, :, None] - env.reward2d[:, None, :]) if labels == "bradley_terry"
         else 0.5 + 0.5 * np.sign(env.reward2d[:, :, None] - env.reward2d[:, None, :]))
    P = (1 - noise) * P + noise * (1 - P)
    off = ~np.eye(K, dtype=bool)[None] & (d.pair_mass > 0)
    np.testing.assert_allclose((d.weights / np.where(off, d.pair_mass, 1))[off], P[off],
                               atol=1e-12)


def test_sampled_pairs_match_population_monte_carlo():
    env = Bandit(reward=[[1.0, 0.0, -0.5], [0.0, 2.0, 1.0]], ref=np.full((2, 3), 1 / 3),
                 context_weights=[0.3, 0.7])
    mu = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    exact = offline_pairs(env, mu).weights
    n = 400_000
    d = offline_pairs(env, mu, n=n, seed=123)
    assert d.n == n and d.weights.sum() == pytest.approx(1.0)
    counts = d.weights * n
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)
    sd = np.sqrt(exact * (1 - exact) / n)
    # fixed seed; 5 standard errors per cell (18 cells)
    assert (np.abs(d.weights - exact) <= 5 * sd + 1e-12).all()


def test_sampling_is_reproducible_and_seeded():
    env = random_bandit(4, seed=0)
    a = offline_pairs(env, env.ref, n=50, seed=7)
    b = offline_pairs(env, env.ref, n=50, seed=7)
    c = offline_pairs(env, env.ref, n=50, seed=8)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, c.weights)
    # no global state touched
    state = np.random.get_state()[1].copy()
    offline_pairs(env, env.ref, n=50, seed=9)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_partial_coverage_and_dead_contexts():
    env = Bandit(reward=[[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]], ref=np.full((2, 3), 1 / 3),
                 context_weights=[1.0, 0.0])
    mu = [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]       # a context with rho = 0 may be empty
    d = offline_pairs(env, mu)
    assert d.support.tolist() == [[True, True, False], [False, False, False]]
    assert d.weights[0, 2].sum() == 0 and d.weights[0, :, 2].sum() == 0
    np.testing.assert_allclose(d.context_weights, [1.0, 0.0])


def test_policy_pairs_is_exact_offline_pairs():
    env = random_bandit(6, n_contexts=2, seed=1)
    pi = np.random.default_rng(2).dirichlet(np.ones(6), size=2)
    a = policy_pairs(env, pi, labels="deterministic", label_noise=0.1)
    b = offline_pairs(env, pi, labels="deterministic", label_noise=0.1)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.n is None and "pi x pi" in a.source


def test_proxy_reward_overrides_gold_labels():
    env = Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
    d = offline_pairs(env, env.ref, labels="deterministic", reward=[0.0, 1.0])
    np.testing.assert_allclose(d.weights[0], [[0.25, 0.0], [0.5, 0.25]])
    assert "proxy" in d.source


def test_pairs_from_list():
    env = Bandit(reward=[1.0, 0.0, -1.0], ref=np.full(3, 1 / 3))
    d = pairs_from_list(env, [(0, 1), (1, 2), (0, 1)])
    assert d.n == 3 and d.labels == "custom" and d.behavior is None
    np.testing.assert_allclose(d.weights[0, 0, 1], 2 / 3)
    np.testing.assert_allclose(d.weights[0, 1, 2], 1 / 3)
    d = pairs_from_list(env, [(0, 1), (1, 2)], weights=[3.0, 1.0], source="mine")
    np.testing.assert_allclose(d.weights[0, 0, 1], 0.75)
    assert d.n is None and d.source == "mine"
    envx = Bandit(reward=np.zeros((2, 3)), ref=np.full((2, 3), 1 / 3))
    d = pairs_from_list(envx, [(1, 2, 0)])
    assert d.weights[1, 2, 0] == 1.0 and d.shape == (2, 3)


def test_pairdata_is_read_only_and_copies():
    w = np.zeros((1, 2, 2))
    w[0, 0, 1] = 1.0
    d = PairData(weights=w, shape=(2,))
    w[0, 0, 1] = 5.0
    assert d.weights[0, 0, 1] == 1.0
    with pytest.raises(ValueError):
        d.weights[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        d.chosen[0, 0] = 1.0


ENV = Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.5, 0.0])
ENV_X = Bandit(reward=np.zeros((2, 3)), ref=np.full((2, 3), 1 / 3))
W_OK = np.zeros((1, 3, 3))
W_OK[0, 0, 1] = 1.0

INVALID = [
    (lambda: offline_pairs(ENV, [0.5, 0.5]), "behavior"),                   # wrong shape
    (lambda: offline_pairs(ENV, [[0.5, 0.5, 0.0]] * 2), "behavior"),        # wrong shape
    (lambda: offline_pairs(ENV, [1.5, -0.5, 0.0]), "behavior"),             # negative
    (lambda: offline_pairs(ENV, [np.nan, 0.5, 0.0]), "behavior"),           # NaN
    (lambda: offline_pairs(ENV, [0.5, 0.6, 0.0]), "behavior"),              # row sum != 1
    (lambda: offline_pairs(ENV, [0.0, 0.0, 0.0]), "behavior"),              # no support
    (lambda: offline_pairs(ENV_X, [[1 / 3] * 3, [0.0] * 3]), "behavior"),   # rho > 0, empty row
    (lambda: offline_pairs(ENV, [0.4, 0.4, 0.2]), "behavior"),              # mass where ref = 0
    (lambda: offline_pairs(ENV, [0.5, 0.5, 0.0], n=0), "n"),
    (lambda: offline_pairs(ENV, [0.5, 0.5, 0.0], n=2.5), "n"),
    (lambda: offline_pairs(ENV, [0.5, 0.5, 0.0], labels="argmax"), "labels"),
    (lambda: offline_pairs(ENV, [0.5, 0.5, 0.0], label_noise=0.51), "label_noise"),
    (lambda: offline_pairs(ENV, [0.5, 0.5, 0.0], label_noise=-0.1), "label_noise"),
    (lambda: offline_pairs(ENV, [0.5, 0.5, 0.0], reward=[1.0, np.nan, 0.0]), "reward"),
    (lambda: policy_pairs(ENV, [0.4, 0.4, 0.2]), "policy"),
    (lambda: pairs_from_list(ENV, [(0, 0)]), "pairs"),                      # winner == loser
    (lambda: pairs_from_list(ENV, [(0, 3)]), "pairs"),                      # out of range
    (lambda: pairs_from_list(ENV, [(0, 2)]), "pairs"),                      # ref = 0
    (lambda: pairs_from_list(ENV, []), "pairs"),
    (lambda: pairs_from_list(ENV, [(0, 1.0)]), "pairs"),
    (lambda: pairs_from_list(ENV_X, [(0, 1)]), "pairs"),                    # needs triples
    (lambda: pairs_from_list(ENV, [(0, 1)], weights=[-1.0]), "weights"),
    (lambda: pairs_from_list(ENV, [(0, 1)], weights=[1.0, 1.0]), "weights"),
    (lambda: pairs_from_list(ENV, [(0, 1)], weights=[np.inf]), "weights"),
    (lambda: PairData(weights=2 * W_OK, shape=(3,)), "weights"),            # sums to 2
    (lambda: PairData(weights=-W_OK + 2 * W_OK[:, ::-1], shape=(3,)), "weights"),
    (lambda: PairData(weights=W_OK * np.nan, shape=(3,)), "weights"),
    (lambda: PairData(weights=W_OK[0], shape=(3,)), "weights"),             # 2-d
    (lambda: PairData(weights=W_OK, shape=(4,)), "shape"),
    (lambda: PairData(weights=np.concatenate([W_OK, 0 * W_OK]), shape=(3,)), "shape"),
    (lambda: PairData(weights=W_OK, shape=(3,), behavior=[0.5, 0.5]), "behavior"),
    (lambda: PairData(weights=W_OK, shape=(3,), behavior=[0.5, 0.6, 0.0]), "behavior"),
    (lambda: PairData(weights=W_OK, shape=(3,), n=0), "n"),
]


@pytest.mark.parametrize("call,param", INVALID)
def test_invalid_inputs(call, param):
    with pytest.raises(ValueError, match=param):
        call()


# ---------------------------------------------------------------- unpaired data (KTO)


def test_unpaired_from_pairs_is_trls_unpairing():
    env = cs.random_bandit(4, n_contexts=2, seed=2)
    data = cs.offline_pairs(env, env.ref, labels="bradley_terry", n=50, seed=3)
    un = cs.unpaired_from_pairs(data)
    # each pair (x, w, l) gives (x, w, True) and (x, l, False), each of mass weights / 2
    np.testing.assert_allclose(un.desirable, data.chosen / 2, rtol=0, atol=0)
    np.testing.assert_allclose(un.undesirable, data.rejected / 2, rtol=0, atol=0)
    assert un.n == 100 and un.desirable.sum() + un.undesirable.sum() == pytest.approx(1.0)
    np.testing.assert_array_equal(un.support, data.support)


@pytest.mark.parametrize("labels", ["threshold", "bradley_terry"])
def test_unpaired_data_exact_and_sampled(labels):
    env = cs.Bandit(reward=[[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], ref=[[0.2, 0.5, 0.3]] * 2,
                    context_weights=[0.3, 0.7])
    mu = np.array([[0.5, 0.25, 0.25], [0.1, 0.6, 0.3]])
    exact = cs.unpaired_data(env, mu, labels=labels, threshold=[0.6, 1.0])
    r = env.reward2d
    p_des = (r > np.array([[0.6], [1.0]])) if labels == "threshold" else \
        1 / (1 + np.exp(-(r - np.array([[0.6], [1.0]]))))
    joint = env.context_weights[:, None] * mu
    np.testing.assert_allclose(exact.desirable, joint * p_des, rtol=1e-14)
    np.testing.assert_allclose(exact.undesirable, joint * (1 - p_des), rtol=1e-14, atol=1e-17)
    np.testing.assert_allclose(exact.mismatched,
                               env.context_weights[:, None] * joint.sum(0)[None, :], rtol=1e-14)
    # the default threshold is mu's mean reward per context
    default = cs.unpaired_data(env, mu, labels="threshold")
    np.testing.assert_allclose(default.desirable,
                               joint * (r > (mu * r).sum(1, keepdims=True)), rtol=1e-14)
    # sampled: counts / n, reproducible, converging to the exact masses at rate 1/sqrt(n)
    a = cs.unpaired_data(env, mu, labels=labels, threshold=[0.6, 1.0], n=40_000, seed=1)
    b = cs.unpaired_data(env, mu, labels=labels, threshold=[0.6, 1.0], n=40_000, seed=1)
    np.testing.assert_array_equal(a.desirable, b.desirable)
    counts = a.desirable * 40_000
    assert a.n == 40_000 and np.allclose(counts, np.round(counts), rtol=0, atol=1e-9)
    se = np.sqrt(exact.desirable * (1 - exact.desirable) / 40_000)
    assert (np.abs(a.desirable - exact.desirable) <= 5 * se + 1e-12).all()


def test_unpaired_data_validation():
    good = dict(desirable=[[0.5, 0.0]], undesirable=[[0.0, 0.5]], shape=(2,))
    cs.UnpairedData(**good)
    with pytest.raises(ValueError, match="sum to 1"):
        cs.UnpairedData(**{**good, "undesirable": [[0.0, 0.4]]})
    with pytest.raises(ValueError, match="non-negative"):
        cs.UnpairedData(**{**good, "desirable": [[0.6, -0.1]], "undesirable": [[0.0, 0.5]]})
    with pytest.raises(ValueError, match="desirable must have shape"):
        cs.UnpairedData(**{**good, "desirable": [[0.5, 0.0, 0.0]]})
    with pytest.raises(ValueError, match="PairData"):
        cs.unpaired_from_pairs(cs.UnpairedData(**good))
