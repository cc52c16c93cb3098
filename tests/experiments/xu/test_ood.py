"""F11 (Xu et al. 2024, arXiv:2404.10719, xu-ood): the quick run shows the claim; the check is not
vacuous."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim import optimal_policy, xu_bandit, xu_features
from coverage_sim.experiments.xu import ood
from coverage_sim.experiments.xu.setting import clipped_reward_model
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def xu(tmp_path_factory):
    cfg = ood.XuConfig.quick()
    table = run_sweep(ood.EXPERIMENT, cfg, [0], out=tmp_path_factory.mktemp("xu"), workers=1,
                      progress=False)
    return cfg, table


def test_xu_quick_agrees_and_numbers(xu, tmp_path, assert_drawn):
    cfg, table = xu
    ood.check(table, cfg)
    ref = ood._final_policy(table, "π_ref")
    np.testing.assert_allclose(ref, [(1 - cfg.eps) / 2, (1 - cfg.eps) / 2, cfg.eps])
    assert ood._final_policy(table, "DPO (log-linear)")[2] > 0.99
    assert ood._final_policy(table, "DPO (tabular)")[0] > 0.99
    env = xu_bandit(cfg.eps, reward=cfg.reward)
    r_hat = clipped_reward_model(xu_features(), [(0, 1)], cfg.reward_bound)
    np.testing.assert_allclose(ood._final_policy(table, "RLHF (log-linear)"),
                               optimal_policy(env, cfg.beta, r_hat), atol=1e-9)
    fig = ood.plot(table, cfg)
    assert_drawn(fig)
    paths = save_figure(fig, tmp_path / "xu")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_xu_check_fails_without_the_effect(xu):
    cfg, table = xu
    fake = table.copy()
    a, b = fake["method"] == "DPO (log-linear)", fake["method"] == "RLHF (log-linear)"
    fake.loc[a, "method"], fake.loc[b, "method"] = "RLHF (log-linear)", "DPO (log-linear)"
    with pytest.raises(AssertionError):
        ood.check(fake, cfg)


@pytest.mark.parametrize("cls, field, value", [
    (ood.XuConfig, "eps", 0.0),
    (ood.XuConfig, "reward_bound", 0.0),
])
def test_config_validation_names_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})
