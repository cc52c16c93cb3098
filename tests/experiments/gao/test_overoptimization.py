"""F14 (Gao et al., gao-overoptimization): proxy monotone, gold hump-shaped, Gao's fits track."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coverage_sim.best_of_n import best_of_n_kl_bound
from coverage_sim.experiments.gao import overoptimization as gao
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = gao.GaoConfig.quick()
    table = run_sweep(gao.EXPERIMENT, cfg, [0, 1], out=tmp_path_factory.mktemp("gao"),
                      workers=1, progress=False)
    return cfg, table


def _metric(table, method, metric, seed=0):
    rows = table[(table["method"] == method) & (table["metric"] == metric)
                 & (table["seed"] == seed)]
    return rows.sort_values("step")


def test_quick_agrees_and_numbers(quick, tmp_path, assert_drawn):
    cfg, table = quick
    gao.check(table, cfg)
    env = gao.make_env(cfg)
    for method in gao.METHODS:
        d, gold, _, proxy, _ = gao.mean_curves(table, method)
        assert d[0] == pytest.approx(0.0, abs=1e-6) and gold[0] == 0.0
        assert proxy[-1] > 2.0                       # the proxy keeps improving ...
        i = int(np.argmax(gold))
        assert 0.6 < gold[i] < 1.5 and 0.7 < d[i] < 1.6   # ... the gold peaks near d ~ 1
        assert gold[-1] < 0.6 * gold[i]              # ... and falls
        a, b, r2, _ = gao.fit_gao(method, d, gold)
        assert r2 > gao.MIN_R2 and a > 0 and b > 0
        # every sweep starts at pi_ref: gold = E_ref r*
        first = _metric(table, method, "gold")["value"].iloc[0]
        assert first == pytest.approx(float(env.ref @ env.reward))
    # claim C14: exact Best-of-N KL <= log N - (N - 1)/N, KL non-decreasing in N
    bon = _metric(table, "best-of-N", "kl")
    bound = np.array([best_of_n_kl_bound(int(n)) for n in bon["knob"]])
    assert np.all(bon["value"].to_numpy() <= bound + 1e-12)
    assert np.all(np.diff(bon["value"].to_numpy()) >= -1e-12)
    # claim C15: the KL of the regularised optimum is non-increasing in beta
    rl = _metric(table, "KL-regularised optimum", "kl")
    assert rl["knob"].iloc[0] == np.inf and rl["value"].iloc[0] == 0.0   # step 0 is pi_ref
    assert np.all(np.diff(rl["knob"].to_numpy()) < 0)      # beta decreasing along the sweep
    assert np.all(np.diff(rl["value"].to_numpy()) >= -1e-12)
    fig = gao.plot(table, cfg)
    assert_drawn(fig)
    paths = save_figure(fig, tmp_path / "gao")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_table_layout(quick):
    _cfg, table = quick
    assert list(table.columns) == ["method", "knob", "seed", "step", "metric", "value"]
    assert not table.isna().any().any()
    assert set(table["metric"]) == {"kl", "d", "gold", "proxy"}


def test_fit_recovers_known_coefficients():
    d = np.linspace(0.0, 3.0, 50)
    dlogd = np.where(d > 0, d * np.log(np.maximum(d, 1e-300)), 0.0)
    for method, second in (("best-of-N", d ** 2), ("KL-regularised optimum", dlogd)):
        a, b, r2, _fitted = gao.fit_gao(method, d, 1.3 * d - 0.4 * second)
        assert (a, b) == pytest.approx((1.3, 0.4))
        assert r2 == pytest.approx(1.0)


def test_gamma_zero_weakens_overoptimisation():
    """Without the typical-is-better gold structure the over-optimisation drop is much smaller."""
    drops = {}
    for gamma in (0.0, 0.5):
        cfg = gao.GaoConfig(gamma=gamma, points=20)
        table = pd.concat([gao.run(cfg, s) for s in range(3)], ignore_index=True)
        _, gold, _, _, _ = gao.mean_curves(table, "best-of-N")
        drops[gamma] = gold.max() - gold[-1]
    assert drops[0.5] > 2 * drops[0.0]


@pytest.mark.parametrize("field, value", [("n_arms", 2), ("n_pairs", 0), ("l2", 0.0),
                                          ("beta_min", 100.0), ("points", 2)])
def test_invalid_config(field, value):
    with pytest.raises(ValueError, match=field):
        gao.GaoConfig(**{field: value})


def test_check_fails_without_the_effect(quick):
    cfg, table = quick
    no_hump = table.copy()
    gold, proxy = no_hump["metric"] == "gold", no_hump["metric"] == "proxy"
    no_hump.loc[gold, "value"] = no_hump.loc[proxy, "value"].to_numpy()   # gold = proxy
    with pytest.raises(AssertionError, match="gold"):
        gao.check(no_hump, cfg)
    falling_proxy = table.copy()
    falling_proxy.loc[proxy, "value"] = -falling_proxy.loc[proxy, "value"]
    with pytest.raises(AssertionError, match="proxy"):
        gao.check(falling_proxy, cfg)
