"""F19 (group-baselines): claim C19 - REINFORCE and RLOO are unbiased, the batch mean is
(G-1)/G x RLOO draw for draw and its fixed point is pi* at beta G/(G-1), Dr. GRPO is the batch
mean on a bandit, GRPO is biased - as property tests over random bandits; the quick run's
numbers and verdict; a negative control for every clause."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples

import coverage_sim as cs
from coverage_sim.experiments.estimators import group_baselines as gb
from coverage_sim.experiments.estimators.setting import exact_parts
from coverage_sim.experiments.verdict import AGREES

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(gb.EXPERIMENT)


def _instance(k, seed, spread):
    env = cs.random_bandit(k, seed=seed)
    theta = np.log(env.ref) + spread * np.random.default_rng(seed).normal(size=k)
    return env, theta


def _draws(env, theta, beta, g, baseline, draws, seed):
    return cs.sampled_gradients(env, cs.objective("rlhf", beta=beta), theta, batch_size=1,
                                draws=draws, seed=seed, group_size=g, baseline=baseline,
                                kl_estimator="exact")[1]


@settings(max_examples=examples(25), deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 2**31), beta=st.floats(0.05, 5.0),
       g=st.integers(2, 8), spread=st.floats(0.0, 2.0))
@example(k=2, seed=0, beta=0.05, g=2, spread=0.0)
@example(k=12, seed=1, beta=5.0, g=8, spread=2.0)
def test_c19_batch_mean_is_scaled_rloo_and_dr_grpo_draw_for_draw(k, seed, beta, g, spread):
    """On the same draws: reward part of the batch mean = (G-1)/G x RLOO's; Dr. GRPO = batch
    mean (the KL gradient is exact and common to all)."""
    env, theta = _instance(k, seed, spread)
    kl_part = beta * exact_parts(env, theta)["reverse"]
    rloo = _draws(env, theta, beta, g, "rloo", 50, seed)
    mean = _draws(env, theta, beta, g, "mean", 50, seed)
    dr = _draws(env, theta, beta, g, "dr_grpo", 50, seed)
    scale = max(np.abs(rloo - kl_part).max(), 1e-300)
    assert np.abs((mean - kl_part) - (g - 1) / g * (rloo - kl_part)).max() <= 1e-12 * scale
    assert np.array_equal(dr, mean)


@settings(max_examples=examples(25), deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 2**31), beta=st.floats(0.05, 5.0),
       g=st.integers(2, 16))
@example(k=2, seed=0, beta=0.05, g=2)
@example(k=12, seed=1, beta=5.0, g=16)
def test_c19_batch_mean_fixed_point_is_pi_star_at_shifted_beta(k, seed, beta, g):
    """(G-1)/G x reward gradient + beta x KL gradient vanishes at pi* with beta G/(G-1)."""
    env = cs.random_bandit(k, seed=seed)
    shifted = cs.optimal_policy(env, beta * g / (g - 1))
    parts = exact_parts(env, np.log(shifted))
    mean_grad = (g - 1) / g * parts["reward"] + beta * parts["reverse"]
    # rounding: the terms pi (r - E r) cancel to ~1e-16 x the reward range once pi concentrates
    rounding = 1e-14 * (np.ptp(env.reward) + beta * np.ptp(np.log(shifted / env.ref)))
    assert np.abs(mean_grad).max() <= 1e-9 * np.abs(parts["reward"]).max() + rounding


@settings(max_examples=examples(6), deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 2**31), g=st.integers(2, 8))
@example(k=2, seed=0, g=2)
@example(k=12, seed=1, g=8)
def test_c19_reinforce_and_rloo_are_unbiased(k, seed, g):
    """Monte Carlo, 4000 single-group draws: the split z statistic (~N(0, 1) when unbiased) stays
    below 4.5 (two-sided p ~ 7e-6 per test)."""
    env, theta = _instance(k, seed, 1.0)
    exact = cs.gradient(env, cs.objective("rlhf", beta=0.3), theta)[1]
    for baseline in ("none", "rloo"):
        z = gb.split_z(_draws(env, theta, 0.3, g, baseline, 4000, seed), exact)
        assert z < gb._Z, baseline


def test_c19_grpo_is_biased_and_the_test_detects_it():
    env, theta = _instance(8, 3, 1.0)
    exact = cs.gradient(env, cs.objective("rlhf", beta=0.3), theta)[1]
    for g in (2, 4):
        assert gb.split_z(_draws(env, theta, 0.3, g, "grpo", 6000, 0), exact) > gb._Z
    # and the batch mean is rejected as unbiased at G = 2 (its bias is half the reward gradient)
    assert gb.split_z(_draws(env, theta, 0.3, 2, "mean", 6000, 0), exact) > gb._Z


def test_split_z_is_standard_normal_without_bias():
    """Its null distribution (independent halves): mean ~0, sd ~1 over 400 repetitions."""
    rng = np.random.default_rng(0)
    zs = np.array([gb.split_z(rng.standard_t(5, size=(400, 20)), np.zeros(20))
                   for _ in range(400)])
    assert abs(zs.mean()) < 4 / np.sqrt(400) and abs(zs.std() - 1) < 0.15


def test_quick_numbers_and_verdict(quick, save_plot):
    cfg, table = quick
    result = gb.EXPERIMENT.check(table, cfg)
    assert result.verdict == AGREES == gb.EXPERIMENT.expected_verdict
    assert result.mode == "exact+sampled" and result.effect.mean > 1.0     # nats
    spread = gb._grid(table, "rel_std", "rloo", 0)
    assert (spread[2] > spread[4]).all()                                  # larger G, less spread
    save_plot(gb.EXPERIMENT, table, cfg)


def test_every_clause_fails_on_swapped_or_altered_data(quick):
    cfg, table = quick

    def clauses_of(frame):
        return clauses_by_name(gb.check(frame, cfg))

    def swapped(a, b):
        out = table.copy()
        out["baseline"] = table["baseline"].replace({a: b, b: a})
        return clauses_of(out)
    clauses = swapped("rloo", "grpo")
    assert not clauses["rloo-unbiased"].holds and not clauses["grpo-biased"].holds
    assert not clauses["grpo-weaker-kl"].holds
    clauses = swapped("none", "mean")
    assert not clauses["reinforce-unbiased"].holds and not clauses["mean-scaled"].holds
    clauses = swapped("mean", "rloo")
    assert not clauses["mean-shifted-optimum"].holds and not clauses["rloo-optimum"].holds
    clauses = swapped("none", "rloo")
    assert not clauses["rloo-lower-spread"].holds
    altered = table.copy()
    altered.loc[altered["metric"] == "dr_minus_mean", "value"] = 1e-3
    assert not clauses_of(altered)["dr-grpo-is-mean"].holds


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="samples"):
        gb.GroupBaselinesConfig(samples=30)
    with pytest.raises(ValueError, match="group_sizes"):
        gb.GroupBaselinesConfig(group_sizes=(4, 2))


def test_table_has_no_missing_values(quick):
    _, table = quick
    assert isinstance(table, pd.DataFrame) and table["value"].notna().all()
    assert list(table.columns[-4:]) == ["seed", "step", "metric", "value"]
