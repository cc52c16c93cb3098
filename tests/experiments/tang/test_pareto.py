"""F6 (Tang et al. 2024, arXiv:2405.08448, tang-pareto): the quick run shows the online/offline gap;
the check is not vacuous."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.tang.setting import final_points, frontier, kl_grid
from coverage_sim.experiments.tang import pareto
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Quick config, seeds 0 and 1 (every Tang figure averages seeds), run in-process."""
    exp = pareto.EXPERIMENT
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


def test_pareto_quick(quick, tmp_path):
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
    _plot_ok(exp, table, cfg, tmp_path)


def test_check_fails_without_the_effect(quick):
    exp, cfg, table = quick
    with pytest.raises(AssertionError):
        exp.check(_swap(table), cfg)


@pytest.mark.parametrize("cls, kwargs, field", [
    (pareto.TangParetoConfig, {"taus": ()}, "taus"),
    (pareto.TangParetoConfig, {"taus": (0.1, -1.0, 1.0)}, "taus"),
])
def test_config_validation(cls, kwargs, field):
    with pytest.raises(ValueError, match=field):
        cls(**kwargs)
