"""capacity-findings (A2): the verdict rules on known effects, the check's clause of every finding
holds with the effect and fails without it, the tabular column reproduces the bandit figures (and
a changed tabular effect fails its clause), the committed full run's verdict is pinned, the MLP
class runs, the table and summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.capacity import findings as C
from coverage_sim.experiments.verdict import AGREES, DISAGREES, PARTLY


def _rows(finding, policy, metrics: dict, seeds=(0,)):
    return pd.DataFrame([{"finding": finding, "policy": policy, "seed": s, "step": 0,
                          "metric": m, "value": v[i] if isinstance(v, list) else v}
                         for i, s in enumerate(seeds) for m, v in metrics.items()])


@pytest.mark.parametrize("finding, metrics, seeds, verdict", [
    ("F1", {"lead": 0.5, "on_min": 0.95, "off_max": 0.45}, (0,), "holds"),
    ("F1", {"lead": 0.1, "on_min": 0.95, "off_max": 0.85}, (0,), "partly"),
    ("F1", {"lead": -0.1, "on_min": 0.8, "off_max": 0.9}, (0,), "fails"),
    ("F3", {"auc_gain": 0.05, "min_diff": 0.0}, (0,), "holds"),
    ("F3", {"auc_gain": 0.05, "min_diff": -0.2}, (0,), "partly"),
    ("F5", {"ipo_error": 1e-5, "dpo_pi_a": 0.999}, (0,), "holds"),
    ("F5", {"ipo_error": 0.3, "dpo_pi_a": 0.999}, (0,), "partly"),
    ("F6", {"gap": [0.05, 0.06, 0.04], "kl_max": 3.0}, (0, 1, 2), "holds"),
    ("F6", {"gap": [0.05, -0.04, 0.01], "kl_max": 3.0}, (0, 1, 2), "partly"),
    ("F11", {"pi_y3": [0.9, 0.1], "pi_y3_rlhf": 0.0}, (0, 1), "partly"),
    ("F11", {"pi_y3": [0.9, 0.8], "pi_y3_rlhf": 0.0}, (0, 1), "holds"),
    ("F15", {"displacement": [0.0, 0.0]}, (0, 1), "fails"),
    ("F15", {"displacement": [-1.0, -0.5]}, (0, 1), "holds"),
])
def test_verdict_rules(finding, metrics, seeds, verdict):
    table = _rows(finding, "mlp", metrics, seeds)
    assert C._verdict(table, finding, "mlp")[0] == verdict
    cell = C.capacity_table(table).iloc[0]["mlp"]
    assert cell.startswith(verdict)
    assert ("seeds" in cell) == (len(seeds) > 1)


#: Per finding: MLP metrics over 3 seeds with the finding, and the same with it removed.
_WITH_AND_WITHOUT = {
    "F1": ({"lead": [0.5, 0.6, 0.4], "on_min": 0.95, "off_max": 0.4},
           {"lead": [0.0, 0.0, 0.0], "on_min": 1.0, "off_max": 1.0}),
    "F3": ({"auc_gain": [0.05, 0.04, 0.06], "min_diff": 0.0},
           {"auc_gain": [-0.03, 0.0, -0.05], "min_diff": -0.2}),
    "F5": ({"ipo_error": [1e-12, 1e-12, 1e-12], "dpo_pi_a": 0.999},
           {"ipo_error": [0.3, 0.3, 0.3], "dpo_pi_a": 0.999}),
    "F6": ({"gap": [0.05, 0.06, 0.04], "kl_max": 3.0}, {"gap": [0.0, -0.02, 0.005],
                                                        "kl_max": 3.0}),
    "F11": ({"pi_y3": [0.9, 0.8, 0.95], "pi_y3_rlhf": 0.0}, {"pi_y3": [0.0, 0.0, 0.0],
                                                             "pi_y3_rlhf": 0.0}),
    "F15": ({"displacement": [-1.0, -0.5, -2.0]}, {"displacement": [0.0, 0.0, 0.0]}),
}


@pytest.mark.parametrize("finding", list(C.FINDINGS))
def test_each_paper_clause_holds_with_its_finding_and_fails_without(finding):
    cfg = C.CapacityConfig(findings=(finding,))
    with_, without = _WITH_AND_WITHOUT[finding]
    tabular = _rows(finding, "tabular", {k: v[0] if isinstance(v, list) else v
                                         for k, v in with_.items()})
    result = C.check(pd.concat([_rows(finding, "mlp", with_, (0, 1, 2)), tabular]), cfg)
    assert result.verdict == AGREES and result.failing == () and result.effect is None
    assert [(c.name, c.paper) for c in result.clauses] == [(finding, True),
                                                           (f"{finding}-tabular", False)]
    result = C.check(pd.concat([_rows(finding, "mlp", without, (0, 1, 2)), tabular]), cfg)
    assert result.verdict == DISAGREES and result.failing == (finding,)
    # the tabular cell is reported beside it and fails on its own without the finding
    tab_without = _rows(finding, "tabular", {k: v[0] if isinstance(v, list) else v
                                             for k, v in without.items()})
    result = C.check(pd.concat([_rows(finding, "mlp", with_, (0, 1, 2)), tab_without]), cfg)
    assert result.verdict == AGREES
    assert not next(c for c in result.clauses if c.name == f"{finding}-tabular").holds


def test_without_the_mlp_the_paper_clauses_are_not_assessed():
    table = _rows("F6", "tabular", {"gap": [0.05, 0.04], "kl_max": 3.0}, (0, 1))
    result = C.check(table, C.CapacityConfig(findings=("F6",)))
    assert result.verdict == DISAGREES and result.failing == ("F6",)
    assert "not assessed" in result.clauses[0].detail


@pytest.fixture(scope="module")
def exact_classes():
    cfg = C.CapacityConfig(policies=("tabular", "loglinear"))
    return cfg, C.run(cfg, 0)


def test_tabular_column_reproduces_the_figures(exact_classes):
    cfg, table = exact_classes
    result = C.check(table, cfg)
    holds = {c.name: c.holds for c in result.clauses if not c.paper}
    # the bandit figures' own setting: F1, F5 and F6 hold; F3 (Adam), F11 and F15 do not
    assert {k: v for k, v in holds.items() if k.endswith("-tabular")} == {
        "F1-tabular": True, "F3-tabular": False, "F5-tabular": True, "F6-tabular": True,
        "F11-tabular": False, "F15-tabular": False}
    # with features shared across arms the tabular impossibilities become possible
    assert holds["F11-loglinear"] and holds["F15-loglinear"]
    cap = C.capacity_table(table)
    assert cap.shape == (6, 3) and (cap["mlp"] == "n/a").all()
    assert cap.loc[[i for i in cap.index if i.startswith("F5")][0], "loglinear"] == "n/a"
    text = C.summary(table, cfg)
    assert text.startswith("| finding | tabular | loglinear | mlp |") and "Rules" in text
    # negative control: a tabular F1 without the on-policy lead fails its clause
    changed = table.copy()
    changed.loc[(changed["finding"] == "F1") & (changed["metric"] == "lead"), "value"] = 0.0
    assert not next(c for c in C.check(changed, cfg).clauses if c.name == "F1-tabular").holds


def test_committed_full_run_verdict(committed_run):
    """The full run (figures/capacity-findings.csv): with Tajwar's MLP, F5 and F6 hold in 3 of 3
    seeds, F1 (the on-policy lead vanishes: offline also reaches reward 1), F3, F11 and F15 in 0
    of 3."""
    cfg, table = committed_run(C.EXPERIMENT)
    result = C.check(table, cfg)
    assert (result.verdict, result.failing) == C.EXPERIMENT.expected() == (
        PARTLY, ("F1", "F3", "F11", "F15"))
    paper = {c.name: (c.passes, c.instances) for c in result.clauses if c.paper}
    assert paper == {"F1": (0, 3), "F3": (0, 3), "F5": (3, 3), "F6": (3, 3), "F11": (0, 3),
                     "F15": (0, 3)}
    lead, _ = C.seed_holds(table, "F1", "mlp")
    assert np.abs(lead).max() < 1e-3                        # no lead, in every seed


def test_mlp_class_runs():
    cfg = C.CapacityConfig(findings=("F5", "F15"), policies=("mlp",), azar_steps=20,
                           razin_steps=20)
    table = C.run(cfg, 1)                     # seed > 0: only the seed-dependent MLP runs
    assert set(table["policy"]) == {"mlp"} and set(table["finding"]) == {"F5", "F15"}
    assert np.isfinite(table["value"]).all()


@pytest.mark.parametrize("field, value", [("findings", ("F2",)), ("policies", ("deep",)),
                                          ("peak_steps", 5)])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        C.CapacityConfig(**{field: value})
