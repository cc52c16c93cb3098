"""F17 (drpo-resets): the exact lock gradient, and resets beat root-only policy gradient."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from coverage_sim.experiments.drpo import resets as drpo
from coverage_sim.experiments.drpo.setting import METHODS, RESETS, ROOT, start_distribution
from coverage_sim.plotting import save_figure
from coverage_sim.sweep import run_sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    cfg = drpo.DRPOConfig.quick()
    table = run_sweep(drpo.EXPERIMENT, cfg, [0], out=tmp_path_factory.mktemp("drpo"),
                      workers=1, progress=False)
    return cfg, table


def test_quick_agrees_and_numbers(quick, tmp_path, assert_drawn):
    cfg, table = quick
    drpo.check(table, cfg)
    root, root_ok = drpo._solve_times(table, ROOT)
    reset, reset_ok = drpo._solve_times(table, RESETS)
    assert reset_ok.all() and root_ok.all()
    assert 100 <= reset[6] <= 200 and 900 <= root[6] <= 1300     # H = 6, V = 4, lr = 1
    assert root[6] / reset[6] > 6
    # root-only: every position has the same probability (symmetric dynamics from uniform)
    toks = table[(table["metric"] == "p_token") & (table["method"] == ROOT)]
    spread = toks.groupby("step")["value"].agg(lambda v: v.max() - v.min())
    assert spread.max() < 1e-9
    # resets: the last position is learned first (backward chaining)
    res = table[(table["metric"] == "p_token") & (table["method"] == RESETS)]
    mid = res[res["step"] == res["step"][res["step"] <= 60].max()]
    p = mid.sort_values("position")["value"].to_numpy()
    assert np.all(np.diff(p) > 0)
    fig = drpo.plot(table, cfg)
    assert_drawn(fig)
    paths = save_figure(fig, tmp_path / "drpo")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)


def _full_tree_J(logits, V, H, target, rho):
    """J over the full per-prefix tabular policy (one softmax per prefix of length < H)."""
    def pi(prefix):
        z = logits[prefix]
        e = np.exp(z - z.max())
        return e / e.sum()

    J = 0.0
    for h in range(H):
        if rho[h] == 0:
            continue
        start = tuple(target[:h])
        # enumerate completions; reward 1 only on y*
        for tail in itertools.product(range(V), repeat=H - h):
            seq, prob = start, 1.0
            for tok in tail:
                prob *= pi(seq)[tok]
                seq = seq + (tok,)
            J += rho[h] * prob * float(seq == tuple(target))
    return J


@pytest.mark.parametrize("method", METHODS)
def test_gradient_matches_full_prefix_tree(method):
    """On-path parameterisation == the full V^H-prefix tabular policy; off-path gradients are 0."""
    V, H = 3, 3
    rng = np.random.default_rng(0)
    target = np.array([2, 0, 1])
    prefixes = [p for h in range(H) for p in itertools.product(range(V), repeat=h)]
    logits = {p: rng.normal(size=V) for p in prefixes}
    rho = start_distribution(method, H)
    theta = np.stack([logits[tuple(target[:k])] for k in range(H)])[None]
    J, grad, _ = drpo.lock_policy_gradient(theta, target[None], rho[None])
    assert J[0] == pytest.approx(_full_tree_J(logits, V, H, target, rho), rel=1e-12)
    eps = 1e-6
    for p in prefixes:
        for a in range(V):
            up = {q: v.copy() for q, v in logits.items()}
            dn = {q: v.copy() for q, v in logits.items()}
            up[p][a] += eps
            dn[p][a] -= eps
            fd = (_full_tree_J(up, V, H, target, rho) - _full_tree_J(dn, V, H, target, rho)) / (
                2 * eps)
            on_path = p == tuple(target[:len(p)])
            expected = grad[0, len(p), a] if on_path else 0.0
            assert fd == pytest.approx(expected, abs=1e-9)


def test_mixed_horizon_batch_matches_single():
    """Padding a short lock inside a longer batch does not change its J or gradient."""
    rng = np.random.default_rng(1)
    V = 4
    theta = rng.normal(size=(2, 5, V))
    target = np.tile(np.arange(5) % V, (2, 1))
    mask = np.array([[True] * 3 + [False] * 2, [True] * 5])
    rho = np.zeros((2, 5))
    rho[0, :3] = 1 / 3
    rho[1, :] = 1 / 5
    J, grad, _ = drpo.lock_policy_gradient(theta, target, rho, mask)
    J3, grad3, _ = drpo.lock_policy_gradient(theta[:1, :3], target[:1, :3], rho[:1, :3])
    assert J[0] == pytest.approx(J3[0])
    assert np.allclose(grad[0, :3], grad3[0]) and np.all(grad[0, 3:] == 0)


def test_table_layout(quick):
    _cfg, table = quick
    assert list(table.columns) == ["method", "horizon", "position", "seed", "step", "metric",
                                   "value"]
    assert not table.isna().any().any()


@pytest.mark.parametrize("field, value", [("vocab", 1), ("horizons", (2, 3)), ("lr", 0.0),
                                          ("steps_shown", 10 ** 6), ("threshold", 1.0)])
def test_invalid_config(field, value):
    with pytest.raises(ValueError, match=field):
        drpo.DRPOConfig(**{field: value})


def test_check_fails_without_the_effect(quick):
    cfg, table = quick
    swapped = table.copy()
    root, reset = swapped["method"] == ROOT, swapped["method"] == RESETS
    swapped.loc[root, "method"], swapped.loc[reset, "method"] = RESETS, ROOT
    with pytest.raises(AssertionError):
        drpo.check(swapped, cfg)
    same = table[table["method"] == RESETS]
    no_effect = same.assign(method=ROOT)
    with pytest.raises(AssertionError, match="root-only needs"):
        drpo.check(pd.concat([same, no_effect], ignore_index=True), cfg)
