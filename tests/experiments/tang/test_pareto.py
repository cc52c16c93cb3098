"""F6 (Tang et al. 2024, arXiv:2405.08448, tang-pareto): the quick run's numbers and verdict; no
policy above the optimum frontier; every clause can fail (negative controls) and the failing one can
hold; the full run's verdict."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim.experiments.tang import pareto
from coverage_sim.experiments.tang.setting import final_points
from coverage_sim.experiments.verdict import PARTLY

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(pareto.EXPERIMENT, seeds=(0,), workers=1)


def test_pareto_quick(quick, save_plot):
    cfg, table = quick
    assert set(table["method"]) == {"online", "offline", "optimum"}
    assert table["instance"].nunique() == cfg.instances == 8
    trained = table[table["method"] != "optimum"]
    assert trained.groupby("method")["tau"].nunique().eq(len(cfg.taus)).all()
    start = trained[(trained["step"] == 0) & (trained["metric"] == "win_rate")]["value"]
    assert np.allclose(start, 0.5)     # every run starts at pi_ref
    result = pareto.check(table, cfg)
    assert result.verdict == PARTLY and result.failing == ("offline-saturates",)
    clauses = clauses_by_name(result)
    assert clauses["online-above-offline"].passes == 8
    assert clauses["offline-saturates"].passes == 4
    assert 0.03 < result.effect.mean < 0.12 and result.effect.ci[0] > 0
    save_plot(pareto.EXPERIMENT, table, cfg)


def test_no_policy_above_the_optimum_frontier(quick):
    """Every checkpoint satisfies W - tau KL <= max over the optimum's (KL, W) of W* - tau KL*, for
    every tau of the optimum curve (the frontier's supporting lines; exact, no interpolation)."""
    _, table = quick
    opt = final_points(table, "optimum")
    points = table[table["method"].isin(["online", "offline"])].pivot_table(
        index=["method", "instance", "tau", "step"], columns="metric", values="value").reset_index()
    for inst, pts in points.groupby("instance"):
        line = opt[opt["instance"] == inst]
        bound = (line["win_rate"] - line["tau"] * line["kl"]).to_numpy()
        lhs = pts["win_rate"].to_numpy()[:, None] - line["tau"].to_numpy()[None, :] \
            * pts["kl"].to_numpy()[:, None]
        assert (lhs <= bound[None, :] + 1e-9).all()


def test_swapped_methods_fail_every_clause(quick, swap_methods):
    cfg, table = quick
    result = pareto.check(swap_methods(table), cfg)
    assert not any(c.holds for c in result.clauses)
    assert result.effect.mean < 0


def test_saturation_clause_can_hold(quick):
    """Offline frontiers made flat over the upper half of their KL range satisfy
    ``offline-saturates``."""
    cfg, table = quick
    flat = table.copy()
    pts = final_points(table, "offline")
    for inst, rows in pts.groupby("instance"):
        top = rows["kl"].max()
        below = rows[rows["kl"] < top / 2].sort_values("kl")
        level = below["win_rate"].iloc[-1]     # flat from the last point below half the range
        for tau in rows[rows["kl"] >= top / 2]["tau"]:
            mask = ((flat["method"] == "offline") & (flat["instance"] == inst)
                    & (flat["tau"] == tau) & (flat["metric"] == "win_rate")
                    & (flat["step"] == cfg.steps))
            flat.loc[mask, "value"] = level
    assert clauses_by_name(pareto.check(flat, cfg))["offline-saturates"].passes == 8


def test_full_run_verdict():
    """The full config (all 8 tasks, 9 taus, 1000 steps) gives the same verdict as the quick one."""
    cfg = pareto.TangParetoConfig()
    result = pareto.check(pareto.run(cfg, 0), cfg)
    assert result.verdict == PARTLY and result.failing == ("offline-saturates",)
    clauses = clauses_by_name(result)
    assert clauses["online-above-offline"].passes == 7
    assert clauses["offline-saturates"].passes == 4


@pytest.mark.parametrize("kwargs, field", [
    ({"taus": ()}, "taus"), ({"taus": (0.1, -1.0, 1.0)}, "taus"), ({"policy": "cnn"}, "policy"),
])
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        pareto.TangParetoConfig(**kwargs)
