"""F6 (Tang et al. 2024, arXiv:2405.08448, tang-pareto): the quick run shows the online/offline gap;
the check is not vacuous."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.tang import pareto
from coverage_sim.experiments.tang.setting import final_points, frontier, kl_grid


@pytest.fixture(scope="module")
def quick(quick_sweep):
    """Quick config, seeds 0 and 1 (every Tang figure averages seeds), run in-process."""
    config, table = quick_sweep(pareto.EXPERIMENT, seeds=(0, 1), workers=1)
    return pareto.EXPERIMENT, config, table


def test_pareto_quick(quick, save_plot):
    exp, cfg, table = quick
    exp.check(table, cfg)
    assert set(table["method"]) == {"online", "offline", "offline_exact"}
    assert set(table["seed"]) == {0, 1}
    assert table.groupby("method")["tau"].nunique().eq(len(cfg.taus)).all()
    grid = kl_grid(table, ["online", "offline"])
    gap = (frontier(table, "online", grid).groupby("kl")["win_rate"].mean()
           - frontier(table, "offline", grid).groupby("kl")["win_rate"].mean()).to_numpy()
    assert abs(gap[0]) < 0.01          # at tiny KL both barely move from pi_ref (win rate ~1/2)
    assert gap[-1] > 0.06              # the gap opens with KL
    pts = final_points(table, "offline").groupby("tau")[["kl", "win_rate"]].mean()
    assert pts["kl"].iloc[0] > 4.0     # offline at tau = 0.01 drifts far ...
    assert pts["win_rate"].iloc[0] < pts["win_rate"].max() - 0.04   # ... and loses win rate
    start = table[(table["step"] == 0) & (table["metric"] == "win_rate")]["value"]
    assert np.allclose(start, 0.5)     # every run starts at pi_ref
    save_plot(exp, table, cfg)


def test_check_fails_without_the_effect(quick, swap_methods):
    exp, cfg, table = quick
    with pytest.raises(AssertionError):
        exp.check(swap_methods(table), cfg)


@pytest.mark.parametrize("cls, kwargs, field", [
    (pareto.TangParetoConfig, {"taus": ()}, "taus"),
    (pareto.TangParetoConfig, {"taus": (0.1, -1.0, 1.0)}, "taus"),
])
def test_config_validation(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
