"""The estimator figures' shared pieces: the exact KL gradients against finite differences, and
the forward-KL optimum."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples

import coverage_sim as cs
from coverage_sim.experiments.estimators import setting


def _softmax(theta):
    p = np.exp(theta - theta.max())
    return p / p.sum()


def _central_difference(f, theta, h=1e-6):
    grad = np.zeros_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        grad[i] = (f(theta + e) - f(theta - e)) / (2 * h)
    return grad


@settings(max_examples=examples(20), deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 2**31), scale=st.floats(0.1, 3.0))
@example(k=2, seed=0, scale=0.1)
@example(k=12, seed=1, scale=3.0)
def test_exact_parts_are_the_logit_gradients(k, seed, scale):
    env = cs.random_bandit(k, seed=seed)
    theta = np.log(env.ref) + scale * np.random.default_rng(seed).normal(size=k)
    parts = setting.exact_parts(env, theta)
    r, ref = env.reward, env.ref

    def reverse(t):
        p = _softmax(t)
        return float(p @ np.log(p / ref))

    def half_sq(t):    # E_pi k2 with k2 held at the current policy's values (score-function part)
        p = _softmax(t)
        g = np.log(_softmax(theta) / ref)
        return float(p @ (0.5 * g * g))
    targets = {"reward": lambda t: -float(_softmax(t) @ r), "reverse": reverse,
               "forward": lambda t: float(ref @ np.log(ref / _softmax(t))), "k2": half_sq}
    for name, f in targets.items():
        fd = _central_difference(f, theta)
        assert np.allclose(parts[name], fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max() + 1e-12), name


@settings(max_examples=examples(25), deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 2**31), beta=st.floats(0.05, 5.0))
@example(k=2, seed=0, beta=0.05)
@example(k=12, seed=1, beta=5.0)
def test_forward_kl_optimum_is_stationary_and_optimal(k, seed, beta):
    env = cs.random_bandit(k, seed=seed)
    pi = setting.forward_kl_optimum(env, beta)
    assert pi.sum() == pytest.approx(1.0, abs=1e-12) and (pi > 0).all()
    parts = setting.exact_parts(env, np.log(pi))
    stationary = parts["reward"] + beta * parts["forward"]          # gradient of the loss
    assert np.abs(stationary).max() < 1e-9 * max(1.0, np.abs(env.reward).max())

    def objective(p):
        return float(p @ env.reward - beta * env.ref @ np.log(env.ref / p))
    rng = np.random.default_rng(seed)
    for _ in range(20):   # a concave objective: nothing nearby is better
        other = _softmax(np.log(pi) + 0.3 * rng.normal(size=k))
        assert objective(other) <= objective(pi) + 1e-12


def test_evaluation_policy_moves_away_from_the_reference():
    envs = setting.instance_envs(70.0, [-1, 0])
    logits = setting.evaluation_logits(envs, 0.1, 150, 0.01)
    assert logits.shape == (2, 100)
    for env, theta in zip(envs, logits):
        parts = setting.exact_parts(env, theta)
        assert np.linalg.norm(parts["reverse"]) > 0.1 * np.linalg.norm(parts["reward"])
        assert np.linalg.norm(parts["forward"]) > 0.1 * np.linalg.norm(parts["reward"])
