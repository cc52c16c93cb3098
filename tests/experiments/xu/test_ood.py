"""F11 (Xu et al. 2024, arXiv:2404.10719, xu-ood): the quick run's clauses on every instance, and a
negative control for every clause of the check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from coverage_sim import optimal_policy, xu_bandit
from coverage_sim.experiments.verdict import AGREES, DISAGREES
from coverage_sim.experiments.xu import ood
from coverage_sim.experiments.xu.setting import clipped_reward_model, feature_family

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def xu(quick_sweep):
    return quick_sweep(ood.EXPERIMENT)


def test_xu_quick_agrees_on_every_instance(xu, save_plot):
    cfg, table = xu
    result = ood.check(table, cfg)
    assert result.verdict == AGREES
    clauses = clauses_by_name(result)
    assert not clauses["tabular-dpo-control"].paper
    assert all(c.passes == c.instances == cfg.instances for c in clauses.values())
    assert result.effect.ci[0] > 0.9            # DPO's pi(y3) ~ 1, RLHF's ~ 2 eps
    ref = ood._final_policy(table, "π_ref")
    np.testing.assert_allclose(ref, [(1 - cfg.eps) / 2, (1 - cfg.eps) / 2, cfg.eps])
    assert ood._final_policy(table, "DPO (log-linear)")[2] > 0.99
    assert ood._final_policy(table, "DPO (tabular)")[0] > 0.99
    # RLHF reaches its exact optimum pi_ref e^{r_hat/beta}/Z on every instance (npg)
    instances = ood._instances(cfg, 0)
    for b, (eps, phi) in enumerate(instances):
        env = xu_bandit(eps, reward=cfg.reward)
        r_hat = clipped_reward_model(phi, [(0, 1)], cfg.reward_bound)
        np.testing.assert_allclose(ood._final_policy(table, "RLHF (log-linear)", b),
                                   optimal_policy(env, cfg.beta, r_hat), atol=1e-9)
    save_plot(ood.EXPERIMENT, table, cfg)


def test_instances_are_the_construction_then_random_members():
    cfg = ood.XuConfig()
    instances = ood._instances(cfg, 0)
    assert len(instances) == cfg.instances
    assert instances[0][0] == cfg.eps and (instances[0][1] == feature_family(1, 0.0, 0)[0]).all()
    eps = np.array([e for e, _ in instances[1:]])
    assert np.all((eps >= cfg.eps_range[0]) & (eps <= cfg.eps_range[1]))
    assert len(set(eps)) == len(eps)
    noise = np.stack([phi - instances[0][1] for _, phi in instances[1:]])
    assert 0.1 < noise.std() < 0.3                # feature_noise = 0.2
    assert ood._instances(cfg, 1)[1][0] != instances[1][0]   # the seed draws the family


def _swap(table, a, b):
    out = table.copy()
    sel_a, sel_b = out["method"] == a, out["method"] == b
    out.loc[sel_a, "method"], out.loc[sel_b, "method"] = b, a
    return out


def test_swapping_dpo_and_rlhf_fails_every_paper_clause(xu):
    cfg, table = xu
    result = ood.check(_swap(table, "DPO (log-linear)", "RLHF (log-linear)"), cfg)
    assert result.verdict == DISAGREES
    assert set(result.failing) == {"dpo-ood-mass", "rlhf-near-reference", "rlhf-stays-on-y1"}
    assert result.effect.mean < 0


def test_each_clause_fails_without_its_effect(xu):
    cfg, table = xu
    cases = {}
    # DPO that stays near pi_ref: its pi(y3) replaced by tabular DPO's
    no_drift = table.copy()
    sel = (no_drift["method"] == "DPO (log-linear)") & (no_drift["metric"] == "pi(y3)")
    no_drift.loc[sel, "value"] = table.loc[(table["method"] == "DPO (tabular)")
                                           & (table["metric"] == "pi(y3)"), "value"].to_numpy()
    cases["dpo-ood-mass"] = no_drift
    # RLHF whose pi(y3) overshoots 10 pi_ref(y3) at one step
    overshoot = table.copy()
    sel = (overshoot["method"] == "RLHF (log-linear)") & (overshoot["metric"] == "pi(y3)")
    overshoot.loc[sel, "value"] *= 6.0
    cases["rlhf-near-reference"] = overshoot
    # RLHF ending on y2
    on_y2 = table.copy()
    rl = on_y2["method"] == "RLHF (log-linear)"
    y1, y2 = rl & (on_y2["metric"] == "pi(y1)"), rl & (on_y2["metric"] == "pi(y2)")
    on_y2.loc[y1, "value"], on_y2.loc[y2, "value"] = (table.loc[y2, "value"].to_numpy(),
                                                      table.loc[y1, "value"].to_numpy())
    cases["rlhf-stays-on-y1"] = on_y2
    # tabular DPO with the log-linear drift
    tab = table["method"] == "DPO (tabular)"
    cases["tabular-dpo-control"] = pd.concat(
        [table[~tab], table[table["method"] == "DPO (log-linear)"].assign(method="DPO (tabular)")],
        ignore_index=True)
    for name, broken in cases.items():
        clauses = clauses_by_name(ood.check(broken, cfg))
        assert not clauses[name].holds, name
        assert [c.name for c in clauses.values() if not c.holds] == [name]


@pytest.mark.parametrize("cls, field, value", [
    (ood.XuConfig, "eps", 0.0),
    (ood.XuConfig, "reward_bound", 0.0),
    (ood.XuConfig, "instances", 0),
    (ood.XuConfig, "eps_range", (1e-2, 1e-5)),
    (ood.XuConfig, "feature_noise", -0.1),
])
def test_config_validation_names_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})
