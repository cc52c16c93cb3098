"""F7 (Tang et al. 2024, arXiv:2405.08448, tang-ablations): the quick run shows the ablations and
the ingredient; the checks are not vacuous."""

from __future__ import annotations

import pandas as pd
import pytest

from coverage_sim.experiments.tang.setting import kl_grid
from coverage_sim.experiments.tang import ablations
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Quick config, seeds 0 and 1 (every Tang figure averages seeds), run in-process."""
    exp = ablations.EXPERIMENT
    cfg = exp.config.quick()
    table = run_sweep(exp, cfg, [0, 1], out=tmp_path_factory.mktemp(exp.id), workers=1,
                      progress=False)
    return exp, cfg, table


def _plot_ok(exp, table, cfg, tmp_path):
    paths = save_figure(exp.plot(table, cfg), tmp_path / exp.id)
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def _swap(table, a="online", b="offline"):
    swapped = table.copy()
    swapped["method"] = table["method"].replace({a: b, b: a})
    return swapped


def test_ablations_quick(quick, tmp_path):
    exp, cfg, table = quick
    exp.check(table, cfg)
    grid = kl_grid(table, ablations._F7_METHODS)
    m = ablations._region_means(table, grid, grid >= cfg.min_gap_kl, ablations._F7_METHODS)
    assert m["online"] - m["offline"] > 0.05
    assert abs(m["proxy_labels"] - m["online"]) < 0.01       # the ingredient closes the gap
    assert m["replay"] < m["offline"]                          # replay does not even help here
    mu = table[table["metric"].str.startswith("mu_")].groupby(["method", "metric"])["value"].mean()
    assert mu[("replay", "mu_win_rate")] > 0.75                # replay data is high quality ...
    assert mu[("quality", "mu_win_rate")] > 0.6
    assert mu[("replay", "mu_kl")] > 1.5                       # ... but far from pi_ref
    _plot_ok(exp, table, cfg, tmp_path)


def test_check_fails_without_the_effect(quick):
    exp, cfg, table = quick
    with pytest.raises(AssertionError):
        exp.check(_swap(table), cfg)


def test_ablation_check_needs_the_ingredient(quick):
    exp, cfg, table = quick
    broken = table[table["method"] != "proxy_labels"]
    fake = table[table["method"] == "offline"].assign(method="proxy_labels")
    with pytest.raises(AssertionError, match="ingredient"):
        exp.check(pd.concat([broken, fake], ignore_index=True), cfg)


@pytest.mark.parametrize("cls, kwargs, field", [
    (ablations.TangAblationConfig, {"quality_k": 1.5}, "quality_k"),
])
def test_config_validation(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
