"""F1 (Tajwar et al. 2024, arXiv:2404.14367, tajwar-peak): the quick run shows the claim; the check
is not vacuous."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import coverage_sim as cs
from coverage_sim.experiments.registry import mean_curve
from coverage_sim.experiments.tajwar import peak


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(peak.EXPERIMENT)


def _final(table, metric, **where):
    return float(mean_curve(table, metric, **where).iloc[-1])


def test_peak_quick_reproduces(quick, save_plot):
    cfg, table = quick
    peak.EXPERIMENT.check(table, cfg)
    assert set(table.columns) == {"peak", "regime", "method", "seed", "step", "metric", "value"}
    env = cs.tajwar_bandit(peak=70)
    start = table[(table["step"] == 0) & (table["metric"] == "reward") & (table["peak"] == 70)]
    assert np.allclose(start["value"], env.ref @ env.reward)              # all start at pi_ref
    cap = cs.best_of_n_policy(env.ref, env.reward, 10) @ env.reward       # 0.3135
    assert _final(table, "reward", peak=70, method="Best-of-N", regime="offline") == \
        pytest.approx(cap, abs=0.01)
    for method in ("DPO", "IPO", "Best-of-N", "PG"):
        assert _final(table, "reward", peak=70, method=method, regime="on-policy") > 0.95
    finals = [_final(table, "reward", peak=20, method=m, regime=r)
              for m, r in {(m, r) for m, r in zip(table["method"], table["regime"])}]
    assert min(finals) > 0.85
    save_plot(peak.EXPERIMENT, table, cfg)


def test_peak_check_fails_when_regimes_are_swapped(quick):
    cfg, table = quick
    swapped = table.copy()
    swapped["regime"] = swapped["regime"].map({"offline": "on-policy", "on-policy": "offline"})
    with pytest.raises(AssertionError):
        peak.EXPERIMENT.check(swapped, cfg)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="peaks"):
        peak.PeakConfig(peaks=())


def test_table_has_no_missing_values(quick):
    _, table = quick
    assert isinstance(table, pd.DataFrame) and table["value"].notna().all()
    assert list(table.columns[-4:]) == ["seed", "step", "metric", "value"]
