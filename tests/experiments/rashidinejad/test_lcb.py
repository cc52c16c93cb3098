"""F13 (rashidinejad-lcb): LCB ~ N^-1/2, BC exponential vs bad, greedy fails (hard instance)."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.rashidinejad import lcb as rn
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = rn.RashidinejadConfig.quick()
    table = run_sweep(rn.EXPERIMENT, cfg, [0, 1], out=tmp_path_factory.mktemp("rashidinejad"),
                      workers=1, progress=False)
    return cfg, table


def test_quick_agrees_and_numbers(quick, tmp_path, assert_drawn):
    cfg, table = quick
    rn.check(table, cfg)
    n_max = max(cfg.ns)
    gap = rn.mean_gap(cfg)
    for instance in rn.INSTANCES:
        for alg in rn.ALGORITHMS:  # claim C16: C* = 1 -> a* for every N
            assert (rn._mean_curve(table, instance, 1.0, alg, "p_optimal") == 1.0).all()
        for c_star in (2.0, 10.0, 100.0):
            lo, hi = rn.lcb_fit_range(c_star, n_max)
            slope = rn._slope(rn._mean_curve(table, instance, c_star, "LCB"), lo, hi)
            assert -0.62 <= slope <= -0.4
    bc = {c: rn._mean_curve(table, "two-arm", c, "BC") for c in cfg.c_stars}
    assert bc[2.0][n_max] == pytest.approx(gap / 2, rel=0.15)   # coin flip between two arms
    assert bc[10.0][n_max] == pytest.approx(gap, rel=0.1)       # always the decoy
    assert bc[1.5][10] > 1e-3 and bc[1.5][1000] == 0.0
    greedy = rn._mean_curve(table, "hard", 10.0, "greedy")
    assert greedy[n_max] > 0.1                                   # a rare bad arm wins
    lcb = rn._mean_curve(table, "hard", 10.0, "LCB")
    assert lcb[n_max] < 0.01
    # LCB's order in C*: the offset grows with C* (sqrt(C*/N))
    lcb_n = [rn._mean_curve(table, "two-arm", c, "LCB")[n_max] for c in (1.5, 2.0, 10.0, 100.0)]
    assert np.all(np.diff(lcb_n) > 0)
    fig = rn.plot(table, cfg)
    assert_drawn(fig)
    paths = save_figure(fig, tmp_path / "rashidinejad")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_table_layout(quick):
    cfg, table = quick
    assert list(table.columns) == ["instance", "c_star", "algorithm", "n_samples", "seed", "step",
                                   "metric", "value"]
    assert not table.isna().any().any()
    per_seed = len(rn.INSTANCES) * len(cfg.c_stars) * len(cfg.ns) * len(rn.ALGORITHMS) * 2
    per_seed += len(cfg.c_stars) * len(cfg.ns)                      # exact BC rows
    assert len(table) == 2 * per_seed


def test_behaviour_and_exact_bc():
    cfg = rn.RashidinejadConfig()
    for instance in rn.INSTANCES:
        for c_star in cfg.c_stars:
            mu = rn.behaviour(cfg, instance, c_star)
            assert mu.sum() == pytest.approx(1.0)
            assert mu[0] == pytest.approx(1.0 / c_star)             # C* = 1/mu(a*)
    hard = rn.behaviour(cfg, "hard", 10.0)
    assert hard.size == 2 + cfg.n_rare and hard[2:].sum() == pytest.approx(0.9 * cfg.rare_fraction)
    # exact BC at C* = 2: a tie-or-fewer probability of exactly 1/2 for every N
    for n in (1, 2, 11, 100):
        assert rn.bc_exact_subopt(cfg, 2.0, n) == pytest.approx(rn.mean_gap(cfg) / 2)
    # C* < 2: Chernoff exponent kl(1/2 || 2/3)
    kl = 0.5 * np.log(0.5 / (2 / 3)) + 0.5 * np.log(0.5 / (1 / 3))
    assert -rn._log_bc_error(1.5, 100000) / 100000 == pytest.approx(kl, rel=0.01)


def test_deterministic_given_seed():
    cfg = rn.RashidinejadConfig(c_stars=(1.5, 10.0), ns=(10, 1000), reps=200)
    a, b = rn.run(cfg, 3), rn.run(cfg, 3)
    assert a.equals(b)
    assert not a.equals(rn.run(cfg, 4))


@pytest.mark.parametrize("field, value", [("c_stars", (0.5,)), ("ns", (0,)), ("reps", 0),
                                          ("gap_min", 0.6), ("rare_mean", 0.4), ("delta", 1.0)])
def test_invalid_config(field, value):
    with pytest.raises(ValueError, match=field):
        rn.RashidinejadConfig(**{field: value})


def test_check_fails_without_the_effect(quick):
    cfg, table = quick
    swapped = table.copy()
    hard = swapped["instance"] == "hard"
    lcb, greedy = hard & (swapped["algorithm"] == "LCB"), hard & (swapped["algorithm"] == "greedy")
    swapped.loc[lcb, "algorithm"], swapped.loc[greedy, "algorithm"] = "greedy", "LCB"
    with pytest.raises(AssertionError):
        rn.check(swapped, cfg)
    # BC that decays for C* >= 2 (effect removed): copy LCB's curve into BC's
    decaying = table.copy()
    for c_star in (2.0, 10.0, 100.0):
        sel = (decaying["instance"] == "two-arm") & (decaying["c_star"] == c_star) & (
            decaying["metric"] == "subopt")
        bc = sel & (decaying["algorithm"] == "BC")
        decaying.loc[bc, "value"] = decaying.loc[sel & (decaying["algorithm"] == "LCB"),
                                                 "value"].to_numpy()
    with pytest.raises(AssertionError, match="BC should be bad"):
        rn.check(decaying, cfg)
