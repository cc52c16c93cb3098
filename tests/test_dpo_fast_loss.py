"""The fast DPO kernels' loss: equal to the per-pair kernel in every branch, and thread-split free.

The gradient kernels are checked against the per-pair kernel and torch in test_objectives.py; here
the loss that the fused loop reports at recorded steps (``_dpo_fast.dpo_fast_loss_ws``) is compared
with ``_pair_kernels.population_pairwise_sum``, the reference, at margins in each of the kernel's ranges
of R = beta * range(u): the exp-free four-row range (R <= 350), the two-row range (350 < R <= 700)
and the per-pair range (R > 700).
"""

from __future__ import annotations

import numpy as np
import pytest

import coverage_sim as cs
from coverage_sim import _dpo_fast, _engine
from coverage_sim._pair_kernels import population_pairwise_sum

OBJECTIVES = [("sigmoid", {}), ("cdpo", {"label_smoothing": 0.2}),
              ("robust", {"label_smoothing": 0.2}), ("sigmoid_norm", {"length": 2.0})]
RANGES = {"four rows": 200.0, "two rows": 520.0, "per pair": 1500.0}


@pytest.fixture(scope="module")
def env():
    base = cs.random_bandit(40, n_contexts=2, seed=5)
    return cs.Bandit(reward=base.reward, ref=base.ref, context_weights=[0.3, 0.7], name="k40x2")


def _policy_with_spread(env, beta_eff, spread, seed):
    """log pi (X, K) whose u = log pi - log pi_ref has beta_eff * range(u) = spread per context."""
    g = np.random.default_rng(seed).uniform(-1.0, 1.0, size=env.ref2d.shape)
    g /= np.ptp(g, axis=1, keepdims=True)
    theta = env.ref_logp2d + (spread / beta_eff) * g
    return np.ascontiguousarray(theta - np.logaddexp.reduce(theta, axis=1, keepdims=True))


def _losses(obj, env, data, lp, factored):
    terms = obj.terms(env, data, factored=factored)
    rlp = np.ascontiguousarray(env.ref_logp2d)
    wbuf = np.zeros((0, 0, 0))
    serial = _engine.objective_grad(terms, lp, rlp, np.zeros_like(lp), True, False, wbuf)
    threads = _engine.objective_grad(terms, lp, rlp, np.zeros_like(lp), True, True, wbuf)
    generic = population_pairwise_sum(terms[0], terms[1], terms[14], lp, rlp, terms[3],
                                      np.zeros_like(lp))
    return terms, serial, threads, generic


@pytest.mark.parametrize("name,params", OBJECTIVES)
@pytest.mark.parametrize("branch", sorted(RANGES))
@pytest.mark.parametrize("sampled", [False, True])
def test_fused_loss_equals_generic_loss_in_every_branch(env, name, params, branch, sampled):
    """Exact mu x mu pairs take the factored kernel, sampled pairs the dense one."""
    behavior = cs.restrict_support(env.ref, np.arange(40) % 5 != 0)   # some responses inactive
    data = cs.offline_pairs(env, behavior, n=3000 if sampled else None, seed=2)
    obj = cs.objective(name, beta=0.8, **params)
    beta_eff = 0.8 / params.get("length", 1.0)
    lp = _policy_with_spread(env, beta_eff, RANGES[branch], seed=len(name))
    terms, serial, threads, generic = _losses(obj, env, data, lp, factored=True)
    assert terms[5] == (_dpo_fast.DENSE if sampled else _dpo_fast.FACTORED)
    u = (lp - env.ref_logp2d)[terms[8]]
    spread = beta_eff * np.ptp(u)
    low, high = {"four rows": (0, 350), "two rows": (350, 700), "per pair": (700, np.inf)}[branch]
    assert low < spread <= high                      # the test exercises the branch it names
    assert abs(serial - generic) <= 1e-12 * abs(generic), (serial, generic)
    assert serial == threads                          # the thread split does not change a bit


def test_fused_loss_keeps_relative_accuracy_when_the_loss_is_tiny():
    """Deterministic labels without self-pairs and a policy that ranks every pair right by a wide
    margin: the loss is a sum of tiny tails log1p(e^-|z|), which a log(w_i + w_j) - log(max w) form
    would lose. Margins at least 300/39, 600/39 and 2000/39: one scale per kernel range."""
    k = 40
    env = cs.Bandit(reward=np.linspace(-1.0, 1.0, k), ref=np.full(k, 1.0 / k))
    order = env.reward[:, None] > env.reward[None, :]
    data = cs.PairData(weights=(order / order.sum())[None], shape=env.shape)
    obj = cs.objective("sigmoid", beta=1.0)
    for scale, expected_branch in ((300.0, (0, 350)), (600.0, (350, 700)), (2000.0, (700, 1e9))):
        theta = env.ref_logp2d + scale * env.reward2d / np.ptp(env.reward)
        lp = np.ascontiguousarray(theta - np.logaddexp.reduce(theta, axis=1, keepdims=True))
        terms, serial, threads, generic = _losses(obj, env, data, lp, factored=True)
        assert terms[5] == _dpo_fast.DENSE
        assert expected_branch[0] < np.ptp(lp - env.ref_logp2d) <= expected_branch[1]
        assert 0 < generic < 1e-3
        assert abs(serial - generic) <= 1e-12 * generic, (scale, serial, generic)
        assert serial == threads


def test_loss_column_of_a_run_equals_the_generic_loss(env):
    """The fused loop's recorded losses (fast kernel) against the per-pair kernel, snapshot by
    snapshot."""
    data = cs.offline_pairs(env, env.ref)
    obj = cs.objective("cdpo", beta=2.0, label_smoothing=0.1)
    run = cs.train(env, obj, data, steps=400, lr=0.2, record=8)
    rlp = np.ascontiguousarray(env.ref_logp2d)
    terms = obj.terms(env, data)
    assert terms[5] == _dpo_fast.FACTORED
    for snap, loss in zip(run.snapshots, run.history["loss"]):
        lp = np.ascontiguousarray(np.log(snap))
        generic = population_pairwise_sum(terms[0], terms[1], terms[14], lp, rlp, terms[3],
                                      np.zeros_like(lp))
        assert loss == pytest.approx(generic, rel=1e-12)


def test_rank_one_test_reads_weights_without_forming_s():
    """rank_one_factor on S and the precompute's test on W agree, including a near miss."""
    env = cs.random_bandit(70, n_contexts=2, seed=1)
    data = cs.offline_pairs(env, env.ref)
    sym = data.weights + np.swapaxes(data.weights, 1, 2)
    v = _dpo_fast.rank_one_factor(sym)
    np.testing.assert_allclose(v[:, :, None] * v[:, None, :], sym, rtol=1e-14, atol=0)
    bumped = data.weights.copy()
    bumped[1, 65, 3] *= 1 + 1e-12                     # one entry off rank one, in a far tile
    assert _dpo_fast.rank_one_factor(bumped + np.swapaxes(bumped, 1, 2)) is None
    s, _, _, kernel = _dpo_fast.dpo_fast_precompute(bumped, 0.0, False, 0.5)
    assert kernel == _dpo_fast.DENSE and s.shape == (2, 70, 70)
