"""Tests for the sampled mode (coverage_sim.sampling and its training path).

Oracles: the exact population gradient (``coverage_sim.gradient``) as the mean of unbiased
estimators, by Monte Carlo with tolerances from the spread of the draws themselves; deliberately
biased estimators as negative controls of the same check; the exact training run as the limit of
sampled training; ``train`` as the oracle of ``train_many``; hand-built batches for reuse and clipping.
"""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import coverage_sim as cs
from coverage_sim.losses import PAIR_LOSSES
from coverage_sim.sampling import Estimator

N_DRAWS = 4000
Z_MAX = 4.0

# Two contexts with unequal weights, rewards with ties (best-of-n breaks them), a policy away from
# the reference so that every KL estimator's gradient differs from the others.
ENV = cs.Bandit(reward=[[1.0, 0.3, 0.3, -0.5, -1.0], [0.2, 0.9, -0.4, 0.9, 0.0]],
                ref=[[0.3, 0.25, 0.2, 0.15, 0.1], [0.1, 0.2, 0.3, 0.2, 0.2]],
                context_weights=[0.35, 0.65], name="test-2x5")
LOGITS = np.log(ENV.ref) + np.array([[0.8, -0.5, 0.3, -0.9, 0.4], [-0.6, 0.7, 0.2, -0.3, 0.9]])
DATA = cs.offline_pairs(ENV, ENV.ref, labels="bradley_terry")
# Unpaired data from a behaviour policy tilted towards where LOGITS put more mass than ENV.ref, so
# that KTO's reference point z0 = E_mismatched log pi/pi_ref is positive at LOGITS (not clamped).
_TILT = np.exp(5.0 * (LOGITS - np.log(ENV.ref)))
KTO_DATA = cs.unpaired_data(ENV, _TILT / _TILT.sum(axis=1, keepdims=True), labels="bradley_terry")


def monte_carlo_agrees(objective, exact, data=None, batch_size=4, seed=0, scale=1.0,
                       **estimator):
    """Whether the mean of N_DRAWS sampled gradients equals ``exact`` within Z_MAX standard errors
    in every coordinate (standard errors from the spread of the draws). Coordinates that do not
    vary beyond rounding (e.g. a response no pair in the data contains, whose logit gradient is
    exactly 0 up to rounding) must match exactly, to rounding. Returns ``(agrees, largest z)``."""
    _, grads = cs.sampled_gradients(ENV, objective, LOGITS, data, batch_size=batch_size,
                                    draws=N_DRAWS, seed=seed, **estimator)
    grads = grads * scale
    mean = grads.mean(axis=0)
    se = grads.std(axis=0, ddof=1) / np.sqrt(N_DRAWS)
    size = max(np.abs(exact).max(), 1e-300)
    fixed = se <= 1e-14 * size
    exact_ok = np.all(np.abs(mean[fixed] - exact[fixed]) <= 1e-12 * size)
    z = np.abs(mean - exact)[~fixed] / se[~fixed]
    zmax = float(z.max()) if z.size else 0.0
    return bool(exact_ok and zmax <= Z_MAX), zmax


UNBIASED = [
    *[(name, dict(beta=0.5), True, {}) for name in sorted(PAIR_LOSSES)
      if name not in ("aot", "aot_unpaired")],
    ("best_of_n", dict(n=3), True, {}),
    ("awr", dict(beta=2.0), True, {}),
    ("rlhf", dict(beta=1.0), False, {}),                               # rloo, k1 in the reward
    ("rlhf", dict(beta=1.0), False, dict(group_size=1, baseline="none")),
    ("rlhf", dict(beta=1.0), False, dict(group_size=4, baseline="rloo")),
    ("rlhf", dict(beta=1.0), False, dict(kl_estimator="k2", kl_in="loss")),
    ("rlhf", dict(beta=1.0), False, dict(kl_estimator="exact")),
    ("rlhf", dict(beta=1.0), False, dict(clip=0.2)),                  # first step: ratio 1
    ("online_dpo", dict(beta=0.5), False, {}),
    ("online_dpo", dict(beta=0.5), False, dict(group_size=4)),
    ("online_dpo", dict(beta=0.5), False, dict(group_size=5, pairs="disjoint")),
    ("online_dpo", dict(beta=0.5, labels="deterministic"), False,
     dict(group_size=2, pairs="best_worst")),                          # the one unbiased best_worst
    ("online_dpo", dict(beta=0.5, label_noise=0.2, reward=[[0.0, 1, 2, 3, 4], [1, 0, 1, 0, 1]]),
     False, dict(group_size=3)),
    ("online_dpo", dict(beta=0.5, loss_type="ipo"), False, dict(group_size=3)),
    ("online_ipo", dict(beta=0.5, labels="deterministic"), False, {}),
    ("iterative_dpo", dict(beta=0.5, n=3), False, {}),
    ("hypo", dict(beta=0.5, lam=1.0), True, {}),
    ("hypo", dict(beta=0.5, lam=1.0), True, dict(kl_estimator="k2", kl_in="loss")),
    ("hypo", dict(beta=0.5, lam=1.0), True, dict(kl_estimator="exact")),
    ("vpo", dict(beta=0.5, alpha=1.0), False, {}),
    ("vpo", dict(beta=0.5, alpha=1.0, mode="offline"), True, {}),
    # TRL's list-valued loss types, f-divergences and WPO: the exact per-pair layer on each pair
    ("rpo", dict(beta=0.5), True, {}),
    ("mpo", dict(beta=0.5), True, {}),
    (["exo_pair", "nca_pair"], dict(beta=0.5, loss_weights=[0.3, 1.0], use_weighting=True), True,
     {}),
    ("sigmoid", dict(beta=0.5, f_divergence_type="js_divergence"), True, {}),
    ("bco_pair", dict(beta=0.5, f_divergence_type="alpha_divergence",
                      f_alpha_divergence_coef=0.3), True, {}),
    ("apo_down", dict(beta=0.5, f_divergence_type="forward_kl"), True, {}),
    ("sigmoid", dict(beta=0.5, use_weighting=True), True, {}),
    # KTO with the exact reference point (z0 > 0 at LOGITS on KTO_DATA), on unpaired and paired data
    ("kto", dict(beta=2.0, desirable_weight=1.3), KTO_DATA, {}),
    ("kto", dict(beta=2.0), True, {}),
    ("apo_zero_unpaired", dict(beta=2.0, undesirable_weight=0.7), KTO_DATA, {}),
    ("nash_md", dict(beta=0.5), False, {}),
    ("nash_md", dict(beta=0.5, mixture_coef=0.8, labels="deterministic", label_noise=0.1), False,
     {}),
    ("xpo", dict(beta=0.5, alpha=0.3), False, {}),                    # ties go to the policy
    ("xpo", dict(beta=0.5, alpha=0.3, loss_type="ipo", labels="bradley_terry", label_noise=0.1),
     False, {}),
]


@pytest.mark.parametrize("name,params,needs_data,estimator", UNBIASED,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(UNBIASED)])
def test_unbiased_estimators_average_to_the_exact_gradient(name, params, needs_data, estimator):
    obj = cs.objective(name, **params)
    data = DATA if needs_data is True else (needs_data or None)
    _, exact = cs.gradient(ENV, obj, LOGITS, data)
    agrees, zmax = monte_carlo_agrees(obj, exact, data, **estimator)
    assert agrees, f"largest z = {zmax:.2f}"


def test_minibatches_of_finite_group_data_are_unbiased_for_that_data():
    data = cs.group_pairs(ENV, ENV.ref, n_groups=6, group_size=4, min_reward_gap=0.5)
    obj = cs.objective("sigmoid", beta=0.5)
    agrees, zmax = monte_carlo_agrees(obj, cs.gradient(ENV, obj, LOGITS, data)[1], data)
    assert agrees, f"largest z = {zmax:.2f}"


def test_best_worst_pairs_of_two_are_unbiased_where_rewards_tie():
    # G = 2, deterministic labels: best vs worst is the drawn pair itself, ties included (then
    # labelled by a fair coin), so it estimates the all-pairs gradient. Here two of three
    # responses tie, so tied pairs carry much of the gradient.
    env = cs.Bandit(reward=[1.0, 1.0, 0.0], ref=[0.4, 0.4, 0.2])
    logits = np.log(env.ref) + np.array([0.8, -0.6, 0.0])
    obj = cs.objective("online_dpo", beta=0.5, labels="deterministic")
    exact = cs.gradient(env, obj, logits)[1]
    _, grads = cs.sampled_gradients(env, obj, logits, batch_size=4, draws=N_DRAWS, seed=0,
                                    group_size=2, pairs="best_worst")
    se = grads.std(axis=0, ddof=1) / np.sqrt(N_DRAWS)
    assert np.all(np.abs(grads.mean(axis=0) - exact) <= Z_MAX * se)


def test_min_reward_gap_is_unbiased_for_the_truncated_population():
    obj = cs.objective("online_dpo", beta=0.5, labels="deterministic")
    _, truncated = cs.gradient(ENV, obj, LOGITS, min_reward_gap=0.6)
    _, full = cs.gradient(ENV, obj, LOGITS)
    assert monte_carlo_agrees(obj, truncated, group_size=3, min_reward_gap=0.6)[0]
    # negative control: the untruncated population is not what it estimates
    assert not monte_carlo_agrees(obj, full, group_size=3, min_reward_gap=0.6)[0]


BIASED = [
    ("rlhf", dict(group_size=2, baseline="mean")),       # (G-1)/G = 1/2 of RLOO
    ("rlhf", dict(group_size=2, baseline="dr_grpo")),
    ("rlhf", dict(group_size=2, baseline="grpo")),
    ("rlhf", dict(group_size=8, baseline="grpo")),
    ("rlhf", dict(kl_estimator="k1", kl_in="loss")),     # zero expected KL gradient
    ("rlhf", dict(kl_estimator="k3", kl_in="loss")),     # the forward KL's gradient
    ("rlhf", dict(kl_estimator="k2", kl_in="reward")),
    ("rlhf", dict(kl_estimator="k3", kl_in="reward")),
    ("online_dpo", dict(group_size=4, pairs="best_worst")),
]


@pytest.mark.parametrize("name,estimator", BIASED, ids=[str(e) for _, e in BIASED])
def test_biased_estimators_are_rejected_by_the_same_check(name, estimator):
    obj = cs.objective(name, beta=1.0)
    _, exact = cs.gradient(ENV, obj, LOGITS)
    agrees, zmax = monte_carlo_agrees(obj, exact, **estimator)
    assert not agrees, f"largest z = {zmax:.2f}"


def test_a_wrongly_scaled_estimator_is_rejected():
    # online DPO with G = 4 divided by the responses (4) instead of the pairs (6) per group
    obj = cs.objective("online_dpo", beta=0.5)
    _, exact = cs.gradient(ENV, obj, LOGITS)
    assert monte_carlo_agrees(obj, exact, group_size=4)[0]
    assert not monte_carlo_agrees(obj, exact, group_size=4, scale=6 / 4)[0]


def test_exact_bias_of_kl_estimators_is_the_documented_one():
    # population_batch integrates each estimator exactly: k1 in the loss loses the KL gradient
    # (what remains is the reward term's), k3 in the loss is the forward KL's gradient
    obj = cs.objective("rlhf", beta=1.0)
    reward_only = cs.gradient(ENV, cs.objective("rlhf", beta=1e-300), LOGITS)[1]
    k1_loss = cs.batch_gradient(ENV, obj, LOGITS, cs.population_batch(
        ENV, obj, LOGITS, kl_estimator="k1", kl_in="loss"))[1]
    np.testing.assert_allclose(k1_loss, reward_only, rtol=1e-12, atol=1e-15)
    k3_loss = cs.batch_gradient(ENV, obj, LOGITS, cs.population_batch(
        ENV, obj, LOGITS, kl_estimator="k3", kl_in="loss"))[1]
    pi = np.exp(cs.sampling.logits_to_logp(ENV, LOGITS))
    rho = ENV.context_weights[:, None]
    forward_kl_grad = rho * (pi - ENV.ref)  # d KL(ref || pi) / d logits
    np.testing.assert_allclose(k3_loss, reward_only + forward_kl_grad, rtol=1e-12, atol=1e-15)


def _exact_mean_of_kto_batches(obj, batch_size, reference_point):
    """The exact expectation of KTO's sampled gradient at LOGITS on KTO_DATA: every ordered tuple of
    ``batch_size`` examples with its probability, each evaluated as a Batch (mismatched pairs: the
    tuple rotated by one, TRL's KL dataset, or the data's exact mismatched law)."""
    U = np.stack([KTO_DATA.desirable, KTO_DATA.undesirable])
    lab, xs, ys = np.nonzero(U)
    probs = U[lab, xs, ys]
    est = Estimator(kl_estimator=reference_point).resolve(obj)
    mx, my = np.nonzero(KTO_DATA.mismatched)
    mean = np.zeros(ENV.shape)
    for tup in itertools.product(range(probs.size), repeat=batch_size):
        t = np.array(tup)
        rotated = np.roll(t, 1)
        if reference_point == "k1":
            mis = dict(mismatched_context=xs[t], mismatched_response=ys[rotated],
                       mismatched_weight=np.full(batch_size, 1.0 / batch_size))
        else:
            mis = dict(mismatched_context=mx, mismatched_response=my,
                       mismatched_weight=KTO_DATA.mismatched[mx, my])
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        batch = cs.Batch(empty_i, empty_i, empty_i, empty_f, empty_i, empty_i, empty_f, empty_i,
                         empty_i, empty_f, empty_f, empty_f, batch_size, 0, est,
                         unpaired_context=xs[t], unpaired_response=ys[t],
                         unpaired_desirable=(lab[t] == 0).astype(np.int64),
                         unpaired_weight=np.full(batch_size, 1.0 / batch_size), **mis)
        mean += np.prod(probs[t]) * cs.batch_gradient(ENV, obj, LOGITS, batch)[1]
    return mean


def test_kto_reference_point_exact_is_unbiased_and_trls_batch_estimate_is_not():
    obj = cs.objective("kto", beta=2.0)
    lp = cs.sampling.logits_to_logp(ENV, LOGITS)
    assert (KTO_DATA.mismatched * (lp - ENV.ref_logp2d)).sum() > 0.02   # z0 is not clamped
    _, exact = cs.gradient(ENV, obj, LOGITS, KTO_DATA)
    mean_exact = _exact_mean_of_kto_batches(obj, 2, "exact")
    np.testing.assert_allclose(mean_exact, exact, rtol=1e-12, atol=1e-15)
    # TRL's z0 = max(0, batch mean of the rotated pairs) enters the loss nonlinearly: biased
    mean_k1 = _exact_mean_of_kto_batches(obj, 2, "k1")
    bias = np.linalg.norm(mean_k1 - exact) / np.linalg.norm(exact)
    assert bias > 0.01, bias
    # and the sampler draws what the enumeration integrates: its Monte Carlo mean is mean_k1
    _, grads = cs.sampled_gradients(ENV, obj, LOGITS, KTO_DATA, batch_size=2, draws=N_DRAWS,
                                    seed=0, kl_estimator="k1")
    se = grads.std(axis=0, ddof=1) / np.sqrt(N_DRAWS)
    assert np.all(np.abs(grads.mean(axis=0) - mean_k1) <= Z_MAX * se + 1e-15)


# ------------------------------------------------------------------------------------------------
# sampled training
# ------------------------------------------------------------------------------------------------

@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_sampled_training_converges_to_the_exact_run_like_one_over_sqrt_batch(seed):
    env = cs.random_bandit(6, seed=seed, reward_scale=1.0, min_ref=0.02)
    obj = cs.objective("rlhf", beta=0.5)
    kw = dict(steps=60, lr=0.5, optimizer="gd", record=[60])
    exact = cs.train(env, obj, **kw).policy
    sizes = np.array([16, 64, 256])
    rms = []
    for b in sizes:
        runs = cs.train_many([env] * 24, obj, seed=0, batch_size=int(b), **kw)
        dist2 = [np.sum((r.policy - exact) ** 2) for r in runs]
        rms.append(np.sqrt(np.mean(dist2)))
    slope = np.polyfit(np.log(sizes), np.log(rms), 1)[0]
    # the fluctuation of an unbiased sampled run around the exact one scales like B^(-1/2)
    assert -0.7 <= slope <= -0.3, (slope, rms)


@settings(max_examples=4, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_sampled_tr_dpo_converges_to_the_exact_moving_reference_run(seed):
    """TR-DPO in sampled mode: policy and moving reference approach the exact run like B^(-1/2)."""
    env = cs.random_bandit(6, seed=seed, reward_scale=1.0, min_ref=0.02)
    data = cs.offline_pairs(env, env.ref, labels="bradley_terry")
    obj = cs.objective("sigmoid", beta=0.5, sync_ref_model=True, ref_model_sync_steps=5,
                       ref_model_mixup_alpha=0.6)
    kw = dict(steps=60, lr=0.5, optimizer="gd", record=[60])
    exact = cs.train(env, obj, data, **kw)
    sizes = np.array([16, 64, 256])
    rms_policy, rms_ref = [], []
    for b in sizes:
        runs = cs.train_many([env] * 24, obj, data, seed=0, batch_size=int(b), **kw)
        rms_policy.append(np.sqrt(np.mean([np.sum((r.policy - exact.policy) ** 2) for r in runs])))
        rms_ref.append(np.sqrt(np.mean([np.sum((r.references[-1] - exact.references[-1]) ** 2)
                                        for r in runs])))
    for rms in (rms_policy, rms_ref):
        slope = np.polyfit(np.log(sizes), np.log(rms), 1)[0]
        assert -0.7 <= slope <= -0.3, (slope, rms)


def test_sampled_tr_dpo_moves_its_reference_by_the_mixing_rule():
    tau, alpha = 3, 0.6
    obj = cs.objective("sigmoid", beta=0.5, sync_ref_model=True, ref_model_sync_steps=tau,
                       ref_model_mixup_alpha=alpha)
    kw = dict(steps=12, lr=0.1, batch_size=4, seed=2, record=list(range(13)))
    run = cs.train(ENV, obj, DATA, **kw)
    expected = ENV.ref
    for s in range(13):
        if s > 0 and s % tau == 0:   # after update s: normalise(pi_s^alpha pi_ref^(1 - alpha))
            mixed = np.exp(alpha * np.log(run.snapshots[s]) + (1 - alpha) * np.log(expected))
            expected = mixed / mixed.sum(axis=-1, keepdims=True)
        np.testing.assert_allclose(run.references[s], expected, rtol=1e-10)
    assert "kl_current_ref" in run.history and "samples" in run.history
    # the reference enters the gradients: with no sync in range the run is sampled DPO bit for bit
    plain = cs.train(ENV, cs.objective("sigmoid", beta=0.5), DATA, **kw)
    never = cs.train(ENV, cs.objective("sigmoid", beta=0.5, sync_ref_model=True,
                                       ref_model_sync_steps=100), DATA, **kw)
    assert np.array_equal(never.snapshots, plain.snapshots)
    assert not np.array_equal(run.snapshots, plain.snapshots)
    # problem b of a batch is train(seed + b), reference included
    other = cs.objective("sigmoid", beta=0.5, sync_ref_model=True, ref_model_sync_steps=5,
                         ref_model_mixup_alpha=1.0)
    batched = cs.train_many(ENV, [obj, other], DATA, **{**kw, "seed": 7})
    for b, o in enumerate((obj, other)):
        single = cs.train(ENV, o, DATA, **{**kw, "seed": 7 + b})
        assert np.array_equal(batched[b].snapshots, single.snapshots)
        assert np.array_equal(batched[b].references, single.references)


def test_same_seed_same_history_other_seed_other_history():
    kw = dict(steps=40, lr=0.05, batch_size=8, estimator=dict(group_size=3))
    a = cs.train(ENV, "rlhf", seed=4, **kw)
    b = cs.train(ENV, "rlhf", seed=4, **kw)
    c = cs.train(ENV, "rlhf", seed=5, **kw)
    assert a.history.equals(b.history) and np.array_equal(a.policy, b.policy)
    assert not np.array_equal(a.policy, c.policy)


@pytest.mark.parametrize("name,data,estimator", [
    ("rlhf", None, dict(group_size=3, clip=0.2)), ("sigmoid", DATA, None),
    ("online_dpo", None, dict(pairs="all", group_size=3)), ("iterative_dpo", None, None),
    ("best_of_n", DATA, None), ("vpo", None, None), ("kto", KTO_DATA, dict(kl_estimator="k1")),
    ("kto", DATA, None), ("nash_md", None, None), ("xpo", None, None), ("mpo", DATA, None)])
def test_train_many_equals_train_problem_by_problem_whatever_the_threads(name, data, estimator):
    kw = dict(steps=25, lr=0.05, batch_size=6, estimator=estimator, reuse=1 if name ==
              "iterative_dpo" else 2)
    obj = cs.objective(name, steps_per_iteration=7) if name == "iterative_dpo" else name
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = cs.train_many(ENV, obj, data, seed=10, lr=[0.05, 0.1, 0.02], **{
            k: v for k, v in kw.items() if k != "lr"})
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = cs.train_many(ENV, obj, data, seed=10, lr=[0.05, 0.1, 0.02], **{
            k: v for k, v in kw.items() if k != "lr"})
    finally:
        numba.set_num_threads(threads)
    for b, lr in enumerate([0.05, 0.1, 0.02]):
        single = cs.train(ENV, obj, data, seed=10 + b, **{**kw, "lr": lr})
        for batched in (one[b], two[b]):
            assert np.array_equal(batched.snapshots, single.snapshots)
            assert batched.history.equals(single.history)
            assert np.array_equal(batched.params, single.params)


def test_train_many_counts_each_problems_own_draws():
    # best-of-n problems with different n draw B n responses per batch each (all scored)
    kw = dict(steps=6, lr=0.05, batch_size=5, record=[0, 3, 6])
    objs = [cs.objective("best_of_n", n=2), cs.objective("best_of_n", n=5)]
    runs = cs.train_many(ENV, objs, DATA, seed=4, **kw)
    for b, (obj, n) in enumerate(zip(objs, (2, 5))):
        expected = 5 * n * np.array([0, 3, 6])
        assert np.array_equal(runs[b].history["samples"], expected)
        assert np.array_equal(runs[b].history["queries"], expected)
        assert runs[b].history.equals(cs.train(ENV, obj, DATA, seed=4 + b, **kw).history)


def test_history_counts_samples_and_queries_and_config_records_the_estimator():
    run = cs.train(ENV, "online_dpo", steps=9, lr=0.05, batch_size=4, reuse=2,
                   estimator=dict(group_size=3), record=list(range(10)))
    steps = run.history["step"].to_numpy()
    batches_before = -(-steps // 2)              # ceil(s / reuse)
    assert np.array_equal(run.history["samples"].to_numpy(), 12 * batches_before)
    assert np.array_equal(run.history["queries"].to_numpy(), 12 * batches_before)
    assert run.config["batch_size"] == 4 and run.config["reuse"] == 2
    assert run.config["estimator"] == Estimator(group_size=3).resolve(
        cs.objective("online_dpo")).as_dict()
    exact = cs.train(ENV, "online_dpo", steps=9, lr=0.05)
    assert exact.config["batch_size"] is None and "samples" not in exact.history
    # offline minibatches query no labels; every drawn response of an online group is scored
    off = cs.train(ENV, "sigmoid", DATA, steps=3, lr=0.05, batch_size=5, record=[3])
    assert off.history["samples"].iloc[-1] == 30 and off.history["queries"].iloc[-1] == 0


def test_one_batch_reused_for_every_step_is_gradient_descent_on_that_batch():
    obj = cs.objective("online_dpo", beta=0.5)
    run = cs.train(ENV, obj, steps=5, lr=0.3, optimizer="gd", batch_size=6, reuse=5, seed=2,
                   record=[5])
    batch = cs.draw_batch(ENV, obj, np.log(ENV.ref), batch_size=6, seed=2)
    logits = np.log(ENV.ref)
    for _ in range(5):
        logits = logits - 0.3 * cs.batch_gradient(ENV, obj, logits, batch)[1]
    np.testing.assert_allclose(run.params.reshape(ENV.shape), logits, rtol=1e-13, atol=1e-13)


def test_clipping_zeroes_the_gradient_of_samples_outside_the_trust_region():
    env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.4, 0.3, 0.3])
    obj = cs.objective("rlhf", beta=0.5)
    old = np.zeros(3)
    lp_old = cs.sampling.logits_to_logp(env, old)[0]
    est = Estimator(clip=0.2).resolve(obj)

    def one_sample(advantage):
        empty = np.zeros(0, dtype=np.int64)
        return cs.Batch(empty, empty, empty, np.zeros(0), empty, empty, np.zeros(0),
                        np.array([0]), np.array([0]), np.array([1.0]), np.array([advantage]),
                        lp_old[:1].copy(), 1, 1, est)

    for advantage in (1.0, -1.0):
        for shift, clipped in ((0.0, False), (0.1, False), (0.5, advantage > 0),
                               (-0.5, advantage < 0)):
            logits = old + np.array([shift, 0.0, 0.0])
            pi = np.exp(cs.sampling.logits_to_logp(env, logits)[0])
            ratio = pi[0] / np.exp(lp_old[0])
            _, grad = cs.batch_gradient(env, obj, logits, one_sample(advantage))
            expected = np.zeros(3) if clipped else -advantage * ratio * (np.eye(3)[0] - pi)
            np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-15)


def test_plug_in_loss_of_old_samples_is_importance_weighted():
    # the policy samples of pi_old, evaluated at another policy pi, estimate the population loss
    # at pi through r = pi / pi_old: on the exact pi_old measure that is the exact loss at pi
    # (k1 and k3 are both unbiased for the value of KL(pi || pi_ref), wherever they sit)
    obj = cs.objective("rlhf", beta=0.5)
    moved = LOGITS + np.array([[0.3, -0.2, 0.1, 0.0, -0.4], [0.2, 0.0, -0.3, 0.5, 0.1]])
    exact_loss = cs.gradient(ENV, obj, moved)[0]
    for kl_estimator, kl_in in itertools.product(("k1", "k3"), ("reward", "loss")):
        batch = cs.population_batch(ENV, obj, LOGITS, kl_estimator=kl_estimator, kl_in=kl_in)
        loss = cs.batch_gradient(ENV, obj, moved, batch)[0]
        assert loss == pytest.approx(exact_loss, rel=1e-12), (kl_estimator, kl_in)


@pytest.mark.parametrize("sequence", [False, True], ids=["engine-loop", "python-loop"])
def test_iterative_dpo_restarts_adam_with_each_dataset(sequence):
    # steps_per_iteration = 1: every update is the first Adam step of a fresh optimiser, whose
    # bias-corrected size is lr |g| / (|g| + eps) per coordinate: lr, or 0 where g = 0 (eps tiny)
    obj = cs.objective("iterative_dpo", beta=0.5, n=3, steps_per_iteration=1)
    lock = cs.combination_lock(vocab=3, length=2, secret=[2, 0])
    env, policy = (lock.bandit, cs.AutoregressiveTabular(lock)) if sequence else (ENV, None)
    lr = 0.05
    params = [cs.train(env, obj, policy=policy, steps=s, lr=lr, batch_size=4, seed=3,
                       adam=(0.9, 0.999, 1e-300)).params for s in range(1, 6)]
    size = np.abs(np.diff(params, axis=0)) / lr      # updates 2..5 (update 1 is t = 1 anyway)
    assert np.all((size < 1e-9) | (np.abs(size - 1.0) < 1e-9)), size
    assert (size > 0.5).any()


def test_sampled_training_of_a_sequence_policy_draws_the_engine_batches():
    lock = cs.combination_lock(vocab=3, length=2, secret=[2, 0])
    env = lock.bandit
    kw = dict(steps=30, lr=0.1, batch_size=8, seed=3, estimator=dict(group_size=2))
    seq_run = cs.train(env, "rlhf", policy=cs.AutoregressiveTabular(lock), **kw)
    tab_run = cs.train(env, "rlhf", **kw)
    # both start at pi_ref, so step 0 evaluates the same first batch
    assert seq_run.history["loss"].iloc[0] == tab_run.history["loss"].iloc[0]
    assert np.array_equal(seq_run.history["samples"], tab_run.history["samples"])
    again = cs.train(env, "rlhf", policy=cs.AutoregressiveTabular(lock), **kw)
    assert seq_run.history.equals(again.history)
    assert seq_run.history["reward"].iloc[-1] > seq_run.history["reward"].iloc[0]


# ------------------------------------------------------------------------------------------------
# estimator options
# ------------------------------------------------------------------------------------------------

def test_estimator_defaults_are_the_unbiased_ones():
    rlhf = Estimator().resolve(cs.objective("rlhf"))
    assert (rlhf.group_size, rlhf.baseline, rlhf.kl_estimator, rlhf.kl_in) == (2, "rloo", "k1",
                                                                                "reward")
    online = Estimator().resolve(cs.objective("online_dpo"))
    assert (online.group_size, online.pairs, online.min_reward_gap) == (2, "all", 0.0)
    assert Estimator().resolve(cs.objective("sigmoid")) == Estimator()
    exact_kl = Estimator(kl_estimator="exact").resolve(cs.objective("hypo"))
    assert exact_kl.kl_in is None and exact_kl.baseline == "none"
    assert Estimator().resolve(cs.objective("kto")) == Estimator(kl_estimator="exact")
    for name in ("rpo", "apo_zero_unpaired", "nash_md", "xpo"):
        assert Estimator().resolve(cs.objective(name)) == Estimator()


@pytest.mark.parametrize("name,data,samples,queries", [
    ("nash_md", None, 2, 2),        # y ~ pi and y' ~ pi_mix, both scored
    ("xpo", None, 2, 2),            # y ~ pi and y' ~ pi_ref, both scored
    ("vpo", None, 3, 2),            # G = 2 responses ~ pi, scored; one y ~ pi_ref (linear term)
    ("kto", DATA, 1, 0),            # one example each; its label comes with the data
    ("rpo", DATA, 2, 0)])
def test_new_objectives_count_their_draws(name, data, samples, queries):
    run = cs.train(ENV, name, data, steps=3, lr=0.05, batch_size=5, record=[3])
    assert run.history["samples"].iloc[-1] == 3 * 5 * samples
    assert run.history["queries"].iloc[-1] == 3 * 5 * queries


@pytest.mark.parametrize("objective,options,word", [
    ("sigmoid", dict(baseline="rloo"), "baseline"),
    ("online_dpo", dict(kl_estimator="k1"), "kl_estimator"),
    ("online_dpo", dict(clip=0.2), "clip"),
    ("hypo", dict(kl_estimator="k2", kl_in="loss", clip=0.2), "clip"),
    ("hypo", dict(kl_estimator="exact", baseline="rloo"), "baseline"),
    ("rlhf", dict(kl_estimator="exact", kl_in="loss"), "kl_in"),
    ("rlhf", dict(group_size=1), "group_size"),
    ("online_dpo", dict(group_size=1), "group_size"),
    ("iterative_dpo", dict(group_size=4), "group_size"),
    ("kto", dict(kl_estimator="k2"), "kl_estimator"),
    ("kto", dict(baseline="rloo"), "baseline"),
    ("apo_zero_unpaired", dict(kl_estimator="k1"), "kl_estimator"),
    ("nash_md", dict(pairs="all"), "pairs"),
    ("xpo", dict(group_size=4), "group_size"),
    ("mpo", dict(clip=0.2), "clip"),
    (["sigmoid", "sft"], dict(group_size=2), "group_size"),
])
def test_options_an_objective_does_not_support_are_refused(objective, options, word):
    with pytest.raises(ValueError, match=word):
        Estimator(**options).resolve(cs.objective(objective))


def test_sampling_stream_is_the_first_seedsequence_child():
    # documented: the stream is SeedSequence(seed)'s first child, so that it is independent of
    # numpy.random.default_rng(seed) (the policy's initialisation), which uses the root itself
    for seed in (0, 5, 2**40):
        child = np.random.SeedSequence(seed).spawn(1)[0]
        assert np.array_equal(cs.sampling.sampling_stream(seed),
                              child.generate_state(4, np.uint64))
        assert not np.array_equal(cs.sampling.sampling_stream(seed),
                                  np.random.SeedSequence(seed).generate_state(4, np.uint64))


def test_group_pairs_builds_tajwars_offline_data_in_one_call():
    env = cs.tajwar_bandit()
    data = cs.group_pairs(env, env.ref, n_groups=100, group_size=10, min_reward_gap=0.2)
    r = env.reward
    winners, losers = np.nonzero(data.weights[0])
    assert data.n <= 100 * 45 and abs(data.weights.sum() - 1) < 1e-12
    assert np.all(r[winners] - r[losers] >= 0.2)           # deterministic labels, gap filter
    assert np.allclose(data.weights * data.n, np.round(data.weights * data.n))  # counts / kept
    again = cs.group_pairs(env, env.ref, n_groups=100, group_size=10, min_reward_gap=0.2)
    assert np.array_equal(again.weights, data.weights)
    with pytest.raises(ValueError, match="min_reward_gap"):
        cs.group_pairs(env, env.ref, n_groups=2, group_size=2, min_reward_gap=5.0)


@pytest.mark.parametrize("name", sorted(cs.OBJECTIVES))
def test_every_objective_has_a_sampled_twin(name):
    modes = ("online", "offline") if name == "vpo" else (None,)
    for mode in modes:
        obj = cs.objective(name, mode=mode) if mode else cs.objective(name)
        data = DATA if obj.needs_data else None
        loss, grad = cs.sampled_gradient(ENV, obj, LOGITS, data, batch_size=3)
        assert np.isfinite(loss) and np.isfinite(grad).all() and grad.shape == ENV.shape
        run = cs.train(ENV, obj, data, steps=3, lr=0.01, batch_size=3, record=[3])
        assert run.history["samples"].iloc[-1] > 0
