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


# ---------------------------------------------------------------- the O(K^2)-per-policy originals
# The library's pairwise metrics make one pass over the pairs for a whole stack of policies (and
# form the reference pairs on the fly). These are the straightforward numpy definitions they
# replaced; the fast ones must agree with them to rounding.


def _slow_win_rate(env, policy, against=None):
    other = env.ref2d if against is None else M._batched(env, against, "against")
    r = env.reward2d
    pref = expit(r[:, :, None] - r[:, None, :])
    p = M._batched(env, policy)
    per_ctx = np.einsum("...xi,xij,...xj->...x", p, pref, np.broadcast_to(other, p.shape))
    return per_ctx @ env.context_weights


def _slow_ranking_accuracy(env, policy, data):
    weights = data.weights * (1.0 - np.eye(env.n_responses))
    p = M._batched(env, policy)
    correct = p[..., :, :, None] >= p[..., :, None, :]
    return (correct * weights).sum(axis=(-3, -2, -1)) / weights.sum()


def _slow_ideal_ranking_accuracy(env, data, beta):
    weights = data.weights * (1.0 - np.eye(env.n_responses))
    pair = weights + np.swapaxes(weights, 1, 2)
    alpha = np.divide(weights, pair, out=np.full_like(weights, 0.5), where=pair > 0)
    alpha = np.clip(alpha, 1e-3, 1.0 - 1e-3)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ref = np.log(env.ref2d)
        score = (log_ref[:, :, None] - log_ref[:, None, :]
                 + (np.log(alpha) - np.log1p(-alpha)) / beta)
    return float((weights * np.where(weights > 0, score > 0, False)).sum() / weights.sum())


def _instances():
    """Random contextual bandits: partial-support reference, tied rewards and probabilities, and
    a reward range past the exp-free 700 (the per-pair sigmoid branch)."""
    rng = np.random.default_rng(42)
    out = []
    for k, n_ctx, reward_scale, partial in ((7, 1, 1.0, False), (60, 3, 3.0, True),
                                            (200, 2, 1.0, False), (50, 2, 500.0, True)):
        reward = reward_scale * rng.standard_normal((n_ctx, k))
        reward[:, 1] = reward[:, 0]                                   # a tie in reward
        ref = rng.dirichlet(np.ones(k), size=n_ctx)
        ref[:, 3] = ref[:, 2]                                         # a tie in pi_ref
        if partial:
            ref[:, -3:] = 0.0
        ref /= ref.sum(axis=1, keepdims=True)
        out.append(cs.Bandit(reward=reward, ref=ref, context_weights=rng.dirichlet(np.ones(n_ctx))))
    return out


@pytest.mark.parametrize("env", _instances(), ids=lambda e: f"K{e.n_responses}X{e.n_contexts}")
def test_fast_pairwise_metrics_equal_the_numpy_definitions(env):
    rng = np.random.default_rng(0)
    pols = rng.dirichlet(np.ones(env.n_responses), size=(6, env.n_contexts)) * (env.ref2d > 0)
    pols /= pols.sum(axis=-1, keepdims=True)
    pols[1] = env.ref2d                                                # ties of pi_ref
    pols[2] = np.round(pols[2], 2)                                     # ties of rounded values
    pols[2] /= pols[2].sum(axis=-1, keepdims=True)
    against = rng.dirichlet(np.ones(env.n_responses), size=env.n_contexts) * (env.ref2d > 0)
    against /= against.sum(axis=-1, keepdims=True)
    behavior = np.where(env.ref2d > 0, rng.uniform(0.5, 1.5, env.ref2d.shape), 0.0) * env.ref2d
    behavior /= behavior.sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(M.win_rate(env, pols), _slow_win_rate(env, pols), rtol=1e-13)
    np.testing.assert_allclose(M.win_rate(env, pols, against), _slow_win_rate(env, pols, against),
                               rtol=1e-13)
    reference = cs.offline_pairs(env, env.ref)
    datasets = [cs.offline_pairs(env, behavior, labels=labels, n=n, seed=1)
                for labels in ("bradley_terry", "deterministic") for n in (None, 300)]
    for data in [reference] + datasets:
        for beta in (0.1, 1.0):
            assert M.ideal_ranking_accuracy(env, data, beta) == pytest.approx(
                _slow_ideal_ranking_accuracy(env, data, beta), rel=1e-13, abs=1e-15)
        np.testing.assert_allclose(M.ranking_accuracy(env, pols, data),
                                   _slow_ranking_accuracy(env, pols, data), rtol=1e-13)
    # "reference": the same pairs as offline_pairs(env, env.ref), never materialised
    np.testing.assert_allclose(M.ranking_accuracy(env, pols, "reference"),
                               _slow_ranking_accuracy(env, pols, reference), rtol=1e-13)
    for beta in (0.1, 1.0):
        assert M.ideal_ranking_accuracy(env, "reference", beta) == pytest.approx(
            _slow_ideal_ranking_accuracy(env, reference, beta), rel=1e-13, abs=1e-15)


@pytest.mark.parametrize("env", _instances(), ids=lambda e: f"K{e.n_responses}X{e.n_contexts}")
def test_ranking_passes_split_over_threads_only_when_large_and_give_the_same_sums(env,
                                                                                  monkeypatch):
    """A small pass runs the serial kernels; a large one with free cores the parallel ones, with
    the same sums to the last bit (fixed row blocks added in one order)."""
    rng = np.random.default_rng(1)
    pols = rng.dirichlet(np.ones(env.n_responses), size=(5, env.n_contexts))
    pols[1] = np.round(pols[1], 2)                                     # ties
    data = cs.offline_pairs(env, env.ref, labels="bradley_terry", n=300, seed=2)
    threads = []
    for name in ("ranking_counts", "reference_ranking_counts"):
        kernel = getattr(M._mk, name)
        monkeypatch.setattr(M._mk, name, lambda *args, kernel=kernel: (
            threads.append(args[-1]), kernel(*args))[1])
    monkeypatch.setattr(M._threads, "thread_budget", lambda *limit: 3)
    with monkeypatch.context() as serial_only:
        # a process with small passes only never calls (nor compiles) the parallel kernels
        for name in ("_ranking_parallel", "_reference_parallel"):
            serial_only.setattr(M._mk, name, lambda *args: pytest.fail("parallel kernel called"))
        one = [M.ranking_accuracy(env, pols, d) for d in (data, "reference")]
    monkeypatch.setattr(M, "_PARALLEL_RANKING_WORK", 0)
    several = [M.ranking_accuracy(env, pols, d) for d in (data, "reference")]
    assert threads == [1, 1, 3, 3]
    for a, b in zip(one, several):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(one[0], _slow_ranking_accuracy(env, pols, data), rtol=1e-13)


def test_metrics_selection_order_subset_and_bad_input():
    env = cs.random_bandit(6, seed=3)
    data = cs.offline_pairs(env, env.ref)
    pols = np.stack([env.ref, cs.optimal_policy(env, 0.5)])
    full = M.policy_metrics(env, pols, beta=0.5, data=data, eval_data="reference")
    assert list(full) == [m for m in M.METRICS if m != "proxy_reward"]
    some = M.policy_metrics(env, pols, beta=0.5, data=data, eval_data="reference",
                            metrics=["ranking_accuracy", "reward"])
    assert list(some) == ["reward", "ranking_accuracy"]                # column order, not request
    for name in some:
        np.testing.assert_array_equal(some[name], full[name])
    assert M.policy_metrics(env, pols, metrics=[]) == {}
    assert list(M.policy_metrics(env, pols, metrics="kl")) == ["kl"]
    with pytest.raises(ValueError,
                       match=r"metrics: unknown metric 'accuracy'; allowed: reward, kl"):
        M.policy_metrics(env, pols, metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"metrics: 'tv_to_opt' needs beta"):
        M.policy_metrics(env, pols, metrics=["tv_to_opt"])
    with pytest.raises(ValueError, match=r"metrics: 'ranking_accuracy' needs held-out pairs"):
        M.policy_metrics(env, pols, metrics=["ranking_accuracy"])
    with pytest.raises(ValueError, match="metrics must be None or a sequence"):
        M.policy_metrics(env, pols, metrics=3)
    with pytest.raises(ValueError, match="'reference'"):
        M.ranking_accuracy(env, pols, "references")


def test_deterministic_product_pairs_take_the_ordered_count_and_agree():
    """Exact mu x mu pairs with deterministic labels: the O(K log K) weighted concordance count
    equals the numpy definition, with ties in the reward, in mu and in the policies; a proxy-reward
    labelling of the same pairs is not mistaken for it."""
    rng = np.random.default_rng(7)
    k = 40
    reward = np.round(rng.normal(size=(2, k)), 1)                     # many reward ties
    ref = rng.dirichlet(np.ones(k), size=2)
    env = cs.Bandit(reward=reward, ref=ref, context_weights=[0.25, 0.75])
    mu = np.where(np.arange(k) % 7 == 0, 0.0, ref)
    mu /= mu.sum(axis=1, keepdims=True)
    data = cs.offline_pairs(env, mu, labels="deterministic")
    pols = rng.dirichlet(np.ones(k), size=(6, 2))
    pols[1] = np.round(pols[1], 2)                                     # ties in the policy
    pols[2] = ref
    assert M._ordered_behavior(env, data, data.weights) is not None
    np.testing.assert_allclose(M.ranking_accuracy(env, pols, data),
                               _slow_ranking_accuracy(env, pols, data), rtol=1e-13)
    proxy = cs.offline_pairs(env, mu, labels="deterministic", reward=-reward)
    assert M._ordered_behavior(env, proxy, proxy.weights) is None
    np.testing.assert_allclose(M.ranking_accuracy(env, pols, proxy),
                               _slow_ranking_accuracy(env, pols, proxy), rtol=1e-13)


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


def test_win_rate_of_a_batch_against_a_batch_of_opponents(env3):
    # a batch of opponents (one per policy) takes the pairwise path, not the fixed-opponent one:
    # each row must equal the single-policy win rate, and pi beats a worse opponent
    policies = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    opponents = np.array([[0.0, 0.1, 0.9], [0.5, 0.25, 0.25]])
    batched = M.win_rate(env3, policies, against=opponents)
    single = [M.win_rate(env3, p, against=q) for p, q in zip(policies, opponents)]
    np.testing.assert_allclose(batched, single, rtol=1e-14)
    assert batched[0] > 0.5 > batched[1]
