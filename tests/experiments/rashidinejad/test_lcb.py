"""F13 (rashidinejad-lcb): LCB ~ N^-1/2, BC exponential vs bad, greedy fails (hard instance)."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.rashidinejad import lcb as rn
from coverage_sim.experiments.verdict import AGREES

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(rn.EXPERIMENT, seeds=(0, 1), workers=1)


def test_quick_agrees_and_numbers(quick, save_plot):
    cfg, table = quick
    result = rn.check(table, cfg)
    assert result.verdict == AGREES and result.mode == "sampled"
    clauses = clauses_by_name(result)
    assert not clauses["bc-chernoff-exponent"].paper
    counts = {"expert-data": 2, "lcb-rate": 6, "lcb-upper-bound": 8, "bc-exponential": 2,
              "bc-fails": 6, "greedy-fails": 8, "bc-chernoff-exponent": 1}
    assert {n: (c.passes, c.instances) for n, c in clauses.items()} == {
        n: (k, k) for n, k in counts.items()}
    assert result.effect.ci[0] > 0.03
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
    save_plot(rn.EXPERIMENT, table, cfg)


def test_lcb_bound_formula():
    cfg = rn.RashidinejadConfig()
    n = np.array([100.0, 1e4])
    expected = np.sqrt(2 * 10.0 * np.log(2 * 2 * n / cfg.delta) / n)
    np.testing.assert_allclose(rn.lcb_bound(cfg, "two-arm", 10.0, n), expected)
    arms = 2 + cfg.n_rare
    np.testing.assert_allclose(rn.lcb_bound(cfg, "hard", 10.0, n),
                               np.sqrt(2 * 10.0 * np.log(2 * arms * n / cfg.delta) / n))


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


def _scale(table, factor, **where):
    out = table.copy()
    sel = np.ones(len(out), dtype=bool)
    for key, value in where.items():
        sel &= (out[key] == value).to_numpy()
    out.loc[sel, "value"] = factor(out.loc[sel]) if callable(factor) else out.loc[sel, "value"] \
        * factor
    return out


def test_swapping_lcb_and_greedy_fails(quick):
    cfg, table = quick
    swapped = table.copy()
    hard = swapped["instance"] == "hard"
    lcb, greedy = hard & (swapped["algorithm"] == "LCB"), hard & (swapped["algorithm"] == "greedy")
    swapped.loc[lcb, "algorithm"], swapped.loc[greedy, "algorithm"] = "greedy", "LCB"
    failing = set(rn.check(swapped, cfg).failing)
    assert {"greedy-fails", "lcb-rate", "lcb-upper-bound"} <= failing


def test_each_clause_fails_without_its_effect(quick):
    cfg, table = quick
    cases = {}
    # C* = 1: LCB errs a little
    cases["expert-data"] = (_scale(table, lambda r: r["value"] + 0.01, c_star=1.0,
                                   algorithm="LCB", metric="subopt"), set())
    # LCB that decays like 1/N instead of 1/sqrt(N)
    cases["lcb-rate"] = (_scale(table, lambda r: 0.05 * 10.0 / r["n_samples"], algorithm="LCB",
                                metric="subopt"), {"expert-data", "bc-exponential"})
    # LCB 20x worse: above its bound (and no longer far below greedy)
    cases["lcb-upper-bound"] = (_scale(table, 20.0, algorithm="LCB", metric="subopt"),
                                {"greedy-fails"})
    # BC at C* = 1.5 that keeps erring at N >= 1000
    cases["bc-exponential"] = (_scale(table, lambda r: np.maximum(r["value"], 1e-3),
                                      c_star=1.5, algorithm="BC", metric="subopt"), set())
    # BC that decays for C* >= 2 (effect removed): LCB's curve copied into BC's
    decaying = table.copy()
    for c_star in (2.0, 10.0, 100.0):
        sel = (decaying["instance"] == "two-arm") & (decaying["c_star"] == c_star) & (
            decaying["metric"] == "subopt")
        bc = sel & (decaying["algorithm"] == "BC")
        decaying.loc[bc, "value"] = decaying.loc[sel & (decaying["algorithm"] == "LCB"),
                                                 "value"].to_numpy()
    cases["bc-fails"] = (decaying, set())
    # greedy on the hard instance that decays like LCB
    cases["greedy-fails"] = (_scale(table, 0.01, instance="hard", algorithm="greedy",
                                    metric="subopt"), set())
    # sizes only up to 100: BC's error exponent is still far from its Chernoff limit
    cases["bc-chernoff-exponent"] = (table[table["n_samples"] <= 100],
                                     {"lcb-rate", "bc-exponential", "greedy-fails"})
    for name, (broken, also) in cases.items():
        failing = {c.name for c in rn.check(broken, cfg).clauses if not c.holds}
        assert name in failing and failing - {name} <= also, (name, failing)
