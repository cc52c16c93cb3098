"""F6-F9 (Tang et al. 2024, arXiv:2405.08448): quick runs show the online/offline gap and its ablations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import coverage_sim as cs
from coverage_sim.experiments import tang
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep

EXPERIMENTS = {"pareto": tang.PARETO, "ablations": tang.ABLATIONS,
               "classifier": tang.CLASSIFIER, "best_of_2": tang.BEST_OF_2}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Quick config, seeds 0 and 1 (every Tang figure averages seeds), run in-process."""
    out = {}
    for name, exp in EXPERIMENTS.items():
        cfg = exp.config.quick()
        table = run_sweep(exp, cfg, [0, 1], out=tmp_path_factory.mktemp(exp.id), workers=1,
                          progress=False)
        out[name] = (exp, cfg, table)
    return out


def _plot_ok(exp, table, cfg, tmp_path):
    paths = save_figure(exp.plot(table, cfg), tmp_path / exp.id)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def _swap(table, a="online", b="offline"):
    swapped = table.copy()
    swapped["method"] = table["method"].replace({a: b, b: a})
    return swapped


def test_pareto_quick(quick, tmp_path):
    exp, cfg, table = quick["pareto"]
    exp.check(table, cfg)
    assert set(table["method"]) == {"online", "offline", "offline_exact"}
    assert set(table["seed"]) == {0, 1}
    assert table.groupby("method")["tau"].nunique().eq(len(cfg.taus)).all()
    grid = tang.kl_grid(table, ["online", "offline"])
    gap = (tang.frontier(table, "online", grid).groupby("kl")["win_rate"].mean()
           - tang.frontier(table, "offline", grid).groupby("kl")["win_rate"].mean()).to_numpy()
    assert abs(gap[0]) < 0.01          # at tiny KL both barely move from pi_ref (win rate ~1/2)
    assert gap[-1] > 0.06              # the gap opens with KL
    pts = tang.final_points(table, "offline").groupby("tau")[["kl", "win_rate"]].mean()
    assert pts["kl"].iloc[0] > 4.0     # offline at tau = 0.01 drifts far ...
    assert pts["win_rate"].iloc[0] < pts["win_rate"].max() - 0.04   # ... and loses win rate
    start = table[(table["step"] == 0) & (table["metric"] == "win_rate")]["value"]
    assert np.allclose(start, 0.5)     # every run starts at pi_ref
    _plot_ok(exp, table, cfg, tmp_path)


def test_ablations_quick(quick, tmp_path):
    exp, cfg, table = quick["ablations"]
    exp.check(table, cfg)
    grid = tang.kl_grid(table, tang._F7_METHODS)
    m = tang._region_means(table, grid, grid >= cfg.min_gap_kl, tang._F7_METHODS)
    assert m["online"] - m["offline"] > 0.05
    assert abs(m["proxy_labels"] - m["online"]) < 0.01       # the ingredient closes the gap
    assert m["replay"] < m["offline"]                          # replay does not even help here
    mu = table[table["metric"].str.startswith("mu_")].groupby(["method", "metric"])["value"].mean()
    assert mu[("replay", "mu_win_rate")] > 0.75                # replay data is high quality ...
    assert mu[("quality", "mu_win_rate")] > 0.6
    assert mu[("replay", "mu_kl")] > 1.5                       # ... but far from pi_ref
    _plot_ok(exp, table, cfg, tmp_path)


def test_classifier_quick(quick, tmp_path):
    exp, cfg, table = quick["classifier"]
    exp.check(table, cfg)
    last = table[table["step"] == cfg.steps].groupby(["method", "metric"])["value"].mean()
    ref = table[table["method"] == "reference"].groupby("metric")["value"].mean()
    # offline IPO orders the pi_ref pairs as well as the proxy does; online IPO leaves most arms'
    # log-ratios unordered once their probability is ~0
    assert last[("offline", "sign_accuracy")] == pytest.approx(ref["proxy_accuracy"], abs=0.01)
    assert last[("online", "sign_accuracy")] < ref["proxy_accuracy"] - 0.08
    assert ref["gold_accuracy"] > ref["proxy_accuracy"]       # the Bayes classifier is best
    assert last[("online", "win_rate")] > last[("offline", "win_rate")] + 0.08
    start = table[(table["step"] == 0) & (table["metric"] == "sign_accuracy")]["value"]
    assert np.allclose(start, 0.5)                             # h = 0 at pi_ref: all ties
    _plot_ok(exp, table, cfg, tmp_path)


def test_best_of_2_quick(quick, tmp_path):
    exp, cfg, table = quick["best_of_2"]
    exp.check(table, cfg)
    last = table[table["step"] == table["step"].max()].groupby(["method", "metric"])["value"].mean()
    # exact Best-of-2 obeys the KL bound log 2 - 1/2 (claim C14) and the finite data stays below it
    assert last[("offline_exact", "kl")] <= cs.best_of_n_kl_bound(2) + 1e-6
    assert last[("offline", "kl")] < cs.best_of_n_kl_bound(2)
    assert last[("online", "win_rate")] > last[("offline", "win_rate")] + 0.15
    assert table[table["method"] == "online"]["step"].max() == cfg.refreshes * cfg.steps_per_refresh
    assert not table.duplicated(["method", "seed", "step", "metric"]).any()
    _plot_ok(exp, table, cfg, tmp_path)


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_check_fails_without_the_effect(quick, name):
    exp, cfg, table = quick[name]
    with pytest.raises(AssertionError):
        exp.check(_swap(table), cfg)


def test_ablation_check_needs_the_ingredient(quick):
    exp, cfg, table = quick["ablations"]
    broken = table[table["method"] != "proxy_labels"]
    fake = table[table["method"] == "offline"].assign(method="proxy_labels")
    with pytest.raises(AssertionError, match="ingredient"):
        exp.check(pd.concat([broken, fake], ignore_index=True), cfg)


def test_deterministic_and_seed_dependent():
    cfg = tang.TangBestOf2Config(refreshes=2, steps_per_refresh=20, record_points=3)
    a, b, c = (tang.run_best_of_2(cfg, s) for s in (3, 3, 4))
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["value"], c["value"])     # the data and the proxy differ per seed


def test_helpers():
    cfg = tang.TangConfig(n_responses=6, n_pairs=40)
    env = tang.tang_bandit(cfg)
    data, r_hat, _ = tang.seed_inputs(env, cfg, 0)
    relabelled = tang.proxy_relabel(env, data, r_hat)
    w, v = np.asarray(data.weights)[0], np.asarray(relabelled.weights)[0]
    np.testing.assert_allclose(v + v.T, w + w.T)                 # same pairs, new labels
    off = ~np.eye(6, dtype=bool) & (w + w.T > 0)
    np.testing.assert_allclose(v[off] / (v + v.T)[off],
                               (1 / (1 + np.exp(-(r_hat[:, None] - r_hat[None, :]))))[off])
    held_out = cs.offline_pairs(env, env.ref)
    assert tang.sign_accuracy(env, env.ref[None], held_out)[0] == 0.5
    gold = tang.sign_accuracy(env, cs.optimal_policy(env, 1.0)[None], held_out)[0]
    flipped = tang.sign_accuracy(env, cs.optimal_policy(env, 1.0, reward=-env.reward)[None],
                                 held_out)[0]
    assert gold > 0.5 and gold + flipped == pytest.approx(1.0)


@pytest.mark.parametrize("cls, kwargs, field", [
    (tang.TangParetoConfig, {"taus": ()}, "taus"),
    (tang.TangParetoConfig, {"taus": (0.1, -1.0, 1.0)}, "taus"),
    (tang.TangAblationConfig, {"quality_k": 1.5}, "quality_k"),
    (tang.TangClassifierConfig, {"n_pairs": 0}, "n_pairs"),
    (tang.TangBestOf2Config, {"refreshes": 0}, "refreshes"),
])
def test_config_validation(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
