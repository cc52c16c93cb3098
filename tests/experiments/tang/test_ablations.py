"""F7 (Tang et al. 2024, arXiv:2405.08448, tang-ablations): the quick run shows the ablations and
the ingredient; the checks are not vacuous."""

from __future__ import annotations

import pandas as pd
import pytest

from coverage_sim.experiments.tang import ablations
from coverage_sim.experiments.tang.setting import kl_grid


@pytest.fixture(scope="module")
def quick(quick_sweep):
    """Quick config, seeds 0 and 1 (every Tang figure averages seeds), run in-process."""
    config, table = quick_sweep(ablations.EXPERIMENT, seeds=(0, 1), workers=1)
    return ablations.EXPERIMENT, config, table


def test_ablations_quick(quick, save_plot):
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
    save_plot(exp, table, cfg)


def test_check_fails_without_the_effect(quick, swap_methods):
    exp, cfg, table = quick
    with pytest.raises(AssertionError):
        exp.check(swap_methods(table), cfg)


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
