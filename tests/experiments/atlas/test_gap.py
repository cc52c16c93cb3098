"""A1 (gap-atlas): the quick atlas shows its claims (per instance) and findings; each clause fails
on a table without its effect; cells are deterministic, resumable after a kill, and equal on a Dask
cluster."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

import coverage_sim as cs
from coverage_sim.experiments.atlas import gap
from coverage_sim.experiments.verdict import AGREES
from coverage_sim.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[3]

#: A tiny atlas for the sweep-machinery tests (5 cells, a fraction of a second each).
TINY = dict(n_instances=3, n_responses=5, coverages=["ref", "drop1"], betas=[0.1, 1.0],
            taus=[0.1, 1.0], ns=[20], policies=["tabular"], steps=60)


@pytest.fixture(scope="module")
def quick(quick_sweep):
    return quick_sweep(gap.GAP_ATLAS, workers=1)


def _tiny(**changes):
    return dataclasses.replace(gap.GapAtlasConfig(), **{
        k: tuple(v) if isinstance(v, list) else v for k, v in {**TINY, **changes}.items()})


# ---------------------------------------------------------------------------------------------
# the quick atlas


def test_quick_atlas_agrees_and_stores_each_arm_once(quick, save_plot):
    cfg, table = quick
    result = gap.check(table, cfg)
    assert (result.verdict, result.failing) == gap.GAP_ATLAS.expected(quick=True) == (AGREES, ())
    assert [(c.name, c.paper, c.instances) for c in result.clauses] == [
        ("theorem", True, cfg.n_instances), ("support", True, cfg.n_instances),
        ("proxy", False, len(gap.PAIRS) * len(cfg.policies) * len(cfg.coverages) * len(cfg.sizes)),
        ("gold-contrast", False, 1), ("sample-size", False, cfg.n_instances),
        ("log-linear", False, 1)]
    assert all(c.holds for c in result.clauses), result.summary()
    assert len(result.effect.values) == cfg.n_instances and result.effect.ci[0] > 0.1
    assert list(table.columns) == ["policy", "coverage", "n", "labels", "method", "beta",
                                   "instance", "seed", "step", "metric", "value"]
    assert table["value"].notna().all()
    # online arms with gold/deterministic labels use no offline data: stored once per policy
    online = table[table["method"].isin(["online_dpo", "online_ipo"])]
    shared = online[online["labels"].isin(["gold", "deterministic"])]
    assert set(shared["coverage"]) == {"none"} and set(shared["n"]) == {0.0}
    assert set(online[online["labels"] == "proxy"]["coverage"]) == set(cfg.coverages)
    # offline arms on gold data serve both the gold and the proxy condition: no "proxy" copy
    assert set(table[table["method"] == "dpo"]["labels"]) == {"gold", "deterministic"}
    runs = table[table["method"].isin(list(gap.METHODS)) & (table["metric"] == "kl")]
    per_cell = len(cfg.policies) * len(cfg.coverages) * len(cfg.sizes)
    expected = cfg.n_instances * (
        per_cell * (2 * (2 * len(cfg.betas) + len(cfg.taus)) + len(cfg.betas) + len(cfg.taus))
        + len(cfg.policies) * 2 * (len(cfg.betas) + len(cfg.taus)))
    assert len(runs) == expected
    save_plot(gap.GAP_ATLAS, table, cfg)


def test_quick_atlas_numbers(quick):
    cfg, table = quick
    best = gap.summarise(gap.best_gaps(table))
    sel = best[(best["policy"] == "tabular") & (best["labels"] == "gold")
               & (best["metric"] == "win_rate") & np.isinf(best["n"])]
    by_cov = sel[sel["pair"] == "online_dpo-dpo"].set_index("coverage")["mean"]
    assert abs(by_cov["ref"]) < 0.01 and by_cov["drop2"] > by_cov["drop1"] > 0.05
    # RLHF with the reward model and online DPO with the same model as labeller reach the same
    # policy pi*(r_hat): their best points agree to optimisation error
    proxy = best[(best["labels"] == "proxy") & (best["metric"] == "win_rate")]
    piv = proxy.pivot_table(index=["policy", "coverage", "n"], columns="pair", values="mean")
    np.testing.assert_allclose(piv["online_dpo-dpo"], piv["rlhf-dpo"], atol=0.02)
    readouts = gap.target_readouts(table)
    ref = readouts[(readouts["coverage"] == "ref") & np.isinf(readouts["n"])]
    assert np.isfinite(ref["c_star"]).all()
    np.testing.assert_allclose(ref["mass_in_support"], 1.0, rtol=0, atol=1e-12)
    drop = readouts[readouts["coverage"] == "drop1"]
    assert np.isinf(drop["c_star"]).all() and (drop["mass_in_support"] < 1.0).all()
    finite = readouts[readouts["n"] == 20.0]
    assert (finite["data_mass_in_support"] <= finite["mass_in_support"] + 1e-12).all()


def test_figure_table_is_tidy_and_small(quick):
    cfg, table = quick
    small = gap.figure_table(table, cfg)
    assert list(small.columns[-4:]) == ["seed", "step", "metric", "value"]
    assert small["value"].notna().all() and len(small) < len(table) / 5
    assert {"matched_win_rate_gap", "best_reward_gap", "c_star"} <= set(small["metric"])


# ---------------------------------------------------------------------------------------------
# negative controls: each check fails on a table with its effect removed or reversed


def _set(table, where, metric_values):
    """Copy of ``table`` with the rows matching ``where`` given new values per metric."""
    out = table.copy()
    mask = np.ones(len(out), dtype=bool)
    for key, value in where.items():
        mask &= (np.isinf(out[key]) if key == "n" and value == "inf" else out[key] == value)
    for metric, fn in metric_values.items():
        rows = mask & (out["metric"] == metric)
        out.loc[rows, "value"] = fn(out.loc[rows])
    return out


def _copy_arm(table, source: dict, target: dict):
    """``table`` with the target arm's values replaced by the source arm's (same instances and
    coefficients): the effect that separates the two arms removed."""
    def select(where):
        mask = np.ones(len(table), dtype=bool)
        for key, value in where.items():
            mask &= (np.isinf(table[key]) if key == "n" and value == "inf"
                     else table[key] == value)
        return mask
    src = table[select(source)].set_index(["seed", "instance", "beta", "metric"])["value"]
    out = table.copy()
    rows = select(target)
    keys = pd.MultiIndex.from_frame(out.loc[rows, ["seed", "instance", "beta", "metric"]])
    out.loc[rows, "value"] = src.reindex(keys).to_numpy()
    assert out["value"].notna().all()
    return out


def _fails(name, table, cfg):
    """Clause ``name`` does not hold on ``table``; a paper clause then changes the verdict."""
    result = gap.check(table, cfg)
    clause = next(c for c in result.clauses if c.name == name)
    assert not clause.holds, clause
    if clause.paper:
        assert name in result.failing and result.verdict != AGREES
    else:
        assert name not in result.failing
    return clause


def test_theorem_check_fails_when_online_ipo_beats_the_regularised_optimum(quick):
    cfg, table = quick
    _fails("theorem", _set(table, dict(policy="tabular", method="online_ipo", labels="gold"),
                           {"win_rate": lambda r: r["value"] + 0.05}), cfg)


def test_support_check_fails_without_the_support_effect(quick):
    """Offline arms on truncated data given their full-coverage values: no gap growth."""
    cfg, table = quick
    removed = table
    for cov in ("drop1", "drop2"):
        for method in ("dpo", "ipo"):
            removed = _copy_arm(removed, dict(policy="tabular", coverage="ref", n="inf",
                                              labels="gold", method=method),
                                dict(policy="tabular", coverage=cov, n="inf", labels="gold",
                                     method=method))
    _fails("support", removed, cfg)


def test_proxy_finding_fails_when_the_proxy_labeller_is_as_good_as_gold(quick):
    cfg, table = quick
    swapped = table
    for cov in cfg.coverages:
        for n in cfg.sizes:
            for method in ("online_dpo", "online_ipo"):
                swapped = _copy_arm(swapped, dict(policy="tabular", coverage="none",
                                                  labels="gold", method=method),
                                    dict(policy="tabular", coverage=cov, n=n, labels="proxy",
                                         method=method))
    _fails("proxy", swapped, cfg)


def test_sample_size_finding_fails_without_the_finite_data_effect(quick):
    cfg, table = quick
    removed = table
    for method in ("dpo", "ipo", "rlhf"):
        removed = _copy_arm(removed, dict(policy="tabular", coverage="ref", n="inf",
                                          labels="gold", method=method),
                            dict(policy="tabular", coverage="ref", n=min(cfg.ns), labels="gold",
                                 method=method))
    _fails("sample-size", removed, cfg)


def test_gold_contrast_fails_when_the_gold_labeller_has_no_advantage(quick):
    cfg, table = quick
    _fails("gold-contrast", _set(table, dict(method="online_dpo", labels="gold"),
                                 {"win_rate": lambda r: r["value"] - 0.5}).pipe(
        _set, dict(method="online_ipo", labels="gold"), {"win_rate": lambda r: r["value"] - 0.5}),
        cfg)


def test_loglinear_finding_fails_when_online_only_matches_offline(quick):
    cfg, table = quick
    removed = _copy_arm(table, dict(policy="loglinear", coverage="ref", n="inf", labels="gold",
                                    method="dpo"),
                        dict(policy="loglinear", coverage="none", labels="gold",
                             method="online_dpo"))
    _fails("log-linear", removed, cfg)


# ---------------------------------------------------------------------------------------------
# the pieces


def test_frontier_value_is_reached_by_mixtures():
    """The interpolated frontier is achievable: a mixture of two policies has the interpolated
    win rate and at most the interpolated KL (KL is convex, win rate linear)."""
    env = cs.random_bandit(6, seed=2)
    p1, p2 = cs.optimal_policy(env, 1.0), cs.optimal_policy(env, 0.2)
    kls = [float(cs.metrics.kl_divergence(env, p, env.ref)) for p in (p1, p2)]
    wins = [float(cs.metrics.win_rate(env, p)) for p in (p1, p2)]
    for lam in (0.25, 0.5, 0.75):
        mix = (1 - lam) * p1 + lam * p2
        at = (1 - lam) * kls[0] + lam * kls[1]
        assert float(cs.metrics.kl_divergence(env, mix, env.ref)) <= at + 1e-12
        assert gap.frontier_value(kls, wins, [at], 0.5)[0] == pytest.approx(
            float(cs.metrics.win_rate(env, mix)), abs=1e-12)
    # non-decreasing envelope, anchored at pi_ref, flat beyond the last point
    assert gap.frontier_value([1.0, 2.0], [0.8, 0.7], [0.0, 2.0, 5.0], 0.5).tolist() == [
        0.5, 0.8, 0.8]


def test_batched_frontier_matches_the_scalar_one():
    rng = np.random.default_rng(0)
    kl, val, at = rng.exponential(size=(7, 5)), rng.uniform(size=(7, 5)), rng.exponential(
        2.0, size=(7, 4))
    anchor = rng.uniform(size=7)
    rows = gap._frontier_rows(kl, val, at, anchor)
    for i in range(7):
        np.testing.assert_allclose(rows[i], gap.frontier_value(kl[i], val[i], at[i], anchor[i]),
                                   rtol=0, atol=1e-14)


@settings(derandomize=True, max_examples=25, deadline=None)
@given(K=st.integers(3, 8), tau=st.floats(0.05, 2.0), seed=st.integers(0, 10**6))
def test_ipo_target_maximises_regularised_win_rate(K, tau, seed):
    """The premise of the theorem check: ``ipo_target`` maximises W(pi) - tau KL(pi || pi_ref)
    (checked against random policies and small perturbations of it)."""
    env = cs.random_bandit(K, seed=seed, reward_scale=1.0, min_ref=0.01)
    target = gap.ipo_target(env, tau)

    def objective(p):
        return float(cs.metrics.win_rate(env, p) - tau * cs.metrics.kl_divergence(env, p, env.ref))

    best = objective(target)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        q = rng.dirichlet(np.ones(K))
        assert objective(q) <= best + 1e-12
        near = np.exp(np.log(target) + 1e-3 * rng.normal(size=K))
        assert objective(near / near.sum()) <= best + 1e-12


def test_offline_ipo_on_global_exact_gold_data_reaches_the_target():
    """Offline IPO with mu = pi_ref, exact data and gold labels converges to ``ipo_target``."""
    cfg = gap.GapAtlasConfig()
    env, _ = gap.atlas_instance(cfg, 0, 1)
    run = cs.train(env, cs.objective("ipo", beta=0.3), cs.offline_pairs(env, env.ref),
                   steps=3000, lr=0.05, record=[3000])
    np.testing.assert_allclose(run.policy, gap.ipo_target(env, 0.3), atol=1e-3)


def test_behaviour_levels_and_instance_family():
    cfg = gap.GapAtlasConfig()
    env, phi = gap.atlas_instance(cfg, 3, 0)
    np.testing.assert_array_equal(gap.behaviour_policy(env, "ref"), env.ref)
    mix = gap.behaviour_policy(env, "mix0.9", cfg.low_quality_beta)
    star = cs.optimal_policy(env, 0.1)
    assert np.isfinite(cs.concentrability(star, mix))
    assert cs.concentrability(star, mix) > cs.concentrability(star, env.ref)
    drop = gap.behaviour_policy(env, "drop2")
    assert (drop[np.argsort(-env.reward)[:2]] == 0).all() and (drop > 0).sum() == 8
    assert np.isinf(cs.concentrability(star, drop)) and cs.mass_in_support(star, drop) < 1
    # misspecification 0: the reward lies in the features' span (pi*_beta is log-linear)
    env0, phi0 = gap.atlas_instance(dataclasses.replace(cfg, misspecification=0.0), 3, 0)
    coef = np.linalg.lstsq(phi0, env0.reward, rcond=None)[0]
    np.testing.assert_allclose(phi0 @ coef, env0.reward, atol=1e-12)
    # the same instance in every cell: depends on (seed, index) only
    again, phi_again = gap.atlas_instance(cfg, 3, 0)
    np.testing.assert_array_equal(again.reward, env.reward)
    np.testing.assert_array_equal(phi_again, phi)


@pytest.mark.parametrize("bad,match", [
    (dict(n_instances=1), "n_instances"), (dict(coverages=("ref", "half")), "coverages"),
    (dict(coverages=("ref", "ref")), "distinct"), (dict(coverages=("drop10",)), "drops every"),
    (dict(betas=(1.0, 0.1)), "increasing"), (dict(labels=("gold", "noisy")), "labels"),
    (dict(policies=("mlp",)), "policies"), (dict(exact=False, ns=()), "data size"),
    (dict(misspecification=1.5), "misspecification")])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        gap.GapAtlasConfig(**bad)


def test_run_cell_rejects_unknown_cells():
    with pytest.raises(ValueError, match="unknown cell 'tabular-half-ninf'"):
        gap.run_cell(_tiny(), 0, "tabular-half-ninf")


# ---------------------------------------------------------------------------------------------
# scale and robustness: cells, resume after a kill, Dask


def test_run_is_the_concatenation_of_deterministic_cells():
    cfg = _tiny()
    names = gap.cell_names(cfg)
    assert names == ["tabular-online", "tabular-ref-ninf", "tabular-ref-n20",
                     "tabular-drop1-ninf", "tabular-drop1-n20"]
    whole = gap.run(cfg, 4)
    again = pd.concat([gap.run_cell(cfg, 4, c) for c in reversed(names)][::-1],
                      ignore_index=True)
    pd.testing.assert_frame_equal(whole, again)
    assert not gap.run_cell(cfg, 5, names[1]).equals(gap.run_cell(cfg, 4, names[1]))


@pytest.mark.parametrize("policy,coverage,n,labels,method,coef", [
    ("tabular", "drop1", 20.0, "proxy", "online_ipo", 0.1),
    ("tabular", "ref", np.inf, "deterministic", "dpo", 1.0),
    ("loglinear", "drop1", np.inf, "gold", "online_dpo", 0.1),
    ("loglinear", "ref", 20.0, "proxy", "rlhf", 1.0)])
def test_arm_problem_trains_to_the_stored_value(policy, coverage, n, labels, method, coef):
    """``arm_problem`` is the run behind a table entry: ``cs.train`` on it ends where the
    batched cell did."""
    cfg = _tiny(policies=["tabular", "loglinear"], feature_dim=2)
    cell = (f"{policy}-online" if method.startswith("online") and labels != "proxy"
            else f"{policy}-{coverage}-n{'inf' if np.isinf(n) else int(n)}")
    table = gap.run_cell(cfg, 2, cell)
    env, obj, data, pol = gap.arm_problem(cfg, 2, 1, policy=policy, coverage=coverage, n=n,
                                          labels=labels, method=method, coefficient=coef)
    run = cs.train(env, obj, data, steps=cfg.steps, lr=cfg.lr, policy=pol, record=[cfg.steps])
    stored_labels = gap.stored_arm(labels, method, coverage, n)[2]
    rows = table[(table["method"] == method) & (table["labels"] == stored_labels)
                 & (table["instance"] == 1) & (table["beta"] == coef)]
    stored = rows.set_index("metric")["value"]
    assert stored["win_rate"] == pytest.approx(float(cs.metrics.win_rate(env, run.policy)),
                                               abs=1e-12)
    assert stored["kl"] == pytest.approx(float(cs.metrics.kl_divergence(env, run.policy,
                                                                         env.ref)), abs=1e-12)


def _cli(out: Path, cfg_items: dict) -> list[str]:
    sets = []
    for key, value in cfg_items.items():
        sets += ["--set", f"{key}={value!r}".replace("'", '"')]
    return [sys.executable, "-m", "coverage_sim.cli", "run", "gap-atlas", *sets, "--out",
            str(out), "--workers", "1", "--no-progress"]


def test_killed_atlas_resumes_to_the_uninterrupted_table(tmp_path):
    """SIGKILL `coverage-sim run gap-atlas` after its first cells land; re-running the same
    command finishes only the missing cells and gives the uninterrupted table."""
    items = {**TINY, "n_instances": 4, "steps": 3000}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NUMBA_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    cells = killed / "seeds" / "seed-0"
    proc = subprocess.Popen(_cli(killed, items), cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (cells.exists() and len(list(cells.glob("*.csv"))) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "atlas died or stalled"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in cells.glob("*.csv"))
    assert 2 <= len(done) < 5 and not (killed / "results.csv").exists()
    assert not list(killed.rglob("*.tmp")), "a partial cell file was left behind"
    stamps = {p.name: p.stat().st_mtime_ns for p in cells.glob("*.csv")}
    # exit status 1 is the verdict (the tiny atlas lacks the axes of some claims), not a crash
    assert subprocess.run(_cli(killed, items), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL).returncode in (0, 1)
    assert all(p.stat().st_mtime_ns == stamps[p.name] for p in cells.glob("*.csv")
               if p.name in stamps), "a finished cell was recomputed"
    clean = tmp_path / "clean"
    assert subprocess.run(_cli(clean, items), cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL).returncode in (0, 1)
    pd.testing.assert_frame_equal(pd.read_csv(killed / "results.csv"),
                                  pd.read_csv(clean / "results.csv"))


def test_dask_local_cluster_equals_local_run(tmp_path):
    distributed = pytest.importorskip("distributed")
    cfg = _tiny()
    local = run_sweep(gap.GAP_ATLAS, cfg, [0], out=tmp_path / "local", workers=1,
                      progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        remote = run_sweep(gap.GAP_ATLAS, cfg, [0], out=tmp_path / "dask", progress=False,
                           scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(local, remote)
    assert len(list((tmp_path / "dask" / "seeds" / "seed-0").glob("*.csv"))) == 5
