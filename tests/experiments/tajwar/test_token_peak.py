"""F1 (tokens) (Tajwar et al. 2024, arXiv:2404.14367, tajwar-token-peak): the quick run shows the
on-policy lead for both losses; the negative control (on-policy rows replaced by the offline ones)
fails the check; runs are deterministic; bad configs name the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.registry import TABLE_COLUMNS
from coverage_sim.experiments.tajwar import token_peak
from coverage_sim.experiments.tajwar.setting import OFFLINE, ON_POLICY
from coverage_sim.plotting import save_figure


@pytest.fixture(scope="module")
def quick():
    cfg = token_peak.TajwarTokenPeakConfig.quick()
    return cfg, token_peak.run(cfg, 0)


def test_on_policy_leads_and_negative_control(quick, tmp_path):
    cfg, table = quick
    assert list(table.columns) == ["method", "regime"] + list(TABLE_COLUMNS)
    token_peak.check(table, cfg)
    leads = token_peak.on_policy_leads(table)
    assert (leads > cfg.min_lead).all().all()
    start = table[(table["metric"] == "reward") & (table["step"] == 0)]["value"]
    assert abs(start.iloc[0] - 0.039) < 0.02                   # SFT'd to pi_ref: E_ref r = 0.039
    # negative control: the on-policy arm replaced by the offline arm's results
    off = table[table["regime"] == OFFLINE]
    null = pd.concat([off, off.assign(regime=ON_POLICY)], ignore_index=True)
    with pytest.raises(AssertionError, match="on-policy lead"):
        token_peak.check(null, cfg)
    paths = save_figure(token_peak.EXPERIMENT.plot(table, cfg), tmp_path / "peak")
    assert all(p.stat().st_size > 0 for p in paths)


def test_deterministic_and_seeded():
    cfg = dataclasses.replace(token_peak.TajwarTokenPeakConfig.quick(), vocab=20, length=2,
                              steps=4, sft_steps=2, eval_every=2, n_eval=8, offline_groups=20)
    a = token_peak.run(cfg, 3)
    pd.testing.assert_frame_equal(a, token_peak.run(cfg, 3))
    assert not np.allclose(a["value"], token_peak.run(cfg, 4)["value"])


@pytest.mark.parametrize("field, value", [("groups", 0), ("offline_groups", 5), ("reuse", 0),
                                          ("dtype", "half"), ("min_lead", 2.0), ("device", "")])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        token_peak.TajwarTokenPeakConfig(**{field: value})
