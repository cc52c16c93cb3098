"""Exact metrics on hand-computed cases, batched leading axes and context weighting."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

import coverage_sim as cs
from coverage_sim import metrics as M


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture
def env3():
    return cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.25, 0.25])


def test_expected_reward_hand(env3):
    assert M.expected_reward(env3, [0.2, 0.3, 0.5]) == pytest.approx(0.2 - 0.5, abs=1e-15)
    assert M.expected_reward(env3, [0.2, 0.3, 0.5], reward=[0.0, 10.0, 0.0]) == pytest.approx(3.0)


def test_kl_both_ways_hand_and_infinite_off_support():
    env = cs.Bandit(reward=[0.0, 0.0], ref=[0.25, 0.75])
    p, q = [0.5, 0.5], [0.25, 0.75]
    assert M.kl_divergence(env, p, q) == pytest.approx(
        0.5 * np.log(2.0) + 0.5 * np.log(0.5 / 0.75), rel=1e-14)
    assert M.kl_divergence(env, q, p) == pytest.approx(
        0.25 * np.log(0.5) + 0.75 * np.log(1.5), rel=1e-14)
    assert M.kl_divergence(env, p, p) == 0.0
    env3 = cs.Bandit(reward=[0.0, 0.0, 0.0], ref=[0.5, 0.5, 0.0])
    narrow, wide = [1.0, 0.0, 0.0], [0.5, 0.25, 0.25]
    assert M.kl_divergence(env3, wide, narrow) == np.inf          # mass where q has none
    assert M.kl_divergence(env3, narrow, wide) == pytest.approx(np.log(2.0), rel=1e-14)  # 0 log 0 = 0


def test_tv_and_entropy_hand(env3):
    assert M.tv_distance(env3, [1.0, 0.0, 0.0], [0.5, 0.25, 0.25]) == pytest.approx(0.5)
    assert M.tv_distance(env3, [0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert M.entropy(env3, [0.5, 0.25, 0.25]) == pytest.approx(1.5 * np.log(2.0), rel=1e-14)
    assert M.entropy(env3, [1.0, 0.0, 0.0]) == 0.0


def test_win_rate_hand_formula(env3):
    # E_{y~pi, y'~ref} sigma(r(y) - r(y')) with pi = delta_0, ref = (1/2, 1/4, 1/4)
    expected = 0.5 * _sig(0.0) + 0.25 * _sig(1.0) + 0.25 * _sig(2.0)
    assert M.win_rate(env3, [1.0, 0.0, 0.0]) == pytest.approx(expected, rel=1e-14)
    # anything against itself wins half the time
    assert M.win_rate(env3, env3.ref) == pytest.approx(0.5, rel=1e-14)
    pi = np.array([0.1, 0.6, 0.3])
    assert M.win_rate(env3, pi, against=pi) == pytest.approx(0.5, rel=1e-14)
    # full double sum against a given opponent
    against = np.array([0.0, 0.0, 1.0])
    r = env3.reward
    manual = sum(pi[i] * against[j] * expit(r[i] - r[j]) for i in range(3) for j in range(3))
    assert M.win_rate(env3, pi, against=against) == pytest.approx(manual, rel=1e-14)


def test_ranking_accuracy_uses_geq_so_ties_count_as_correct(env3):
    data = cs.pairs_from_list(env3, [(0, 1), (1, 2), (0, 2)])
    assert M.ranking_accuracy(env3, [0.5, 0.5, 0.0], data) == pytest.approx(1.0)   # (0,1) tied
    assert M.ranking_accuracy(env3, [1 / 3, 1 / 3, 1 / 3], data) == pytest.approx(1.0)
    # pairs (0,1): 0.2 < 0.5 wrong; (1,2): right; (0,2): 0.2 < 0.3 wrong
    assert M.ranking_accuracy(env3, [0.2, 0.5, 0.3], data) == pytest.approx(1 / 3)
    # weights matter
    weighted = cs.pairs_from_list(env3, [(0, 1), (1, 2), (0, 2)], weights=[2.0, 1.0, 1.0])
    assert M.ranking_accuracy(env3, [0.2, 0.5, 0.3], weighted) == pytest.approx(0.25)


def test_ranking_accuracy_ignores_diagonal_self_pairs(env3):
    w = np.zeros((1, 3, 3))
    w[0, 0, 0] = 0.5                  # a self-pair: must not count either way
    w[0, 2, 1] = 0.5                  # y3 beats y2
    data = cs.PairData(weights=w, shape=(3,))
    assert M.ranking_accuracy(env3, [0.6, 0.3, 0.1], data) == 0.0
    assert M.ranking_accuracy(env3, [0.6, 0.1, 0.3], data) == 1.0


def _chen_data():
    # W[x, winner, loser]: alpha_01 = 0.3 / 0.4 = 0.75, alpha_02 = 0.5, (2 > 1) unanimous
    w = np.zeros((1, 3, 3))
    w[0, 0, 1], w[0, 1, 0] = 0.3, 0.1
    w[0, 0, 2], w[0, 2, 0] = 0.2, 0.2
    w[0, 2, 1] = 0.2
    return cs.PairData(weights=w, shape=(3,))


def test_ideal_ranking_accuracy_chen_corollary_3_3_three_arms():
    """R* = E_D 1[(ref_w / ref_l) (alpha / (1 - alpha))^(1/beta) > 1], alpha = 1 capped at 0.999."""
    env = cs.Bandit(reward=[0.0, 0.0, 0.0], ref=[0.6, 0.3, 0.1])
    data = _chen_data()
    # beta = 1: (0>1) 2 * 3 > 1 yes [0.3]; (1>0) 0.5 / 3 no [0.1]; (0>2) 6 * 1 yes [0.2];
    #           (2>0) 1/6 no [0.2]; (2>1) (1/3) * 999 yes [0.2]  -> 0.7
    assert M.ideal_ranking_accuracy(env, data, 1.0) == pytest.approx(0.7)
    # beta = 100: (2>1) becomes (1/3) * 999^0.01 = 0.357 < 1, so it is lost -> 0.5
    assert M.ideal_ranking_accuracy(env, data, 100.0) == pytest.approx(0.5)
    # hand formula, any beta
    ref = env.ref
    for beta in (0.05, 0.3, 1.0, 3.0, 30.0):
        total = 0.0
        for i in range(3):
            for j in range(3):
                wij, wji = data.weights[0, i, j], data.weights[0, j, i]
                if i == j or wij == 0:
                    continue
                alpha = np.clip(wij / (wij + wji), 1e-3, 1 - 1e-3)
                total += wij * (ref[i] / ref[j] * (alpha / (1 - alpha)) ** (1 / beta) > 1)
        assert M.ideal_ranking_accuracy(env, data, beta) == pytest.approx(total)


def test_ideal_ranking_accuracy_is_the_ranking_accuracy_of_the_optimum():
    # with exact Bradley-Terry data alpha = sigma(r_w - r_l), so R* is the accuracy of pi*_beta
    env = cs.random_bandit(7, n_contexts=3, seed=4)
    data = cs.offline_pairs(env, env.ref)
    for beta in (0.1, 1.0, 10.0):
        opt = cs.optimal_policy(env, beta)
        assert M.ideal_ranking_accuracy(env, data, beta) == pytest.approx(
            M.ranking_accuracy(env, opt, data), abs=1e-12)


def test_mass_off_support_hand_and_context_weighted():
    env = cs.Bandit(reward=np.zeros((2, 3)), ref=np.full((2, 3), 1 / 3), context_weights=[0.25, 0.75])
    mu = cs.restrict_support(env.ref, np.array([[True, True, False], [True, False, False]]))
    data = cs.offline_pairs(env, mu)
    pi = np.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
    assert M.mass_off_support(env, pi, data) == pytest.approx(0.25 * 0.5 + 0.75 * 0.4)
    assert M.mass_off_support(env, mu, data) == 0.0


def test_context_weights_average_every_metric():
    env = cs.Bandit(reward=[[1.0, 0.0], [0.0, 1.0]], ref=[[0.5, 0.5], [0.5, 0.5]],
                    context_weights=[0.1, 0.9])
    pi = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert M.expected_reward(env, pi) == pytest.approx(0.1)
    assert M.tv_distance(env, pi, env.ref) == pytest.approx(0.5)
    assert M.kl_divergence(env, pi, env.ref) == pytest.approx(np.log(2.0))
    assert M.win_rate(env, pi) == pytest.approx(0.1 * (0.5 * _sig(0) + 0.5 * _sig(1))
                                                + 0.9 * (0.5 * _sig(-1) + 0.5 * _sig(0)))


def test_metrics_accept_leading_batch_axes():
    env = cs.random_bandit(4, n_contexts=2, seed=2)
    data = cs.offline_pairs(env, env.ref)
    rng = np.random.default_rng(0)
    pols = rng.dirichlet(np.ones(4), size=(3, 5, 2))           # (3, 5) batch of (X, K) policies
    cases = [
        (M.expected_reward, lambda p: M.expected_reward(env, p)),
        (M.kl_divergence, lambda p: M.kl_divergence(env, p, env.ref)),
        (M.tv_distance, lambda p: M.tv_distance(env, p, env.ref)),
        (M.entropy, lambda p: M.entropy(env, p)),
        (M.win_rate, lambda p: M.win_rate(env, p)),
        (M.ranking_accuracy, lambda p: M.ranking_accuracy(env, p, data)),
        (M.mass_off_support, lambda p: M.mass_off_support(env, p, data)),
    ]
    for _, fn in cases:
        batched = fn(pols)
        assert batched.shape == (3, 5)
        loop = np.array([[fn(pols[a, b]) for b in range(5)] for a in range(3)])
        np.testing.assert_allclose(batched, loop, rtol=1e-13, atol=1e-15)


def test_plain_bandit_batch_axis():
    env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
    pols = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    np.testing.assert_allclose(M.expected_reward(env, pols), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(M.kl_divergence(env, pols, env.ref),
                               [np.log(2), 0.0, np.log(2)], rtol=1e-14)


def test_policy_metrics_columns_and_values():
    env = cs.random_bandit(5, seed=1)
    data = cs.offline_pairs(env, env.ref)
    pols = np.stack([env.ref, cs.optimal_policy(env, 0.5)])
    out = M.policy_metrics(env, pols, beta=0.5, data=data, eval_data=data,
                           proxy_reward=np.zeros(5))
    assert set(out) == {"reward", "kl", "kl_ref", "entropy", "win_rate", "proxy_reward",
                        "tv_to_opt", "kl_to_opt", "ranking_accuracy", "ideal_ranking_accuracy",
                        "mass_off_support"}
    assert all(v.shape == (2,) for v in out.values())
    np.testing.assert_allclose(out["kl"], [0.0, M.kl_divergence(env, pols[1], env.ref)])
    np.testing.assert_allclose(out["tv_to_opt"][1], 0.0, atol=1e-15)
    np.testing.assert_allclose(out["kl_to_opt"][1], 0.0, atol=1e-14)
    # away from pi* the two directions differ: kl_to_opt is KL(pi || pi*), kl_ref KL(pi_ref || pi)
    ref, opt = env.ref, cs.optimal_policy(env, 0.5)
    kl_ref_opt = float(np.sum(ref * np.log(ref / opt)))
    kl_opt_ref = float(np.sum(opt * np.log(opt / ref)))
    assert abs(kl_ref_opt - kl_opt_ref) > 0.05
    assert out["kl_to_opt"][0] == pytest.approx(kl_ref_opt, rel=1e-12)
    assert out["kl_ref"][1] == pytest.approx(kl_ref_opt, rel=1e-12)
    assert out["kl"][1] == pytest.approx(kl_opt_ref, rel=1e-12)
    assert out["tv_to_opt"][0] == pytest.approx(0.5 * np.abs(ref - opt).sum(), rel=1e-12)
    np.testing.assert_array_equal(out["proxy_reward"], [0.0, 0.0])
    minimal = M.policy_metrics(env, pols)
    assert set(minimal) == {"reward", "kl", "kl_ref", "entropy", "win_rate"}


def test_ranking_accuracy_on_log_probabilities_has_no_underflow_ties():
    """pi = e^-800 and e^-900 both underflow to 0 and would tie; their log-probabilities do not."""
    env = cs.Bandit(reward=[0.0, 1.0, 2.0], ref=[1 / 3, 1 / 3, 1 / 3])
    data = cs.pairs_from_list(env, [(2, 1)])  # winner has the smaller probability
    logp = np.array([0.0, -800.0, -900.0])
    assert M.ranking_accuracy(env, np.exp(logp), data) == 1.0  # the tie counts as correct
    assert M.ranking_accuracy(env, logp, data) == 0.0


def test_ideal_ranking_accuracy_caps_unanimous_votes_at_1e3():
    """Chen et al.'s cap alpha = 1 -> 1 - 1e-3: the log-odds log(999) = 6.91 decide the ranking
    when the reference prefers the loser by e^5.5 (a cap of 1e-2, log-odds 4.60, would not)."""
    p_w = 1.0 / (1.0 + np.exp(5.5))
    env = cs.Bandit(reward=[1.0, 0.0], ref=[p_w, 1.0 - p_w])
    data = cs.pairs_from_list(env, [(0, 1)])                 # unanimous: alpha = 1
    assert M.ideal_ranking_accuracy(env, data, beta=1.0) == 1.0
    # with beta = 1.3 the capped log-odds give 6.91 / 1.3 = 5.31 < 5.5: ranked wrong
    assert M.ideal_ranking_accuracy(env, data, beta=1.3) == 0.0


def test_ideal_ranking_accuracy_counts_an_exact_tie_as_wrong():
    """Equal votes both ways and an equal reference: the optimum ties, and R* needs a strict win."""
    env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
    data = cs.pairs_from_list(env, [(0, 1), (1, 0)])
    assert M.ideal_ranking_accuracy(env, data, beta=0.7) == 0.0


def test_policy_metrics_rank_by_log_policies_when_given():
    """Probabilities that underflow tie; the log-probabilities passed along do not."""
    env = cs.Bandit(reward=[0.0, 1.0, 2.0], ref=[1 / 3, 1 / 3, 1 / 3])
    data = cs.pairs_from_list(env, [(2, 1)])
    logp = np.array([[0.0, -800.0, -900.0]])
    out = M.policy_metrics(env, np.exp(logp), eval_data=data, log_policies=logp)
    assert out["ranking_accuracy"][0] == 0.0
    assert M.policy_metrics(env, np.exp(logp), eval_data=data)["ranking_accuracy"][0] == 1.0


def test_win_rate_against_another_policy():
    env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
    s = 1.0 / (1.0 + np.exp(-1.0))
    # pi = delta_0 against delta_1: sigma(r_0 - r_1)
    assert M.win_rate(env, [1.0, 0.0], against=[0.0, 1.0]) == pytest.approx(s, rel=1e-14)
    assert M.win_rate(env, [1.0, 0.0]) == pytest.approx(0.5 * 0.5 + 0.5 * s, rel=1e-14)
