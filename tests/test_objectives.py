"""Every objective's exact gradient against torch autograd and finite differences.

The torch side recomputes each objective's population loss from the per-pair reference definitions
(``losses.population_loss``) and plain torch for the KL, reward and log-likelihood terms, pushes it through
the policy parameterisation with autograd, and compares with the numba engine + policy pullback.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coverage_sim as cs
from coverage_sim import _dpo_fast, _engine
from coverage_sim.losses import population_loss
from coverage_sim.objectives import OBJECTIVES

torch.set_default_dtype(torch.float64)

ALL_NAMES = sorted(OBJECTIVES)


def _env(seed, n_ctx=2, k=6, partial=False):
    rng = np.random.default_rng(seed)
    ref = rng.dirichlet(np.ones(k), size=n_ctx) + 0.05
    ref /= ref.sum(axis=1, keepdims=True)
    env = cs.Bandit(reward=rng.uniform(-2, 2, size=(n_ctx, k)), ref=ref,
                    context_weights=rng.dirichlet(np.ones(n_ctx)))
    behavior = ref.copy()
    if partial:
        behavior[:, -2:] = 0.0
        behavior /= behavior.sum(axis=1, keepdims=True)
    return env, cs.offline_pairs(env, behavior, labels="bradley_terry")


def _objective(name, beta=0.7):
    spec = OBJECTIVES[name]
    params = {}
    if "beta" in spec.defaults:
        params["beta"] = beta
    if name in ("exo_pair",):
        params["label_smoothing"] = 0.05
    if name in ("cdpo", "robust", "aot", "aot_unpaired"):
        params["label_smoothing"] = 0.1
    if name == "vpo":
        params["alpha"] = 0.3
    if name == "iterative_dpo":
        params["n"] = 3
    return cs.objective(name, **params)


def _frozen_loss_torch(obj, env, data, terms, lp_t):
    """The population loss in torch with the same (sampler-fixed) terms as the engine."""
    lp_np = lp_t.detach().numpy()
    (_code, _prm, _source, weights, _probs, _fast, _s, _d, _a, linear, kl_coef, reward_coef, reward,
     rho) = _freeze_sampler(terms, lp_np)
    rlp = torch.from_numpy(env.ref_logp2d)
    loss = torch.zeros(())
    if obj.pair_loss_name is not None:
        loss = loss + population_loss(obj.pair_loss_name, lp_t, rlp, weights,
                                      **obj._pair_params())
    mask = torch.from_numpy(linear != 0)
    loss = loss - torch.where(mask, torch.from_numpy(linear) * lp_t, 0.0).sum()
    pi_t = torch.exp(lp_t)
    rho_t = torch.tensor(rho)[:, None]
    support = torch.from_numpy(np.exp(lp_np) > 0)
    if kl_coef:
        loss = loss + kl_coef * torch.where(support, rho_t * pi_t * (lp_t - rlp), 0.0).sum()
    if reward_coef:
        loss = loss - reward_coef * (rho_t * pi_t * torch.tensor(reward)).sum()
    return loss


def _freeze_sampler(terms, lp):
    """Online terms with the pair weights of ``lp`` baked in: the semi-gradient is their gradient."""
    if terms[2] != _engine.ONLINE:
        return terms
    pi, probs, rho = np.exp(lp), terms[4], terms[13]
    weights = 2 * rho[:, None, None] * pi[:, :, None] * pi[:, None, :] * probs
    return terms[:2] + (_engine.OFFLINE, weights) + terms[4:]


def _policy_logp_torch(policy, env, theta_t):
    if isinstance(policy, cs.TabularSoftmax):
        logits = theta_t.reshape(env.n_contexts, env.n_responses)
    else:
        feats = torch.from_numpy(policy.features_for(env))
        logits = torch.from_numpy(policy.base_for(env)) + feats @ theta_t
    return torch.log_softmax(logits, dim=-1)


def _policies(env):
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(env.n_contexts, env.n_responses, 3))
    return [cs.TabularSoftmax(init="random"), cs.LogLinear(feats, init=rng.normal(size=3))]


def _rel_err(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("partial", [False, True])
def test_gradient_matches_torch_autograd(name, partial):
    env, data = _env(1, partial=partial)
    obj = _objective(name)
    for policy in _policies(env):
        theta = policy.init_params(env, np.random.default_rng(2))
        lp = env.as2d(policy.logp(env, theta), "lp")
        terms = obj.terms(env, data, lp)
        grad_lp = np.zeros_like(lp)
        wbuf = np.zeros((env.n_contexts, env.n_responses, env.n_responses))
        loss = _engine.objective_grad(terms, lp, env.ref_logp2d, grad_lp, True, False, wbuf)
        ours = policy.grad(env, theta, grad_lp)

        theta_t = torch.tensor(theta, requires_grad=True)
        loss_t = _frozen_loss_torch(obj, env, data, terms, _policy_logp_torch(policy, env, theta_t))
        loss_t.backward()
        assert loss == pytest.approx(loss_t.item(), rel=1e-12, abs=1e-13)
        assert _rel_err(ours, theta_t.grad.numpy()) <= 1e-10, (name, policy)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_gradient_matches_finite_differences(name):
    env, data = _env(3, n_ctx=1, k=5)
    obj = _objective(name)
    policy = cs.TabularSoftmax(init="random")
    theta = policy.init_params(env, np.random.default_rng(4))
    lp0 = env.as2d(policy.logp(env, theta), "lp")
    terms = _freeze_sampler(obj.terms(env, data, lp0), lp0)
    wbuf = np.zeros((1, 5, 5))

    def loss_at(th):
        lp = env.as2d(policy.logp(env, th), "lp")
        return _engine.objective_grad(terms, lp, env.ref_logp2d, np.zeros_like(lp), True, False,
                                      wbuf)

    grad_lp = np.zeros_like(lp0)
    _engine.objective_grad(terms, lp0, env.ref_logp2d, grad_lp, True, False, wbuf)
    ours = policy.grad(env, theta, grad_lp)
    h = 1e-5
    fd = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        fd[i] = (-loss_at(theta + 2 * e) + 8 * loss_at(theta + e) - 8 * loss_at(theta - e)
                 + loss_at(theta - 2 * e)) / (12 * h)
    assert _rel_err(ours, fd) <= 1e-7, name


@pytest.mark.parametrize("name", ["sigmoid", "cdpo", "robust", "sigmoid_norm", "ipo", "hinge",
                                  "exo_pair", "online_dpo", "hypo"])
def test_extreme_logits_stay_finite_and_exact(name):
    """|beta h| up to 1e3: no NaN or inf, and equal to autograd to 1e-10 relative (max-norm).

    The logits put responses at +-500 and +-300 and some near 0, with the top two tied: the extreme
    pairs are there, and the moderate ones (and the tied top pair, which carries the online
    objectives' pair mass) keep a gradient of order 0.1 to compare relatively. With logits spread
    evenly over [-500, 500] the gradient of exo_pair and online DPO would be ~1e-61, and any
    absolute tolerance would compare nothing.
    """
    env, data = _env(7, n_ctx=1, k=8)
    obj = _objective(name, beta=1.0)
    theta = np.array([-500.0, -300.0, -1.0, 0.0, 0.5, 1.0, 500.0, 500.0])
    policy = cs.TabularSoftmax()
    lp = env.as2d(policy.logp(env, theta), "lp")
    terms = obj.terms(env, data, lp)
    grad_lp = np.zeros_like(lp)
    wbuf = np.zeros((1, 8, 8))
    loss = _engine.objective_grad(terms, lp, env.ref_logp2d, grad_lp, True, False, wbuf)
    ours = policy.grad(env, theta, grad_lp)
    assert np.isfinite(loss) and np.isfinite(ours).all()
    theta_t = torch.tensor(theta, requires_grad=True)
    _frozen_loss_torch(obj, env, data, terms, _policy_logp_torch(policy, env, theta_t)).backward()
    ref = theta_t.grad.numpy()
    assert np.abs(ref).max() > 1e-3, "the comparison needs a gradient of measurable size"
    # Where autograd's sigmoid underflows to 0 ours may keep 1e-60: far below 1e-10 * max|ref|.
    assert np.abs(ours - ref).max() <= 1e-10 * np.abs(ref).max()


@pytest.mark.parametrize("factored", [True, False])
def test_fast_dpo_kernel_equals_generic_kernel(factored):
    """The S = W + W^T DPO kernels (rank-one factored and dense) and the per-pair kernel agree, both
    in and past the exp-free range."""
    env, data = _env(11, n_ctx=2, k=30, partial=True)
    for scale in (1.0, 2000.0):
        for name, extra in (("sigmoid", {}), ("cdpo", {"label_smoothing": 0.2}),
                            ("robust", {"label_smoothing": 0.2}), ("sigmoid_norm", {"length": 3.0})):
            obj = cs.objective(name, beta=0.9, **extra)
            lp = np.log(env.ref2d) + scale * np.random.default_rng(1).normal(size=(2, 30))
            lp -= np.log(np.exp(lp - lp.max(1, keepdims=True)).sum(1, keepdims=True)) + lp.max(
                1, keepdims=True)
            terms = obj.terms(env, data, factored=factored)
            assert terms[5] == (_dpo_fast.FACTORED if factored else _dpo_fast.DENSE)
            fast = np.zeros_like(lp)
            wbuf = np.zeros((0, 0, 0))
            _engine.objective_grad(terms, lp, env.ref_logp2d, fast, False, False, wbuf)
            par = np.zeros_like(lp)
            _engine.objective_grad(terms, lp, env.ref_logp2d, par, False, True, wbuf)
            slow_terms = terms[:5] + (0,) + terms[6:]
            slow = np.zeros_like(lp)
            _engine.objective_grad(slow_terms, lp, env.ref_logp2d, slow, False, False, wbuf)
            assert _rel_err(fast, slow) <= 1e-10, (name, scale)
            assert _rel_err(par, slow) <= 1e-10, (name, scale)


def test_rank_one_pair_matrix_takes_the_factored_kernel():
    """Exact mu x mu pairs give S = W + W^T = 2 rho mu mu^T for every label model; sampled pairs
    do not, and keep the dense kernel."""
    env = cs.random_bandit(12, n_contexts=2, seed=4)
    behavior = cs.restrict_support(env.ref, np.arange(12) % 4 != 0)
    for labels in ("bradley_terry", "deterministic"):
        data = cs.offline_pairs(env, behavior, labels=labels)
        terms = cs.objective("sigmoid", beta=0.5).terms(env, data)
        assert terms[5] == _dpo_fast.FACTORED
        v = terms[6][:, 0, :]
        sym = data.weights + np.swapaxes(data.weights, 1, 2)
        np.testing.assert_allclose(v[:, :, None] * v[:, None, :], sym, rtol=1e-14, atol=0)
        mu = np.reshape(behavior, (2, 12))
        np.testing.assert_allclose(sym, 2 * env.context_weights[:, None, None] * mu[:, :, None]
                                   * mu[:, None, :], rtol=1e-13, atol=0)
    sampled = cs.offline_pairs(env, behavior, n=500, seed=0)
    assert cs.objective("sigmoid", beta=0.5).terms(env, sampled)[5] == _dpo_fast.DENSE
    assert _dpo_fast.rank_one_factor(np.zeros((1, 3, 3))) is None


def test_online_objective_holds_sampler_fixed():
    """Online DPO's gradient is the semi-gradient: pairs from pi_t are not differentiated."""
    env, _ = _env(2, n_ctx=1, k=4)
    obj = cs.objective("online_dpo", beta=0.5)
    lp = env.ref_logp2d + np.array([[0.3, -0.2, 0.1, 0.0]])
    lp -= np.log(np.exp(lp).sum())
    _, grad = obj.loss_and_grad(env, lp)
    pi = np.exp(lp)
    probs = cs.preferences.bradley_terry(env.reward2d)
    weights = 2 * pi[:, :, None] * pi[:, None, :] * probs
    data = cs.PairData(weights=weights, shape=env.shape, behavior=None, n=None, labels="bt",
                       source="frozen pi x pi")
    _, grad_offline = cs.objective("sigmoid", beta=0.5).loss_and_grad(env, lp, data)
    np.testing.assert_allclose(grad, grad_offline, rtol=1e-12, atol=1e-15)


def test_alpha_zero_vpo_is_dpo_and_optimism_gradient_identity():
    """C13: d/dtheta alpha beta E_{pi_cal} log pi = alpha beta (pi_cal - pi); alpha = 0 is DPO."""
    env, data = _env(4, n_ctx=1, k=5)
    lp = env.ref_logp2d + np.random.default_rng(0).normal(size=(1, 5))
    lp -= np.log(np.exp(lp).sum())
    policy = cs.TabularSoftmax()
    theta = lp.ravel()
    base = cs.objective("online_dpo", beta=0.5).loss_and_grad(env, lp)
    zero = cs.objective("vpo", beta=0.5, alpha=0.0).loss_and_grad(env, lp)
    assert zero[0] == base[0]
    np.testing.assert_array_equal(zero[1], base[1])
    alpha, beta = 0.3, 0.5
    opt = cs.objective("vpo", beta=beta, alpha=alpha).loss_and_grad(env, lp)
    extra = policy.grad(env, theta, opt[1] - base[1])
    expected = alpha * beta * (np.exp(lp) - env.ref2d).ravel()
    np.testing.assert_allclose(extra, -expected, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------------------------------------
# Each objective's loss against its documented formula, written out here in numpy. The gradient
# tests above take the engine's compiled terms as given; these pin the terms themselves.


def _by_formula(name, env, lp, data, beta=0.7, **params):
    """The population loss of objective ``name`` at ``lp`` (X, K), from its convention text."""
    rho, r, ref = env.context_weights, env.reward2d, env.ref2d
    pi = np.exp(lp)
    kl = (pi * (lp - env.ref_logp2d)).sum(axis=1)
    mu = np.asarray(data.behavior) if data is not None else None
    if name == "rlhf":
        reward = r if params.get("reward") is None else np.reshape(params["reward"], r.shape)
        return float(-(rho * ((pi * reward).sum(axis=1) - beta * kl)).sum())
    if name == "awr":
        return float(-(rho[:, None] * mu * np.exp(r / beta) * lp).sum())
    if name == "best_of_n":
        q = np.reshape(cs.best_of_n_policy(mu, r, params["n"]), r.shape)
        return float(-(rho[:, None] * q * lp).sum())
    if name == "hypo":
        return float(population_loss("sigmoid", lp, env.ref_logp2d, data.weights, beta=beta)
                     + params["lam"] * (rho * kl).sum())
    if name in ("online_dpo", "vpo"):
        eps = params.get("label_noise", 0.0)
        p = 1.0 / (1.0 + np.exp(-(r[:, :, None] - r[:, None, :])))
        p = (1.0 - eps) * p + eps * (1.0 - p)
        if name == "vpo" and params["mode"] == "offline":
            dpo = population_loss("sigmoid", lp, env.ref_logp2d, data.weights, beta=beta)
            return float(dpo - params["alpha"] * beta * (data.chosen.reshape(lp.shape) * lp).sum())
        weights = 2.0 * rho[:, None, None] * pi[:, :, None] * pi[:, None, :] * p
        dpo = population_loss("sigmoid", lp, env.ref_logp2d, weights, beta=beta)
        if name == "vpo":
            return float(dpo + params["alpha"] * beta * (rho[:, None] * ref * lp).sum())
        return float(dpo)
    raise AssertionError(name)


@pytest.mark.parametrize("name,params", [
    ("rlhf", {}), ("rlhf", {"reward": "proxy"}), ("awr", {}), ("best_of_n", {"n": 3}),
    ("hypo", {"lam": 0.3}), ("online_dpo", {}), ("online_dpo", {"label_noise": 0.2}),
    ("vpo", {"alpha": 0.3, "mode": "online"}), ("vpo", {"alpha": 0.3, "mode": "offline"}),
], ids=["rlhf", "rlhf-proxy", "awr", "best_of_n", "hypo", "online_dpo", "online_dpo-noise",
        "vpo-online", "vpo-offline"])
def test_loss_matches_its_documented_formula(name, params):
    env, _ = _env(21, n_ctx=2, k=5)
    rng = np.random.default_rng(3)
    mu = rng.dirichlet(np.ones(5), size=2)
    data = cs.offline_pairs(env, mu)
    lp = rng.normal(size=(2, 5))
    lp -= np.log(np.exp(lp).sum(axis=1, keepdims=True))
    if params.get("reward") == "proxy":
        params = {"reward": rng.normal(size=(2, 5))}
    obj = cs.objective(name, beta=0.7, **params) if "beta" in OBJECTIVES[name].defaults else \
        cs.objective(name, **params)
    uses = data if obj.needs_data else None
    loss, _ = obj.loss_and_grad(env, lp, uses)
    assert loss == pytest.approx(_by_formula(name, env, lp, uses, **params), rel=1e-12)
    if obj.needs_data and name in ("awr", "best_of_n"):
        # without a recorded behaviour policy, mu is read off the pairs' normalised response mass
        bare = cs.PairData(weights=data.weights, shape=data.shape)
        assert obj.loss_and_grad(env, lp, bare)[0] == pytest.approx(loss, rel=1e-10)
