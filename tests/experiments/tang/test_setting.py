"""Tang et al. 2024 (arXiv:2405.08448): the shared tasks, instance family and helpers (proxy
relabelling, sign accuracy, the KL-regularised optimum frontier, matched-KL win rates)."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis_profiles import examples

import coverage_sim as cs
from coverage_sim.experiments.tang import setting as tang


def test_helpers():
    cfg = tang.TangConfig(n_responses=6, n_pairs=40, instances=1, min_best_win=0.0)
    inst = tang.tang_instances(cfg, 0)[0]
    env, data, r_hat = inst.env, inst.data, inst.r_hat
    relabelled = tang.proxy_relabel(env, data, r_hat)
    w, v = np.asarray(data.weights)[0], np.asarray(relabelled.weights)[0]
    np.testing.assert_allclose(v + v.T, w + w.T)                 # same pairs, new labels
    off = ~np.eye(6, dtype=bool) & (w + w.T > 0)
    np.testing.assert_allclose(v[off] / (v + v.T)[off],
                               (1 / (1 + np.exp(-(r_hat[:, None] - r_hat[None, :]))))[off])
    gold = np.asarray(tang.proxy_relabel(env, data, env.reward).weights)[0]
    np.testing.assert_allclose(gold[off] / (gold + gold.T)[off],
                               cs.preferences.preference_probs(env).reshape(6, 6)[off])
    held_out = cs.offline_pairs(env, env.ref)
    assert tang.sign_accuracy(env, env.ref[None], held_out)[0] == 0.5
    best = tang.sign_accuracy(env, cs.optimal_policy(env, 1.0)[None], held_out)[0]
    flipped = tang.sign_accuracy(env, cs.optimal_policy(env, 1.0, reward=-env.reward)[None],
                                 held_out)[0]
    assert best > 0.5 and best + flipped == pytest.approx(1.0)


def test_family_rule_keeps_tasks_by_the_task_alone():
    cfg = tang.TangConfig(instances=8)
    seeds = tang.task_seeds(cfg)
    assert len(seeds) == 8 and list(seeds) == sorted(seeds) and seeds[0] == cfg.instance_seed
    for s in range(seeds[0], seeds[-1] + 1):
        kept = tang.best_win_rate(tang.tang_task(cfg, s)) >= cfg.min_best_win
        assert kept == (s in seeds)
    assert 3 not in seeds               # task 3: pi_ref's mode is the best arm (max win rate 0.66)
    everything = tang.TangConfig(instances=5, min_best_win=0.0)
    assert tang.task_seeds(everything) == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="min_best_win"):
        tang.task_seeds(tang.TangConfig(instances=2, min_best_win=0.9999))


def test_instances_are_seeded():
    cfg = tang.TangConfig(n_responses=10, n_pairs=50, instances=2)
    a, b, c = tang.tang_instances(cfg, 0), tang.tang_instances(cfg, 0), tang.tang_instances(cfg, 1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.data.weights, y.data.weights)
        np.testing.assert_array_equal(x.r_hat, y.r_hat)
    assert not np.array_equal(a[0].data.weights, c[0].data.weights)   # a new seed: new data
    np.testing.assert_array_equal(a[0].env.reward, c[0].env.reward)   # on the same task
    assert not np.array_equal(a[0].env.reward, a[1].env.reward)


@settings(max_examples=examples(30), deadline=None)
@given(k=st.integers(2, 12), task=st.integers(0, 10_000), tau=st.floats(0.01, 10.0),
       policy_seed=st.integers(0, 10_000))
def test_optimum_frontier_bounds_every_policy(k, task, tau, policy_seed):
    """pi_tau ∝ pi_ref exp(P(. > pi_ref)/tau) maximises W(pi) - tau KL(pi || pi_ref) (W the win rate
    against pi_ref, linear in pi): W(pi) - tau KL(pi) = W(pi_tau) - tau KL(pi_tau) - tau
    KL(pi || pi_tau) for every pi, so no policy lies above the frontier of these optima."""
    env = tang.tang_task(tang.TangConfig(n_responses=k), task)
    opt = tang.ipo_optimum(env, tau)
    pi = np.random.default_rng(policy_seed).dirichlet(np.full(k, 0.5))
    pi = np.clip(pi, 1e-12, None) / np.clip(pi, 1e-12, None).sum()

    def j(p):
        return float(cs.metrics.win_rate(env, p)) - tau * float(
            cs.metrics.kl_divergence(env, p, env.ref))

    kl_to_opt = float(np.sum(pi * (np.log(pi) - np.log(opt))))
    assert j(opt) - j(pi) == pytest.approx(tau * kl_to_opt, rel=1e-8, abs=1e-12)
    assert tang.best_win_rate(env) >= float(cs.metrics.win_rate(env, pi)) - 1e-12
    line = tang.optimum_frontier(env, num=30)
    assert (np.diff(line["kl"]) <= 1e-12).all()         # tau grows: KL and win rate fall
    assert (np.diff(line["win_rate"]) <= 1e-12).all()


def _frontier_table(methods: dict, instances=(0, 1)) -> pd.DataFrame:
    """Final points ``win = f(kl)`` of a tau sweep per method and instance."""
    rows = []
    for method, (kls, f) in methods.items():
        for inst in instances:
            for tau, kl in enumerate(kls):
                for metric, value in (("kl", kl), ("win_rate", f(kl))):
                    rows.append({"method": method, "instance": inst, "tau": float(tau),
                                 "seed": 0, "step": 10, "metric": metric, "value": value})
    return pd.DataFrame(rows)


def test_matched_wins_averages_over_the_common_kl_range():
    table = _frontier_table({"a": ([0.0, 1.0, 2.0, 4.0], lambda k: 0.5 + 0.1 * k),
                             "b": ([0.5, 1.0, 3.0], lambda k: 0.5 + 0.05 * k)})
    wins = tang.matched_wins(table, ["a", "b"], num=41)
    assert list(wins.index.names) == ["instance", "seed"] and len(wins) == 2
    np.testing.assert_allclose(wins["kl_low"], 0.5)
    np.testing.assert_allclose(wins["kl_high"], 3.0)
    np.testing.assert_allclose(wins["a"] - wins["b"], 0.05 * 1.75)   # mean KL of [0.5, 3] is 1.75
    without_instance = table[table["instance"] == 0].drop(columns="instance")
    assert tang.unit_keys(without_instance) == ["seed"]
    assert len(tang.matched_wins(without_instance, ["a", "b"])) == 1


@pytest.mark.parametrize("kwargs, field", [
    ({"instances": 0}, "instances"), ({"min_best_win": 1.0}, "min_best_win"),
    ({"batch_size": 0}, "batch_size"), ({"min_gap": -0.1}, "min_gap"),
])
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        tang.TangConfig(**kwargs)


def test_docstring_examples_are_true():
    result = doctest.testmod(tang, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0
