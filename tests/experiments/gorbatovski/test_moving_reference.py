"""trdpo-moving-reference: TR-DPO's moving reference does not recover online-like behaviour on the
F1 instance and its family of far peaks; the check has power (a table with the effect agrees), and a
control without the gap (peaks inside pi_ref's mass) fails the premise clause for that reason."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest

from coverage_sim.experiments.gorbatovski import moving_reference as trdpo
from coverage_sim.experiments.registry import mean_curve
from coverage_sim.experiments.verdict import AGREES, DISAGREES


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(trdpo.EXPERIMENT)


def test_quick_run_does_not_agree_for_the_pinned_reasons(quick, save_plot):
    cfg, table = quick
    result = trdpo.check(table, cfg)
    assert result.verdict == DISAGREES == trdpo.EXPERIMENT.expected_verdict
    assert set(result.failing) == set(trdpo.EXPERIMENT.expected_failing)
    by_name = {c.name: c for c in result.clauses}
    # the premise holds on every instance: there is an online-offline gap to close
    assert by_name["gap"].fraction == 1.0 and not by_name["gap"].paper
    assert by_name["gap"].instances == len(cfg.peaks)
    # the finding: TR-DPO ends below offline DPO on every instance (the CI excludes 0)
    assert result.effect.ci[1] < 0.0
    for label, alpha, _ in cfg.variants():
        assert by_name[f"beats-dpo-alpha{alpha:g}"].passes == 0
        for peak in cfg.peaks:
            assert trdpo.gap_closed(table, peak, label) < 0.0
        # its reference follows the policy but gains little mass near the optimum
        ref_mass = mean_curve(table, "reference_mass_near_optimum", peak=70.0, method=label)
        assert ref_mass.iloc[-1] > ref_mass.iloc[0] and ref_mass.iloc[-1] < 0.2
    online = mean_curve(table, "policy_mass_near_optimum", peak=70.0, method=trdpo.ONLINE)
    assert online.iloc[-1] > 0.9
    # a fixed reference keeps pi_ref's mass near the optimum and its C*
    for metric in ("reference_mass_near_optimum", "coverage_current_ref"):
        assert mean_curve(table, metric, peak=70.0, method=trdpo.OFFLINE).nunique() == 1
    save_plot(trdpo.EXPERIMENT, table, cfg)


def test_check_agrees_when_a_moving_reference_behaves_online(quick):
    """Power: TR-DPO rows replaced by online DPO's make every clause hold."""
    cfg, table = quick
    online = table[table["method"] == trdpo.ONLINE]
    fake = [table[~table["method"].str.startswith("TR-DPO")]]
    for label, _, _ in cfg.variants():
        fake.append(online.assign(method=label))
    result = trdpo.check(pd.concat(fake, ignore_index=True), cfg)
    assert result.verdict == AGREES and result.failing == ()
    assert result.effect.mean > 0.5


def test_control_without_a_gap_fails_the_premise_and_cannot_be_online_like():
    """Negative control: with the peak inside pi_ref's mass there is no online-offline gap, so the
    premise clause fails on every instance and no variant can count as online-like."""
    cfg = dataclasses.replace(trdpo.MovingReferenceConfig.quick(), peaks=(20.0, 25.0))
    result = trdpo.check(trdpo.run(cfg, 0), cfg)
    by_name = {c.name: c for c in result.clauses}
    assert by_name["gap"].passes == 0
    for _, alpha, _ in cfg.variants():
        assert by_name[f"online-like-alpha{alpha:g}"].passes == 0
        assert "nan" in by_name[f"online-like-alpha{alpha:g}"].detail
    assert not math.isnan(result.effect.mean)


@pytest.mark.parametrize("field,value", [("sync_steps", (32,)), ("mixup_alphas", (0.0, 1.0)),
                                         ("mixup_alphas", (0.6, 0.6)), ("good_reward", 0.0),
                                         ("peaks", (120.0,)), ("closed_fraction", 1.5),
                                         ("min_gap", 0.0)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        trdpo.MovingReferenceConfig(**{field: value})
