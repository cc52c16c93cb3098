"""Tests for coverage_sim.preferences (label models P[x, i, j] = Pr(i > j | x))."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from hypothesis_profiles import examples

from coverage_sim.env import Bandit
from coverage_sim.preferences import (LABEL_MODELS, bradley_terry, deterministic,
                                      preference_matrix, preference_probs, with_noise)

SIG1 = 1.0 / (1.0 + np.exp(-1.0))


def test_bradley_terry_hand_values():
    P = bradley_terry([1.0, 0.0, -1.0])
    assert P.shape == (1, 3, 3)
    expected = np.array([[0.5, SIG1, 1 / (1 + np.exp(-2.0))],
                         [1 - SIG1, 0.5, SIG1],
                         [1 / (1 + np.exp(2.0)), 1 - SIG1, 0.5]])
    np.testing.assert_allclose(P[0], expected, rtol=0, atol=1e-15)


def test_bradley_terry_scale_and_contexts():
    r = np.array([[0.0, 1.0], [2.0, 0.0]])
    P = bradley_terry(r, scale=2.0)
    assert P.shape == (2, 2, 2)
    np.testing.assert_allclose(P[0, 1, 0], 1 / (1 + np.exp(-2.0)), atol=1e-15)
    np.testing.assert_allclose(P[1, 0, 1], 1 / (1 + np.exp(-4.0)), atol=1e-15)
    np.testing.assert_array_equal(bradley_terry(r, scale=0.0), np.full((2, 2, 2), 0.5))


def test_bradley_terry_is_stable_for_huge_gaps():
    P = bradley_terry([1e6, -1e6])
    assert np.isfinite(P).all()
    assert P[0, 0, 1] == 1.0 and P[0, 1, 0] == 0.0


def test_deterministic_ties_are_half():
    P = deterministic([[3.0, 3.0, 1.0]])
    np.testing.assert_array_equal(P[0], [[0.5, 0.5, 1.0], [0.5, 0.5, 1.0], [0.0, 0.0, 0.5]])


def test_with_noise_values_and_limits():
    P = deterministic([1.0, 0.0])
    np.testing.assert_allclose(with_noise(P, 0.2)[0], [[0.5, 0.8], [0.2, 0.5]], atol=1e-15)
    np.testing.assert_allclose(with_noise(P, 0.5), np.full((1, 2, 2), 0.5), atol=1e-15)
    np.testing.assert_allclose(with_noise(P, 0.0), P, atol=0)


def test_preference_matrix_accepts_intransitive():
    # rock-paper-scissors: a general (non-BT) preference is valid
    rps = np.array([[0.5, 1.0, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.5]])
    out = preference_matrix(rps)
    assert out.shape == (1, 3, 3)
    out[0, 0, 0] = 7.0                       # returns a copy
    assert rps[0, 0] == 0.5


def test_preference_probs_dispatch():
    env = Bandit(reward=[[1.0, 0.0], [0.0, 3.0]], ref=[[0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_allclose(preference_probs(env), bradley_terry(env.reward), atol=0)
    np.testing.assert_array_equal(preference_probs(env, "deterministic"), deterministic(env.reward))
    proxy = [[0.0, 1.0], [0.0, 0.0]]
    np.testing.assert_array_equal(preference_probs(env, "deterministic", reward=proxy),
                                  deterministic(proxy))
    # a (K, K) array is used for every context
    P2 = np.array([[0.5, 0.9], [0.1, 0.5]])
    out = preference_probs(env, P2, label_noise=0.1)
    np.testing.assert_allclose(out, np.broadcast_to(with_noise(P2, 0.1), (2, 2, 2)), atol=1e-15)


rewards = hnp.arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(2, 8)),
                     elements=st.floats(-30, 30))


@settings(max_examples=examples(60), deadline=None)
@given(r=rewards, eps=st.floats(0, 0.5), scale=st.floats(0, 5))
def test_label_models_are_valid_preferences(r, eps, scale):
    for P in (bradley_terry(r, scale), deterministic(r), with_noise(bradley_terry(r), eps)):
        assert P.shape == (r.shape[0], r.shape[1], r.shape[1])
        assert ((P >= 0) & (P <= 1)).all()
        np.testing.assert_allclose(P + np.swapaxes(P, 1, 2), 1.0, atol=1e-12)
        np.testing.assert_allclose(np.diagonal(P, axis1=1, axis2=2), 0.5, atol=1e-12)
        preference_matrix(P)
    # BT is monotone in the reward: i beats j more often than not iff r_i > r_j
    P = bradley_terry(r)
    gap = r[:, :, None] - r[:, None, :]
    big = np.abs(gap) > 1e-12                 # below that, sigma(gap) rounds to 1/2
    assert ((P > 0.5) == (gap > 0))[big].all()


GOOD_ENV = Bandit(reward=[1.0, 0.0, -1.0], ref=[0.2, 0.3, 0.5])

INVALID = [
    (lambda: bradley_terry([[[1.0, 2.0]]]), "reward"),
    (lambda: bradley_terry([1.0, np.nan]), "reward"),
    (lambda: bradley_terry([1.0, np.inf]), "reward"),
    (lambda: bradley_terry([1.0, 0.0], scale=-1.0), "scale"),
    (lambda: bradley_terry([1.0, 0.0], scale=np.nan), "scale"),
    (lambda: deterministic([np.nan, 0.0]), "reward"),
    (lambda: with_noise(deterministic([1.0, 0.0]), 0.6), "eps"),
    (lambda: with_noise(deterministic([1.0, 0.0]), -0.1), "eps"),
    (lambda: with_noise(deterministic([1.0, 0.0]), np.nan), "eps"),
    (lambda: preference_matrix([[0.5, 0.7], [0.7, 0.5]]), "P"),
    (lambda: preference_matrix([[0.5, 1.2], [-0.2, 0.5]]), "P"),
    (lambda: preference_matrix([[0.5, np.nan], [0.5, 0.5]]), "P"),
    (lambda: preference_matrix(np.full((2, 3), 0.5)), "P"),
    (lambda: preference_matrix([0.5, 0.5]), "P"),
    (lambda: preference_probs(GOOD_ENV, "bt"), "labels"),
    (lambda: preference_probs(GOOD_ENV, "BRADLEY_TERRY"), "labels"),
    (lambda: preference_probs(GOOD_ENV, np.full((2, 2), 0.5)), "labels"),
    (lambda: preference_probs(GOOD_ENV, [[0.5, 0.2, 0.3]] * 3), "labels"),
    (lambda: preference_probs(GOOD_ENV, np.full((3, 3), 0.5), reward=[1.0, 0.0, 0.0]),
     "reward"),
    (lambda: preference_probs(GOOD_ENV, reward=[1.0, 0.0]), "reward"),
    (lambda: preference_probs(GOOD_ENV, reward=[1.0, np.inf, 0.0]), "reward"),
    (lambda: preference_probs(GOOD_ENV, label_noise=0.7), "label_noise"),
]


@pytest.mark.parametrize("call,param", INVALID)
def test_invalid_inputs(call, param):
    with pytest.raises(ValueError, match=param):
        call()


def test_unknown_label_name_lists_valid_names():
    with pytest.raises(ValueError, match="bradley_terry, deterministic"):
        preference_probs(GOOD_ENV, "argmax")
    assert set(LABEL_MODELS) == {"bradley_terry", "deterministic"}
