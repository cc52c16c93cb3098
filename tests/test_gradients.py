"""Tests for coverage_sim.gradients: exact, sampled and explicit-batch gradients w.r.t. the logits.

Oracles: torch autograd of the objective written out in torch (``losses.population_loss`` for the
pairwise term, the linear, KL and reward terms by hand, online samplers detached), central finite
differences of the loss, and the identity between one sampled draw and the batch it evaluates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coverage_sim as cs
from coverage_sim.losses import population_loss
from objective_torch import frozen_loss_torch

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _relmax(a, b):
    return float(np.abs(np.asarray(a) - b).max() / max(np.abs(b).max(), 1e-300))


ENV = cs.random_bandit(6, n_contexts=2, seed=5)
DATA = cs.offline_pairs(ENV, ENV.ref, labels="bradley_terry")
LOGITS = np.log(ENV.ref) + np.random.default_rng(2).normal(size=ENV.shape)
OBJECTIVES = [
    ("sigmoid", dict(beta=0.5), True), ("ipo", dict(beta=0.5), True),
    ("robust", dict(beta=0.5, label_smoothing=0.1), True), ("nca_pair", dict(beta=0.5), True),
    ("apo_down", dict(beta=0.5), True), ("sft", {}, True), ("aot", dict(beta=0.5), True),
    ("aot_unpaired", dict(beta=0.5), True),
    ("best_of_n", dict(n=3), True), ("awr", dict(beta=2.0), True), ("rlhf", dict(beta=0.3), False),
    ("online_dpo", dict(beta=0.5), False), ("online_ipo", dict(beta=0.5), False),
    ("iterative_dpo", dict(beta=0.5, n=3), False), ("hypo", dict(beta=0.5, lam=0.4), True),
    ("vpo", dict(beta=0.5, alpha=0.7), False), ("vpo", dict(beta=0.5, alpha=0.7, mode="offline"), True),
    ("rpo", dict(beta=0.5), True), ("mpo", dict(beta=0.5), True),
    ("sigmoid", dict(beta=0.5, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.4),
     True),
    ("sigmoid", dict(beta=0.5, use_weighting=True), True),
    ("kto", dict(beta=0.5), True), ("apo_zero_unpaired", dict(beta=0.5), True),
    ("nash_md", dict(beta=0.5, mixture_coef=0.3), False), ("xpo", dict(beta=0.5, alpha=0.2), False),
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(OBJECTIVES)]


def _torch_loss(env, obj, logits_t, data):
    """The objective at ``logits_t`` in torch (tests/objective_torch.py); online samplers (and
    iterative DPO's pairs, Nash-MD's mixture, WPO's weights, KTO's z0) held fixed at the current
    policy, as the semi-gradient."""
    lp = torch.log_softmax(logits_t, dim=-1).reshape(env.n_contexts, env.n_responses)
    terms = obj.terms(env, data, lp.detach().numpy())
    return frozen_loss_torch(obj, env, terms, lp)


@pytest.mark.parametrize("name,params,needs_data", OBJECTIVES, ids=IDS)
def test_gradient_matches_torch_autograd(name, params, needs_data):
    obj = cs.objective(name, **params)
    data = DATA if needs_data else None
    loss, grad = cs.gradient(ENV, obj, LOGITS, data)
    logits_t = torch.tensor(LOGITS, requires_grad=True)
    ref = _torch_loss(ENV, obj, logits_t, data)
    ref.backward()
    assert abs(loss - ref.item()) <= 1e-12 * max(abs(ref.item()), 1.0)
    assert _relmax(grad, logits_t.grad.numpy()) <= 1e-10


# objectives whose loss is a function of the logits alone (WPO's weights and KTO's z0 are held fixed)
FD_CASES = [c for c in OBJECTIVES if (c[0] in ("sigmoid", "ipo", "nca_pair", "best_of_n", "awr",
                                               "rlhf", "hypo", "rpo", "mpo", "apo_zero_unpaired")
                                      or c[1].get("mode") == "offline")
            and not c[1].get("use_weighting")]


@pytest.mark.parametrize("name,params,needs_data", FD_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(FD_CASES)])
def test_gradient_matches_finite_differences(name, params, needs_data):
    # objectives whose loss is a function of the logits alone (no sampler held fixed)
    obj = cs.objective(name, **params)
    data = DATA if needs_data else None
    _, grad = cs.gradient(ENV, obj, LOGITS, data)
    h = 1e-5
    fd = np.zeros_like(LOGITS)
    for idx in np.ndindex(LOGITS.shape):
        up, down = LOGITS.copy(), LOGITS.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (cs.gradient(ENV, obj, up, data)[0] - cs.gradient(ENV, obj, down, data)[0]) / (2 * h)
    assert _relmax(grad, fd) <= 1e-7


def test_gradient_at_kernel_sizes_matches_torch():
    # the sizes the benchmarks use, through the fast DPO kernel (K = 1000) and the online path
    env = cs.random_bandit(1000, seed=0, min_ref=1e-4)
    logits = np.log(env.ref) + np.random.default_rng(0).normal(size=env.shape)
    data = cs.offline_pairs(env, env.ref)
    for obj, d in ((cs.objective("sigmoid", beta=0.1), data), (cs.objective("rlhf", beta=0.1), None),
                   (cs.objective("online_dpo", beta=0.1), None)):
        _, grad = cs.gradient(env, obj, logits, d)
        logits_t = torch.tensor(logits, requires_grad=True)
        _torch_loss(env, obj, logits_t, d).backward()
        assert _relmax(grad, logits_t.grad.numpy()) <= 1e-10


def test_gradient_with_partial_support_keeps_excluded_responses_at_zero():
    env = cs.Bandit(reward=[1.0, 0.0, -1.0, 2.0], ref=[0.5, 0.3, 0.2, 0.0])
    logits = np.array([0.1, -0.3, 0.2, -np.inf])
    for name in ("rlhf", "online_dpo"):
        loss, grad = cs.gradient(env, name, logits)
        assert np.isfinite(loss) and np.isfinite(grad).all() and grad[3] == 0.0
        _, sgrad = cs.sampled_gradient(env, name, logits, batch_size=64)
        assert np.isfinite(sgrad).all() and sgrad[3] == 0.0


@pytest.mark.parametrize("bad", [
    np.array([0.0, np.nan, 0.0, -np.inf]), np.array([0.0, np.inf, 0.0, -np.inf]),
    np.array([0.0, 0.0, 0.0, 1.0]),           # mass where ref is 0
    np.array([-np.inf, 0.0, 0.0, -np.inf]),  # no mass where ref is positive
    np.zeros(3)])
def test_logits_are_validated(bad):
    env = cs.Bandit(reward=[1.0, 0.0, -1.0, 2.0], ref=[0.5, 0.3, 0.2, 0.0])
    with pytest.raises(ValueError, match="logits"):
        cs.gradient(env, "rlhf", bad)


def test_min_reward_gap_is_the_exact_truncated_pair_measure():
    # with deterministic labels, dropping the pair (0, 1) is the same as labelling it "never
    # drawn": P[0, 1] = P[1, 0] = 0 in the engine's W = 2 rho pi_i pi_j P_ij
    env = cs.Bandit(reward=[1.0, 0.9, 0.0], ref=[0.4, 0.3, 0.3])
    logits = np.array([0.2, -0.1, 0.0])
    cut = cs.gradient(env, cs.objective("online_dpo", labels="deterministic"), logits,
                      min_reward_gap=0.5)
    lp = cs.sampling.logits_to_logp(env, logits)
    P = cs.preferences.deterministic(env.reward)
    P[0, 0, 1] = P[0, 1, 0] = 0.0
    P[0, 0, 0] = P[0, 1, 1] = P[0, 2, 2] = 0.0  # the diagonal has no reward gap either
    pi = np.exp(lp)
    W = 2.0 * pi[:, :, None] * pi[:, None, :] * P
    W_full = np.zeros_like(W)
    W_full[:] = W
    logits_t = torch.tensor(logits, requires_grad=True)
    lp_t = torch.log_softmax(logits_t, dim=-1).reshape(1, 3)
    ref = population_loss("sigmoid", lp_t, torch.tensor(env.ref_logp2d), W_full, beta=0.1)
    ref.backward()
    assert cut[0] == pytest.approx(ref.item(), rel=1e-12)
    assert _relmax(cut[1], logits_t.grad.numpy()) <= 1e-10
    with pytest.raises(ValueError, match="min_reward_gap"):
        cs.gradient(env, "rlhf", logits, min_reward_gap=0.5)


def test_min_reward_gap_keeps_pairs_whose_gap_equals_it():
    # Tajwar et al.'s filter drops gaps *below* the threshold: with rewards 1, 0.5, 0 (exact in
    # binary) every pair of distinct responses has a gap >= 0.5, so nothing is truncated (the
    # diagonal, gap 0, carries no DPO gradient)
    env = cs.Bandit(reward=[1.0, 0.5, 0.0], ref=[0.4, 0.3, 0.3])
    obj = cs.objective("online_dpo", labels="deterministic")
    logits = np.array([0.2, -0.1, 0.0])
    full = cs.gradient(env, obj, logits)
    at_gap = cs.gradient(env, obj, logits, min_reward_gap=0.5)
    assert at_gap[1] == pytest.approx(full[1], rel=1e-12, abs=0)
    above = cs.gradient(env, obj, logits, min_reward_gap=0.75)   # drops (0, 1) and (1, 2)
    assert _relmax(above[1], full[1]) > 0.1


def test_sampled_gradient_is_the_gradient_of_the_drawn_batch():
    for name, data, est in (("sigmoid", DATA, {}), ("rlhf", None, dict(group_size=3)),
                            ("online_dpo", None, dict(group_size=4, pairs="all")),
                            ("vpo", None, {}), ("best_of_n", DATA, {})):
        loss, grad = cs.sampled_gradient(ENV, name, LOGITS, data, batch_size=8, seed=11, **est)
        batch = cs.draw_batch(ENV, name, LOGITS, data, batch_size=8, seed=11, **est)
        loss_b, grad_b = cs.batch_gradient(ENV, name, LOGITS, batch)
        assert loss == loss_b and np.array_equal(grad, grad_b)
        losses, grads = cs.sampled_gradients(ENV, name, LOGITS, data, batch_size=8, draws=3,
                                             seed=11, **est)
        assert losses[0] == loss and np.array_equal(grads[0], grad)
        assert not np.array_equal(grads[1], grads[0])


def test_aot_minibatch_is_trls_batch_sorted_loss():
    # TRL sorts over the batch: population_loss with W = counts / n is that batch mean (torch)
    obj = cs.objective("aot", beta=0.5)
    batch = cs.draw_batch(ENV, obj, LOGITS, DATA, batch_size=32, seed=3)
    W = np.zeros((ENV.n_contexts, ENV.n_responses, ENV.n_responses))
    np.add.at(W, (batch.pair_context, batch.pair_winner, batch.pair_loser), batch.pair_weight)
    logits_t = torch.tensor(LOGITS, requires_grad=True)
    lp = torch.log_softmax(logits_t, dim=-1)
    ref = population_loss("aot", lp, torch.tensor(ENV.ref_logp2d), W, beta=0.5)
    ref.backward()
    loss, grad = cs.batch_gradient(ENV, obj, LOGITS, batch)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    assert _relmax(grad, logits_t.grad.numpy()) <= 1e-10
