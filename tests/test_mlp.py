"""Tests for coverage_sim.mlp: Tajwar et al.'s bandit MLP as a Policy (layout, gradient, init, SFT,
and the cs.train seam)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import coverage_sim as cs  # noqa: E402
from coverage_sim.mlp import MLPPolicy  # noqa: E402

SMALL = dict(hidden=(5, 7), input_dim=3)


def _env(k=4, contexts=2, zero=False, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.dirichlet(np.ones(k), size=contexts)
    if zero:                                    # a response outside the reference's support
        ref[:, -1] = 0.0
        ref /= ref.sum(axis=1, keepdims=True)
    return cs.Bandit(reward=rng.normal(size=(contexts, k)), ref=ref)


def _random_params(pol, env, seed=1, scale=0.7):
    """Parameters far from the near-uniform initialisation (the gain-1e-2 init would make every
    check trivially small)."""
    return np.random.default_rng(seed).normal(scale=scale, size=pol.n_params(env.n_responses))


def _module_logp(pol, env, params):
    """log pi by the independent torch nn.Sequential of the same architecture."""
    net = pol.module(env.n_responses)
    flat = torch.tensor(params, dtype=torch.float64)
    torch.nn.utils.vector_to_parameters(flat, net.parameters())
    logits = net(torch.tensor(pol.inputs(env.n_contexts)))
    logits = logits.masked_fill(torch.tensor(env.ref2d == 0), -np.inf)
    return net, torch.log_softmax(logits, dim=-1)


def test_tajwar_architecture_size():
    """Linear(100,50) + LayerNorm(50) + Linear(50,256) + Linear(256,256) + Linear(256,K)."""
    pol = MLPPolicy()
    k = 100
    expected = (100 * 50 + 50) + 2 * 50 + (50 * 256 + 256) + (256 * 256 + 256) + (256 * k + k)
    assert pol.n_params(k) == expected
    net = pol.module(k)
    assert sum(p.numel() for p in net.parameters()) == expected
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear", "ReLU", "Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("zero", [False, True])
def test_logp_equals_nn_sequential_and_is_normalised(zero):
    env = _env(zero=zero)
    pol = MLPPolicy(**SMALL)
    params = _random_params(pol, env)
    lp = pol.logp(env, params)
    _, ref_lp = _module_logp(pol, env, params)
    finite = env.ref2d > 0
    assert np.allclose(lp[finite], ref_lp.detach().numpy()[finite], rtol=1e-13, atol=1e-13)
    assert np.all(np.isneginf(lp[~finite]))
    assert np.allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-13)
    assert np.exp(lp).max() > 0.5                    # far from uniform: the check means something


@pytest.mark.parametrize("zero", [False, True])
def test_grad_matches_finite_differences(zero):
    """The pull-back is the gradient of f(theta) = sum g * log pi(theta) (central differences,
    relative tolerance, on every coordinate of a small network and random directions)."""
    env = _env(zero=zero)
    pol = MLPPolicy(**SMALL)
    params = _random_params(pol, env)
    g = np.random.default_rng(2).normal(size=env.shape)
    g[env.ref2d == 0] = 0.0

    def f(theta):
        lp = pol.logp(env, theta)
        return float(np.sum(g * np.where(env.ref2d > 0, lp, 0.0)))

    pol.logp(env, params)
    grad = pol.grad(env, params, g)
    eps = 1e-6
    fd = np.empty_like(params)
    for i in range(params.size):
        e = np.zeros_like(params)
        e[i] = eps
        fd[i] = (f(params + e) - f(params - e)) / (2 * eps)
    assert np.linalg.norm(grad - fd) <= 1e-7 * np.linalg.norm(fd)
    rng = np.random.default_rng(3)
    for _ in range(3):
        d = rng.normal(size=params.size)
        d /= np.linalg.norm(d)
        fd_dir = (f(params + eps * d) - f(params - eps * d)) / (2 * eps)
        assert grad @ d == pytest.approx(fd_dir, rel=1e-7, abs=1e-10)


def test_grad_matches_autograd_at_tajwar_size():
    """At the benchmarked size (K = 100, 96k parameters) against autograd through the
    nn.Sequential, with and without the cached forward pass."""
    env = cs.tajwar_bandit(peak=70.0)
    pol = MLPPolicy()
    params = _random_params(pol, env, scale=0.05)
    g = np.random.default_rng(4).normal(size=env.shape)
    net, lp = _module_logp(pol, env, params)
    (lp * torch.tensor(env.as2d(g, "g"))).sum().backward()
    expected = torch.nn.utils.parameters_to_vector(p.grad for p in net.parameters()).numpy()
    uncached = pol.grad(env, params, g)
    pol.logp(env, params)
    cached = pol.grad(env, params, g)
    for got in (uncached, cached):
        assert np.linalg.norm(got - expected) <= 1e-12 * np.linalg.norm(expected)


def test_init_is_tajwars_and_seeded():
    env = cs.tajwar_bandit(peak=70.0)
    pol = MLPPolicy(sft_steps=0)
    a = pol.init_params(env, np.random.default_rng(0))
    b = pol.init_params(env, np.random.default_rng(0))
    c = pol.init_params(env, np.random.default_rng(1))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    net = pol.module(100)
    torch.nn.utils.vector_to_parameters(torch.tensor(a), net.parameters())
    for layer in net:
        if isinstance(layer, torch.nn.Linear):
            fan_out, fan_in = layer.weight.shape
            bound = 1e-2 * np.sqrt(6.0 / (fan_in + fan_out))
            w = layer.weight.detach().numpy()
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
            assert np.all(layer.bias.detach().numpy() == 0)
        elif isinstance(layer, torch.nn.LayerNorm):
            assert np.all(layer.weight.detach().numpy() == 1)
            assert np.all(layer.bias.detach().numpy() == 0)
    pi = pol.probs(env, a)
    assert np.abs(pi - 0.01).max() < 1e-6               # gain 1e-2: uniform to ~1e-8
    # the context inputs are fixed Uniform[0, 1] draws of input_seed
    u = pol.inputs(3)
    assert u.shape == (3, 100) and 0 <= u.min() and u.max() <= 1
    assert np.array_equal(u, MLPPolicy(input_seed=0).inputs(3))
    assert not np.array_equal(u, MLPPolicy(input_seed=1).inputs(3))


def test_sft_fits_the_reference():
    """Tajwar's SFT (100 Adam steps, lr 0.01, reverse KL) leaves a small residual; the reference
    of the objectives stays env.ref, so a run starts at that residual, not at 0."""
    env = cs.tajwar_bandit(peak=70.0)
    pol = MLPPolicy()
    start = pol.random_params(env, np.random.default_rng(0))
    params, kl = pol.sft(env, start)
    assert kl.shape == (101,) and kl[0] > 0.4 and kl[-1] < 1e-3
    pi = pol.probs(env, params)
    assert cs.metrics.kl_divergence(env, pi, env.ref) == pytest.approx(kl[-1], rel=1e-9)
    assert np.array_equal(params, pol.init_params(env, np.random.default_rng(0)))


def test_train_with_mlp_equals_a_torch_loop():
    """The seam: cs.train's numpy loop with the MLP's logp/grad reproduces plain torch gradient
    descent on the exact RLHF objective -(E_pi r - beta KL(pi || pi_ref)) written in torch."""
    env = _env(k=5, contexts=2, zero=True, seed=3)
    pol = MLPPolicy(hidden=(6, 6), input_dim=4, sft_steps=0, init_gain=1.0)
    beta, lr, steps = 0.3, 0.05, 6
    run = cs.train(env, cs.objective("rlhf", beta=beta), steps=steps, lr=lr, optimizer="gd",
                   policy=pol, seed=7)
    theta = torch.tensor(pol.init_params(env, np.random.default_rng(7)), requires_grad=True)
    r = torch.tensor(env.reward2d)
    support = torch.tensor(env.ref2d > 0)
    ref_lp = torch.tensor(np.where(env.ref2d > 0, env.ref_logp2d, 0.0))
    w = torch.tensor(env.context_weights)
    for _ in range(steps):
        shapes = pol.shapes(env.n_responses)
        sizes = [int(np.prod(sh)) for sh in shapes]
        views = [v.view(sh) for v, sh in zip(torch.split(theta, sizes), shapes)]
        lp = torch.where(support, pol._logp(env, views), 0.0)       # 0 off the support (no NaN)
        pi = lp.exp()
        per_x = torch.where(support, pi * (r - beta * (lp - ref_lp)), 0.0).sum(dim=1)
        loss = -(w * per_x).sum()
        (g,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= lr * g
    expected = theta.detach().numpy()
    assert np.linalg.norm(run.params - expected) <= 1e-12 * np.linalg.norm(expected)
    assert run.history["reward"].iloc[-1] > run.history["reward"].iloc[0]


def test_float32_matches_float64_and_threads_are_restored():
    env = _env()
    params = _random_params(MLPPolicy(**SMALL), env)
    before = torch.get_num_threads()
    lp64 = MLPPolicy(**SMALL).logp(env, params)
    lp32 = MLPPolicy(**SMALL, dtype="float32").logp(env, params)
    assert np.allclose(lp32, lp64, atol=1e-5)
    assert torch.get_num_threads() == before
    g = np.ones(env.shape)
    g64 = MLPPolicy(**SMALL).grad(env, params, g)
    g32 = MLPPolicy(**SMALL, dtype="float32").grad(env, params, g)
    assert g32.dtype == np.float64
    assert np.linalg.norm(g32 - g64) <= 1e-5 * np.linalg.norm(g64)


@pytest.mark.parametrize("kwargs, name", [
    (dict(hidden=()), "hidden"), (dict(hidden=(4, 0)), "hidden"), (dict(input_dim=0), "input_dim"),
    (dict(init_gain=0.0), "init_gain"), (dict(sft_steps=-1), "sft_steps"),
    (dict(sft_lr=-1.0), "sft_lr"), (dict(dtype="float16"), "dtype"), (dict(threads=0), "threads"),
    (dict(device="gpu:x"), "device"),
])
def test_invalid_arguments_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MLPPolicy(**kwargs)


def test_invalid_call_arguments():
    env = _env()
    pol = MLPPolicy(**SMALL)
    with pytest.raises(ValueError, match="params"):
        pol.logp(env, np.zeros(3))
    with pytest.raises(ValueError, match="params"):
        pol.logp(env, np.full(pol.n_params(4), np.nan))
    with pytest.raises(ValueError, match="grad_logp"):
        pol.grad(env, np.zeros(pol.n_params(4)), np.zeros(7))
    with pytest.raises(ValueError, match="env"):
        pol.logp("bandit", np.zeros(pol.n_params(4)))
    with pytest.raises(ValueError, match="rng"):
        pol.random_params(env, 0)


def test_sft_off_the_support_is_finite():
    """A reference with a zero: the masked response stays at probability 0 and the KL is finite."""
    env = _env(zero=True)
    pol = MLPPolicy(**SMALL, sft_steps=50, sft_lr=0.05)
    params, kl = pol.sft(env, pol.random_params(env, np.random.default_rng(0)))
    assert np.all(np.isfinite(kl)) and np.all(np.isfinite(params)) and kl[-1] < kl[0]
    assert np.all(pol.probs(env, params)[env.ref2d == 0] == 0)
