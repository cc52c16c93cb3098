"""Training loops: convergence, history/record/snapshots, determinism, batching, fast paths."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import coverage_sim as cs
from coverage_sim import _dpo_fast, _engine
from coverage_sim import metrics as M
from coverage_sim.objectives import DPO_OPTIONS

BASE_COLUMNS = ["step", "loss", "reward", "kl", "kl_ref", "entropy", "win_rate"]
BETA_COLUMNS = ["tv_to_opt", "kl_to_opt"]
RANK_COLUMNS = ["ranking_accuracy"]


@pytest.fixture(scope="module")
def env():
    # random rewards and references, but context weights away from 0 (every context matters)
    base = cs.random_bandit(5, n_contexts=2, seed=3)
    return cs.Bandit(reward=base.reward, ref=base.ref, context_weights=[0.4, 0.6], name="k5x2")


@pytest.fixture(scope="module")
def data(env):
    return cs.offline_pairs(env, env.ref)


# ---------------------------------------------------------------- convergence


@pytest.mark.parametrize("optimizer,lr,steps", [("gd", 3.0, 5000), ("adam", 0.05, 3000),
                                                ("npg", 0.5, 300)])
def test_rlhf_converges_to_optimal_policy(env, optimizer, lr, steps):
    """Tolerance: max |pi - pi*_beta| <= 1e-6 per entry (observed: gd 3e-8, adam/npg ~1e-15)."""
    run = cs.train(env, cs.objective("rlhf", beta=0.7), steps=steps, lr=lr, optimizer=optimizer)
    np.testing.assert_allclose(run.policy, cs.optimal_policy(env, 0.7), rtol=0, atol=1e-6)
    assert run.history["tv_to_opt"].iloc[-1] < 1e-6
    assert run.history["tv_to_opt"].iloc[0] > 0.1           # it did have to move


def test_npg_tabular_rlhf_is_the_closed_form_mirror_descent_step():
    # NPG with lr = 1 / beta on the tabular RLHF objective jumps to pi*_beta in one step:
    # pi_{t+1} ∝ pi_t exp(lr (r - beta log(pi_t / pi_ref)) / 1) = pi_ref exp(r / beta) from pi_ref.
    env = cs.Bandit(reward=[1.0, 0.0, -2.0], ref=[0.2, 0.3, 0.5])
    beta = 0.5
    run = cs.train(env, cs.objective("rlhf", beta=beta), steps=1, lr=1 / beta, optimizer="npg")
    np.testing.assert_allclose(run.policy, cs.optimal_policy(env, beta), rtol=1e-12)
    # with contexts of unequal weight too: the Fisher of context x carries rho_x, and divides out
    ctx = cs.Bandit(reward=[[1.0, 0.0, -2.0], [0.0, 2.0, 1.0]], ref=[[0.2, 0.3, 0.5]] * 2,
                    context_weights=[0.2, 0.8])
    run = cs.train(ctx, cs.objective("rlhf", beta=beta), steps=1, lr=1 / beta, optimizer="npg")
    np.testing.assert_allclose(run.policy, cs.optimal_policy(ctx, beta), rtol=1e-12)


def test_npg_loglinear_step_is_the_fisher_preconditioned_gradient():
    """One natural-gradient step of a log-linear policy, by hand: F = sum_x rho_x Cov_pi(phi),
    theta_1 = theta_0 - lr (F + damping)^-1 grad (damping 1e-10 (1 + tr F / D), as the engine)."""
    env = cs.random_bandit(5, n_contexts=2, seed=4)
    feats = np.random.default_rng(1).normal(size=(2, 5, 3))
    pol = cs.LogLinear(feats, init=[0.3, -0.2, 0.1])
    obj = cs.objective("rlhf", beta=0.7)
    lr = 0.2
    run = cs.train(env, obj, steps=1, lr=lr, optimizer="npg", policy=pol, record=[0, 1])
    theta0 = np.array([0.3, -0.2, 0.1])
    lp = pol.logp(env, theta0)
    _, g_lp = obj.loss_and_grad(env, lp)
    g = pol.grad(env, theta0, g_lp)
    pi = np.exp(env.as2d(lp, "lp"))
    fisher = np.zeros((3, 3))
    for x in range(2):
        centred = feats[x] - pi[x] @ feats[x]
        fisher += env.context_weights[x] * (centred.T * pi[x]) @ centred
    fisher += 1e-10 * (1.0 + np.trace(fisher) / 3) * np.eye(3)
    expected = theta0 - lr * np.linalg.solve(fisher, g)
    np.testing.assert_allclose(run.params, expected, rtol=1e-10)
    assert np.abs(run.params - theta0).max() > 1e-3


def test_adam_steps_match_hand_updates():
    """Two Adam steps on RLHF from pi_ref with the bias-corrected moments, computed by hand."""
    env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.2, 0.3, 0.5])
    obj = cs.objective("rlhf", beta=0.5)
    lr, (b1, b2, eps) = 0.1, (0.8, 0.9, 1e-3)
    run = cs.train(env, obj, steps=2, lr=lr, optimizer="adam", adam=(b1, b2, eps),
                   record=[0, 1, 2])
    theta = np.log(env.ref)
    m = v = np.zeros(3)
    pol = cs.TabularSoftmax()
    for t in (1, 2):
        lp = theta - np.log(np.exp(theta).sum())
        g = pol.grad(env, theta, obj.loss_and_grad(env, lp)[1])
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        np.testing.assert_allclose(run.snapshots[t], np.exp(theta) / np.exp(theta).sum(),
                                   rtol=1e-12)


def test_gd_first_step_matches_hand_gradient():
    # one GD step on rlhf from pi_ref: theta -= lr * (-pi (r - E_pi r)) (KL gradient is 0 at ref)
    env = cs.Bandit(reward=[1.0, 0.0], ref=[0.5, 0.5])
    run = cs.train(env, cs.objective("rlhf", beta=1.0), steps=1, lr=0.4, optimizer="gd")
    theta = np.log([0.5, 0.5]) + 0.4 * 0.5 * np.array([0.5, -0.5])
    np.testing.assert_allclose(run.params, theta, rtol=1e-14)
    np.testing.assert_allclose(run.policy, np.exp(theta) / np.exp(theta).sum(), rtol=1e-14)
    # loss at step 0 is -(E_ref r - beta * 0)
    assert run.history["loss"].iloc[0] == pytest.approx(-0.5, rel=1e-14)


# ---------------------------------------------------------------- history, record, snapshots


def test_history_columns_rows_and_step_schedule(env, data):
    run = cs.train(env, cs.objective("sigmoid", beta=0.5), data, steps=300, lr=0.05)
    hist = run.history
    assert isinstance(hist, pd.DataFrame)
    assert list(hist.columns) == (BASE_COLUMNS + BETA_COLUMNS + RANK_COLUMNS
                                  + ["ideal_ranking_accuracy", "mass_off_support"])
    np.testing.assert_array_equal(hist["step"].to_numpy(), cs.log_schedule(300))
    assert len(hist) == len(run.snapshots) == len(cs.log_schedule(300))
    assert run.snapshots.shape == (len(hist),) + env.shape
    # metrics are those of the snapshots
    np.testing.assert_allclose(hist["reward"], M.expected_reward(env, run.snapshots), rtol=1e-14)
    np.testing.assert_allclose(hist["kl"], M.kl_divergence(env, run.snapshots, env.ref),
                               rtol=1e-14)
    np.testing.assert_allclose(run.snapshots[0], env.ref, rtol=1e-14)
    np.testing.assert_array_equal(run.snapshots[-1], run.policy)
    # the loss column is the objective's loss at each snapshot
    for r in (0, len(hist) // 2, len(hist) - 1):
        loss, _ = run.objective.loss_and_grad(env, np.log(run.snapshots[r]), data)
        assert hist["loss"].iloc[r] == pytest.approx(loss, rel=1e-12)
    assert np.isfinite(hist.to_numpy(dtype=float)).all()


def test_history_optional_columns():
    env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.5, 0.25, 0.25])
    data = cs.offline_pairs(env, env.ref)
    # no beta -> no *_to_opt / ideal ranking; no data -> no mass_off_support
    bon = cs.train(env, "best_of_n", data, steps=5, lr=0.1)
    assert list(bon.history.columns) == BASE_COLUMNS + RANK_COLUMNS + ["mass_off_support"]
    proxy = np.array([0.0, 2.0, 0.0])
    rl = cs.train(env, cs.objective("rlhf", beta=1.0, reward=proxy), steps=5, lr=0.1)
    assert list(rl.history.columns) == (BASE_COLUMNS + ["proxy_reward"] + BETA_COLUMNS
                                        + RANK_COLUMNS + ["ideal_ranking_accuracy"])
    np.testing.assert_allclose(rl.history["proxy_reward"],
                               M.expected_reward(env, rl.snapshots, proxy), rtol=1e-14)
    # explicit eval_data replaces the default held-out pairs
    held = cs.pairs_from_list(env, [(2, 0)])
    ev = cs.train(env, cs.objective("rlhf", beta=1.0), steps=5, lr=0.1, eval_data=held)
    assert ev.history["ranking_accuracy"].iloc[0] == 0.0        # pi_ref(y3) < pi_ref(y1)


def test_log_schedule_properties():
    np.testing.assert_array_equal(cs.log_schedule(1000, num=5), [0, 1, 6, 32, 178, 1000])
    np.testing.assert_array_equal(cs.log_schedule(0), [0])
    np.testing.assert_array_equal(cs.log_schedule(3), [0, 1, 2, 3])
    np.testing.assert_array_equal(cs.log_schedule(500, num=1), [0, 500])
    for steps in (1, 7, 100, 12345):
        for num in (1, 2, 10, 50):
            s = cs.log_schedule(steps, num)
            assert s.dtype == np.int64
            assert s[0] == 0 and s[-1] == steps
            assert (np.diff(s) > 0).all()
            assert len(s) <= num + 1


def test_record_int_list_and_invalid(env):
    obj = cs.objective("rlhf", beta=1.0)
    as_int = cs.train(env, obj, steps=100, lr=0.1, record=4)
    np.testing.assert_array_equal(as_int.history["step"], cs.log_schedule(100, 4))
    as_list = cs.train(env, obj, steps=100, lr=0.1, record=[50, 0, 7, 50])   # sorted, deduplicated
    np.testing.assert_array_equal(as_list.history["step"], [0, 7, 50])
    assert as_list.snapshots.shape == (3,) + env.shape
    full = cs.train(env, obj, steps=100, lr=0.1, record=list(range(101)))
    np.testing.assert_array_equal(as_list.snapshots, full.snapshots[[0, 7, 50]])
    np.testing.assert_array_equal(as_int.snapshots, full.snapshots[cs.log_schedule(100, 4)])
    # the final policy is the policy after all steps even if the schedule stops earlier
    np.testing.assert_array_equal(as_list.policy, full.policy)
    np.testing.assert_array_equal(as_list.params, full.params)
    for bad in ([0, 101], [-1, 5], [], [0.5], 0, -2, True, "all"):
        with pytest.raises(ValueError, match="record"):
            cs.train(env, obj, steps=100, lr=0.1, record=bad)


def test_zero_steps_records_the_initial_policy(env):
    run = cs.train(env, "rlhf", steps=0, lr=0.1)
    np.testing.assert_array_equal(run.history["step"], [0])
    np.testing.assert_allclose(run.policy, env.ref, rtol=1e-15)


# ---------------------------------------------------------------- determinism and config


def test_train_is_deterministic_and_seed_matters_for_random_init(env):
    pol = cs.TabularSoftmax(init="random")
    obj = cs.objective("online_dpo", beta=0.5)
    a = cs.train(env, obj, steps=50, lr=0.1, seed=3, policy=pol)
    b = cs.train(env, obj, steps=50, lr=0.1, seed=3, policy=pol)
    c = cs.train(env, obj, steps=50, lr=0.1, seed=4, policy=pol)
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    np.testing.assert_array_equal(a.snapshots, b.snapshots)
    assert not np.allclose(a.snapshots[0], c.snapshots[0])
    assert not np.allclose(a.history["reward"], c.history["reward"])
    # init="ref" ignores the seed entirely
    d = cs.train(env, obj, steps=50, lr=0.1, seed=3)
    e = cs.train(env, obj, steps=50, lr=0.1, seed=99)
    pd.testing.assert_frame_equal(d.history, e.history, check_exact=True)


def test_config_records_seed_versions_and_objective_params(env, data):
    run = cs.train(env, cs.objective("cdpo", beta=0.3, label_smoothing=0.1), data, steps=10,
                   lr=0.02, optimizer="gd", seed=11)
    cfg = run.config
    assert cfg["seed"] == 11
    assert cfg["objective"] == "cdpo"
    assert cfg["params"] == {"beta": 0.3, "label_smoothing": 0.1, **DPO_OPTIONS}
    assert cfg["optimizer"] == "gd" and cfg["lr"] == 0.02 and cfg["steps"] == 10
    assert cfg["record_steps"] == run.history["step"].tolist()
    assert cfg["data"]["labels"] == "bradley_terry" and cfg["data"]["n"] is None
    import numba
    assert cfg["versions"]["numpy"] == np.__version__
    assert cfg["versions"]["numba"] == numba.__version__
    assert "python" in cfg["versions"]
    json.dumps(cfg)                  # plain JSON, no numpy scalars
    # an array-valued parameter is summarised, not dumped
    rl = cs.train(env, cs.objective("rlhf", reward=np.zeros(env.shape)), steps=2, lr=0.1)
    assert rl.config["params"]["reward"] == "<array>"
    json.dumps(rl.config)


# ---------------------------------------------------------------- train_many == train


def _assert_same_run(a, b, tol=1e-12):
    np.testing.assert_allclose(a.snapshots, b.snapshots, rtol=0, atol=tol)
    np.testing.assert_allclose(a.params, b.params, rtol=0, atol=tol)
    np.testing.assert_allclose(a.policy, b.policy, rtol=0, atol=tol)
    assert list(a.history.columns) == list(b.history.columns)
    np.testing.assert_allclose(a.history.to_numpy(dtype=float), b.history.to_numpy(dtype=float),
                               rtol=tol, atol=tol)


def test_train_many_equals_train_with_beta_and_lr_lists(env, data):
    betas, lrs = [0.3, 0.7, 1.5], [0.05, 0.1, 0.02]
    runs = cs.train_many(env, [cs.objective("sigmoid", beta=b) for b in betas], data, steps=100,
                         lr=lrs)
    assert len(runs) == 3
    for b, lr, run in zip(betas, lrs, runs):
        _assert_same_run(run, cs.train(env, cs.objective("sigmoid", beta=b), data, steps=100,
                                       lr=lr))
        assert run.config["lr"] == lr


def test_train_many_equals_train_with_env_and_data_lists():
    envs = [cs.random_bandit(4, n_contexts=2, seed=s) for s in range(3)]
    datas = [cs.offline_pairs(e, e.ref, n=200, seed=s) for s, e in enumerate(envs)]
    runs = cs.train_many(envs, cs.objective("ipo", beta=0.5), datas, steps=60, lr=0.05,
                         optimizer="gd", record=10)
    for e, d, run in zip(envs, datas, runs):
        _assert_same_run(run, cs.train(e, cs.objective("ipo", beta=0.5), d, steps=60, lr=0.05,
                                       optimizer="gd", record=10))


def test_train_many_mixes_rank_one_and_sampled_pair_data():
    """Exact mu x mu pairs (rank-one kernel) and sampled pairs (dense kernel) in one batch: the
    batch runs the dense kernel for all, and each run matches its own train() to rounding."""
    env = cs.random_bandit(6, seed=3)
    datas = [cs.offline_pairs(env, env.ref), cs.offline_pairs(env, env.ref, n=300, seed=1)]
    obj = cs.objective("sigmoid", beta=0.5)
    assert [obj.terms(env, d)[5] for d in datas] == [_dpo_fast.FACTORED, _dpo_fast.DENSE]
    runs = cs.train_many(env, obj, datas, steps=80, lr=0.05, optimizer="gd", record=10)
    for d, run in zip(datas, runs):
        _assert_same_run(run, cs.train(env, obj, d, steps=80, lr=0.05, optimizer="gd", record=10),
                         tol=1e-11)


def test_train_many_equals_train_with_loglinear_policy(env):
    pol = cs.LogLinear(np.random.default_rng(0).normal(size=(2, 5, 3)))
    betas = [0.3, 1.0]
    for optimizer in ("adam", "npg"):
        runs = cs.train_many(env, [cs.objective("rlhf", beta=b) for b in betas], steps=80, lr=0.1,
                             policy=pol, optimizer=optimizer)
        for b, run in zip(betas, runs):
            _assert_same_run(run, cs.train(env, cs.objective("rlhf", beta=b), steps=80, lr=0.1,
                                           policy=pol, optimizer=optimizer))


def test_train_many_seeds_problem_b_with_seed_plus_b(env):
    pol = cs.TabularSoftmax(init="random")
    runs = cs.train_many(env, ["online_dpo"] * 3, steps=30, lr=0.1, policy=pol, seed=5)
    for b, run in enumerate(runs):
        assert run.config["seed"] == 5 + b
        _assert_same_run(run, cs.train(env, "online_dpo", steps=30, lr=0.1, policy=pol, seed=5 + b))
    assert not np.allclose(runs[0].snapshots[0], runs[1].snapshots[0])


def test_train_many_takes_one_policy_per_problem():
    """Log-linear policies with each instance's own features batch together; each run matches its
    own train()."""
    envs = [cs.random_bandit(5, seed=s) for s in range(3)]
    rng = np.random.default_rng(1)
    pols = [cs.LogLinear(rng.normal(size=(5, 2))) for _ in envs]
    runs = cs.train_many(envs, cs.objective("online_ipo", beta=0.3), steps=60, lr=0.1,
                         policy=pols)
    for e, pol, run in zip(envs, pols, runs):
        assert run.policy_model is pol
        _assert_same_run(run, cs.train(e, cs.objective("online_ipo", beta=0.3), steps=60,
                                       lr=0.1, policy=pol))


def test_train_many_rejects_mixed_policy_kinds_and_sizes(env):
    feats = np.random.default_rng(0).normal(size=(2, 5, 3))
    with pytest.raises(ValueError, match="one kind"):
        cs.train_many(env, "rlhf", steps=2, lr=0.1, policy=[cs.TabularSoftmax(),
                                                              cs.LogLinear(feats)])
    with pytest.raises(ValueError, match="number of parameters"):
        cs.train_many(env, "rlhf", steps=2, lr=0.1, policy=[cs.LogLinear(feats),
                                                              cs.LogLinear(feats[..., :2])])
    with pytest.raises(ValueError, match="must have 3 entries to match the batch"):
        cs.train_many([env, env], "rlhf", steps=2, lr=0.1, policy=[cs.TabularSoftmax()] * 3)


def test_train_policies_returns_train_many_snapshots(env, data):
    """The lean path runs the same engine: its log-policies are train_many's snapshots."""
    objs = [cs.objective("sigmoid", beta=b) for b in (0.3, 1.0)]
    for record in ([40], None):
        logp = cs.train_policies(env, objs, data, steps=40, lr=0.05, record=record)
        runs = cs.train_many(env, objs, data, steps=40, lr=0.05, record=record)
        assert logp.shape == (2, runs[0].snapshots.shape[0]) + env.shape
        for b, run in enumerate(runs):
            np.testing.assert_array_equal(np.exp(logp[b]), run.snapshots)


def test_train_policies_raises_on_divergence():
    env = cs.azar_bandit()
    with pytest.raises(FloatingPointError, match="lr"):
        cs.train_policies(env, cs.objective("ipo", beta=0.1), cs.azar_d1(env), steps=2000,
                          lr=0.1, optimizer="npg", record=[2000])


# ---------------------------------------------------------------- iterative DPO


def test_iterative_dpo_rebuilds_its_pairs_each_iteration():
    env = cs.random_bandit(5, n_contexts=2, seed=1)
    spi, n, beta = 20, 4, 0.5
    obj = cs.objective("iterative_dpo", beta=beta, n=n, steps_per_iteration=spi)
    every = list(range(3 * spi + 1))
    it = cs.train(env, obj, steps=3 * spi, lr=0.5, optimizer="gd", record=every)
    # iteration 0 is offline DPO on best-vs-worst-of-n pairs from pi_ref ...
    d0 = cs.best_worst_pairs(env, env.ref, n=n)
    off = cs.train(env, cs.objective("sigmoid", beta=beta), d0, steps=3 * spi, lr=0.5,
                   optimizer="gd", record=every)
    np.testing.assert_allclose(it.snapshots[: spi + 1], off.snapshots[: spi + 1], atol=1e-12)
    np.testing.assert_allclose(it.history["loss"][:spi], off.history["loss"][:spi], rtol=1e-12)
    # ... then the pairs are rebuilt from pi_spi: the loss at step spi is on the new pairs
    assert abs(it.history["loss"][spi] - off.history["loss"][spi]) > 1e-4
    assert np.abs(it.snapshots[2 * spi] - off.snapshots[2 * spi]).max() > 1e-3
    # iteration 1 is exactly offline DPO from pi_spi on pairs drawn from pi_spi
    p1 = it.snapshots[spi]
    d1 = cs.best_worst_pairs(env, p1, n=n)
    seg = cs.train(env, cs.objective("sigmoid", beta=beta), d1, steps=spi, lr=0.5, optimizer="gd",
                   policy=cs.TabularSoftmax(init=p1), record=list(range(spi + 1)))
    np.testing.assert_allclose(seg.snapshots, it.snapshots[spi: 2 * spi + 1], atol=1e-12)
    assert it.config["data"] is None


def test_iterative_dpo_not_batched(env):
    with pytest.raises(ValueError, match="iterative_dpo"):
        cs.train_many(env, "iterative_dpo", steps=5, lr=0.1)


# ---------------------------------------------------------------- partial coverage


@pytest.mark.parametrize("name", ["sigmoid", "ipo", "hinge", "hypo", "best_of_n"])
@pytest.mark.parametrize("optimizer", ["gd", "adam", "npg"])
def test_partial_coverage_offline_training_stays_finite_and_on_ref_support(name, optimizer):
    # context 0 excludes y3 from pi_ref (and y3 has the highest reward), the data covers y1, y2
    env = cs.Bandit(reward=[[1.0, 0.0, 5.0, -1.0], [0.0, 1.0, 2.0, 3.0]],
                    ref=[[0.5, 0.3, 0.0, 0.2], [0.25, 0.25, 0.25, 0.25]])
    data = cs.offline_pairs(env, cs.restrict_support(env.ref, [0, 1]))
    run = cs.train(env, name, data, steps=100, lr=0.1, optimizer=optimizer)
    hist = run.history
    assert np.isfinite(hist.to_numpy(dtype=float)).all()
    assert (run.snapshots[:, 0, 2] == 0.0).all()
    off = M.mass_off_support(env, run.snapshots, data)
    np.testing.assert_allclose(hist["mass_off_support"], off, rtol=1e-14)
    assert 0.0 < hist["mass_off_support"].iloc[0] < 1.0


# ---------------------------------------------------------------- fast DPO path and parallel rows


def _slow_terms(terms, k):
    terms = list(terms)
    assert terms[5] != 0, "expected a fast DPO kernel for this objective"
    terms[5] = 0
    terms[6], terms[7] = np.zeros((0, k, k)), np.zeros((0, 2, k))
    terms[8] = np.zeros((0, k), dtype=bool)
    return tuple(terms)


@pytest.mark.parametrize("parallel, mode", [(False, None), (True, True)])
def test_serial_runs_give_the_engine_none_so_it_skips_the_parallel_kernels(monkeypatch, env,
                                                                          parallel, mode):
    """A serial run passes ``parallel_rows=None``, whose specialisation of the engine numba
    compiles without the parallel DPO kernels (``False`` would compile them, as ``True`` does)."""
    seen = []
    real = _engine.run_chunk

    def spy(*args):
        seen.append(args[16])
        return real(*args)

    monkeypatch.setattr(_engine, "run_chunk", spy)
    data = cs.offline_pairs(env, env.ref)
    for objective in ("dpo", cs.objective("dpo", sync_ref_model=True, ref_model_sync_steps=2)):
        cs.train(env, objective, data, steps=4, lr=0.1, parallel=parallel, metrics=[])
    assert len(seen) == 2 and all(m is mode for m in seen)
    assert _engine.row_mode(False) is None and _engine.row_mode(True) is True


@pytest.mark.parametrize("name,params", [("sigmoid", {}), ("cdpo", {"label_smoothing": 0.2}),
                                         ("robust", {"label_smoothing": 0.2}),
                                         ("sigmoid_norm", {"length": 2.0})])
def test_fast_dpo_path_and_parallel_rows_match_generic_kernel(env, name, params):
    data = cs.offline_pairs(env, cs.restrict_support(env.ref, [0, 1, 3]), labels="bradley_terry")
    obj = cs.objective(name, beta=0.5, **params)
    serial = cs.train(env, obj, data, steps=150, lr=0.05, parallel=False)
    parallel = cs.train(env, obj, data, steps=150, lr=0.05, parallel=True)
    _assert_same_run(serial, parallel)
    # the generic pairwise kernel on the same objective, through the same fused loop
    k = env.n_responses
    rec = serial.history["step"].to_numpy()
    theta = np.ascontiguousarray(env.ref_logp2d.ravel())
    out_lp = np.empty((rec.size, env.n_contexts, k))
    out_loss = np.empty(rec.size)
    pol = cs.TabularSoftmax()
    # (plain GD: Adam divides rounding-level gradients by eps = 1e-8, which turns the two kernels'
    # last-bit differences on the responses the data never shows into ~1e-10 policy differences)
    gd = cs.train(env, obj, data, steps=150, lr=0.5, optimizer="gd")
    _engine.run_one(theta, pol.kind, pol.features_for(env), pol.base_for(env),
                    np.ascontiguousarray(env.ref_logp2d), _slow_terms(obj.terms(env, data), k),
                    _engine.GD, 0.5, 0.9, 0.999, 1e-8, 150, rec, out_lp, out_loss, False)
    np.testing.assert_allclose(np.exp(out_lp), gd.snapshots, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out_loss, gd.history["loss"], rtol=1e-12, atol=1e-12)
    # and the gradients themselves agree along the Adam trajectory
    rlp = np.ascontiguousarray(env.ref_logp2d)
    fast_terms, slow_terms = obj.terms(env, data), _slow_terms(obj.terms(env, data), k)
    for snap in serial.snapshots:
        with np.errstate(divide="ignore"):
            lp = np.ascontiguousarray(np.log(snap))
        g_fast, g_slow = np.zeros_like(lp), np.zeros_like(lp)
        wbuf = np.zeros((env.n_contexts, k, k))
        _engine.objective_grad(fast_terms, lp, rlp, g_fast, True, False, wbuf)
        _engine.objective_grad(slow_terms, lp, rlp, g_slow, True, False, wbuf)
        np.testing.assert_allclose(g_fast, g_slow, rtol=0, atol=1e-14)


def test_large_k_parallel_default_matches_serial():
    env = cs.random_bandit(520, seed=0)
    data = cs.offline_pairs(env, env.ref)
    obj = cs.objective("sigmoid", beta=0.2)
    auto = cs.train(env, obj, data, steps=10, lr=0.05, record=[0, 10])   # K >= 512: parallel rows
    serial = cs.train(env, obj, data, steps=10, lr=0.05, record=[0, 10], parallel=False)
    _assert_same_run(auto, serial)
    assert auto.history["kl"].iloc[-1] > 0


def test_run_repr_mentions_objective_and_env(env):
    run = cs.train(env, "rlhf", steps=3, lr=0.1)
    assert "rlhf" in repr(run) and env.name in repr(run)


def test_replay_policy_is_the_mean_of_the_visited_policies():
    """Tang's replay buffer: (1/T) sum_{t<T} pi_t, exact only with every step recorded."""
    env = cs.Bandit(reward=[1.0, 0.0, -1.0], ref=[0.2, 0.3, 0.5])
    steps = 7
    run = cs.train(env, cs.objective("rlhf", beta=0.5), steps=steps, lr=0.3, optimizer="gd",
                   record=list(range(steps + 1)))
    theta = np.log(env.ref)
    visited = []
    for _ in range(steps):
        pi = np.exp(theta) / np.exp(theta).sum()
        visited.append(pi)
        advantage = env.reward - 0.5 * np.log(pi / env.ref)
        theta = theta + 0.3 * pi * (advantage - pi @ advantage)
    np.testing.assert_allclose(run.replay_policy(), np.mean(visited, axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="record"):
        cs.train(env, "rlhf", steps=500, lr=0.3).replay_policy()  # log-spaced record


def test_divergence_raises_instead_of_returning_nan():
    """No silent NaN: natural policy gradient with a large step on offline IPO blows up, loudly."""
    env = cs.azar_bandit()
    with pytest.raises(FloatingPointError, match="lr"):
        cs.train(env, cs.objective("ipo", beta=0.1), cs.azar_d1(env), steps=2000, lr=0.1,
                 optimizer="npg")


# ---------------------------------------------------------------- metrics= and default eval pairs


def test_metrics_argument_selects_history_columns(env, data):
    obj = cs.objective("sigmoid", beta=0.5)
    full = cs.train(env, obj, data, steps=40, lr=0.05)
    some = cs.train(env, obj, data, steps=40, lr=0.05, metrics=["win_rate", "kl"])
    assert list(some.history.columns) == ["step", "loss", "kl", "win_rate"]
    for column in some.history.columns:
        np.testing.assert_array_equal(some.history[column], full.history[column])
    bare = cs.train(env, obj, data, steps=40, lr=0.05, metrics=[])
    assert list(bare.history.columns) == ["step", "loss"]
    many = cs.train_many(env, [obj, obj], data, steps=40, lr=0.05, metrics=["reward"])
    assert list(many[0].history.columns) == ["step", "loss", "reward"]


def test_bad_metrics_fail_before_training(env, data):
    obj = cs.objective("sigmoid", beta=0.5)
    with pytest.raises(ValueError, match=r"metrics: unknown metric 'acc'; allowed: reward, kl"):
        cs.train(env, obj, data, steps=10**9, lr=0.05, metrics=["acc"])
    with pytest.raises(ValueError, match=r"metrics: 'tv_to_opt' needs beta"):
        cs.train(env, cs.objective("best_of_n"), data, steps=10**9, lr=0.05,
                 metrics=["tv_to_opt"])
    with pytest.raises(ValueError, match=r"metrics: 'proxy_reward' needs a proxy reward"):
        cs.train_many(env, obj, data, steps=10**9, lr=0.05, metrics=["proxy_reward"])


def test_default_eval_pairs_are_the_reference_pairs_and_stop_above_1000(env, data):
    obj = cs.objective("sigmoid", beta=0.5)
    default = cs.train(env, obj, data, steps=30, lr=0.05)
    explicit = cs.train(env, obj, data, steps=30, lr=0.05, eval_data=cs.offline_pairs(env, env.ref))
    np.testing.assert_allclose(default.history["ranking_accuracy"],
                               explicit.history["ranking_accuracy"], rtol=1e-13)
    np.testing.assert_allclose(default.history["ideal_ranking_accuracy"],
                               explicit.history["ideal_ranking_accuracy"], rtol=1e-13)
    big = cs.random_bandit(1001, seed=0, min_ref=1e-4)
    run = cs.train(big, "rlhf", steps=2, lr=0.1)
    assert "ranking_accuracy" not in run.history
    asked = cs.train(big, "rlhf", steps=2, lr=0.1, metrics=["ranking_accuracy"])
    assert list(asked.history.columns) == ["step", "loss", "ranking_accuracy"]


# ---------------------------------------------------------------- TR-DPO: a moving reference


def _trdpo_by_hand(env, data, beta, tau, alpha, steps, lr, b1=0.9, b2=0.999, eps=1e-8,
                   reset_adam=False):
    """TR-DPO as TRL runs it, written out: Adam on the logits, and after every update whose
    global_step % tau == 0 the reference model's parameters become alpha theta + (1 - alpha)
    theta_ref (SyncRefModelCallback._sync_target_model: mul_(1 - alpha).add_(theta, alpha)). The
    reference model starts at the logits log env.ref; its policy is their softmax."""
    theta = env.ref_logp2d.copy()
    theta_ref = env.ref_logp2d.copy()
    m, v = np.zeros_like(theta), np.zeros_like(theta)
    refs, t0 = [], 0
    obj = cs.objective("sigmoid", beta=beta)
    for s in range(steps):
        ref = np.exp(theta_ref - theta_ref.max(1, keepdims=True))
        ref /= ref.sum(1, keepdims=True)
        env_t = cs.Bandit(reward=env.reward, ref=ref.reshape(env.ref.shape),
                          context_weights=env.context_weights)
        lp = theta - theta.max(1, keepdims=True)
        lp -= np.log(np.exp(lp).sum(1, keepdims=True))
        _, g_lp = obj.loss_and_grad(env_t, lp, data)
        g = g_lp.reshape(theta.shape) - np.exp(lp) * g_lp.reshape(theta.shape).sum(1, keepdims=True)
        t = s + 1 - t0
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        if (s + 1) % tau == 0:
            theta_ref = (1 - alpha) * theta_ref + alpha * theta
            if reset_adam:
                m, v, t0 = np.zeros_like(theta), np.zeros_like(theta), s + 1
        refs.append(theta_ref.copy())
    pi = np.exp(theta - theta.max(1, keepdims=True))
    return pi / pi.sum(1, keepdims=True), refs


@pytest.mark.parametrize("tau,alpha", [(1, 1.0), (7, 0.6), (5, 0.25)])
def test_tr_dpo_matches_trl_parameter_mixing_loop(env, data, tau, alpha):
    steps, lr, beta = 40, 0.05, 0.3
    obj = cs.objective("sigmoid", beta=beta, sync_ref_model=True, ref_model_mixup_alpha=alpha,
                       ref_model_sync_steps=tau)
    assert obj.ref_sync == (tau, alpha)
    run = cs.train(env, obj, data, steps=steps, lr=lr, record=list(range(steps + 1)))
    pi, refs = _trdpo_by_hand(env, data, beta, tau, alpha, steps, lr)
    np.testing.assert_allclose(run.policy, pi.reshape(env.ref.shape), rtol=1e-10, atol=1e-13)
    for s in range(1, steps + 1):
        ref = np.exp(refs[s - 1] - refs[s - 1].max(1, keepdims=True))
        ref /= ref.sum(1, keepdims=True)
        np.testing.assert_allclose(run.references[s], ref.reshape(env.ref.shape), rtol=1e-10,
                                   atol=1e-13)
    np.testing.assert_allclose(run.references[0], env.ref, rtol=1e-14)
    # Adam's state carries over the syncs: resetting it (as iterative DPO does) is another run.
    # (Not for tau = 1, alpha = 1: then h = 0 at every step, the gradient is the same constant
    # drift each step, and Adam's bias-corrected step is lr * sign(g) either way.)
    if (tau, alpha) != (1, 1.0):
        pi_reset, _ = _trdpo_by_hand(env, data, beta, tau, alpha, steps, lr, reset_adam=True)
        assert np.abs(pi_reset - pi).max() > 1e-6


def test_tr_dpo_readouts_are_against_the_current_reference(env, data):
    obj = cs.objective("sigmoid", beta=0.3, sync_ref_model=True, ref_model_sync_steps=10)
    run = cs.train(env, obj, data, steps=60, lr=0.05, record=7)
    hist = run.history
    target = cs.optimal_policy(env, 0.3)
    for r, ref in enumerate(run.references):
        assert hist["kl_current_ref"].iloc[r] == pytest.approx(
            float(M.kl_divergence(env, run.snapshots[r], ref)), rel=1e-12, abs=1e-15)
        assert hist["coverage_current_ref"].iloc[r] == pytest.approx(
            cs.concentrability(target, ref, env.context_weights), rel=1e-12)
    assert hist["coverage_current_ref"].iloc[0] == pytest.approx(
        cs.concentrability(target, env.ref, env.context_weights), rel=1e-14)
    assert hist["coverage_current_ref"].iloc[-1] != hist["coverage_current_ref"].iloc[0]
    # a fixed reference: no reference trajectory, no extra columns
    plain = cs.train(env, cs.objective("sigmoid", beta=0.3), data, steps=60, lr=0.05, record=7)
    assert plain.references is None and "kl_current_ref" not in plain.history


def test_tr_dpo_without_a_sync_in_range_is_dpo_and_batches(env, data):
    obj = cs.objective("sigmoid", beta=0.3, sync_ref_model=True, ref_model_sync_steps=1000)
    a = cs.train(env, obj, data, steps=50, lr=0.05)
    b = cs.train(env, cs.objective("sigmoid", beta=0.3), data, steps=50, lr=0.05)
    np.testing.assert_array_equal(a.snapshots, b.snapshots)
    np.testing.assert_allclose(a.references, np.broadcast_to(env.ref, a.references.shape),
                               rtol=1e-14)
    objs = [cs.objective("sigmoid", beta=0.3, sync_ref_model=True, ref_model_sync_steps=t,
                         ref_model_mixup_alpha=al) for t, al in ((3, 0.5), (8, 1.0))]
    batched = cs.train_many(env, objs, data, steps=50, lr=0.05)
    for obj, run in zip(objs, batched):
        single = cs.train(env, obj, data, steps=50, lr=0.05)
        np.testing.assert_allclose(run.snapshots, single.snapshots, rtol=0, atol=1e-14)
        np.testing.assert_allclose(run.references, single.references, rtol=0, atol=1e-14)


_ONE_COMPILED_LOOP = """
import numpy as np
import coverage_sim as cs
from coverage_sim import _engine, _sampled
env = cs.tajwar_bandit(n_actions=12)
data = cs.offline_pairs(env, env.ref)
kw = dict(steps=30, lr=0.01)
cs.train(env, "dpo", data, progress=False, **kw)                       # one fused call
cs.train(env, "ipo", data, progress=True, **kw)                        # chunked, with a bar
cs.train(env, cs.objective("dpo", sync_ref_model=True, ref_model_sync_steps=4), data, **kw)
cs.train_many(env, "online_dpo", lr=[0.01, 0.02], steps=30)            # threads over problems
cs.train(env, "dpo", data, batch_size=4, **kw)
cs.train_many(env, "rlhf", lr=[0.01, 0.02], steps=30, batch_size=4)
print(len(_engine.run_chunk.signatures), len(_sampled.run_one_sampled.signatures))
"""


def test_single_chunked_and_batched_runs_share_one_compiled_loop():
    # Each extra specialisation of a training loop recompiles the whole engine under it (tens of
    # seconds in a fresh clone, in every worker process): a literal constant passed between jitted
    # functions, or a batch path with its own parallel kernel, would add one.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _ONE_COMPILED_LOOP], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
