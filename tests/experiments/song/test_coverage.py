"""F10 (Song et al. 2024, arXiv:2406.01462, song-coverage): the quick run's clauses on every
instance, and a negative control for every clause of the check."""

from __future__ import annotations

import numpy as np
import pytest

from coverage_sim import optimal_policy, xu_bandit, xu_features
from coverage_sim.experiments.song import coverage
from coverage_sim.experiments.verdict import AGREES
from coverage_sim.experiments.xu.setting import clipped_reward_model
from coverage_sim.metrics import kl_divergence

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def song(quick_sweep):
    return quick_sweep(coverage.EXPERIMENT)


def test_song_quick_agrees_and_numbers(song, save_plot):
    cfg, table = song
    result = coverage.check(table, cfg)
    assert result.verdict == AGREES and result.mode == "exact+sampled"
    clauses = clauses_by_name(result)
    assert not clauses["hypo-exact-kl-bounded"].paper
    assert all(c.instances == cfg.instances for c in clauses.values())
    for name in ("rlhf-kl-bounded", "hypo-kl-bounded", "hypo-exact-kl-bounded"):
        assert clauses[name].passes == cfg.instances, name
    # 2000 quick steps: DPO's drift on the slowest perturbed instance is not finished at 1e-7
    assert clauses["dpo-kl-unbounded"].passes >= cfg.instances - 1
    assert result.effect.ci[0] > 10.0     # nats, at eps = 1e-7
    kl = coverage._final(table, "kl").set_index(["instance", "method", "lam", "eps"])["kl"]
    eps_min = min(cfg.eps_values)
    # the construction (instance 0): DPO -> delta_{y3}, KL = log(1/eps) at every eps
    for eps in cfg.eps_values:
        assert kl[(0, "DPO", 0.0, eps)] == pytest.approx(np.log(1 / eps), abs=0.02)
    # RLHF reaches its exact optimum pi_ref e^{r_hat/beta}/Z (natural policy gradient)
    env = xu_bandit(eps_min, reward=cfg.reward)
    r_hat = clipped_reward_model(xu_features(), [(0, 1)], cfg.reward_bound)
    assert r_hat.tolist() == [cfg.reward_bound, -cfg.reward_bound, cfg.reward_bound]
    target = float(kl_divergence(env, optimal_policy(env, cfg.beta, r_hat), env.ref))
    assert kl[(0, "RLHF", 0.0, eps_min)] == pytest.approx(target, abs=1e-6)
    # HyPO: lam = 1 stays near pi_ref; lam = 0.1 goes to delta_{y1} (KL -> log 2); sampled HyPO
    # follows the exact one within its sampling noise
    for method in (coverage.HYPO, coverage.HYPO_EXACT):
        assert kl[(0, method, 1.0, eps_min)] < 0.02
        assert kl[(0, method, 0.1, eps_min)] == pytest.approx(np.log(2), abs=0.05)
    reward = coverage._final(table, "reward").set_index(["instance", "method", "lam", "eps"])
    assert reward.loc[(0, "DPO", 0.0, eps_min), "reward"] == pytest.approx(cfg.reward[2], abs=1e-3)
    assert reward.loc[(0, "RLHF", 0.0, eps_min), "reward"] > 0.99
    save_plot(coverage.EXPERIMENT, table, cfg)


def _copy_method(table, source, target):
    """``target``'s rows take ``source``'s values (same instance, lam 0 rows aligned)."""
    out = table.copy()
    sel_t = out["method"] == target
    src = table[table["method"] == source]
    if source.startswith("HyPO") != target.startswith("HyPO"):
        src = src[src["lam"] == src["lam"].min()]
    keys = ["instance", "eps", "metric"]
    values = src.set_index(keys)["value"]
    out.loc[sel_t, "value"] = [values[tuple(k)] for k in out.loc[sel_t, keys].to_numpy()]
    return out


def test_each_clause_fails_without_its_effect(song):
    cfg, table = song
    cases = {}
    # DPO that behaves like RLHF: bounded KL and a good reward
    cases[("dpo-kl-unbounded", "dpo-reward-collapse")] = _copy_method(table, "RLHF", "DPO")
    # DPO whose KL drifts but whose reward holds up at y1's
    good = table.copy()
    good.loc[(good["method"] == "DPO") & (good["metric"] == "reward"), "value"] = cfg.reward[0]
    cases[("dpo-reward-collapse",)] = good
    # RLHF that drifts like DPO
    cases[("rlhf-kl-bounded",)] = _copy_method(table, "DPO", "RLHF")
    # HyPO (sampled / exact) whose KL leaves log(2)/lam at lam = 1 somewhere along the descent
    for method, name in ((coverage.HYPO, "hypo-kl-bounded"),
                         (coverage.HYPO_EXACT, "hypo-exact-kl-bounded")):
        over = table.copy()
        sel = (over["method"] == method) & (over["lam"] == 1.0) & (over["metric"] == "max_kl")
        over.loc[sel, "value"] = 1.0
        cases[(name,)] = over
    for names, broken in cases.items():
        result = coverage.check(broken, cfg)
        failing = {c.name for c in result.clauses if not c.holds}
        assert failing == set(names), (names, failing)


@pytest.mark.parametrize("cls, field, value", [
    (coverage.SongConfig, "eps_values", (0.1, 0.01, 1.5)),
    (coverage.SongConfig, "lams", (0.1, -1.0)),
    (coverage.SongConfig, "reward", (0.0, 1.0, -3.0)),
    (coverage.SongConfig, "instances", 0),
    (coverage.SongConfig, "batch_size", 0),
    (coverage.SongConfig, "dpo_lr", 0.0),
])
def test_config_validation_names_the_field(cls, field, value):
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})
