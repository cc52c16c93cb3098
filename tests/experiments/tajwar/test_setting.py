"""Tajwar et al. 2024 (arXiv:2404.14367): the exact training loop with an objective rebuilt from the
current policy (refresh_train) equals the core's training where it should."""

from __future__ import annotations

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim.experiments.tajwar.setting import refresh_train


@pytest.mark.parametrize("optimizer,lr", [("adam", 0.01), ("gd", 0.5)])
def test_refresh_train_with_fixed_data_equals_core_train(optimizer, lr):
    env = cs.tajwar_bandit(peak=70)
    data = cs.offline_pairs(env, env.ref, labels="deterministic")
    obj = cs.objective("ipo", beta=0.05)
    ours = refresh_train(env, lambda pi: [(1.0, obj, data)], steps=200, lr=lr,
                         refresh_every=10**6, optimizer=optimizer)
    core = cs.train(env, obj, data, steps=200, lr=lr, optimizer=optimizer,
                    record=list(range(201)))
    assert np.abs(ours - core.snapshots).max() < 1e-12


def test_refresh_every_step_equals_exact_online_objective():
    env = cs.tajwar_bandit(peak=70)
    frozen = cs.objective("ipo", beta=0.05)
    ours = refresh_train(
        env, lambda pi: [(1.0, frozen, cs.policy_pairs(env, pi, labels="deterministic"))],
        steps=150, lr=0.01, refresh_every=1)
    core = cs.train(env, cs.objective("online_ipo", beta=0.05, labels="deterministic"),
                    steps=150, lr=0.01, record=list(range(151)))
    assert np.abs(ours - core.snapshots).max() < 1e-12


# ------------------------------------------------------------------------------------------------
# the batched exact Best-of-N trainer, Tajwar's offline population and F1's theory lines
# ------------------------------------------------------------------------------------------------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis_profiles import examples  # noqa: E402

from coverage_sim.experiments.tajwar import setting  # noqa: E402


@settings(max_examples=examples(40), deadline=None)
@given(k=st.integers(2, 12), rows=st.integers(1, 4), n=st.integers(1, 20),
       levels=st.integers(1, 5), seed=st.integers(0, 2**31))
@example(k=2, rows=1, n=1, levels=1, seed=0)       # all rewards tied: the law is pi itself
@example(k=12, rows=4, n=20, levels=5, seed=1)
def test_best_of_n_laws_equal_the_core_law_row_by_row(k, rows, n, levels, seed):
    """Ties (few reward levels), zero-mass arms and n = 1 included."""
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.full(k, 0.5), size=rows)
    pi[0, rng.integers(k)] = 0.0
    pi /= pi.sum(axis=1, keepdims=True)
    reward = rng.integers(0, levels, size=(rows, k)).astype(float)
    ours = setting.best_of_n_laws(pi, reward, n)
    core = np.stack([cs.best_of_n_policy(pi[b], reward[b], n) for b in range(rows)])
    assert np.allclose(ours, core, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("on_policy,push_down,optimizer,lr", [
    (True, 0.0, "adam", 0.01), (True, 0.3, "gd", 1.0), (False, 0.3, "adam", 0.01),
    (False, 0.0, "gd", 1.0)])
def test_train_best_of_n_equals_refresh_train_on_core_objectives(on_policy, push_down,
                                                                 optimizer, lr):
    envs = [cs.tajwar_bandit(peak=p) for p in (68, 21)]
    rec = [0, 7, 60]
    ours = setting.train_best_of_n(envs, 10, push_down=push_down, on_policy=on_policy,
                                   optimizer=optimizer, steps=60, lr=lr, record=rec)
    for b, env in enumerate(envs):
        best = cs.objective("best_of_n", n=10)
        worst = cs.objective("best_of_n", n=10, reward=-env.reward)
        offline = cs.offline_pairs(env, env.ref, labels="deterministic")

        def build(pi, env=env, best=best, worst=worst, offline=offline):
            data = cs.policy_pairs(env, pi, labels="deterministic") if on_policy else offline
            return [(1.0, best, data)] + ([(-push_down, worst, data)] if push_down else [])
        core = setting.refresh_train(env, build, steps=60, lr=lr, record=rec,
                                     refresh_every=1 if on_policy else 61, optimizer=optimizer)
        assert np.abs(ours[b] - core).max() < 1e-12


def test_gap_pairs_is_the_truncated_reference_population():
    env = cs.tajwar_bandit(peak=70)
    data = setting.gap_pairs(env, 0.2)
    w = data.weights[0]
    r, ref = env.reward, env.ref
    gap = np.abs(r[:, None] - r[None, :])
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert (w[gap < 0.2] == 0).all()                         # dropped pairs
    kept = np.argwhere(w > 0)
    assert (r[kept[:, 0]] > r[kept[:, 1]]).all()             # the higher reward wins
    ratio = w[w > 0] / (ref[kept[:, 0]] * ref[kept[:, 1]])   # prop. to pi_ref x pi_ref
    assert np.allclose(ratio, ratio[0], rtol=1e-12)
    # the threshold drops most of the pair weight: the pairs among near-zero-reward arms
    assert (ref[:, None] * ref[None, :])[gap >= 0.2].sum() < 0.15
    with pytest.raises(ValueError, match="gap"):
        setting.gap_pairs(env, -0.1)


@settings(max_examples=examples(25), deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 2**31), tau=st.floats(0.02, 2.0))
@example(k=2, seed=0, tau=0.02)
@example(k=12, seed=1, tau=2.0)
def test_ipo_fixed_point_is_stationary_for_offline_ipo(k, seed, tau):
    """The exact offline IPO gradient vanishes at the fixed point (relative to its size at pi_ref),
    on full and on truncated reference pairs."""
    env = cs.random_bandit(k, seed=seed)
    for data in (cs.offline_pairs(env, env.ref, labels="deterministic"),
                 cs.offline_pairs(env, env.ref)):
        obj = cs.objective("ipo", beta=tau)
        pi = setting.ipo_fixed_point(env, data, tau)
        g_fix = cs.gradient(env, obj, np.log(pi), data)[1]
        g_ref = cs.gradient(env, obj, np.log(env.ref), data)[1]
        assert np.abs(g_fix).max() <= 1e-9 * max(np.abs(g_ref).max(), 1e-300) + 1e-15


def test_ipo_fixed_point_is_where_long_offline_ipo_training_ends():
    env = cs.tajwar_bandit(peak=70)
    data = setting.gap_pairs(env, 0.2)
    run = cs.train(env, cs.objective("ipo", beta=0.05), data, steps=8000, lr=0.02,
                   record=[8000], metrics=[])
    assert np.abs(run.policy - setting.ipo_fixed_point(env, data, 0.05)).max() < 1e-4


@settings(max_examples=examples(30), deadline=None)
@given(k=st.integers(2, 7), seed=st.integers(0, 2**31), radius=st.floats(0.0, 4.0))
@example(k=2, seed=0, radius=0.0)
@example(k=7, seed=1, radius=4.0)
def test_sign_descent_limit_is_the_maximum_over_the_box(k, seed, radius):
    """Brute force: no logit shift within the box beats it (random points and every vertex), and
    a vertex attains it."""
    env = cs.random_bandit(k, seed=seed)
    limit = float(setting.sign_descent_limit(env, radius))
    rng = np.random.default_rng(seed)

    def value(delta):
        w = env.ref * np.exp(delta)
        return float(w @ env.reward / w.sum())
    vertices = [value(radius * np.array(s)) for s in
                np.array(np.meshgrid(*[[-1, 1]] * k)).reshape(k, -1).T]
    inside = [value(rng.uniform(-radius, radius, k)) for _ in range(200)]
    assert max(vertices) == pytest.approx(limit, rel=1e-12, abs=1e-12)
    assert max(inside) <= limit + 1e-12
    assert setting.sign_descent_limit(env, 0.0) == pytest.approx(env.ref @ env.reward)
