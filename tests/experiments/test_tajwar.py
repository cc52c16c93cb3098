"""F1-F4 (Tajwar et al. 2024, arXiv:2404.14367): quick runs show the claims; checks are not vacuous."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

import coverage_sim as cs
from coverage_sim import plotting
from coverage_sim.experiments import tajwar as T
from coverage_sim.experiments.registry import mean_curve
from coverage_sim.sweep import run_sweep


def _sweep(exp, tmp_path_factory):
    cfg = exp.config.quick()
    table = run_sweep(exp, cfg, [0], out=tmp_path_factory.mktemp(exp.id), progress=False)
    return cfg, table


@pytest.fixture(scope="module")
def peak(tmp_path_factory):
    return _sweep(T.PEAK_EXPERIMENT, tmp_path_factory)


@pytest.fixture(scope="module")
def efficiency(tmp_path_factory):
    return _sweep(T.EFFICIENCY_EXPERIMENT, tmp_path_factory)


@pytest.fixture(scope="module")
def negative(tmp_path_factory):
    return _sweep(T.NEGATIVE_GRADIENT_EXPERIMENT, tmp_path_factory)


@pytest.fixture(scope="module")
def mode(tmp_path_factory):
    return _sweep(T.MODE_SEEKING_EXPERIMENT, tmp_path_factory)


def _final(table, metric, **where):
    return float(mean_curve(table, metric, **where).iloc[-1])


def _save(exp, table, cfg, tmp_path):
    paths = plotting.save_figure(exp.plot(table, cfg), tmp_path / exp.id)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


# -- the exact training loop ------------------------------------------------------------------

@pytest.mark.parametrize("optimizer,lr", [("adam", 0.01), ("gd", 0.5)])
def test_refresh_train_with_fixed_data_equals_core_train(optimizer, lr):
    env = cs.tajwar_bandit(peak=70)
    data = cs.offline_pairs(env, env.ref, labels="deterministic")
    obj = cs.objective("ipo", beta=0.05)
    ours = T.refresh_train(env, lambda pi: [(1.0, obj, data)], steps=200, lr=lr,
                           refresh_every=10**6, optimizer=optimizer)
    core = cs.train(env, obj, data, steps=200, lr=lr, optimizer=optimizer,
                    record=list(range(201)))
    assert np.abs(ours - core.snapshots).max() < 1e-12


def test_refresh_every_step_equals_exact_online_objective():
    env = cs.tajwar_bandit(peak=70)
    frozen = cs.objective("ipo", beta=0.05)
    ours = T.refresh_train(
        env, lambda pi: [(1.0, frozen, cs.policy_pairs(env, pi, labels="deterministic"))],
        steps=150, lr=0.01, refresh_every=1)
    core = cs.train(env, cs.objective("online_ipo", beta=0.05, labels="deterministic"),
                    steps=150, lr=0.01, record=list(range(151)))
    assert np.abs(ours - core.snapshots).max() < 1e-12


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


def test_mode_seeking_objectives_are_exact_forward_and_reverse_kl():
    cfg = T.ModeSeekingConfig()
    env, p, fits = T._fit_problems(cfg)
    pi = np.random.default_rng(0).dirichlet(np.ones(p.size))
    lp = np.log(pi)
    kl_rev = float(np.sum(pi * np.log(pi / p)))
    for name, (obj, data) in fits.items():
        loss, g = obj.loss_and_grad(env, lp, data)
        g_theta = g - pi * g.sum()  # softmax pull-back
        if name == "reverse KL":
            assert loss == pytest.approx(kl_rev, abs=1e-10)
            assert np.allclose(g_theta, pi * (np.log(pi / p) - kl_rev), atol=1e-12)
        else:
            assert loss == pytest.approx(float(-np.sum(p * lp)), abs=1e-10)  # cross-entropy
            assert np.allclose(g_theta, pi - p, atol=1e-12)


def test_configs_reject_bad_values():
    with pytest.raises(ValueError, match="peaks"):
        T.PeakConfig(peaks=())
    with pytest.raises(ValueError, match="paper_reuse"):
        T.EfficiencyConfig(paper_reuse=7)
    with pytest.raises(ValueError, match="push_downs"):
        T.NegativeGradientConfig(push_downs=(0.5,))
    with pytest.raises(ValueError, match="push_downs"):
        T.NegativeGradientConfig(push_downs=(0.0, 1.0))
    with pytest.raises(ValueError, match="weights"):
        T.ModeSeekingConfig(weights=(1.0,))
    with pytest.raises(ValueError, match="optimizer"):
        T.ModeSeekingConfig(optimizer="sgd")


# -- F1 ---------------------------------------------------------------------------------------

def test_peak_quick_reproduces(peak, tmp_path):
    cfg, table = peak
    T.PEAK_EXPERIMENT.check(table, cfg)
    assert set(table.columns) == {"peak", "regime", "method", "seed", "step", "metric", "value"}
    env = cs.tajwar_bandit(peak=70)
    start = table[(table["step"] == 0) & (table["metric"] == "reward") & (table["peak"] == 70)]
    assert np.allclose(start["value"], env.ref @ env.reward)              # all start at pi_ref
    cap = cs.best_of_n_policy(env.ref, env.reward, 10) @ env.reward       # 0.3135
    assert _final(table, "reward", peak=70, method="Best-of-N", regime="offline") == \
        pytest.approx(cap, abs=0.01)
    for method in ("DPO", "IPO", "Best-of-N", "PG"):
        assert _final(table, "reward", peak=70, method=method, regime="on-policy") > 0.95
    finals = [_final(table, "reward", peak=20, method=m, regime=r)
              for m, r in {(m, r) for m, r in zip(table["method"], table["regime"])}]
    assert min(finals) > 0.85
    _save(T.PEAK_EXPERIMENT, table, cfg, tmp_path)


def test_peak_check_fails_when_regimes_are_swapped(peak):
    cfg, table = peak
    swapped = table.copy()
    swapped["regime"] = swapped["regime"].map({"offline": "on-policy", "on-policy": "offline"})
    with pytest.raises(AssertionError):
        T.PEAK_EXPERIMENT.check(swapped, cfg)


# -- F2 ---------------------------------------------------------------------------------------

def test_efficiency_quick_reproduces(efficiency, tmp_path):
    cfg, table = efficiency
    T.EFFICIENCY_EXPERIMENT.check(table, cfg)
    on = T._wide(table, method="IPO", regime="on-policy", reuse=15)
    assert on.loc[15, "queries"] == 100 and on.loc[30, "queries"] == 200   # 100 per batch
    off = T._wide(table, method="IPO", regime="offline")
    assert off.loc[5, "queries"] == 1000 and off.loc[0, "queries"] == 0
    assert off["reward"].max() < 0.5                                        # offline never gets there
    needed = {r: T._queries_to_reach(T._wide(table, method="IPO", regime="on-policy", reuse=r),
                                     0.5) for r in cfg.reuses}
    assert needed[1] > 5 * needed[15]                                       # ~1/reuse
    front = T._wide(table, method="frontier").sort_values("kl")
    assert np.all(np.diff(front["reward"].to_numpy()) >= -1e-12)           # monotone frontier
    _save(T.EFFICIENCY_EXPERIMENT, table, cfg, tmp_path)


def test_efficiency_check_fails_when_reuse_labels_are_reversed(efficiency):
    cfg, table = efficiency
    on = table["regime"] == "on-policy"
    flip = dict(zip(cfg.reuses, cfg.reuses[::-1]))
    reversed_ = table.copy()
    reversed_.loc[on, "reuse"] = reversed_.loc[on, "reuse"].map(flip)
    with pytest.raises(AssertionError):
        T.EFFICIENCY_EXPERIMENT.check(reversed_, cfg)


def test_efficiency_check_fails_when_regimes_are_swapped(efficiency):
    cfg, table = efficiency
    swapped = table.copy()
    off = swapped["regime"] == "offline"
    paper = (swapped["regime"] == "on-policy") & (swapped["reuse"] == cfg.paper_reuse)
    swapped.loc[off, ["regime", "reuse"]] = ["on-policy", cfg.paper_reuse]
    swapped.loc[paper, ["regime", "reuse"]] = ["offline", 0]
    with pytest.raises(AssertionError):
        T.EFFICIENCY_EXPERIMENT.check(swapped, cfg)


# -- F3 ---------------------------------------------------------------------------------------

def test_negative_gradient_quick_reproduces(negative, tmp_path):
    cfg, table = negative
    T.NEGATIVE_GRADIENT_EXPERIMENT.check(table, cfg)
    for peak in cfg.peaks:
        for regime in cfg.regimes:
            plain = mean_curve(table, "mass_near_opt", peak=peak, regime=regime, push_down=0.0)
            pushed = mean_curve(table, "mass_near_opt", peak=peak, regime=regime, push_down=0.5)
            assert (pushed - plain).max() > 0.04                            # a visible lead
    assert _final(table, "mass_near_opt", peak=70, regime="offline", push_down=0.0) < 0.25
    assert _final(table, "mass_near_opt", peak=70, regime="on-policy", push_down=0.5) > 0.99
    _save(T.NEGATIVE_GRADIENT_EXPERIMENT, table, cfg, tmp_path)


def test_negative_gradient_check_fails_when_push_down_labels_are_swapped(negative):
    cfg, table = negative
    swapped = table.copy()
    swapped["push_down"] = swapped["push_down"].map({0.0: 0.5, 0.5: 0.0})
    with pytest.raises(AssertionError):
        T.NEGATIVE_GRADIENT_EXPERIMENT.check(swapped, cfg)


# -- F4 ---------------------------------------------------------------------------------------

def test_mode_seeking_quick_reproduces(mode, tmp_path):
    cfg, table = mode
    T.MODE_SEEKING_EXPERIMENT.check(table, cfg)
    fwd = mean_curve(table, "wrong_mass", objective="forward KL")
    rev = mean_curve(table, "wrong_mass", objective="reverse KL")
    assert fwd.iloc[0] == pytest.approx(0.50, abs=0.01)                     # pi_ref off both modes
    assert float(mean_curve(table, "target_wrong_mass").iloc[0]) == pytest.approx(0.0354, abs=1e-3)
    assert rev.loc[20] < 0.25 and fwd.loc[20] > 0.4                         # reverse far ahead
    mode20 = mean_curve(table, "mode_20_mass", objective="reverse KL")
    assert mode20.max() > 0.8                                               # mode seeking
    _save(T.MODE_SEEKING_EXPERIMENT, table, cfg, tmp_path)


def test_mode_seeking_check_fails_when_objectives_are_swapped(mode):
    cfg, table = mode
    swapped = table.copy()
    swapped["objective"] = swapped["objective"].map({"forward KL": "reverse KL",
                                                     "reverse KL": "forward KL"})
    with pytest.raises(AssertionError):
        T.MODE_SEEKING_EXPERIMENT.check(swapped, cfg)


def test_tables_have_no_missing_values(peak, efficiency, negative, mode):
    for _, table in (peak, efficiency, negative, mode):
        assert isinstance(table, pd.DataFrame) and table["value"].notna().all()
        assert list(table.columns[-4:]) == ["seed", "step", "metric", "value"]
