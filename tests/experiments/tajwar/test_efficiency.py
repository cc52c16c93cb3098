"""F2 (Tajwar et al. 2024, arXiv:2404.14367, tajwar-efficiency): the quick run's numbers and
verdict, and a negative control for every clause."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coverage_sim.experiments.tajwar import efficiency
from coverage_sim.experiments.verdict import PARTLY

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(efficiency.EXPERIMENT)


def test_quick_queries_and_numbers(quick, save_plot):
    cfg, table = quick
    on = efficiency._wide(table, method="IPO", regime="on-policy", reuse=15).loc[0]
    assert on.loc[15, "queries"] == 100 and on.loc[30, "queries"] == 200   # 100 per batch
    assert on["queries"].max() == cfg.budget                               # same budget
    for reuse in cfg.reuses:                                               # for every reuse
        rows = efficiency._wide(table, method="DPO", regime="on-policy", reuse=reuse).loc[0]
        assert rows["queries"].max() == cfg.budget
        assert rows.index.max() == reuse * cfg.budget // 100
    offline = efficiency._offline_finals(table, "IPO")
    assert list(offline.columns) == [1000, cfg.budget]
    assert (offline < 0.5).all().all()                                     # offline stays low
    # one step per batch buys only budget/100 steps: reward barely moves
    assert (efficiency.budget_rewards(table, "IPO")[1] < 0.06).all()
    front = efficiency._wide(table, method="frontier").reset_index().sort_values("kl")
    assert np.all(np.diff(front["reward"].to_numpy()) >= -1e-12)          # monotone frontier
    save_plot(efficiency.EXPERIMENT, table, cfg)


def test_quick_verdict_is_pinned(quick):
    cfg, table = quick
    result = efficiency.EXPERIMENT.check(table, cfg)
    assert result.verdict == PARTLY and result.mode == "sampled"
    assert result.failing == efficiency.EXPERIMENT.expected_failing == ("query-efficient",)
    assert result.effect.mean > 0


def test_query_efficiency_clause_holds_when_queries_are_cheaper_and_fails_on_our_data(quick):
    """Negative control both ways: on our data on-policy needs more than 1000 queries to reach the
    offline result; counting every on-policy query as a tenth makes the clause hold."""
    cfg, table = quick
    assert not clauses_by_name(efficiency.check(table, cfg))["query-efficient"].holds
    cheap = table.copy()
    rows = (cheap["regime"] == "on-policy") & (cheap["metric"] == "queries")
    cheap.loc[rows, "value"] /= 10
    assert clauses_by_name(efficiency.check(cheap, cfg))["query-efficient"].holds


def test_budget_clause_fails_when_offline_reaches_the_top(quick):
    cfg, table = quick
    better = table.copy()
    rows = (better["regime"] == "offline") & (better["metric"] == "reward") & (better["step"] > 0)
    better.loc[rows, "value"] = 1.0
    assert not clauses_by_name(efficiency.check(better, cfg))["beats-offline-at-budget"].holds


def test_moderate_reuse_clause_fails_when_the_best_reuse_swaps_with_the_largest(quick):
    """Swapping the labels of reuse 50 (the best) and 150 (the largest) puts the best at an
    extreme, as exact batches would (their reward per query rises with reuse)."""
    cfg, table = quick
    flip = {r: r for r in cfg.reuses} | {50: 150, 150: 50}
    reversed_ = table.copy()
    on = reversed_["regime"] == "on-policy"
    reversed_.loc[on, "reuse"] = reversed_.loc[on, "reuse"].map(flip)
    assert clauses_by_name(efficiency.check(table, cfg))["moderate-reuse-best"].holds
    assert not clauses_by_name(efficiency.check(reversed_, cfg))["moderate-reuse-best"].holds


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="reuses"):
        efficiency.EfficiencyConfig(reuses=(1, 5, 50))          # no Tajwar's 15
    with pytest.raises(ValueError, match="reuses"):
        efficiency.EfficiencyConfig(reuses=(15, 5, 1))
    with pytest.raises(ValueError, match="budget"):
        efficiency.EfficiencyConfig(budget=1050)


def test_table_has_no_missing_values(quick):
    _, table = quick
    assert isinstance(table, pd.DataFrame) and table["value"].notna().all()
    assert list(table.columns[-4:]) == ["seed", "step", "metric", "value"]
