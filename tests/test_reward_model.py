"""Tests for coverage_sim.reward_model.fit_bradley_terry."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis_profiles import examples
from scipy.optimize import brentq, minimize
from scipy.special import expit, log_expit

from coverage_sim.data import PairData, offline_pairs, pairs_from_list
from coverage_sim.env import Bandit
from coverage_sim.instances import azar_d1, random_bandit, tajwar_bandit, xu_pairs
from coverage_sim.reward_model import fit_bradley_terry, fit_linear_bradley_terry


def centred(a):
    a = np.atleast_2d(a)
    return a - a.mean(axis=1, keepdims=True)


@settings(max_examples=examples(40), deadline=None)
@given(K=st.integers(2, 12), X=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_recovers_gold_reward_from_exact_bt_data(K, X, seed):
    """Full-support mu x mu, exact BT labels, l2 -> 0: r_hat = r* + c(x).

    The ridge bias is O(l2 / lambda_min(Laplacian)); with l2 = 1e-12 and pi_ref >= 1e-3 it was
    <= 6.1e-7 over 200 random instances, so the tolerance is 1e-5.
    """
    env = random_bandit(K, n_contexts=X, seed=seed)
    r_hat = fit_bradley_terry(offline_pairs(env, env.ref), l2=1e-12)
    assert r_hat.shape == env.shape
    np.testing.assert_allclose(centred(r_hat), centred(env.reward), atol=1e-5)


def test_recovers_tajwar_reward():
    env = tajwar_bandit(peak=70)
    r_hat = fit_bradley_terry(offline_pairs(env, env.ref), l2=1e-12)
    np.testing.assert_allclose(centred(r_hat), centred(env.reward), atol=1e-6)


def test_sampled_data_is_consistent():
    env = Bandit(reward=[1.0, 0.0, -0.5, 0.5], ref=np.full(4, 0.25))
    d = offline_pairs(env, env.ref, n=200_000, seed=11)
    # fixed seed; sampling error of the MLE ~ 1/sqrt(n * pair mass) ~ 0.01
    np.testing.assert_allclose(centred(fit_bradley_terry(d, l2=1e-8)), centred(env.reward),
                               atol=0.05)


def test_single_pair_hand_solution_and_unseen_responses():
    # Xu data: only y1 > y2. By symmetry r_hat = (t, -t, 0) with sigma(-2t) = l2 t.
    l2 = 1e-2
    t = brentq(lambda t: expit(-2 * t) - l2 * t, 0, 1e3)
    np.testing.assert_allclose(fit_bradley_terry(xu_pairs(), l2=l2), [t, -t, 0.0], atol=1e-10)


def test_azar_d1_deterministic_labels_stay_finite_and_ordered():
    r_hat = fit_bradley_terry(azar_d1(), l2=1e-4)
    assert np.isfinite(r_hat).all()
    assert r_hat[0] > r_hat[1] > r_hat[2]
    np.testing.assert_allclose(r_hat[1], 0.0, atol=1e-10)          # symmetry of D1
    np.testing.assert_allclose(r_hat[0], -r_hat[2], atol=1e-10)
    # smaller ridge -> larger (separable) scale
    assert fit_bradley_terry(azar_d1(), l2=1e-6)[0] > r_hat[0]


def test_matches_lbfgs_on_general_data():
    rng = np.random.default_rng(5)
    K, l2 = 6, 1e-2
    w = rng.dirichlet(np.ones(K * K)).reshape(1, K, K)
    w[0, np.arange(K), np.arange(K)] = 0
    w /= w.sum()
    d = PairData(weights=w, shape=(K,))

    def negobj(r):
        diff = r[:, None] - r[None, :]
        return -(w[0] * log_expit(diff)).sum() + 0.5 * l2 * r @ r

    ref = minimize(negobj, np.zeros(K), method="L-BFGS-B", options={"gtol": 1e-12,
                                                                   "ftol": 1e-15}).x
    np.testing.assert_allclose(fit_bradley_terry(d, l2=l2), ref - ref.mean(), atol=1e-5)


def test_contexts_and_disconnected_components():
    env = Bandit(reward=np.zeros((2, 4)), ref=np.full((2, 4), 0.25))
    d = pairs_from_list(env, [(0, 0, 1), (0, 2, 3), (1, 3, 0)])
    r_hat = fit_bradley_terry(d, l2=1e-3)
    assert r_hat.shape == (2, 4)
    # context 0: two components {0,1}, {2,3} with identical data -> same solution, mean 0
    np.testing.assert_allclose(r_hat[0, :2], r_hat[0, 2:], atol=1e-10)
    np.testing.assert_allclose(r_hat[0].sum(), 0.0, atol=1e-10)
    # context 1: only responses 3 > 0 seen; 1 and 2 unseen -> 0
    assert r_hat[1, 3] > 0 > r_hat[1, 0] and r_hat[1, 1] == r_hat[1, 2] == 0.0


INVALID = [
    (lambda: fit_bradley_terry(np.ones((1, 2, 2)) / 4), "data"),
    (lambda: fit_bradley_terry(azar_d1(), l2=0.0), "l2"),
    (lambda: fit_bradley_terry(azar_d1(), l2=-1.0), "l2"),
    (lambda: fit_bradley_terry(azar_d1(), l2=np.nan), "l2"),
    (lambda: fit_bradley_terry(azar_d1(), tol=0.0), "tol"),
    (lambda: fit_bradley_terry(azar_d1(), max_iter=0), "max_iter"),
]


@pytest.mark.parametrize("call,param", INVALID)
def test_invalid_inputs(call, param):
    with pytest.raises(ValueError, match=param):
        call()


# ---------------------------------------------------------------- linear (feature) reward model


def _linear_instance(K, X, D, seed):
    rng = np.random.default_rng(seed)
    phi = rng.normal(size=(X, K, D))
    theta = rng.normal(size=D)
    env = random_bandit(K, n_contexts=X, seed=seed)
    return Bandit(reward=(phi @ theta).reshape(env.shape), ref=env.ref,
                  context_weights=None if X == 1 else env.context_weights), phi, theta


@settings(derandomize=True, max_examples=30, deadline=None)
@given(K=st.integers(4, 10), X=st.integers(1, 3), D=st.integers(1, 3), seed=st.integers(0, 10**6))
def test_linear_model_recovers_a_linear_gold_reward(K, X, D, seed):
    """Exact BT labels from full-support mu x mu on r* = phi . theta*: r_hat = r* (identifiable
    because K > D: generic features do not span the constant direction, which BT labels cannot
    see; the ridge bias is O(l2) with l2 = 1e-10)."""
    env, phi, _ = _linear_instance(K, X, D, seed)
    r_hat = fit_linear_bradley_terry(offline_pairs(env, env.ref), phi, l2=1e-10)
    assert r_hat.shape == env.shape
    np.testing.assert_allclose(r_hat, env.reward, atol=1e-5)


def test_linear_model_extrapolates_to_unseen_responses():
    """Data on 4 of 6 arms; a realisable reward is recovered on the two unseen arms too, where the
    tabular model can only return its prior mean 0."""
    env, phi, theta = _linear_instance(6, 1, 2, seed=7)
    mu = np.where(np.arange(6) < 4, env.ref, 0.0)
    data = offline_pairs(env, mu / mu.sum())
    r_hat = fit_linear_bradley_terry(data, phi[0], l2=1e-10)
    np.testing.assert_allclose(r_hat[4:], env.reward[4:], atol=1e-5)
    np.testing.assert_allclose(fit_bradley_terry(data, l2=1e-10)[4:], 0.0)


def test_linear_model_matches_lbfgs_on_general_data():
    rng = np.random.default_rng(3)
    X, K, D, l2 = 2, 5, 3, 1e-2
    w = rng.dirichlet(np.ones(X * K * K)).reshape(X, K, K)
    phi = rng.normal(size=(X, K, D))
    d = PairData(weights=w, shape=(X, K))
    off = 1.0 - np.eye(K)

    def negobj(theta):
        r = phi @ theta
        diff = r[:, :, None] - r[:, None, :]
        return -(w * off * log_expit(diff)).sum() + 0.5 * l2 * theta @ theta

    ref = minimize(negobj, np.zeros(D), method="L-BFGS-B", options={"gtol": 1e-12,
                                                                   "ftol": 1e-15}).x
    np.testing.assert_allclose(fit_linear_bradley_terry(d, phi, l2=l2), phi @ ref, atol=1e-5)


def test_linear_model_rejects_bad_features():
    data = offline_pairs(Bandit(reward=[1.0, 0.0, -1.0], ref=np.full(3, 1 / 3)), np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="features must have shape"):
        fit_linear_bradley_terry(data, np.ones((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        fit_linear_bradley_terry(data, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="data must be a PairData"):
        fit_linear_bradley_terry(np.ones((1, 3, 3)), np.ones((3, 2)))
