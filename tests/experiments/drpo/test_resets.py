"""F17 (drpo-resets): the exact lock gradient, and resets beat root-only policy gradient."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from coverage_sim.experiments.drpo import resets as drpo
from coverage_sim.experiments.drpo.setting import METHODS, RESETS, ROOT, start_distribution
from coverage_sim.experiments.verdict import AGREES

from experiments.helpers import clauses_by_name


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(drpo.EXPERIMENT)


def test_quick_agrees_and_numbers(quick, save_plot):
    cfg, table = quick
    result = drpo.check(table, cfg)
    assert result.verdict == AGREES
    clauses = clauses_by_name(result)
    hard = [(v, h) for v in cfg.vocabs for h in cfg.horizons if cfg.hard(v, h)]
    assert len(hard) == 7                                   # V^H >= 1000 with H <= 7
    for name in ("resets-solve", "root-stalls", "exact-plateau-length"):
        assert clauses[name].passes == clauses[name].instances == len(hard), name
    # V = 4, H = 5 is the one hard lock where root-only needs less than 4x (3.6x)
    assert clauses["resets-faster"].results == tuple((v, h) != (4, 5) for v, h in hard)
    assert clauses["resets-polynomial"].passes == len(cfg.vocabs)
    root, root_ok = drpo._solve_times(table, ROOT, 4)
    reset, reset_ok = drpo._solve_times(table, RESETS, 4)
    assert reset_ok.all() and root_ok.all()
    assert 100 <= reset[6] <= 200 and 900 <= root[6] <= 1300     # H = 6, V = 4, lr = 1
    assert root[6] / reset[6] > 6
    # both methods start at P(y*) = V^-H exactly, on every lock
    first = table[(table["metric"] == "p_target") & (table["step"] == 0)]
    np.testing.assert_allclose(first["value"], 1.0 / first["vocab"] ** first["horizon"],
                               rtol=1e-12)
    # root-only: every position has the same probability (symmetric dynamics from uniform)
    toks = table[(table["metric"] == "p_token") & (table["method"] == ROOT)]
    spread = toks.groupby("step")["value"].agg(lambda v: v.max() - v.min())
    assert spread.max() < 1e-9
    # resets: the last position is learned first (backward chaining)
    res = table[(table["metric"] == "p_token") & (table["method"] == RESETS)]
    mid = res[res["step"] == res["step"][res["step"] <= 60].max()]
    p = mid.sort_values("position")["value"].to_numpy()
    assert np.all(np.diff(p) > 0)
    save_plot(drpo.EXPERIMENT, table, cfg)


def test_numba_ascent_matches_the_numpy_gradient():
    """train_locks (numba) == repeated lock_policy_gradient steps (numpy), mixed V and H."""
    locks = [(ROOT, 3, 4), (RESETS, 3, 4), (RESETS, 5, 2), (ROOT, 4, 3)]
    steps, lr = 25, 0.7
    p_path, per_token, _ = drpo.train_locks(locks, lr, steps, [0, 10, steps], 2.0)
    for b, (method, v, h) in enumerate(locks):
        theta = np.zeros((1, h, v))
        target = (np.arange(h) % v)[None]
        rho = start_distribution(method, h)[None]
        path = []
        for t in range(steps + 1):
            _, grad, p = drpo.lock_policy_gradient(theta, target, rho)
            if t in (0, 10, steps):
                path.append(p.prod())
                if t == steps:
                    np.testing.assert_allclose(per_token[-1, b, :h], p[0], rtol=1e-12)
            theta = theta + lr * grad
        np.testing.assert_allclose(p_path[:, b], path, rtol=1e-12)


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
    assert list(table.columns) == ["method", "vocab", "horizon", "position", "seed", "step",
                                   "metric", "value"]
    assert not table.isna().any().any()


@pytest.mark.parametrize("field, value", [("vocab", 1), ("horizons", (2, 3)), ("lr", 0.0),
                                          ("steps_shown", 10 ** 6), ("threshold", 1.0),
                                          ("vocabs", (3, 5)), ("hard_states", 1)])
def test_invalid_config(field, value):
    with pytest.raises(ValueError, match=field):
        drpo.DRPOConfig(**{field: value})


def test_train_locks_rejects_a_bad_record():
    with pytest.raises(ValueError, match="record"):
        drpo.train_locks([(ROOT, 3, 3)], 1.0, 10, [0, 20], 0.5)


def _swap(table):
    out = table.copy()
    root, reset = out["method"] == ROOT, out["method"] == RESETS
    out.loc[root, "method"], out.loc[reset, "method"] = RESETS, ROOT
    return out


def test_swapping_the_methods_fails_the_comparative_clauses(quick):
    cfg, table = quick
    result = drpo.check(_swap(table), cfg)
    # within the quick budget root-only solves every hard lock too, so "resets solve" survives
    # the swap; the comparisons do not
    assert set(result.failing) == {"resets-faster", "root-stalls"}
    assert result.effect.mean < 0


def test_each_clause_fails_without_its_effect(quick):
    cfg, table = quick
    cases = {}
    # resets that never solve (the budget runs out)
    unsolved = table.copy()
    sel = (unsolved["method"] == RESETS) & (unsolved["metric"] == "solved")
    unsolved.loc[sel, "value"] = 0.0
    cases["resets-solve"] = (unsolved, {"resets-polynomial"})   # no solved times to fit
    # root-only only 2x slower: times halved... by making resets' times half of root-only's
    slow = table.copy()
    steps = slow["metric"] == "steps_to_solve"
    root_times = table[steps & (table["method"] == ROOT)].set_index(["vocab", "horizon"])["value"]
    sel = steps & (slow["method"] == RESETS)
    slow.loc[sel, "value"] = [root_times[(v, h)] / 2 for v, h in
                              slow.loc[sel, ["vocab", "horizon"]].to_numpy()]
    cases["resets-faster"] = (slow, {"root-stalls", "resets-polynomial"})
    # root-only that has already left its plateau: P(y*) 100x higher at every step
    moving = table.copy()
    sel = (moving["method"] == ROOT) & (moving["metric"] == "p_target")
    moving.loc[sel, "value"] = np.minimum(100 * moving.loc[sel, "value"], 1.0)
    cases["root-stalls"] = (moving, set())
    # root-only times 3x the plateau length V^H/(H eta)
    long = table.copy()
    sel = steps & (long["method"] == ROOT)
    long.loc[sel, "value"] *= 3.0
    cases["exact-plateau-length"] = (long, set())
    # resets whose iterations grow like H^4
    steep = table.copy()
    sel = steps & (steep["method"] == RESETS)
    steep.loc[sel, "value"] = steep.loc[sel, "horizon"].astype(float) ** 4
    cases["resets-polynomial"] = (steep, {"resets-faster", "root-stalls"})
    for name, (broken, also) in cases.items():
        failing = {c.name for c in drpo.check(broken, cfg).clauses if not c.holds}
        assert name in failing and failing <= {name} | also, (name, failing)
