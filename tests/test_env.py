"""Bandit environments and the closed-form KL-regularised optimum (hand-computed values)."""

from __future__ import annotations

import numpy as np
import pytest

import coverage_sim as cs


def test_plain_bandit_shapes_and_2d_views():
    env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.3, 0.2], name="toy")
    assert env.shape == (3,)
    assert (env.n_contexts, env.n_responses) == (1, 3)
    assert env.reward2d.shape == env.ref2d.shape == env.ref_logp2d.shape == (1, 3)
    np.testing.assert_array_equal(env.ref2d[0], [0.5, 0.3, 0.2])
    np.testing.assert_allclose(env.ref_logp2d[0], np.log([0.5, 0.3, 0.2]), rtol=0, atol=0)
    np.testing.assert_array_equal(env.context_weights, [1.0])
    assert env.like_ref(np.ones((1, 3))).shape == (3,)
    assert env.as2d([1.0, 2.0, 3.0], "x").shape == (1, 3)
    assert env.reward.dtype == env.ref.dtype == np.float64
    assert "toy" in repr(env)


def test_contextual_bandit_shapes_and_default_context_weights():
    reward = np.arange(6.0).reshape(2, 3)
    ref = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    env = cs.Bandit(reward=reward, ref=ref)
    assert env.shape == (2, 3)
    assert (env.n_contexts, env.n_responses) == (2, 3)
    np.testing.assert_array_equal(env.context_weights, [0.5, 0.5])   # default: uniform rho
    np.testing.assert_array_equal(env.reward2d, reward)
    assert env.like_ref(np.zeros((2, 3))).shape == (2, 3)
    # log pi_ref is -inf exactly where pi_ref is 0, finite elsewhere
    assert np.isneginf(env.ref_logp2d[1, 1:]).all()
    assert np.isfinite(env.ref_logp2d[0]).all()


def test_explicit_context_weights_are_kept():
    env = cs.Bandit(reward=np.zeros((3, 2)), ref=np.full((3, 2), 0.5),
                    context_weights=[0.2, 0.3, 0.5])
    np.testing.assert_array_equal(env.context_weights, [0.2, 0.3, 0.5])


def test_stored_arrays_are_read_only_and_do_not_alias_the_callers_arrays():
    reward = np.array([1.0, 0.0])
    ref = np.array([0.25, 0.75])
    env = cs.Bandit(reward=reward, ref=ref)
    for arr in (env.reward, env.ref, env.context_weights):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 0.5
    # the caller's arrays stay writeable, and writing to them does not change the environment
    assert reward.flags.writeable and ref.flags.writeable
    reward[0] = 9.0
    assert env.reward[0] == 1.0


def test_as2d_rejects_wrong_shape_naming_the_parameter():
    env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
    with pytest.raises(ValueError, match="foo"):
        env.as2d([1.0, 2.0, 3.0], "foo")


def test_optimal_policy_hand_computed():
    # pi_ref * exp(r / beta) = [0.5 * 2, 0.25 * 1, 0.25 * 4] = [1, 0.25, 1]; Z = 2.25
    env = cs.Bandit(reward=[np.log(2.0), 0.0, np.log(4.0)], ref=[0.5, 0.25, 0.25])
    np.testing.assert_allclose(cs.optimal_policy(env, 1.0), [4 / 9, 1 / 9, 4 / 9], rtol=1e-14)
    # beta = 2 halves the exponent: [0.5 sqrt 2, 0.25, 0.5] / Z
    w = np.array([0.5 * np.sqrt(2.0), 0.25, 0.5])
    np.testing.assert_allclose(cs.optimal_policy(env, 2.0), w / w.sum(), rtol=1e-14)


def test_optimal_policy_uses_a_given_reward_instead_of_gold():
    env = cs.Bandit(reward=[5.0, 0.0], ref=[0.5, 0.5])
    pi = cs.optimal_policy(env, 1.0, reward=[0.0, 1.0])
    np.testing.assert_allclose(pi, [1 / (1 + np.e), np.e / (1 + np.e)], rtol=1e-14)


def test_optimal_policy_contextual_rowwise():
    reward = np.array([[0.0, 1.0], [2.0, 0.0]])
    ref = np.array([[0.5, 0.5], [0.25, 0.75]])
    env = cs.Bandit(reward=reward, ref=ref, context_weights=[0.9, 0.1])
    pi = cs.optimal_policy(env, 0.5)
    assert pi.shape == (2, 2)
    for x in range(2):
        w = ref[x] * np.exp(reward[x] / 0.5)
        np.testing.assert_allclose(pi[x], w / w.sum(), rtol=1e-14)


def test_optimal_policy_partial_support_keeps_zeros_and_no_nan():
    # the excluded response has by far the largest reward: it must still get exactly 0
    env = cs.Bandit(reward=[0.0, 1.0, 100.0], ref=[0.5, 0.5, 0.0])
    pi = cs.optimal_policy(env, 0.01)
    assert pi[2] == 0.0
    assert np.isfinite(pi).all()
    np.testing.assert_allclose(pi[:2], [1 / (1 + np.exp(100.0)), 1 / (1 + np.exp(-100.0))],
                               rtol=1e-12)


def test_optimal_policy_large_reward_over_beta_does_not_overflow():
    env = cs.Bandit(reward=[1000.0, 0.0, -1000.0], ref=[0.2, 0.3, 0.5])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        pi = cs.optimal_policy(env, 1e-3)     # r / beta = +-1e6
    np.testing.assert_array_equal(pi, [1.0, 0.0, 0.0])
    # exp(r / beta) alone would overflow (r / beta = 7e5); equal rewards give back the reference
    # (to the rounding of log pi_ref + 7e5, an ulp of about 1e-10)
    env = cs.Bandit(reward=[700.0, 700.0], ref=[0.25, 0.75])
    np.testing.assert_allclose(cs.optimal_policy(env, 1e-3), [0.25, 0.75], rtol=1e-9)


def test_optimal_policy_large_beta_tends_to_reference():
    env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.3, 0.2])
    np.testing.assert_allclose(cs.optimal_policy(env, 1e9), env.ref, atol=1e-8)
