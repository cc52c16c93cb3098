"""Policy parameterisations: tabular softmax and log-linear, against hand values and torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coverage_sim as cs

pytestmark = pytest.mark.usefixtures("float64_default_dtype")


def _rng(seed=0):
    return np.random.default_rng(seed)


def _contextual_env(seed=0, x=3, k=5, partial=False):
    rng = _rng(seed)
    ref = rng.dirichlet(np.ones(k), size=x)
    if partial:
        ref[:, -1] = 0.0
        ref /= ref.sum(axis=1, keepdims=True)
    return cs.Bandit(reward=rng.normal(size=(x, k)), ref=ref,
                     context_weights=rng.dirichlet(np.ones(x)))


# ---------------------------------------------------------------- TabularSoftmax initialisations


def test_tabular_init_ref_reproduces_reference_including_zeros():
    env = cs.Bandit(reward=[1.0, 0.0, 2.0], ref=[0.25, 0.75, 0.0])
    pol = cs.TabularSoftmax()
    theta = pol.init_params(env, _rng())
    assert theta.shape == (3,)
    np.testing.assert_allclose(pol.probs(env, theta), [0.25, 0.75, 0.0], rtol=1e-15)
    assert pol.probs(env, theta)[2] == 0.0


def test_tabular_init_uniform_is_uniform_on_reference_support():
    env = cs.Bandit(reward=np.zeros((2, 4)), ref=[[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.5, 0.0]])
    pol = cs.TabularSoftmax(init="uniform")
    probs = pol.probs(env, pol.init_params(env, _rng()))
    np.testing.assert_allclose(probs, [[0.25] * 4, [0.5, 0.0, 0.5, 0.0]], rtol=1e-15)


def test_tabular_init_random_is_seeded_and_keeps_reference_zeros():
    env = _contextual_env(partial=True)
    pol = cs.TabularSoftmax(init="random", init_scale=0.5)
    a = pol.init_params(env, _rng(7))
    b = pol.init_params(env, _rng(7))
    c = pol.init_params(env, _rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(np.nan_to_num(a, neginf=0), np.nan_to_num(c, neginf=0))
    # log pi_ref plus init_scale * N(0, 1) noise drawn from the generator
    noise = 0.5 * _rng(7).standard_normal((env.n_contexts, env.n_responses))
    np.testing.assert_array_equal(a, (env.ref_logp2d + noise).ravel())
    probs = pol.probs(env, a)
    assert (probs[:, -1] == 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-14)


def test_tabular_init_from_probability_array():
    env = cs.Bandit(reward=[1.0, 0.0, 2.0], ref=[0.2, 0.3, 0.5])
    pol = cs.TabularSoftmax(init=[0.6, 0.4, 0.0])       # zero where ref > 0 is allowed
    np.testing.assert_allclose(pol.probs(env, pol.init_params(env, _rng())), [0.6, 0.4, 0.0],
                               rtol=1e-15)
    with pytest.raises(ValueError, match="init"):
        cs.TabularSoftmax(init=[0.6, 0.6, -0.2]).init_params(env, _rng())
    partial = cs.Bandit(reward=[1.0, 0.0, 2.0], ref=[0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="init"):
        cs.TabularSoftmax(init=[0.4, 0.4, 0.2]).init_params(partial, _rng())


def test_tabular_grad_is_softmax_jacobian_hand_computed():
    # d/dtheta sum_i g_i log pi_i = g - pi * sum(g)
    env = cs.Bandit(reward=[0.0, 0.0, 0.0], ref=[0.5, 0.25, 0.25])
    pol = cs.TabularSoftmax()
    theta = pol.init_params(env, _rng())
    g = np.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(pol.grad(env, theta, g), g - env.ref * 2.0, rtol=1e-15)


# ---------------------------------------------------------------- LogLinear


def _torch_logp(features, base, w):
    logits = torch.tensor(np.array(base)) + torch.tensor(np.array(features)) @ w
    return torch.log_softmax(logits, dim=-1)


@pytest.mark.parametrize("base", ["ref", "zero"])
@pytest.mark.parametrize("shared", [True, False], ids=["features_KD", "features_XKD"])
def test_loglinear_logp_and_grad_match_torch_autograd(base, shared):
    env = _contextual_env(seed=1)
    rng = _rng(2)
    d = 4
    feats = rng.normal(size=(env.n_responses, d) if shared else (env.n_contexts, env.n_responses, d))
    pol = cs.LogLinear(feats, base=base)
    w = rng.normal(size=d)
    g = rng.normal(size=env.shape)

    feats3 = np.broadcast_to(feats, (env.n_contexts, env.n_responses, d))
    base_arr = env.ref_logp2d if base == "ref" else np.zeros(env.shape)
    wt = torch.tensor(w, requires_grad=True)
    lp_t = _torch_logp(feats3, base_arr, wt)
    (lp_t * torch.as_tensor(g)).sum().backward()

    np.testing.assert_allclose(pol.logp(env, w), lp_t.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(pol.grad(env, w, g), wt.grad.numpy(), rtol=0, atol=1e-10)


def test_loglinear_shared_features_equal_tiled_features():
    env = _contextual_env(seed=3)
    feats = _rng(4).normal(size=(env.n_responses, 3))
    tiled = np.repeat(feats[None], env.n_contexts, axis=0)
    w = _rng(5).normal(size=3)
    g = _rng(6).normal(size=env.shape)
    a, b = cs.LogLinear(feats), cs.LogLinear(tiled)
    np.testing.assert_array_equal(a.logp(env, w), b.logp(env, w))
    np.testing.assert_allclose(a.grad(env, w, g), b.grad(env, w, g), rtol=1e-14, atol=1e-14)
    assert a.features_for(env).shape == (env.n_contexts, env.n_responses, 3)


def test_loglinear_features_shape_mismatch_is_rejected():
    env = _contextual_env(x=2, k=4)
    with pytest.raises(ValueError, match="features"):
        cs.LogLinear(np.ones((5, 2))).init_params(env, _rng())
    with pytest.raises(ValueError, match="features"):
        cs.LogLinear(np.ones((3, 4, 2))).logp(env, np.zeros(2))
    with pytest.raises(ValueError, match="features"):
        cs.LogLinear(np.ones(4))


def test_loglinear_starts_at_reference_and_init_weights():
    env = cs.Bandit(reward=[1.0, 0.0, 0.0], ref=[0.25, 0.25, 0.5])
    pol = cs.LogLinear(np.eye(3)[:, :2], init=[np.log(3.0), 0.0])
    theta = pol.init_params(env, _rng())
    np.testing.assert_array_equal(theta, [np.log(3.0), 0.0])
    # 0.25 * 3, 0.25, 0.5 -> normalised by 1.5
    np.testing.assert_allclose(pol.probs(env, theta), [0.5, 1 / 6, 1 / 3], rtol=1e-14)
    np.testing.assert_allclose(pol.probs(env, np.zeros(2)), env.ref, rtol=1e-15)


def test_loglinear_base_ref_keeps_zero_reference_responses_at_zero_but_base_zero_does_not():
    env = cs.Bandit(reward=[1.0, 0.0, -3.0], ref=[0.5, 0.5, 0.0])
    phi = cs.xu_features()
    w = np.array([2.0, -1.0])
    with_ref = cs.LogLinear(phi, base="ref").probs(env, w)
    plain = cs.LogLinear(phi, base="zero").probs(env, w)
    assert with_ref[2] == 0.0
    logits = phi @ w
    np.testing.assert_allclose(plain, np.exp(logits) / np.exp(logits).sum(), rtol=1e-14)
    assert plain[2] > 0.5


# ---------------------------------------------------------------- tabular policies cannot drift


@pytest.mark.parametrize("optimizer", ["gd", "adam", "npg"])
def test_tabular_zero_probability_response_never_moves_under_training(optimizer):
    """Xu et al. 2024 (arXiv:2404.10719) §4: a tabular softmax cannot put mass on a response it
    gives probability 0, whatever the gradient wants, whereas a log-linear policy can."""
    # y3 is by far the best response, so the RLHF gradient pushes towards it as hard as it can
    env = cs.Bandit(reward=[0.0, 1.0, 10.0], ref=[0.4, 0.4, 0.2])
    run = cs.train(env, cs.objective("rlhf", beta=0.1), steps=200, lr=0.5, optimizer=optimizer,
                   policy=cs.TabularSoftmax(init=[0.5, 0.5, 0.0]), record=[0, 1, 50, 200])
    assert (run.snapshots[:, 2] == 0.0).all()
    assert run.policy[1] > 0.9            # it did learn, within the reachable responses
    # the same pressure moves a log-linear policy (no -inf logit) onto y3
    ll = cs.train(env, cs.objective("rlhf", beta=0.1), steps=200, lr=0.5, optimizer=optimizer,
                  policy=cs.LogLinear(np.eye(3), base="zero"))
    assert ll.policy[2] > 0.5


def test_tabular_gradient_entry_is_finite_at_zero_probability():
    # the pulled-back gradient is finite, so an update of the -inf logit leaves it at -inf
    env = cs.Bandit(reward=[0.0, 1.0, 10.0], ref=[0.4, 0.4, 0.2])
    pol = cs.TabularSoftmax(init=[0.5, 0.5, 0.0])
    theta = pol.init_params(env, _rng())
    _, grad_lp = cs.objective("online_dpo", beta=0.1).loss_and_grad(env, pol.logp(env, theta))
    g = pol.grad(env, theta, grad_lp)
    assert np.isfinite(g).all()
    stepped = theta - 100.0 * g
    assert pol.probs(env, stepped)[2] == 0.0
