"""F2 (Tajwar et al. 2024, arXiv:2404.14367, tajwar-efficiency): the quick run shows the claim; the
checks are not vacuous."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coverage_sim.experiments.tajwar import efficiency


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(efficiency.EXPERIMENT)


def test_efficiency_quick_reproduces(quick, save_plot):
    cfg, table = quick
    efficiency.EXPERIMENT.check(table, cfg)
    on = efficiency._wide(table, method="IPO", regime="on-policy", reuse=15)
    assert on.loc[15, "queries"] == 100 and on.loc[30, "queries"] == 200   # 100 per batch
    off = efficiency._wide(table, method="IPO", regime="offline")
    assert off.loc[5, "queries"] == 1000 and off.loc[0, "queries"] == 0
    assert off["reward"].max() < 0.5                                        # offline never gets there
    needed = {r: efficiency._queries_to_reach(
        efficiency._wide(table, method="IPO", regime="on-policy", reuse=r), 0.5) for r in cfg.reuses}
    assert needed[1] > 5 * needed[15]                                       # ~1/reuse
    front = efficiency._wide(table, method="frontier").sort_values("kl")
    assert np.all(np.diff(front["reward"].to_numpy()) >= -1e-12)           # monotone frontier
    save_plot(efficiency.EXPERIMENT, table, cfg)


def test_efficiency_check_fails_when_reuse_labels_are_reversed(quick):
    cfg, table = quick
    on = table["regime"] == "on-policy"
    flip = dict(zip(cfg.reuses, cfg.reuses[::-1]))
    reversed_ = table.copy()
    reversed_.loc[on, "reuse"] = reversed_.loc[on, "reuse"].map(flip)
    with pytest.raises(AssertionError):
        efficiency.EXPERIMENT.check(reversed_, cfg)


def test_efficiency_check_fails_when_regimes_are_swapped(quick):
    cfg, table = quick
    swapped = table.copy()
    off = swapped["regime"] == "offline"
    paper = (swapped["regime"] == "on-policy") & (swapped["reuse"] == cfg.paper_reuse)
    swapped.loc[off, ["regime", "reuse"]] = ["on-policy", cfg.paper_reuse]
    swapped.loc[paper, ["regime", "reuse"]] = ["offline", 0]
    with pytest.raises(AssertionError):
        efficiency.EXPERIMENT.check(swapped, cfg)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="paper_reuse"):
        efficiency.EfficiencyConfig(paper_reuse=7)


def test_table_has_no_missing_values(quick):
    _, table = quick
    assert isinstance(table, pd.DataFrame) and table["value"].notna().all()
    assert list(table.columns[-4:]) == ["seed", "step", "metric", "value"]
