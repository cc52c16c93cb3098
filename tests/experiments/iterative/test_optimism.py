"""F16 (iterative-optimism): online/iterative DPO and RLHF beat offline DPO; small alpha helps."""

from __future__ import annotations

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim.experiments.iterative import optimism as it
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = it.IterativeConfig.quick()
    table = run_sweep(it.EXPERIMENT, cfg, [0], out=tmp_path_factory.mktemp("iterative"),
                      workers=1, progress=False)
    return cfg, table


def test_quick_agrees_and_numbers(quick, tmp_path, assert_drawn):
    cfg, table = quick
    it.check(table, cfg)
    T = cfg.iterations
    for peak in cfg.peaks:
        env = cs.tajwar_bandit(peak=peak)
        for method in it.METHODS:
            c = it._curve(table, peak, method)
            assert c[0] == pytest.approx(float(env.ref @ env.reward))   # all start at pi_ref
    far = {m: it._curve(table, 70.0, m) for m in (it.OFFLINE_BW, it.ITERATIVE, it.RLHF)}
    assert far[it.OFFLINE_BW][T] < 0.12            # fixed best/worst-of-8 pairs barely move
    assert far[it.ITERATIVE][T] > 0.8 and far[it.RLHF][T] > 0.9
    # iterative DPO is slow at first (its first iteration *is* offline DPO) ...
    assert far[it.ITERATIVE][1] == pytest.approx(far[it.OFFLINE_BW][1])
    # ... and RLHF approaches E_{pi*_beta} r from below
    opt = table[(table["peak"] == 70.0) & (table["method"] == "optimum pi*_beta")]["value"].iloc[0]
    assert far[it.RLHF][T] < opt
    # too much optimism collapses the policy
    assert it._curve(table, 70.0, it.VPO, 1.0)[T] < it._curve(table, 70.0, it.VPO, 0.0)[T] - 0.3
    fig = it.plot(table, cfg)
    assert_drawn(fig)
    paths = save_figure(fig, tmp_path / "iterative")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_alpha_zero_is_online_dpo(quick):
    """Claim C13: VPO with alpha = 0 is exactly online DPO (gold BT labels)."""
    cfg, table = quick
    env = cs.tajwar_bandit(peak=70.0)
    S, T = cfg.steps_per_iteration, cfg.iterations
    run_ = cs.train(env, cs.objective("online_dpo", beta=cfg.beta), steps=S * T, lr=cfg.lr,
                    record=[k * S for k in range(T + 1)])
    vpo0 = it._curve(table, 70.0, it.VPO, 0.0).to_numpy()
    assert np.allclose(run_.history["reward"].to_numpy(), vpo0, atol=1e-9)


def test_table_layout(quick):
    cfg, table = quick
    assert list(table.columns) == ["peak", "method", "alpha", "seed", "step", "metric", "value"]
    assert not table.isna().any().any()
    vpo = table[(table["method"] == it.VPO) & (table["metric"] == "gold")]
    assert sorted(vpo["alpha"].unique()) == sorted(cfg.alphas)
    assert sorted(vpo["step"].unique()) == list(range(cfg.iterations + 1))


@pytest.mark.parametrize("field, value", [("peaks", ()), ("beta", 0.0), ("n", 1),
                                          ("iterations", 1), ("alphas", (0.1,)),
                                          ("alpha_main", 0.5)])
def test_invalid_config(field, value):
    with pytest.raises(ValueError, match=field):
        it.IterativeConfig(**{field: value})


def test_check_fails_without_the_effect(quick):
    cfg, table = quick
    swapped = table.copy()
    off, itr = swapped["method"] == it.OFFLINE_BW, swapped["method"] == it.ITERATIVE
    swapped.loc[off, "method"], swapped.loc[itr, "method"] = it.ITERATIVE, it.OFFLINE_BW
    with pytest.raises(AssertionError, match="does not beat offline"):
        it.check(swapped, cfg)
    no_optimism = table.copy()
    main = (no_optimism["method"] == it.VPO) & np.isclose(no_optimism["alpha"], cfg.alpha_main)
    base = (no_optimism["method"] == it.VPO) & (no_optimism["alpha"] == 0.0)
    no_optimism.loc[main, "value"] = no_optimism.loc[base, "value"].to_numpy()
    with pytest.raises(AssertionError, match="VPO"):
        it.check(no_optimism, cfg)
