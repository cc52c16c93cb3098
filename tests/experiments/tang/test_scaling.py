"""F6 (scaling) (Tang et al. 2024, arXiv:2405.08448, tang-scaling): the quick run, the verdict rule
on tables with known gaps (agrees / partly / does not agree), the negative control and bad
configs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.registry import TABLE_COLUMNS
from coverage_sim.experiments.tang import scaling


@pytest.fixture(scope="module")
def quick():
    cfg = scaling.ScalingConfig.quick()
    return cfg, scaling.run(cfg, 0)


def test_quick_run(quick, save_plot):
    cfg, table = quick
    assert list(table.columns) == ["size", "method"] + list(TABLE_COLUMNS)
    assert set(table["size"]) == set(cfg.sizes) | {scaling.TABULAR}
    sft = table[table["metric"] == "sft_kl"]
    assert len(sft) == len(cfg.sizes) * cfg.seeds_per_run and (sft["value"] < 0.05).all()
    gaps = scaling.size_gaps(table, list(cfg.sizes) + [scaling.TABULAR])
    assert gaps.shape == (cfg.seeds_per_run, len(cfg.sizes) + 1) and gaps.notna().all().all()
    verdict, numbers = scaling.scaling_verdict(table, cfg)
    assert verdict in ("agrees", "partly", "does not agree") and "smallest - largest" in numbers
    save_plot(scaling.EXPERIMENT, table, cfg)


def _table(gaps_by_size: dict, seeds: int = 16, noise: float = 0.01) -> pd.DataFrame:
    """Final-step win rates with online - offline = the given gap per size plus seed noise whose
    mean is exactly 0 (so the seed mean is the gap)."""
    rng = np.random.default_rng(0)
    rows = []
    for size, gap in gaps_by_size.items():
        z = rng.standard_normal(seeds)
        for s in range(seeds):
            g = gap + noise * (z[s] - z.mean())
            for method, value in (("online", 0.8), ("offline", 0.8 - g)):
                rows.append({"size": size, "method": method, "seed": s, "step": 10,
                             "metric": "win_rate", "value": value})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("gaps, verdict", [
    ((0.10, 0.05, 0.03), "agrees"),               # narrows, not closed
    ((0.10, 0.05, 0.00), "partly"),               # narrows and closes
    ((0.03, 0.03, 0.03), "partly"),               # does not narrow, not closed
    ((0.00, 0.02, 0.05), "partly"),               # widens, not closed
    ((0.00, 0.02, 0.00), "does not agree"),       # no gap at the ends
])
def test_verdict_rule(gaps, verdict):
    cfg = scaling.ScalingConfig()
    table = _table(dict(zip(cfg.sizes + (scaling.TABULAR,), gaps + (0.1,))))
    assert scaling.scaling_verdict(table, cfg)[0] == verdict
    if verdict == "agrees":
        scaling.check(table, cfg)
    else:
        with pytest.raises(AssertionError, match=verdict):
            scaling.check(table, cfg)


def test_negative_control_online_given_offline_results_fails(quick):
    cfg, table = quick
    off = table[table["method"] == "offline"]
    null = pd.concat([off, off.assign(method="online")], ignore_index=True)
    assert np.allclose(scaling.size_gaps(null, cfg.sizes), 0.0)
    with pytest.raises(AssertionError, match="does not agree"):
        scaling.check(null, cfg)


@pytest.mark.parametrize("field, value", [("sizes", ("w4", "w16")), ("sizes", ("w4", "x", "w32")),
                                          ("tau", 0.0), ("tabular_steps", 0)])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        scaling.ScalingConfig(**{field: value})
