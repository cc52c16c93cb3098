"""F10 (Song et al. 2024, arXiv:2406.01462, song-coverage): the quick run shows the claim; the check
is not vacuous."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim import optimal_policy, xu_bandit, xu_features
from coverage_sim.experiments.song import coverage
from coverage_sim.experiments.xu.setting import clipped_reward_model
from coverage_sim.metrics import kl_divergence
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    cfg = coverage.SongConfig.quick()
    table = run_sweep(coverage.EXPERIMENT, cfg, [0], out=tmp_path_factory.mktemp("song"), workers=1,
                      progress=False)
    return cfg, table


def test_song_quick_agrees_and_numbers(song, tmp_path, assert_drawn):
    cfg, table = song
    coverage.check(table, cfg)
    kl = coverage._final(table, "kl").set_index(["method", "lam", "eps"])["kl"]
    eps_min = min(cfg.eps_values)
    # DPO -> delta_{y3}: KL = log(1/eps) at every eps
    for eps in cfg.eps_values:
        assert kl[("DPO", 0.0, eps)] == pytest.approx(np.log(1 / eps), abs=0.02)
    # RLHF reaches its exact optimum pi_ref e^{r_hat/beta}/Z (natural policy gradient)
    env = xu_bandit(eps_min, reward=cfg.reward)
    r_hat = clipped_reward_model(xu_features(), [(0, 1)], cfg.reward_bound)
    assert r_hat.tolist() == [cfg.reward_bound, -cfg.reward_bound, cfg.reward_bound]
    target = float(kl_divergence(env, optimal_policy(env, cfg.beta, r_hat), env.ref))
    assert kl[("RLHF", 0.0, eps_min)] == pytest.approx(target, abs=1e-6)
    # HyPO: lam = 1 stays near pi_ref; lam = 0.1 goes to delta_{y1} (KL -> log 2)
    assert kl[("HyPO", 1.0, eps_min)] < 0.01
    assert kl[("HyPO", 0.1, eps_min)] == pytest.approx(np.log(2), abs=0.01)
    reward = coverage._final(table, "reward").set_index(["method", "lam", "eps"])["reward"]
    assert reward[("DPO", 0.0, eps_min)] == pytest.approx(cfg.reward[2], abs=1e-3)
    assert reward[("RLHF", 0.0, eps_min)] > 0.99
    fig = coverage.plot(table, cfg)
    assert_drawn(fig)
    paths = save_figure(fig, tmp_path / "song")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_song_check_fails_without_the_effect(song):
    cfg, table = song
    fake = table.copy()
    dpo, rlhf = fake["method"] == "DPO", fake["method"] == "RLHF"
    fake.loc[dpo, "value"] = fake.loc[rlhf, "value"].to_numpy()  # DPO behaves like RLHF
    with pytest.raises(AssertionError, match="slope"):
        coverage.check(fake, cfg)
    broken = table.copy()
    sel = (broken["method"] == "HyPO") & (broken["lam"] == 1.0) & (broken["metric"] == "kl")
    broken.loc[sel, "value"] = 1.0  # above log(2)/1
    with pytest.raises(AssertionError, match="log\\(2\\)/lam"):
        coverage.check(broken, cfg)


@pytest.mark.parametrize("cls, field, value", [
    (coverage.SongConfig, "eps_values", (0.1, 0.01, 1.5)),
    (coverage.SongConfig, "lams", (0.1, -1.0)),
    (coverage.SongConfig, "reward", (0.0, 1.0, -3.0)),
])
def test_config_validation_names_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})
