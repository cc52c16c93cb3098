"""Tests for the numba kernels of the sampled mode (coverage_sim._sampled).

Oracles: the exact population kernels of coverage_sim._engine / coverage_sim._pair_kernels (a
sampled kernel evaluated on the whole population with its exact weights must reproduce them), the
definition of inverse-CDF sampling, closed forms of the baselines and KL estimators, and finite
differences.
"""

from __future__ import annotations

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim import _engine, _pair_kernels as pk, _sampled as S
from coverage_sim.losses import PAIR_LOSSES, get_pair_loss
from coverage_sim.sampling import sampling_stream

PAIR_PARAMS = {"sigmoid": dict(beta=0.7, label_smoothing=0.1), "cdpo": dict(beta=0.7,
               label_smoothing=0.15), "robust": dict(beta=0.7, label_smoothing=0.2),
               "exo_pair": dict(beta=0.7, label_smoothing=0.05), "ipo": dict(beta=0.7, length=2.5),
               "sigmoid_norm": dict(beta=0.7, length=2.5), "aot": dict(beta=0.7, label_smoothing=0.1),
               "aot_unpaired": dict(beta=0.7, label_smoothing=0.1)}


def _relmax(a, b):
    return float(np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-300))


def _instance(k, seed=0):
    """A bandit with K responses (two contexts below K = 1000), a random policy and exact data."""
    n_ctx = 2 if k < 1000 else 1
    env = cs.random_bandit(k, n_contexts=n_ctx, seed=seed, min_ref=0.1 / k)
    rng = np.random.default_rng(seed + 100)
    logits = np.log(env.ref) + rng.normal(size=env.shape)
    return env, logits, cs.offline_pairs(env, env.ref, labels="bradley_terry")


# ------------------------------------------------------------------------------------------------
# categorical draws
# ------------------------------------------------------------------------------------------------

def _table(p, factor=S.GUIDE_FACTOR):
    p2 = np.ascontiguousarray(np.asarray(p, dtype=np.float64)[None, :])
    cdf = np.empty_like(p2)
    guide = np.empty((1, factor * p2.shape[1]), dtype=np.int64)
    last = S.build_row(p2, cdf, guide, 0)
    return cdf, guide, last


@pytest.mark.parametrize("factor", [1, S.GUIDE_FACTOR])
def test_draw_row_is_the_first_index_whose_cdf_exceeds_u(factor):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.full(50, 0.3))
    p[[0, 7, 8, 49]] = 0.0  # zero masses at the start, in the middle and at the end
    cdf, guide, last = _table(p, factor)
    assert last == 48
    us = np.concatenate([rng.random(5000), [0.0, np.nextafter(1.0, 0.0)],
                         cdf[0, :-1] / cdf[0, last]])  # also exactly at the breakpoints
    us = us[us < 1.0]
    for u in us:
        i = S.draw_row(cdf, guide, 0, last, u)
        t = u * cdf[0, last]
        assert cdf[0, i] > t and (i == 0 or cdf[0, i - 1] <= t)
        assert p[i] > 0


def test_draw_row_frequencies_match_the_masses():
    p = np.array([0.0, 0.5, 0.2, 0.0, 0.25, 0.05, 0.0])
    cdf, guide, last = _table(p)
    state = sampling_stream(1)
    from coverage_sim._rng import uniform
    n = 200_000
    counts = np.bincount([S.draw_row(cdf, guide, 0, last, uniform(state)) for _ in range(n)],
                         minlength=p.size)
    assert (counts[p == 0] == 0).all()
    se = np.sqrt(n * p * (1 - p))
    assert (np.abs(counts - n * p)[p > 0] <= 5 * se[p > 0]).all()


def test_alias_table_draws_each_label_with_its_mass_and_never_a_zero_mass():
    from coverage_sim._rng import uniform
    p = np.array([0.0, 0.3, 0.0, 0.45, 0.05, 0.2, 0.0])
    labels = np.arange(100, 107)
    table = S.build_alias(p, labels)
    # exact law of the table: column j (probability 1/n) gives j w.p. threshold, else its alias
    n = p.size
    law = np.zeros(n)
    for j in range(n):
        law[int(table[j, 1]) - 100] += table[j, 0] / n
        law[int(table[j, 2]) - 100] += (1 - table[j, 0]) / n
    np.testing.assert_allclose(law, p, rtol=1e-14, atol=1e-16)
    state = sampling_stream(2)
    draws = np.array([S.draw_alias(table, uniform(state), uniform(state)) for _ in range(100_000)])
    counts = np.bincount(draws - 100, minlength=n)
    assert (counts[p == 0] == 0).all()
    assert (np.abs(counts - 1e5 * p) <= 5 * np.sqrt(1e5 * p * (1 - p)) + 1e-9).all()


def test_build_row_empty_row_reports_no_mass():
    cdf, guide, last = _table(np.zeros(4))
    assert last == -1


# ------------------------------------------------------------------------------------------------
# sparse terms on the population = the population kernels
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 7, 128, 1000])
@pytest.mark.parametrize("name", sorted(PAIR_LOSSES))
def test_sparse_pairwise_on_the_population_equals_the_population_kernel(name, k):
    env, logits, data = _instance(k)
    spec = get_pair_loss(name)
    prm = spec.pack(PAIR_PARAMS.get(name, dict(beta=0.7)))
    lp = cs.sampling.logits_to_logp(env, logits)
    rlp = _engine.kernel_array(env.ref_logp2d)
    W = _engine.kernel_array(data.weights)
    g_pop = np.zeros_like(lp)
    loss_pop = pk.population_pairwise(spec.code, prm, lp, rlp, W, g_pop)
    x, i, j = (a.astype(np.int64) for a in np.nonzero(W))
    g_sparse = np.zeros_like(lp)
    loss_sparse = S.sparse_pairwise(np.array([spec.code]), prm[None, :], np.ones(1), lp, rlp, x,
                                    i, j, np.ascontiguousarray(W[x, i, j]), x.size, g_sparse, True)
    assert abs(loss_sparse - loss_pop) <= 1e-12 * abs(loss_pop)
    assert _relmax(g_sparse, g_pop) <= 1e-12


TERM_CASES = [
    # (objective, its params, needs data, estimator): every term and every term estimator whose
    # integrand is linear in the measure
    ("best_of_n", dict(n=4), True, {}),
    ("awr", dict(beta=2.0), True, {}),
    ("rlhf", dict(beta=0.3), False, dict(kl_estimator="exact")),
    ("rlhf", dict(beta=0.3), False, dict(kl_estimator="k1", kl_in="reward")),
    ("rlhf", dict(beta=0.3), False, dict(kl_estimator="k2", kl_in="loss")),
    ("hypo", dict(beta=0.5, lam=0.4), True, dict(kl_estimator="exact")),
    ("hypo", dict(beta=0.5, lam=0.4), True, dict(kl_estimator="k1", kl_in="reward")),
    ("hypo", dict(beta=0.5, lam=0.4), True, dict(kl_estimator="k2", kl_in="loss")),
    ("online_dpo", dict(beta=0.5), False, {}),
    ("online_dpo", dict(beta=0.5, loss_type="nca_pair", labels="deterministic"), False, {}),
    ("online_ipo", dict(beta=0.5, label_noise=0.1), False, {}),
    ("iterative_dpo", dict(beta=0.5, n=3), False, {}),
    ("vpo", dict(beta=0.5, alpha=0.7), False, {}),
    ("vpo", dict(beta=0.5, alpha=0.7, mode="offline"), True, {}),
    ("rpo", dict(beta=0.5), True, {}),
    ("mpo", dict(beta=0.5), True, {}),
    (["ipo", "hinge"], dict(beta=0.5, loss_weights=[1.0, 0.5]), True, {}),
    ("sigmoid", dict(beta=0.5, f_divergence_type="forward_kl"), True, {}),
    ("nca_pair", dict(beta=0.5, f_divergence_type="js_divergence", use_weighting=True), True, {}),
    ("kto", dict(beta=0.5, undesirable_weight=1.5), True, {}),
    ("kto", dict(beta=0.5), True, dict(kl_estimator="k1")),   # on the population, z0 is exact
    ("apo_zero_unpaired", dict(beta=0.5), True, {}),
    ("nash_md", dict(beta=0.5, mixture_coef=0.3), False, {}),
    ("xpo", dict(beta=0.5, alpha=0.2), False, {}),
    ("xpo", dict(beta=0.5, alpha=0.2, loss_type="ipo", labels="bradley_terry"), False, {}),
]


@pytest.mark.parametrize("k", [2, 7, 128, 1000])
@pytest.mark.parametrize("name,params,needs_data,est", TERM_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(TERM_CASES)])
def test_every_term_on_the_population_batch_equals_the_exact_gradient(name, params, needs_data,
                                                                      est, k):
    env, logits, data = _instance(k, seed=1)
    obj = cs.objective(name, **params)
    d = data if needs_data else None
    loss, grad = cs.gradient(env, obj, logits, d)
    batch = cs.population_batch(env, obj, logits, d, **est)
    loss_b, grad_b = cs.batch_gradient(env, obj, logits, batch)
    if est.get("kl_estimator") == "k2":
        # k2 is unbiased for the KL gradient but not for its value: the plug-in loss carries
        # kl_coef * E_pi[g^2 / 2] in place of kl_coef * KL
        lp = cs.sampling.logits_to_logp(env, logits)
        g = lp - env.ref_logp2d
        mass = env.context_weights[:, None] * np.exp(lp)
        kl_coef = params.get("lam", params.get("beta"))
        loss += kl_coef * float((mass * (0.5 * g * g - g)).sum())
    assert abs(loss_b - loss) <= 1e-12 * max(abs(loss), 1.0)
    assert _relmax(grad_b, grad) <= 1e-12


# ------------------------------------------------------------------------------------------------
# baselines and KL estimators
# ------------------------------------------------------------------------------------------------

def test_group_baselines_closed_forms():
    r = np.array([0.3, -1.2, 2.0, 0.5])
    G = r.size
    out = {}
    for name, code in cs.sampling.BASELINES.items():
        a = r.copy()
        S._group_advantages(a, G, code)
        out[name] = a
    centred = r - r.mean()
    assert np.array_equal(out["none"], r)
    assert np.allclose(out["rloo"], [r[i] - np.delete(r, i).mean() for i in range(G)],
                       rtol=1e-14, atol=0)
    assert np.allclose(out["rloo"] * (G - 1) / G, centred, rtol=1e-14, atol=1e-15)
    assert np.array_equal(out["mean"], out["dr_grpo"])
    assert np.allclose(out["mean"], centred, rtol=1e-14, atol=1e-15)
    assert np.allclose(out["grpo"], centred / (r.std(ddof=1) + S.GRPO_EPS), rtol=1e-14, atol=0)


@pytest.mark.parametrize("est", [S.KL_K1, S.KL_K2, S.KL_K3])
@pytest.mark.parametrize("g", [-3.0, -0.2, 1e-9, 0.4, 5.0])
def test_kl_estimator_values_and_pathwise_derivatives(est, g):
    mpmath = pytest.importorskip("mpmath")  # a dependency of torch's sympy
    with mpmath.workdps(50):
        ratio = mpmath.exp(-mpmath.mpf(g))  # r = pi_ref / pi, in 50 digits
        expected = float({S.KL_K1: -mpmath.log(ratio), S.KL_K2: mpmath.log(ratio) ** 2 / 2,
                          S.KL_K3: (ratio - 1) - mpmath.log(ratio)}[est])
    value, deriv = S.kl_value_grad(est, g)
    assert value == pytest.approx(expected, rel=1e-13, abs=0)
    h = 1e-6
    fd = (S.kl_value_grad(est, g + h)[0] - S.kl_value_grad(est, g - h)[0]) / (2 * h)
    assert deriv == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("g", [1e-12, -3e-5, 0.0099, -0.0101])
def test_k3_is_accurate_near_zero_where_its_terms_cancel(g):
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        x = mpmath.mpf(g)
        expected = float(mpmath.exp(-x) - 1 + x)
    assert S.kl_value_grad(S.KL_K3, g)[0] == pytest.approx(expected, rel=1e-13, abs=0)


# ------------------------------------------------------------------------------------------------
# batch draws
# ------------------------------------------------------------------------------------------------

ENV3 = cs.Bandit(reward=[1.0, 0.0, 0.0, -1.0], ref=[0.4, 0.3, 0.2, 0.1])


def test_online_groups_count_samples_queries_and_pairs():
    b = cs.draw_batch(ENV3, "online_dpo", np.zeros(4), batch_size=5, group_size=4)
    assert (b.n_pairs, b.samples, b.queries) == (30, 20, 20)
    assert np.allclose(b.pair_weight, 1 / 30)
    b = cs.draw_batch(ENV3, "online_dpo", np.zeros(4), batch_size=5, group_size=5,
                      pairs="disjoint")
    assert b.n_pairs == 10 and np.allclose(b.pair_weight, 1 / 10)


def test_deterministic_labels_put_the_higher_reward_first():
    obj = cs.objective("online_dpo", labels="deterministic")
    b = cs.draw_batch(ENV3, obj, np.zeros(4), batch_size=200, group_size=3)
    r = ENV3.reward
    w, l = b.pair_winner, b.pair_loser
    assert (r[w] >= r[l]).all()
    tie = r[w] == r[l]
    assert tie.any() and (~tie).any()


def test_min_reward_gap_drops_pairs_but_keeps_the_nominal_weight():
    obj = cs.objective("online_dpo", labels="deterministic")
    b = cs.draw_batch(ENV3, obj, np.zeros(4), batch_size=200, group_size=3, min_reward_gap=1.5)
    r = ENV3.reward
    assert np.all(np.abs(r[b.pair_winner] - r[b.pair_loser]) >= 1.5)
    assert 0 < b.n_pairs < 600 and np.allclose(b.pair_weight, 1 / 600)


def test_min_reward_gap_keeps_the_pairs_whose_gap_equals_it():
    # rewards exact in binary: the gaps 0.5 equal the threshold and are kept, the ties dropped
    env = cs.Bandit(reward=[1.0, 0.5, 0.0], ref=[0.4, 0.3, 0.3])
    obj = cs.objective("online_dpo", labels="deterministic")
    b = cs.draw_batch(env, obj, np.zeros(3), batch_size=200, group_size=3, min_reward_gap=0.5)
    gaps = env.reward[b.pair_winner] - env.reward[b.pair_loser]
    assert set(np.round(gaps, 12)) == {0.5, 1.0}


def test_best_worst_pairs_are_the_extremes_of_each_group():
    obj = cs.objective("online_dpo", labels="deterministic")
    env = cs.Bandit(reward=[0.0, 1.0, 2.0, 3.0, 4.0], ref=np.full(5, 0.2))
    b = cs.draw_batch(env, obj, np.zeros(5), batch_size=300, group_size=6, pairs="best_worst")
    assert b.n_pairs == 300
    assert (env.reward[b.pair_winner] >= env.reward[b.pair_loser]).all()
    # with 6 draws from 5 arms the best is almost always arm 4 and the worst arm 0
    assert np.mean((b.pair_winner == 4) & (b.pair_loser == 0)) > 0.5


def test_iterative_dpo_drops_groups_of_one_response_and_renormalises():
    env = cs.Bandit(reward=[0.0, 1.0], ref=[0.5, 0.5])
    logits = np.log([0.9, 0.1])
    b = cs.draw_batch(env, cs.objective("iterative_dpo", n=2), logits, batch_size=400)
    # a pair needs both arms: probability 2 * 0.9 * 0.1 = 0.18 per group
    assert 0 < b.n_pairs < 400
    assert abs(b.n_pairs / 400 - 0.18) < 5 * np.sqrt(0.18 * 0.82 / 400)
    assert np.allclose(b.pair_weight, 1 / b.n_pairs)
    assert (b.pair_winner == 1).all() and (b.pair_loser == 0).all()


def test_best_of_n_ties_are_split_uniformly():
    # arms 1 and 2 tie for the best reward with equal behaviour mass: each wins half the time
    env = cs.Bandit(reward=[0.0, 1.0, 1.0], ref=[0.5, 0.25, 0.25])
    data = cs.offline_pairs(env, env.ref)
    b = cs.draw_batch(env, cs.objective("best_of_n", n=3), np.zeros(3), data, batch_size=20000)
    q = cs.best_of_n_policy(env.ref, env.reward, 3)
    freq = np.bincount(b.response, minlength=3) / b.response.size
    assert np.all(np.abs(freq - q) <= 5 * np.sqrt(q * (1 - q) / b.response.size))
    assert (b.samples, b.queries) == (60000, 60000)


def test_kto_batch_reference_point_pairs_each_context_with_the_previous_response():
    # TRL's KL dataset: the batch's completions shifted by one, (x_i, y_{i-1}), cyclically
    env = cs.Bandit(reward=[[1.0, 0.0, -1.0], [0.5, 0.0, 2.0]], ref=[[0.5, 0.3, 0.2]] * 2)
    data = cs.unpaired_data(env, env.ref, labels="bradley_terry")
    b = cs.draw_batch(env, cs.objective("kto"), np.zeros((2, 3)), data, batch_size=50,
                      kl_estimator="k1")
    assert np.array_equal(b.mismatched_context, b.unpaired_context)
    assert np.array_equal(b.mismatched_response, np.roll(b.unpaired_response, 1))
    assert np.allclose(b.mismatched_weight, 1 / 50)
    assert not np.array_equal(b.mismatched_response, b.unpaired_response)


def test_policy_samples_carry_their_advantages_and_old_log_probs():
    logits = np.array([0.3, -0.2, 0.0, 0.1])
    b = cs.draw_batch(ENV3, cs.objective("rlhf", beta=0.5), logits, batch_size=7, group_size=3,
                      baseline="none", kl_estimator="exact")
    lp = cs.sampling.logits_to_logp(ENV3, logits)[0]
    assert np.array_equal(b.sample_advantage, ENV3.reward[b.sample])
    assert np.array_equal(b.sample_logp_old, lp[b.sample])
    assert np.allclose(b.sample_weight, 1 / 21)
    assert (b.samples, b.queries) == (21, 21)
