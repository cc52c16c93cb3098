"""Tests for coverage_sim.best_of_n (exact Best-of-N and best/worst-of-N pairs)."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis_profiles import examples

from coverage_sim.best_of_n import (best_of_n_kl_bound, best_of_n_policy, best_worst_of_n_pairs,
                                    best_worst_pairs)
from coverage_sim.data import PairData
from coverage_sim.env import Bandit


def brute_force(p, r, n):
    """Enumerate all K^n draw sequences. BoN: uniform tie-break among the tied *samples*.
    Best/worst: rank by stable sort on reward (ties -> larger index is better); drop best == worst.
    """
    K = len(p)
    order = np.argsort(r, kind="stable")
    rank = np.empty(K, int)
    rank[order] = np.arange(K)
    bon, bw = np.zeros(K), np.zeros((K, K))
    for draws in itertools.product(range(K), repeat=n):
        pr = np.prod(p[list(draws)])
        top = max(r[d] for d in draws)
        tied = [d for d in draws if r[d] == top]
        for d in tied:
            bon[d] += pr / len(tied)
        best = max(draws, key=lambda d: rank[d])
        worst = min(draws, key=lambda d: rank[d])
        if best != worst:
            bw[best, worst] += pr
    return bon, (bw / bw.sum() if bw.sum() > 0 else bw)


CASES = [
    ([0.1, 0.2, 0.3, 0.4], [1.0, 0.0, 1.0, 2.0], 3),     # tie between arms 0 and 2
    ([0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 0.0], 2),  # all tied
    ([0.5, 0.0, 0.3, 0.2], [3.0, 5.0, -1.0, 3.0], 4),     # zero-mass best arm, tie at top
    ([0.6, 0.4], [1.0, 0.0], 5),
    ([0.2, 0.3, 0.5], [2.0, 1.0, 0.0], 1),
]


@pytest.mark.parametrize("p,r,n", CASES)
def test_best_of_n_matches_enumeration(p, r, n):
    p, r = np.array(p), np.array(r)
    bon, bw = brute_force(p, r, n)
    np.testing.assert_allclose(best_of_n_policy(p, r, n), bon, atol=1e-14)
    if n >= 2 and np.count_nonzero(p) >= 2:
        np.testing.assert_allclose(best_worst_of_n_pairs(p, r, n)[0], bw, atol=1e-14)


def test_best_of_n_hand_values():
    # distinct rewards, uniform over 3 arms, n = 2: F = 1/3, 2/3, 1 -> 1/9, 3/9, 5/9
    np.testing.assert_allclose(best_of_n_policy(np.full(3, 1 / 3), [0.0, 1.0, 2.0], 2),
                               [1 / 9, 3 / 9, 5 / 9], atol=1e-15)
    # tie pooled and split in proportion to policy mass: {0, 1} tied on top with mass 0.5
    np.testing.assert_allclose(best_of_n_policy([0.2, 0.3, 0.5], [1.0, 1.0, 0.0], 2),
                               [0.75 * 0.4, 0.75 * 0.6, 0.25], atol=1e-15)
    # n = 1 is the policy itself; contexts are independent
    pi = np.array([[0.2, 0.8], [0.7, 0.3]])
    np.testing.assert_allclose(best_of_n_policy(pi, [[0.0, 1.0], [1.0, 0.0]], 1), pi, atol=1e-15)


def test_best_of_n_monte_carlo():
    rng = np.random.default_rng(2024)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    r = np.array([0.0, 2.0, 1.0, 2.0])               # arms 1 and 3 tied on top
    n, reps = 3, 200_000
    draws = rng.choice(4, size=(reps, n), p=p)
    vals = r[draws] + rng.uniform(0, 1e-9, size=draws.shape)   # random tie-break among samples
    best = draws[np.arange(reps), vals.argmax(1)]
    freq = np.bincount(best, minlength=4) / reps
    exact = best_of_n_policy(p, r, n)
    # fixed seed; 5 standard errors
    assert (np.abs(freq - exact) <= 5 * np.sqrt(exact * (1 - exact) / reps) + 1e-12).all()


def test_best_worst_monte_carlo():
    rng = np.random.default_rng(7)
    p = np.array([0.5, 0.2, 0.2, 0.1])
    r = np.array([0.3, -1.0, 0.3, 2.0])
    n, reps = 4, 200_000
    draws = rng.choice(4, size=(reps, n), p=p)
    rank = np.empty(4, int)
    rank[np.argsort(r, kind="stable")] = np.arange(4)
    rk = rank[draws]
    best = draws[np.arange(reps), rk.argmax(1)]
    worst = draws[np.arange(reps), rk.argmin(1)]
    keep = best != worst
    freq = np.zeros((4, 4))
    np.add.at(freq, (best[keep], worst[keep]), 1.0)
    freq /= keep.sum()
    exact = best_worst_of_n_pairs(p, r, n)[0]
    se = np.sqrt(exact * (1 - exact) / keep.sum())
    assert (np.abs(freq - exact) <= 5 * se + 1e-12).all()      # fixed seed; 5 standard errors
    assert keep.mean() == pytest.approx(1 - (p ** n).sum(), abs=5e-3)


def test_best_worst_context_reweighting_and_pairdata():
    # context 0: uniform over 2 -> pair with prob 1/2; context 1: [0.9, 0.1] -> 0.18
    W = best_worst_of_n_pairs([[0.5, 0.5], [0.9, 0.1]], [[0.0, 1.0], [0.0, 1.0]], 2)
    np.testing.assert_allclose(W[:, 1, 0], [0.25 / 0.34, 0.09 / 0.34], atol=1e-15)
    assert W.sum() == pytest.approx(1.0) and W[:, 0, 1].sum() == 0
    env = Bandit(reward=[[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]], ref=np.full((2, 3), 1 / 3),
                 context_weights=[0.25, 0.75])
    d = best_worst_pairs(env, env.ref, n=3)
    assert isinstance(d, PairData) and d.labels == "deterministic" and d.shape == (2, 3)
    np.testing.assert_allclose(d.context_weights, [0.25, 0.75], atol=1e-15)   # same pair prob
    assert d.weights[0, 0].sum() == 0 and d.weights[1, 2].sum() == 0           # worst never wins
    # proxy reward reverses the order
    d2 = best_worst_pairs(env, env.ref, n=3, reward=-env.reward)
    np.testing.assert_allclose(d2.weights, np.swapaxes(d.weights, 1, 2), atol=1e-15)


def test_kl_bound_values_and_large_k_limit():
    assert best_of_n_kl_bound(1) == 0.0
    assert best_of_n_kl_bound(2) == pytest.approx(np.log(2) - 0.5, abs=1e-15)
    K, n = 5000, 4
    p = np.full(K, 1 / K)
    b = best_of_n_policy(p, np.arange(K, dtype=float), n)
    kl = float((b * np.log(b / p)).sum())
    assert 0 <= best_of_n_kl_bound(n) - kl < 1e-6     # equality in the no-ties, large-K limit


def test_large_n_is_stable():
    p = np.array([0.5, 0.3, 0.2])
    b = best_of_n_policy(p, [0.0, 1.0, 2.0], 10**6)
    assert np.isfinite(b).all() and b.sum() == pytest.approx(1.0)
    assert b[2] == 1.0
    b = best_of_n_policy(p, [0.0, 1.0, 2.0], 200)
    np.testing.assert_allclose(b[0], 0.5 ** 200, rtol=1e-12)
    np.testing.assert_allclose(b[1], 0.8 ** 200 - 0.5 ** 200, rtol=1e-12)
    # a tiny-mass top arm: 1 - (1 - 1e-300)^3 = 3e-300, no underflow to 0
    b = best_of_n_policy([1e-300, 1 - 1e-300], [1.0, 0.0], 3)
    np.testing.assert_allclose(b[0], 3e-300, rtol=1e-12)


@st.composite
def tied_instance(draw):
    K = draw(st.integers(2, 12))
    X = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 10**6))
    rng = np.random.default_rng(seed)
    # rewards from a small integer set -> frequent ties; reference with full support >= 1e-3
    reward = rng.integers(-2, 3, size=(X, K)).astype(float)
    ref = 1e-3 + (1 - K * 1e-3) * rng.dirichlet(np.full(K, draw(st.sampled_from([0.2, 1.0, 5.0]))),
                                                size=X)
    return ref, reward


@settings(max_examples=examples(150), deadline=None)
@given(inst=tied_instance(), n=st.integers(1, 64))
def test_claim_c14(inst, n):
    """C14: sums to 1; proxy reward non-decreasing in n; KL(pi_BoN || pi_ref) <= log n - (n-1)/n."""
    ref, reward = inst
    bon = best_of_n_policy(ref, reward, n)
    np.testing.assert_allclose(bon.sum(-1), 1.0, atol=1e-12)
    assert (bon >= 0).all()
    kl = (bon * (np.log(np.where(bon > 0, bon, 1.0)) - np.log(ref))).sum(-1)
    assert (kl <= best_of_n_kl_bound(n) + 1e-10).all()
    nxt = best_of_n_policy(ref, reward, n + 1)
    assert ((nxt * reward).sum(-1) >= (bon * reward).sum(-1) - 1e-12).all()
    if n >= 2:
        W = best_worst_of_n_pairs(ref, reward, n)
        assert W.sum() == pytest.approx(1.0) and (W >= 0).all()
        # winner's reward is never below the loser's
        gap = reward[:, :, None] - reward[:, None, :]
        assert (W[gap < 0] == 0).all()


INVALID = [
    (lambda: best_of_n_policy([0.5, 0.6], [0.0, 1.0], 2), "policy"),
    (lambda: best_of_n_policy([1.5, -0.5], [0.0, 1.0], 2), "policy"),
    (lambda: best_of_n_policy([np.nan, 1.0], [0.0, 1.0], 2), "policy"),
    (lambda: best_of_n_policy([0.5, 0.5], [0.0, np.nan], 2), "reward"),
    (lambda: best_of_n_policy([0.5, 0.5], [0.0, np.inf], 2), "reward"),
    (lambda: best_of_n_policy([0.5, 0.5], [0.0, 1.0, 2.0], 2), "reward"),
    (lambda: best_of_n_policy([0.5, 0.5], [0.0, 1.0], 0), "n"),
    (lambda: best_of_n_policy([0.5, 0.5], [0.0, 1.0], 2.0), "n"),
    (lambda: best_worst_of_n_pairs([0.5, 0.5], [0.0, 1.0], 1), "n"),
    (lambda: best_worst_of_n_pairs([1.0, 0.0], [0.0, 1.0], 2), "policy"),   # no pair possible
    (lambda: best_worst_of_n_pairs([0.5, 0.5], [0.0, 1.0], 2, context_weights=[0.5, 0.5]),
     "context_weights"),
    (lambda: best_worst_pairs(Bandit(reward=[0.0, 1.0], ref=[1.0, 0.0]), [0.5, 0.5], 2),
     "policy"),                                                              # mass where ref = 0
    (lambda: best_worst_pairs(Bandit(reward=[0.0, 1.0], ref=[0.5, 0.5]), [0.5, 0.5], 2,
                              reward=[0.0]), "reward"),
    (lambda: best_of_n_kl_bound(0), "n"),
]


@pytest.mark.parametrize("call,param", INVALID)
def test_invalid_inputs(call, param):
    with pytest.raises(ValueError, match=param):
        call()
