"""Every objective's exact gradient against torch autograd and finite differences.

The torch side recomputes each objective's population loss from the per-pair reference definitions
(``losses.population_loss``) and plain torch for the KL, reward, log-likelihood, KTO and Nash-MD terms,
pushes it through the policy parameterisation with autograd, and compares with the numba engine + policy
pullback. The cases are every registered objective plus TRL's DPOTrainer options (f-divergences, WPO,
list-valued loss types) and the parameters of KTO, Nash-MD and XPO.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import coverage_sim as cs
from coverage_sim import _dpo_fast, _engine
from coverage_sim import _pair_kernels as _pk
from coverage_sim.losses import population_loss, wpo_weights
from coverage_sim.objectives import OBJECTIVES
from objective_torch import freeze_pairs, frozen_loss_torch

pytestmark = pytest.mark.usefixtures("float64_default_dtype")

ALL_NAMES = sorted(OBJECTIVES)
# (id, objective name or list, extra parameters)
VARIANTS = [
    ("sigmoid@js", "sigmoid", dict(f_divergence_type="js_divergence")),
    ("ipo@fkl", "ipo", dict(f_divergence_type="forward_kl")),
    ("bco_pair@alpha", "bco_pair", dict(f_divergence_type="alpha_divergence",
                                        f_alpha_divergence_coef=0.3)),
    ("apo_down@fkl", "apo_down", dict(f_divergence_type="forward_kl")),
    ("sigmoid+wpo", "sigmoid", dict(use_weighting=True)),
    ("robust+wpo@js", "robust", dict(use_weighting=True, f_divergence_type="js_divergence")),
    ("rpo@fkl", "rpo", dict(f_divergence_type="forward_kl")),
    ("ipo+hinge+aot", ["ipo", "hinge", "aot"], dict(loss_weights=[1.0, 0.5, 0.2])),
    ("exo+nca+wpo", ["exo_pair", "nca_pair"], dict(use_weighting=True, loss_weights=[0.3, 1.0])),
    ("kto-weights", "kto", dict(desirable_weight=1.33, undesirable_weight=0.7)),
    ("xpo-ipo-bt", "xpo", dict(loss_type="ipo", labels="bradley_terry", alpha=0.2)),
    ("nash_md-m0", "nash_md", dict(mixture_coef=0.0)),
    ("nash_md-m1-det", "nash_md", dict(mixture_coef=1.0, labels="deterministic")),
]
CASES = [(n, n, {}) for n in ALL_NAMES] + VARIANTS
CASE_IDS = [c[0] for c in CASES]


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


def _objective(name, beta=0.7, **extra):
    names = [name] if isinstance(name, str) else name
    defaults = (OBJECTIVES[name].defaults if isinstance(name, str)
                else {k: v for n in names for k, v in OBJECTIVES[n].defaults.items()})
    params = {}
    if "beta" in defaults:
        params["beta"] = beta
    if "exo_pair" in names:
        params["label_smoothing"] = 0.05
    if {"cdpo", "robust", "aot", "aot_unpaired"} & set(names):
        params["label_smoothing"] = 0.1
    if name in ("vpo", "xpo"):
        params["alpha"] = 0.3
    if name == "iterative_dpo":
        params["n"] = 3
    return cs.objective(name, **{**params, **extra})


def _freeze_sampler(terms, lp, rlp):
    """Terms with everything the engine holds fixed at ``lp`` baked in, and the reference to use.

    Online pair weights become offline weights; WPO weights scale them (and the flag is cleared);
    Nash-MD's REINFORCE term becomes the linear term it is at a fixed sampler; KTO's z0 becomes a
    shift of the reference with no mismatched pairs. Finite differences of the frozen loss are then
    the engine's semi-gradient. Returns ``(terms, rlp)``.
    """
    t = freeze_pairs(terms, lp, rlp)
    pi, probs, rho = np.exp(lp), t[4], t[13]
    if t[0].size and (t[1][:, _pk.P_USE_WEIGHTING] != 0).any():
        w = wpo_weights(lp)
        t[3] = t[3] * w[:, :, None] * w[:, None, :]
        t[1] = t[1].copy()
        t[1][:, _pk.P_USE_WEIGHTING] = 0.0
        t[5] = 0
    if t[19] == _engine.NASH_MD:
        beta, m = t[20]
        mix = np.exp(m * rlp + (1 - m) * lp)
        mix /= mix.sum(axis=1, keepdims=True)
        win = np.einsum("xj,xij->xi", mix, probs)
        t[9] = t[9] - rho[:, None] * pi * (beta * (lp - rlp) - (win - 0.5))
        t[19] = 0
    if t[15] == _pk.KTO:
        z0 = max(float((t[18] * (lp - rlp)).sum()), 0.0)
        t[18] = np.zeros_like(t[18])
        rlp = rlp + z0
    return tuple(_engine.kernel_array(a, a.dtype) if isinstance(a, np.ndarray) else a
                 for a in t), np.ascontiguousarray(rlp)


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


@pytest.mark.parametrize("case,name,extra", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("partial", [False, True])
def test_gradient_matches_torch_autograd(case, name, extra, partial):
    env, data = _env(1, partial=partial)
    obj = _objective(name, **extra)
    if obj.unpaired and partial:
        # KTO's mismatched pairs need env.ref > 0 on the data's responses in every context, which
        # the partial env has: exercise UnpairedData with its own partial support as well.
        data = cs.unpaired_data(env, data.behavior, labels="bradley_terry")
    for policy in _policies(env):
        theta = policy.init_params(env, np.random.default_rng(2))
        lp = env.as2d(policy.logp(env, theta), "lp")
        terms = obj.terms(env, data, lp)
        grad_lp = np.zeros_like(lp)
        wbuf = np.zeros((env.n_contexts, env.n_responses, env.n_responses))
        loss = _engine.objective_grad(terms, lp, env.ref_logp2d, grad_lp, True, False, wbuf)
        ours = policy.grad(env, theta, grad_lp)

        theta_t = torch.tensor(theta, requires_grad=True)
        loss_t = frozen_loss_torch(obj, env, terms, _policy_logp_torch(policy, env, theta_t))
        loss_t.backward()
        assert loss == pytest.approx(loss_t.item(), rel=1e-12, abs=1e-13)
        assert _rel_err(ours, theta_t.grad.numpy()) <= 1e-10, (case, policy)
        assert np.abs(ours).max() > 0


@pytest.mark.parametrize("case,name,extra", CASES, ids=CASE_IDS)
def test_gradient_matches_finite_differences(case, name, extra):
    env, data = _env(3, n_ctx=1, k=5)
    obj = _objective(name, **extra)
    policy = cs.TabularSoftmax(init="random")
    theta = policy.init_params(env, np.random.default_rng(4))
    lp0 = env.as2d(policy.logp(env, theta), "lp")
    live = obj.terms(env, data, lp0)
    terms, rlp = _freeze_sampler(live, lp0, env.ref_logp2d)
    wbuf = np.zeros((1, 5, 5))

    def loss_at(th):
        lp = env.as2d(policy.logp(env, th), "lp")
        return _engine.objective_grad(terms, lp, rlp, np.zeros_like(lp), True, False, wbuf)

    grad_lp = np.zeros_like(lp0)
    _engine.objective_grad(live, lp0, env.ref_logp2d, grad_lp, True, False, wbuf)
    ours = policy.grad(env, theta, grad_lp)
    h = 1e-5
    fd = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        fd[i] = (-loss_at(theta + 2 * e) + 8 * loss_at(theta + e) - 8 * loss_at(theta - e)
                 + loss_at(theta - 2 * e)) / (12 * h)
    assert _rel_err(ours, fd) <= 1e-7, case


_EXTREME = [("sigmoid", {}), ("cdpo", {}), ("robust", {}), ("sigmoid_norm", {}), ("ipo", {}),
            ("hinge", {}), ("exo_pair", {}), ("online_dpo", {}), ("hypo", {}), ("rpo", {}),
            ("mpo", {}), ("kto", {}), ("apo_zero_unpaired", {}), ("nash_md", {}), ("xpo", {}),
            ("sigmoid", dict(f_divergence_type="js_divergence")),
            # log-ratios reach -1000 here: forward KL's e^{-u} would pass float64's range (the loss
            # itself does); alpha-divergence scores e^{(a-1) u} stay inside it for a >= 0.3.
            ("nca_pair", dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.8)),
            ("bco_pair", dict(f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.4)),
            ("sigmoid", dict(use_weighting=True))]


@pytest.mark.parametrize("name,extra", _EXTREME,
                         ids=[f"{n}-{'-'.join(map(str, e.values()))}" for n, e in _EXTREME])
def test_extreme_logits_stay_finite_and_exact(name, extra):
    """|beta h| up to 1e3: no NaN or inf, and equal to autograd to 1e-10 relative (max-norm).

    The logits put responses at +-500 and +-300 and some near 0, with the top two tied: the extreme
    pairs are there, and the moderate ones (and the tied top pair, which carries the online
    objectives' pair mass) keep a gradient of order 0.1 to compare relatively. With logits spread
    evenly over [-500, 500] the gradient of exo_pair and online DPO would be ~1e-61, and any
    absolute tolerance would compare nothing.
    """
    env, data = _env(7, n_ctx=1, k=8)
    obj = _objective(name, beta=1.0, **extra)
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
    frozen_loss_torch(obj, env, terms, _policy_logp_torch(policy, env, theta_t)).backward()
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


# TRL's trainers written out (huggingface/trl commit f2cd57710ae345ea6428ae95363267fcf38a3dc8) and
# compared with the population objectives: KTOTrainer._compute_loss, NashMDTrainer._compute_losses
# with GeometricMixtureWrapper, XPOTrainer._compute_losses.

F = torch.nn.functional


def _trl_kto_loss(loss_type, logps, ref_logps, labels, kl_logps, ref_kl_logps, beta, w_des, w_und):
    """TRL KTOTrainer._compute_loss, the loss part (one process)."""
    if loss_type == "kto":
        kl = (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
    else:
        kl = torch.zeros(1)
    chosen_logratios = logps[labels] - ref_logps[labels]
    rejected_logratios = logps[~labels] - ref_logps[~labels]
    if loss_type == "kto":
        chosen_losses = 1 - F.sigmoid(beta * (chosen_logratios - kl))
        rejected_losses = 1 - F.sigmoid(beta * (kl - rejected_logratios))
    else:
        chosen_losses = 1 - F.sigmoid(beta * chosen_logratios)
        rejected_losses = F.sigmoid(beta * rejected_logratios)
    return torch.cat((w_des * chosen_losses, w_und * rejected_losses), 0).nanmean()


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_kto_matches_trl_batch_loss(loss_type):
    """With the data and the mismatched pairs set to one TRL batch, the engine's KTO term is TRL's
    batch loss, value and gradient (z0 detached)."""
    rng = np.random.default_rng(17)
    X, K, n = 2, 5, 12
    env = cs.Bandit(reward=rng.normal(size=(X, K)), ref=rng.dirichlet(np.ones(K), size=X),
                    context_weights=[0.4, 0.6])
    lp = np.log(rng.dirichlet(np.ones(K), size=X))
    xs, ys = rng.integers(0, X, size=n), rng.integers(0, K, size=n)
    labels = rng.random(n) < 0.5
    kl_ys = np.concatenate([ys[-1:], ys[:-1]])   # TRL: [completion_ids[-1]] + completion_ids[:-1]
    lp_t = torch.tensor(lp, requires_grad=True)
    rlp_t = torch.tensor(env.ref_logp2d)
    beta, w_des, w_und = 0.6, 1.3, 0.8
    trl = _trl_kto_loss(loss_type, lp_t[xs, ys], rlp_t[xs, ys], torch.tensor(labels),
                        lp_t[xs, kl_ys], rlp_t[xs, kl_ys], beta, w_des, w_und)
    trl.backward()
    des, und, mism = np.zeros((X, K)), np.zeros((X, K)), np.zeros((X, K))
    np.add.at(des, (xs[labels], ys[labels]), 1.0 / n)
    np.add.at(und, (xs[~labels], ys[~labels]), 1.0 / n)
    np.add.at(mism, (xs, kl_ys), 1.0 / n)
    data = cs.UnpairedData(desirable=des, undesirable=und, shape=env.shape, n=n)
    obj = cs.objective(loss_type, beta=beta, desirable_weight=w_des, undesirable_weight=w_und)
    terms = list(obj.terms(env, data))
    terms[18] = mism if loss_type == "kto" else terms[18]   # this batch's rotated pairs
    grad = np.zeros((X, K))
    loss = _engine.objective_grad(tuple(terms), lp, env.ref_logp2d, grad, True, False,
                                  np.zeros((X, 0, 0)))
    assert loss == pytest.approx(trl.item(), rel=1e-13)
    np.testing.assert_allclose(grad, lp_t.grad.numpy(), rtol=1e-12, atol=1e-15)
    if loss_type == "kto":   # the data's own population mismatched law differs from one batch
        assert not np.allclose(mism, data.mismatched)


def test_kto_mismatched_law_is_the_iid_rotation_and_z0_clamps():
    # For i.i.d. examples e_{i-1}, e_i ~ D, the rotated pair (x_i, y_{i-1}) has law
    # sum_{a, b} D(a) D(b) [x_b = x][y_a = y] = rho_D(x) m_D(y): enumerate the pairs exactly.
    rng = np.random.default_rng(4)
    env = cs.Bandit(reward=rng.normal(size=(3, 4)), ref=rng.dirichlet(np.ones(4), size=3),
                    context_weights=[0.2, 0.3, 0.5])
    data = cs.unpaired_data(env, rng.dirichlet(np.ones(4), size=3), labels="bradley_terry")
    mass = data.response_mass
    law = np.zeros((3, 4))
    for (xa, ya), pa in np.ndenumerate(mass):
        for (xb, _yb), pb in np.ndenumerate(mass):
            law[xb, ya] += pa * pb
    np.testing.assert_allclose(data.mismatched, law, rtol=1e-13)
    # z0 = max(0, E_mismatched log pi/pi_ref) is held fixed: at pi = pi_ref it is 0, and the KTO
    # loss there is (w_d D+ + w_u D-) sigma(0) = 1/2.
    loss, _ = cs.objective("kto").loss_and_grad(env, env.ref_logp2d, data)
    assert loss == pytest.approx(0.5, rel=1e-14)
    # a policy whose mismatched mean log-ratio is negative gets z0 = 0: the same loss as APO-free
    # KTO with z0 = 0, i.e. with the mismatched weights removed
    lp = env.ref_logp2d.copy()
    lp[:, np.argmax(data.mismatched.sum(0))] -= 3.0   # less mass where the mismatched pairs are
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    terms = list(cs.objective("kto").terms(env, data))
    assert (terms[18] * (lp - env.ref_logp2d)).sum() < 0
    got = _engine.objective_grad(tuple(terms), lp, env.ref_logp2d, np.zeros((3, 4)), True, False,
                                 np.zeros((3, 0, 0)))
    terms[18] = np.zeros_like(terms[18])
    assert got == _engine.objective_grad(tuple(terms), lp, env.ref_logp2d, np.zeros((3, 4)), True,
                                         False, np.zeros((3, 0, 0)))


def test_kto_takes_paired_data_as_trl_unpairs_it():
    env, data = _env(2, k=5)
    lp = np.log(env.ref2d) + 0.3 * np.random.default_rng(0).normal(size=env.ref2d.shape)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    obj = cs.objective("kto", beta=0.4)
    a = obj.loss_and_grad(env, lp, data)
    b = obj.loss_and_grad(env, lp, cs.unpaired_from_pairs(data))
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def _trl_geometric_mixture_logprobs(model_logits, ref_logits, mixture_coef):
    """TRL GeometricMixtureWrapper.forward: log_softmax(m ref_logits + (1 - m) model_logits)."""
    return F.log_softmax(mixture_coef * ref_logits + (1 - mixture_coef) * model_logits, dim=-1)


def _trl_nash_md_losses(model_logprobs_model_data, ref_logprobs_model_data, probability, beta):
    """TRL NashMDTrainer._compute_losses for one-token completions (no .mean())."""
    score = (probability - 0.5) * model_logprobs_model_data
    with torch.no_grad():
        log_ratio = model_logprobs_model_data - ref_logprobs_model_data
    kl_div_loss = log_ratio * model_logprobs_model_data
    return beta * kl_div_loss - score


@pytest.mark.parametrize("mixture_coef", [0.0, 0.3, 1.0])
def test_nash_md_matches_trl_expected_loss(mixture_coef):
    """E_{y ~ pi, y' ~ pi_mix}[TRL's per-sample loss] (exact sum over all (y, y')) and its gradient
    with the samplers fixed equal the population objective's."""
    rng = np.random.default_rng(9)
    X, K, beta = 2, 5, 0.3
    env = cs.Bandit(reward=rng.normal(size=(X, K)), ref=rng.dirichlet(np.ones(K), size=X),
                    context_weights=[0.35, 0.65])
    lp = np.log(rng.dirichlet(np.ones(K), size=X))
    lp_t = torch.tensor(lp, requires_grad=True)
    rlp_t = torch.tensor(env.ref_logp2d)
    mix = _trl_geometric_mixture_logprobs(lp_t.detach(), rlp_t, mixture_coef).exp()
    r = torch.tensor(env.reward2d)
    total = torch.zeros(())
    for x in range(X):
        for y in range(K):
            for y2 in range(K):
                probability = torch.sigmoid(r[x, y] - r[x, y2])   # sigmoid(model - mixture score)
                per_sample = _trl_nash_md_losses(lp_t[x, y], rlp_t[x, y], probability, beta)
                total = total + (env.context_weights[x] * np.exp(lp[x, y]) * mix[x, y2]
                                 * per_sample)
    total.backward()
    loss, grad = cs.objective("nash_md", beta=beta, mixture_coef=mixture_coef).loss_and_grad(
        env, lp)
    assert loss == pytest.approx(total.item(), rel=1e-12)
    np.testing.assert_allclose(grad, lp_t.grad.numpy(), rtol=1e-12, atol=1e-15)


def _trl_xpo_losses(loss_type, model_lp_model, model_lp_ref, ref_lp_ref, ref_lp_model, chosen_mask,
                    beta, alpha):
    """TRL XPOTrainer._compute_losses for one-token completions (no .mean())."""
    chosen_model = torch.where(chosen_mask, model_lp_model, model_lp_ref)
    chosen_ref = torch.where(chosen_mask, ref_lp_model, ref_lp_ref)
    rejected_model = torch.where(~chosen_mask, model_lp_model, model_lp_ref)
    rejected_ref = torch.where(~chosen_mask, ref_lp_model, ref_lp_ref)
    logits = (chosen_model - chosen_ref) - (rejected_model - rejected_ref)
    if loss_type == "sigmoid":
        dpo_losses = -F.logsigmoid(beta * logits)
    else:
        dpo_losses = (logits - 1 / (2 * beta)) ** 2
    return dpo_losses + alpha * model_lp_ref


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_xpo_matches_trl_expected_loss(loss_type):
    """Exact expectation over y ~ pi, y' ~ pi_ref of TRL's XPO loss, with TRL's tie rule (chosen =
    policy's response when r(y) >= r(y')): the rewards include ties."""
    rng = np.random.default_rng(12)
    X, K, beta, alpha = 2, 5, 0.4, 0.25
    reward = np.round(rng.normal(size=(X, K)), 0)
    reward[:, 1] = reward[:, 0]
    env = cs.Bandit(reward=reward, ref=rng.dirichlet(np.ones(K), size=X),
                    context_weights=[0.45, 0.55])
    lp = np.log(rng.dirichlet(np.ones(K), size=X))
    lp_t = torch.tensor(lp, requires_grad=True)
    rlp_t = torch.tensor(env.ref_logp2d)
    total = torch.zeros(())
    for x in range(X):
        for y in range(K):
            for y2 in range(K):
                chosen_mask = torch.tensor(reward[x, y] >= reward[x, y2])
                per_sample = _trl_xpo_losses(loss_type, lp_t[x, y], lp_t[x, y2], rlp_t[x, y2],
                                             rlp_t[x, y], chosen_mask, beta, alpha)
                total = total + (env.context_weights[x] * np.exp(lp[x, y])
                                 * env.ref2d[x, y2] * per_sample)
    total.backward()
    obj = cs.objective("xpo", beta=beta, alpha=alpha, loss_type=loss_type)
    loss, grad = obj.loss_and_grad(env, lp)
    assert loss == pytest.approx(total.item(), rel=1e-12)
    np.testing.assert_allclose(grad, lp_t.grad.numpy(), rtol=1e-12, atol=1e-15)
    # negative control: fair-coin ties (deterministic labels of online DPO) give another objective
    coin = obj.terms(env)
    probs = cs.preferences.preference_probs(env, "deterministic")
    other = tuple(probs if i == 4 else t for i, t in enumerate(coin))
    g2 = np.zeros_like(lp)
    _engine.objective_grad(other, lp, env.ref_logp2d, g2, False, False, np.zeros((X, K, K)))
    assert np.abs(g2 - grad).max() > 1e-3


# ------------------------------------------------------------------------------------------------
# TRL's DPOTrainer options at the objective level


def test_combined_objectives_are_weighted_sums():
    env, data = _env(5, k=5)
    lp = np.log(env.ref2d) + 0.4 * np.random.default_rng(1).normal(size=env.ref2d.shape)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    rpo = cs.objective("rpo", beta=0.3)
    assert rpo.loss_types == ("sigmoid", "sft") and rpo.loss_weights == (1.0, 1.0)
    listed = cs.objective(["sigmoid", "sft"], beta=0.3)
    assert listed.name == "sigmoid+sft"
    parts = [cs.objective(n, beta=0.3).loss_and_grad(env, lp, data) for n in ("sigmoid", "sft",
                                                                              "bco_pair")]
    for obj, w in ((rpo, (1.0, 1.0, 0.0)), (listed, (1.0, 1.0, 0.0)),
                   (cs.objective("mpo", beta=0.3), (0.8, 0.2, 1.0)),
                   (cs.objective(["sigmoid", "sft", "bco_pair"], beta=0.3,
                                 loss_weights=[2.0, 0.5, 0.25]), (2.0, 0.5, 0.25))):
        if obj.name == "mpo":
            w = (0.8, 1.0, 0.2)   # mpo = sigmoid, bco_pair, sft in that order
        loss, grad = obj.loss_and_grad(env, lp, data)
        assert loss == pytest.approx(sum(a * p[0] for a, p in zip(w, parts)), rel=1e-12)
        np.testing.assert_allclose(grad, sum(a * p[1] for a, p in zip(w, parts)), rtol=1e-11,
                                   atol=1e-15)
    # the fast DPO kernel serves single sigmoid-family losses only
    assert cs.objective("sigmoid").terms(env, data)[5] != 0
    for obj in (rpo, cs.objective("sigmoid", f_divergence_type="js_divergence"),
                cs.objective("sigmoid", use_weighting=True),
                cs.objective(["sigmoid"], loss_weights=[2.0])):
        assert obj.terms(env, data)[5] == 0


def test_combined_defaults_stay_per_component():
    # exo_pair's label_smoothing default (1e-3) is not forced on sigmoid (0), unless given
    obj = cs.objective(["sigmoid", "exo_pair"])
    assert obj.pair_params("sigmoid")["label_smoothing"] == 0.0
    assert obj.pair_params("exo_pair")["label_smoothing"] == 1e-3
    given = cs.objective(["cdpo", "exo_pair"], label_smoothing=0.2)
    assert {given.pair_params(n)["label_smoothing"] for n in ("cdpo", "exo_pair")} == {0.2}
    # TRL applies f_divergence_type to the losses that read it, and not to sft
    rpo = cs.objective("rpo", f_divergence_type="forward_kl")
    assert rpo.pair_params("sigmoid")["f_divergence_type"] == "forward_kl"
    assert "f_divergence_type" not in rpo.pair_params("sft")


def test_ld_alpha_is_exact_dpo_on_equal_length_responses():
    env, data = _env(6, k=5)
    lp = np.log(env.ref2d) + 0.5 * np.random.default_rng(2).normal(size=env.ref2d.shape)
    lp -= np.log(np.exp(lp).sum(1, keepdims=True))
    a = cs.objective("sigmoid", beta=0.3).loss_and_grad(env, lp, data)
    b = cs.objective("sigmoid", beta=0.3, ld_alpha=0.5).loss_and_grad(env, lp, data)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_wpo_weights_change_the_gradient_by_the_detached_factor():
    """use_weighting multiplies each pair's gradient by w(y_w) w(y_l) = pi pi / (sum pi^2)^2."""
    env, data = _env(8, n_ctx=1, k=4)
    lp = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    w = np.exp(lp) / (np.exp(lp) ** 2).sum()
    weighted = cs.PairData(weights=data.weights * w[:, :, None] * w[:, None, :] /
                           (data.weights * w[:, :, None] * w[:, None, :]).sum(), shape=env.shape)
    scale = (data.weights * w[:, :, None] * w[:, None, :]).sum()
    got = cs.objective("sigmoid", beta=0.5, use_weighting=True).loss_and_grad(env, lp, data)
    ref = cs.objective("sigmoid", beta=0.5).loss_and_grad(env, lp, weighted)
    assert got[0] == pytest.approx(scale * ref[0], rel=1e-13)
    np.testing.assert_allclose(got[1], scale * ref[1], rtol=1e-12)
    with pytest.raises(ValueError, match="WPO"):
        cs.objective("sigmoid", use_weighting=True).pair_loss(0.0, 0.0, 0.0, 0.0)


def _f_dpo_optimum(env, beta, div, a):
    """pi_ref (f')^{-1}(r / beta - c) with c fixing the normalisation (Wang et al. 2023,
    arXiv:2309.16240: the f-DPO optimum under full coverage and Bradley-Terry labels), for TRL's
    scores s(u) = -e^{-u}, log sigma(u), e^{(a-1) u} / (a - 1)."""
    from scipy.optimize import brentq

    r = env.reward2d[0] / beta
    ref = env.ref2d[0]

    def log_ratio(c):
        s = r - c
        if div == "forward_kl":
            return -np.log(-s)
        if div == "js_divergence":
            with np.errstate(divide="ignore"):
                return np.log(np.exp(s) / -np.expm1(s))   # logit(e^s), s < 0
        return np.log((a - 1.0) * s) / (a - 1.0)

    def excess(c):
        with np.errstate(divide="ignore"):   # the far bracket end has pi -> 0
            return np.log((ref * np.exp(log_ratio(c))).sum())

    if div == "alpha_divergence" and a > 1.0:   # s > 0: c < min(r)
        lo, hi = r.min() - 1e6, r.min() - 1e-12
    else:                                        # s < 0: c > max(r)
        lo, hi = r.max() + 1e-12, r.max() + 1e6
    c = brentq(excess, lo, hi, xtol=1e-14, rtol=1e-15)
    pi = ref * np.exp(log_ratio(c))
    return pi / pi.sum()


@settings(derandomize=True, max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6), beta=st.floats(0.3, 3.0),
       div=st.sampled_from(["forward_kl", "js_divergence", "alpha_divergence"]),
       a=st.sampled_from([0.3, 0.5, 1.7]))
def test_f_dpo_population_optimum_is_stationary(seed, k, beta, div, a):
    """The gradient of f-DPO (TRL sigmoid with f_divergence_type) vanishes at f-DPO's closed-form
    optimum, and not at the reverse-KL optimum pi_ref e^{r/beta} / Z."""
    rng = np.random.default_rng(seed)
    env = cs.Bandit(reward=rng.uniform(-1, 1, size=k), ref=rng.dirichlet(np.ones(k)) * 0.9 + 0.1 / k)
    data = cs.offline_pairs(env, env.ref, labels="bradley_terry")
    obj = cs.objective("sigmoid", beta=beta, f_divergence_type=div, f_alpha_divergence_coef=a)
    policy = cs.TabularSoftmax()

    def logit_grad(pi):
        lp = np.log(pi).reshape(1, k)
        _, g = obj.loss_and_grad(env, lp, data)
        return policy.grad(env, lp.ravel(), g.reshape(1, k))

    scale = np.abs(logit_grad(env.ref2d[0])).max()
    if scale <= 1e-6:   # rewards nearly equal: no signal to compare with
        return
    f_opt = _f_dpo_optimum(env, beta, div, a)
    assert np.abs(logit_grad(f_opt)).max() <= 1e-9 * max(scale, 1.0)
    # control: the reverse-KL optimum is not stationary for f-DPO wherever the two optima differ
    reverse_opt = cs.optimal_policy(env, beta).reshape(k)
    if 0.5 * np.abs(reverse_opt - f_opt).sum() > 1e-2:
        assert np.abs(logit_grad(reverse_opt)).max() > 1e-4 * scale
