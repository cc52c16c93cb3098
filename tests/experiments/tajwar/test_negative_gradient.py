"""F3 (Tajwar et al. 2024, arXiv:2404.14367, tajwar-negative-gradient): the push-down gradient is
exact; the quick run shows the claim; the check is not vacuous."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import coverage_sim as cs
from coverage_sim.experiments.registry import mean_curve
from coverage_sim.experiments.tajwar import negative_gradient


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(negative_gradient.EXPERIMENT)


def _final(table, metric, **where):
    return float(mean_curve(table, metric, **where).iloc[-1])


def test_push_down_gradient_is_best_minus_c_worst_of_n_by_enumeration():
    """L_BoN(r) - c L_BoN(-r) has gradient -q_best + c q_worst (brute force over all N-tuples)."""
    env = cs.Bandit(reward=[0.3, -1.0, 2.0, 0.7], ref=[0.1, 0.4, 0.2, 0.3])
    n, c = 3, 0.4
    q_best, q_worst = np.zeros(4), np.zeros(4)
    for draw in itertools.product(range(4), repeat=n):
        prob = np.prod(env.ref[list(draw)])
        rewards = env.reward[list(draw)]
        q_best[draw[int(np.argmax(rewards))]] += prob
        q_worst[draw[int(np.argmin(rewards))]] += prob
    data = cs.offline_pairs(env, env.ref, labels="deterministic")
    lp = np.log([0.25, 0.25, 0.25, 0.25])
    g_best = cs.objective("best_of_n", n=n).loss_and_grad(env, lp, data)[1]
    g_worst = cs.objective("best_of_n", n=n, reward=-env.reward).loss_and_grad(env, lp, data)[1]
    assert np.allclose(g_best - c * g_worst, -q_best + c * q_worst, atol=1e-12)


def test_negative_gradient_quick_reproduces(quick, save_plot):
    cfg, table = quick
    negative_gradient.EXPERIMENT.check(table, cfg)
    for peak in cfg.peaks:
        for regime in cfg.regimes:
            plain = mean_curve(table, "mass_near_opt", peak=peak, regime=regime, push_down=0.0)
            pushed = mean_curve(table, "mass_near_opt", peak=peak, regime=regime, push_down=0.5)
            assert (pushed - plain).max() > 0.04                            # a visible lead
    assert _final(table, "mass_near_opt", peak=70, regime="offline", push_down=0.0) < 0.25
    assert _final(table, "mass_near_opt", peak=70, regime="on-policy", push_down=0.5) > 0.99
    save_plot(negative_gradient.EXPERIMENT, table, cfg)


def test_negative_gradient_check_fails_when_push_down_labels_are_swapped(quick):
    cfg, table = quick
    swapped = table.copy()
    swapped["push_down"] = swapped["push_down"].map({0.0: 0.5, 0.5: 0.0})
    with pytest.raises(AssertionError):
        negative_gradient.EXPERIMENT.check(swapped, cfg)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="push_downs"):
        negative_gradient.NegativeGradientConfig(push_downs=(0.5,))
    with pytest.raises(ValueError, match="push_downs"):
        negative_gradient.NegativeGradientConfig(push_downs=(0.0, 1.0))


def test_table_has_no_missing_values(quick):
    _, table = quick
    assert isinstance(table, pd.DataFrame) and table["value"].notna().all()
    assert list(table.columns[-4:]) == ["seed", "step", "metric", "value"]
