"""trdpo-moving-reference: TR-DPO's moving reference does not recover online-like behaviour on the
F1 instance; the check has power (a table with the effect passes) and a control without the gap
(peak 20) fails it for the right reason."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from coverage_sim.experiments.gorbatovski import moving_reference as trdpo


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(trdpo.EXPERIMENT)


def test_quick_run_answers_no(quick, save_plot):
    cfg, table = quick
    assert trdpo.EXPERIMENT.expected_to_agree is False
    with pytest.raises(AssertionError, match="closes"):
        trdpo.check(table, cfg)
    for label, _, _ in cfg.variants():
        # the finding: TR-DPO ends no better than offline DPO, far from online DPO
        assert trdpo.gap_closed(table, 70.0, label) < 0.1
        ref_mass = trdpo._final(table, "reference_mass_near_optimum", 70.0, label)
        assert ref_mass < 0.2
    assert trdpo._final(table, "policy_mass_near_optimum", 70.0, trdpo.ONLINE) > 0.9
    # a fixed reference keeps pi_ref's mass near the optimum and its C*
    start = trdpo.mean_curve(table, "reference_mass_near_optimum", peak=70.0, method=trdpo.OFFLINE)
    assert start.nunique() == 1
    save_plot(trdpo.EXPERIMENT, table, cfg)


def test_check_passes_when_a_moving_reference_behaves_online(quick):
    cfg, table = quick
    online = table[table["method"] == trdpo.ONLINE]
    fake = [table[~table["method"].str.startswith("TR-DPO")]]
    for label, _, _ in cfg.variants():
        fake.append(online.assign(method=label))
    trdpo.check(pd.concat(fake, ignore_index=True), cfg)


def test_control_without_a_gap_fails_the_check_for_that_reason():
    cfg = dataclasses.replace(trdpo.MovingReferenceConfig.quick(), peaks=(20.0,))
    table = trdpo.run(cfg, 0)
    with pytest.raises(AssertionError, match="no offline-online gap"):
        trdpo.check(table, cfg)


@pytest.mark.parametrize("field,value", [("sync_steps", (32,)), ("mixup_alphas", (0.0, 1.0)),
                                         ("good_reward", 0.0), ("peaks", (120.0,)),
                                         ("closed_fraction", 1.5)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        trdpo.MovingReferenceConfig(**{field: value})
