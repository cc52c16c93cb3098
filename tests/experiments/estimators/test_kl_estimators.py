"""F18 (kl-estimators): claim C18 - the expected gradient of each KL estimator (k1, k2, k3 in the
reward or in the loss; Schulman 2020) is exactly its derived identity - as a property test over
random bandits; the quick run's numbers and verdict; a negative control for every clause."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples

import coverage_sim as cs
from coverage_sim.experiments.estimators import kl_estimators as kl
from coverage_sim.experiments.estimators.setting import exact_parts
from coverage_sim.experiments.verdict import AGREES

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(kl.EXPERIMENT)


@settings(max_examples=examples(30), deadline=None)
@given(k=st.integers(2, 12), seed=st.integers(0, 2**31), beta=st.floats(0.05, 5.0),
       spread=st.floats(0.0, 3.0))
@example(k=2, seed=0, beta=0.05, spread=0.0)      # at pi_ref every KL gradient is 0
@example(k=12, seed=1, beta=5.0, spread=3.0)
def test_c18_expected_gradients_are_the_derived_identities(k, seed, beta, spread):
    """E[grad] of each estimator, computed exactly by the core (population_batch +
    batch_gradient), equals reward gradient + beta x {reverse, k2 score term, reverse - forward,
    0, reverse, forward} KL gradient, to rounding; k1 in the reward and k2 in the loss equal the
    exact gradient."""
    env = cs.random_bandit(k, seed=seed)
    theta = np.log(env.ref) + spread * np.random.default_rng(seed).normal(size=k)
    obj = cs.objective("rlhf", beta=beta)
    exact = cs.gradient(env, obj, theta)[1]
    parts = exact_parts(env, theta)
    scale = max(np.abs(exact).max(), np.abs(parts["reward"]).max(), 1e-300)
    for est in kl.ESTIMATORS:
        options = dict(kl_estimator=est[0], kl_in=est[1])
        mean = cs.batch_gradient(env, obj, theta, cs.population_batch(env, obj, theta,
                                                                      **options))[1]
        predicted = kl.predicted_gradient(parts, est, beta)
        assert np.abs(mean - predicted).max() <= 1e-10 * scale, est
        if est in (("k1", "reward"), ("k2", "loss")):
            assert np.abs(mean - exact).max() <= 1e-10 * scale, est


def test_c18_biased_estimators_differ_from_the_exact_gradient():
    """The identities are not vacuous: away from pi_ref the four biased estimators' expectations
    differ from the exact gradient (relative gap > 1e-3)."""
    env = cs.random_bandit(8, seed=3)
    theta = np.log(env.ref) + np.random.default_rng(3).normal(size=8)
    obj = cs.objective("rlhf", beta=0.5)
    exact = cs.gradient(env, obj, theta)[1]
    for est in kl._BIASED:
        mean = cs.batch_gradient(env, obj, theta, cs.population_batch(
            env, obj, theta, kl_estimator=est[0], kl_in=est[1]))[1]
        assert np.linalg.norm(mean - exact) > 1e-3 * np.linalg.norm(exact), est


def test_quick_numbers_and_verdict(quick, save_plot):
    cfg, table = quick
    result = kl.EXPERIMENT.check(table, cfg)
    assert result.verdict == AGREES == kl.EXPERIMENT.expected_verdict
    assert result.mode == "exact+sampled" and result.effect.mean > 1.0     # nats
    bias = kl._per_instance(table, "rel_bias", 0)
    assert (bias[["k1 in reward", "k2 in loss"]] < 1e-12).all().all()
    assert (bias[["k1 in loss", "k3 in loss", "k2 in reward", "k3 in reward"]] > 0.1).all().all()
    low = kl._per_instance(table, "low_mass")
    assert (low["forward-KL optimum"] > 10 * low["pi*_beta"]).all()        # mode covering
    save_plot(kl.EXPERIMENT, table, cfg)


def test_identity_and_training_clauses_fail_when_estimators_swap(quick):
    """Negative controls: relabelling estimators breaks every identity and training clause that
    involves them."""
    cfg, table = quick

    def swapped(a, b):
        out = table.copy()
        out["estimator"] = table["estimator"].replace({a: b, b: a})
        return clauses_by_name(kl.check(out, cfg))
    clauses = swapped("k1 in loss", "k2 in loss")
    assert not clauses["identity-k1-loss"].holds and not clauses["identity-k2-loss"].holds
    assert not clauses["k1-loss-no-penalty"].holds
    assert not clauses["unbiased-reach-optimum"].holds
    clauses = swapped("k3 in loss", "k2 in loss")
    assert not clauses["k3-loss-forward-optimum"].holds
    assert not clauses["identity-k3-loss"].holds
    clauses = swapped("k1 in reward", "k3 in reward")
    assert not clauses["identity-k1-reward"].holds and not clauses["identity-k3-reward"].holds
    clauses = swapped("k2 in reward", "k3 in reward")
    assert not clauses["identity-k2-reward"].holds


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="group_size"):
        kl.KLEstimatorsConfig(group_size=1)
    with pytest.raises(ValueError, match="beta"):
        kl.KLEstimatorsConfig(beta=0.0)


def test_table_has_no_missing_values(quick):
    _, table = quick
    assert isinstance(table, pd.DataFrame) and table["value"].notna().all()
    assert list(table.columns[-4:]) == ["seed", "step", "metric", "value"]
