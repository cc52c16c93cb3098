"""F10 (Song et al., song-coverage) and F11 (Xu et al., xu-ood): quick runs show the claims."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim import optimal_policy, xu_bandit, xu_features
from coverage_sim.experiments import song_xu
from coverage_sim.metrics import kl_divergence
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    cfg = song_xu.SongConfig.quick()
    table = run_sweep(song_xu.SONG, cfg, [0], out=tmp_path_factory.mktemp("song"), workers=1,
                      progress=False)
    return cfg, table


@pytest.fixture(scope="module")
def xu(tmp_path_factory):
    cfg = song_xu.XuConfig.quick()
    table = run_sweep(song_xu.XU, cfg, [0], out=tmp_path_factory.mktemp("xu"), workers=1,
                      progress=False)
    return cfg, table


def test_song_quick_agrees_and_numbers(song, tmp_path):
    cfg, table = song
    song_xu.check_song(table, cfg)
    kl = song_xu._final(table, "kl").set_index(["method", "lam", "eps"])["kl"]
    eps_min = min(cfg.eps_values)
    # DPO -> delta_{y3}: KL = log(1/eps) at every eps
    for eps in cfg.eps_values:
        assert kl[("DPO", 0.0, eps)] == pytest.approx(np.log(1 / eps), abs=0.02)
    # RLHF reaches its exact optimum pi_ref e^{r_hat/beta}/Z (natural policy gradient)
    env = xu_bandit(eps_min, reward=cfg.reward)
    r_hat = song_xu.clipped_reward_model(xu_features(), [(0, 1)], cfg.reward_bound)
    assert r_hat.tolist() == [cfg.reward_bound, -cfg.reward_bound, cfg.reward_bound]
    target = float(kl_divergence(env, optimal_policy(env, cfg.beta, r_hat), env.ref))
    assert kl[("RLHF", 0.0, eps_min)] == pytest.approx(target, abs=1e-6)
    # HyPO: lam = 1 stays near pi_ref; lam = 0.1 goes to delta_{y1} (KL -> log 2)
    assert kl[("HyPO", 1.0, eps_min)] < 0.01
    assert kl[("HyPO", 0.1, eps_min)] == pytest.approx(np.log(2), abs=0.01)
    reward = song_xu._final(table, "reward").set_index(["method", "lam", "eps"])["reward"]
    assert reward[("DPO", 0.0, eps_min)] == pytest.approx(cfg.reward[2], abs=1e-3)
    assert reward[("RLHF", 0.0, eps_min)] > 0.99
    paths = save_figure(song_xu.plot_song(table, cfg), tmp_path / "song")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_song_check_fails_without_the_effect(song):
    cfg, table = song
    fake = table.copy()
    dpo, rlhf = fake["method"] == "DPO", fake["method"] == "RLHF"
    fake.loc[dpo, "value"] = fake.loc[rlhf, "value"].to_numpy()  # DPO behaves like RLHF
    with pytest.raises(AssertionError, match="slope"):
        song_xu.check_song(fake, cfg)
    broken = table.copy()
    sel = (broken["method"] == "HyPO") & (broken["lam"] == 1.0) & (broken["metric"] == "kl")
    broken.loc[sel, "value"] = 1.0  # above log(2)/1
    with pytest.raises(AssertionError, match="log\\(2\\)/lam"):
        song_xu.check_song(broken, cfg)


def test_xu_quick_agrees_and_numbers(xu, tmp_path):
    cfg, table = xu
    song_xu.check_xu(table, cfg)
    ref = song_xu._xu_final(table, "π_ref")
    np.testing.assert_allclose(ref, [(1 - cfg.eps) / 2, (1 - cfg.eps) / 2, cfg.eps])
    assert song_xu._xu_final(table, "DPO (log-linear)")[2] > 0.99
    assert song_xu._xu_final(table, "DPO (tabular)")[0] > 0.99
    env = xu_bandit(cfg.eps, reward=cfg.reward)
    r_hat = song_xu.clipped_reward_model(xu_features(), [(0, 1)], cfg.reward_bound)
    np.testing.assert_allclose(song_xu._xu_final(table, "RLHF (log-linear)"),
                               optimal_policy(env, cfg.beta, r_hat), atol=1e-9)
    paths = save_figure(song_xu.plot_xu(table, cfg), tmp_path / "xu")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_xu_check_fails_without_the_effect(xu):
    cfg, table = xu
    fake = table.copy()
    a, b = fake["method"] == "DPO (log-linear)", fake["method"] == "RLHF (log-linear)"
    fake.loc[a, "method"], fake.loc[b, "method"] = "RLHF (log-linear)", "DPO (log-linear)"
    with pytest.raises(AssertionError):
        song_xu.check_xu(fake, cfg)


@pytest.mark.parametrize("cls, field, value", [
    (song_xu.SongConfig, "eps_values", (0.1, 0.01, 1.5)),
    (song_xu.SongConfig, "lams", (0.1, -1.0)),
    (song_xu.SongConfig, "reward", (0.0, 1.0, -3.0)),
    (song_xu.XuConfig, "eps", 0.0),
    (song_xu.XuConfig, "reward_bound", 0.0),
])
def test_config_validation_names_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})
