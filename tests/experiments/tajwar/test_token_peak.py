"""F1 (tokens) (Tajwar et al. 2024, arXiv:2404.14367, tajwar-token-peak): the quick run (the full
task, fewer steps) shows the on-policy lead for Best-of-N and its expected failure for IPO; the
check passes when the IPO lead is there and fails on the negative control (on-policy rows replaced
by the offline ones); runs are deterministic; bad configs name the field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from coverage_sim.experiments.registry import TABLE_COLUMNS
from coverage_sim.experiments.tajwar import token_peak
from coverage_sim.experiments.tajwar.setting import OFFLINE, ON_POLICY


@pytest.fixture(scope="module")
def quick():
    cfg = token_peak.TajwarTokenPeakConfig.quick()
    return cfg, token_peak.run(cfg, 0)


def _ipo_on_policy_ahead(table, by):
    """The table with on-policy IPO's reward set to offline IPO's plus ``by`` after step 0."""
    out = table.copy()
    ipo = (out["method"] == "IPO") & (out["metric"] == "reward") & (out["step"] > 0)
    on, off = ipo & (out["regime"] == ON_POLICY), ipo & (out["regime"] == OFFLINE)
    out.loc[on, "value"] = out.loc[off, "value"].to_numpy() + by
    return out


def test_on_policy_leads_and_negative_control(quick, save_plot):
    cfg, table = quick
    assert list(table.columns) == ["method", "regime"] + list(TABLE_COLUMNS)
    start = table[(table["metric"] == "reward") & (table["step"] == 0)]["value"]
    assert abs(start.iloc[0] - 0.039) < 0.02                   # SFT'd to pi_ref: E_ref r = 0.039
    leads = token_peak.on_policy_leads(table)
    assert (leads["Best-of-N"] > 0.3).all()                    # the finding, for Best-of-N
    # the expected disagreement: on-policy IPO is not ahead of offline IPO within the budget
    with pytest.raises(AssertionError, match="transformer, IPO"):
        token_peak.check(table, cfg)
    # power: the same table with on-policy IPO 0.3 above offline IPO passes
    token_peak.check(_ipo_on_policy_ahead(table, 0.3), cfg)
    # negative control: the on-policy arm replaced by the offline arm's results fails
    off = table[table["regime"] == OFFLINE]
    null = pd.concat([off, off.assign(regime=ON_POLICY)], ignore_index=True)
    with pytest.raises(AssertionError, match="transformer, Best-of-N"):
        token_peak.check(null, cfg)
    save_plot(token_peak.EXPERIMENT, table, cfg)


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
