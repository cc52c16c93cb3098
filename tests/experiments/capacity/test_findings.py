"""capacity-findings: the verdict rules on known effects, the tabular column reproduces the bandit
figures (and a changed tabular effect fails the check), the MLP class runs, the table and
summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.capacity import findings as C


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


@pytest.fixture(scope="module")
def exact_classes():
    cfg = C.CapacityConfig(policies=("tabular", "loglinear"))
    return cfg, C.run(cfg, 0)


def test_tabular_column_reproduces_the_figures(exact_classes):
    cfg, table = exact_classes
    C.check(table, cfg)
    cap = C.capacity_table(table)
    assert cap.shape == (6, 3) and (cap["mlp"] == "n/a").all()
    assert cap.loc[[i for i in cap.index if i.startswith("F5")][0], "loglinear"] == "n/a"
    # with features shared across arms the tabular impossibilities become possible
    assert C._verdict(table, "F15", "loglinear")[0] == "holds"
    assert C._verdict(table, "F11", "loglinear")[0] == "holds"
    text = C.summary(table, cfg)
    assert text.startswith("| finding | tabular | loglinear | mlp |") and "Rules" in text
    # negative control: a tabular F1 without the on-policy lead fails the check
    changed = table.copy()
    changed.loc[(changed["finding"] == "F1") & (changed["metric"] == "lead"), "value"] = 0.0
    with pytest.raises(AssertionError, match="F1"):
        C.check(changed, cfg)


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
