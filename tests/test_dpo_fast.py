"""The fast DPO kernels (coverage_sim._dpo_fast) against independent oracles, at the sizes we benchmark.

Oracles: the generic per-pair kernel ``_pair_kernels.population_pairwise`` (itself checked against
torch autograd in tests/test_pair_kernels.py; it shares no code with the fast kernels) and torch
autograd directly at K = 1000. Every comparison is a relative max-norm.

The fast kernel has branches on ``R = beta * range(u)`` (four rows at a time up to 350, two rows up
to 700, a per-pair sigmoid beyond), on K (row blocks of 64: one block below 128, up to 16), on the
4-row remainder and on the pair matrix (dense S or rank-one S = v v^T). The sizes K and the ranges R
below put every branch and every boundary on both sides: K = 127 | 128 | 129 (one block | two),
R = 349 | 351 (four rows | two), 699 | 701 (two rows | per pair), and 500 and 1000 inside the
two-row and per-pair bands. The spread of u is placed at both ends (a response at each extreme), so
that a kernel run past its range overflows where it would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import coverage_sim as cs
from coverage_sim import _dpo_fast as fast
from coverage_sim import _pair_kernels as pk
from coverage_sim.losses import get_pair_loss

SIZES = [2, 7, 127, 128, 129, 200, 520, 1000]
# both sides of each threshold, and the middle of each band: a threshold set anywhere in
# (355, 700] (four rows) or (710, 1400] (two rows) overflows at one of these ranges
RANGES = [5.0, 349.0, 351.0, 500.0, 699.0, 701.0, 1000.0, 1500.0]
BETA = 0.5
# Relative max-norm tolerance. The fast form is exact to ~1e-16 beta sum(S) per component in
# absolute terms; measured errors are below 1e-13 at every size and range here.
RTOL = 1e-10


def _relmax(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def _u(rng, k, spread, n_ctx=1):
    """Log-ratios u (X, K) with beta * range(u) == spread exactly in every context."""
    u = rng.uniform(-1.0, 1.0, size=(n_ctx, k))
    u[:, 0], u[:, -1] = 1.0, -1.0                  # a response at each end of the range
    rng.permuted(u, axis=1, out=u)
    return u * spread / (2.0 * BETA)


def _weights(rng, k, kind, n_ctx=1):
    """Joint pair weights (X, K, K): "factored" = exact mu x mu Bradley-Terry pairs (rank-one S),
    "dense" = a sparse random joint (any S)."""
    if kind == "factored":
        mu = rng.dirichlet(np.ones(k), size=n_ctx)
        r = rng.normal(size=(n_ctx, k))
        p = 1.0 / (1.0 + np.exp(-(r[:, :, None] - r[:, None, :])))
        w = 2.0 * mu[:, :, None] * mu[:, None, :] * p
        w[:, np.arange(k), np.arange(k)] = mu ** 2
    else:
        w = rng.random((n_ctx, k, k)) * (rng.random((n_ctx, k, k)) < 0.5)
        w[:, 0, -1] += 0.1
    return w / w.sum()


def _generic(code, prm, u, w):
    """dL/du by the per-pair kernel (lp = u, rlp = 0)."""
    grad = np.zeros_like(u)
    pk.population_pairwise(code, prm, np.ascontiguousarray(u), np.zeros_like(u),
                           np.ascontiguousarray(w), grad)
    return grad


def _fast(w, u, beta, label_smoothing=0.0, robust=False, parallel=False, factored=True):
    sym, d, act, kernel = fast.dpo_fast_precompute(w, label_smoothing, robust, beta,
                                                   factored=factored)
    grad = np.zeros_like(u)
    if parallel:
        fast.dpo_fast_grad_parallel(sym, d, act, np.ascontiguousarray(u), beta, grad, kernel)
    else:
        fast.dpo_fast_grad(sym, d, act, np.ascontiguousarray(u), beta, grad, kernel)
    return grad, kernel


@pytest.mark.parametrize("spread", RANGES)
@pytest.mark.parametrize("kind", ["dense", "factored"])
@pytest.mark.parametrize("k", SIZES)
def test_fast_kernels_match_the_generic_kernel(k, kind, spread):
    """Serial and parallel fast kernels == per-pair kernel, every size, pair-matrix kind and range."""
    rng = np.random.default_rng([k, int(spread), kind == "dense"])
    u = _u(rng, k, spread, n_ctx=2)
    w = _weights(rng, k, kind, n_ctx=2)
    expected = _generic(pk.SIGMOID, get_pair_loss("sigmoid").pack({"beta": BETA}), u, w)
    for parallel in (False, True):
        got, kernel = _fast(w, u, BETA, parallel=parallel)
        assert kernel == (fast.FACTORED if kind == "factored" else fast.DENSE)
        assert _relmax(got, expected) <= RTOL, (parallel, _relmax(got, expected))


@pytest.mark.parametrize("k", [7, 129, 520])
@pytest.mark.parametrize("spread", [5.0, 351.0, 701.0])
@pytest.mark.parametrize("name,eps", [("cdpo", 0.2), ("robust", 0.2), ("robust", 0.0)])
def test_label_smoothed_and_robust_variants_match_the_generic_kernel(name, eps, spread, k):
    rng = np.random.default_rng([k, int(spread), 7])
    u = _u(rng, k, spread)
    w = _weights(rng, k, "dense")
    spec = get_pair_loss(name)
    expected = _generic(spec.code, spec.pack({"beta": BETA, "label_smoothing": eps}), u, w)
    for parallel in (False, True):
        got, _ = _fast(w, u, BETA, label_smoothing=eps, robust=name == "robust",
                       parallel=parallel)
        assert _relmax(got, expected) <= RTOL


@pytest.mark.parametrize("k", [128, 1000])
def test_dense_and_factored_kernels_agree_on_rank_one_data(k):
    """The same rank-one pair matrix through both kernels (factored=False forces the dense one)."""
    rng = np.random.default_rng(k)
    u = _u(rng, k, 100.0)
    w = _weights(rng, k, "factored")
    a, ka = _fast(w, u, BETA)
    b, kb = _fast(w, u, BETA, factored=False)
    assert (ka, kb) == (fast.FACTORED, fast.DENSE)
    assert _relmax(a, b) <= RTOL


def test_fast_kernel_matches_torch_autograd_at_k_1000():
    """An oracle outside numba: autograd of the population loss on the same weights."""
    k = 1000
    rng = np.random.default_rng(1000)
    u = _u(rng, k, 40.0)
    w = _weights(rng, k, "dense")
    ut = torch.tensor(u, requires_grad=True)
    z = BETA * (ut[:, :, None] - ut[:, None, :])
    loss = -(torch.tensor(w) * torch.nn.functional.logsigmoid(z)).sum()
    loss.backward()
    for parallel in (False, True):
        got, _ = _fast(w, u, BETA, parallel=parallel)
        assert _relmax(got, ut.grad.numpy()) <= RTOL


def test_inactive_responses_get_no_gradient_and_no_nan():
    """Responses no pair touches (u may be -inf - -inf there) stay out of the centring and the sums."""
    k = 129
    rng = np.random.default_rng(5)
    w = _weights(rng, k, "dense")
    dead = np.arange(k) % 5 == 0
    w[:, dead, :] = 0.0
    w[:, :, dead] = 0.0
    w /= w.sum()
    u = _u(rng, k, 351.0)
    u_live = u.copy()
    # what a caller may pass there (-inf - -inf = NaN, -inf), and a value that would dominate R
    u[:, dead] = np.array([np.nan, -np.inf, 1e6])[np.arange(dead.sum()) % 3]
    expected = _generic(pk.SIGMOID, get_pair_loss("sigmoid").pack({"beta": BETA}), u_live, w)
    for parallel in (False, True):
        got, _ = _fast(w, u, BETA, parallel=parallel)
        assert np.isfinite(got).all()
        assert (got[:, dead] == 0.0).all()
        assert _relmax(got, expected) <= RTOL


def test_gradient_is_added_into_grad_out():
    rng = np.random.default_rng(3)
    u = _u(rng, 129, 10.0)
    w = _weights(rng, 129, "dense")
    sym, d, act, kernel = fast.dpo_fast_precompute(w, 0.0, False, BETA)
    once, twice = np.zeros_like(u), np.ones_like(u)
    fast.dpo_fast_grad(sym, d, act, u, BETA, once, kernel)
    fast.dpo_fast_grad(sym, d, act, u, BETA, twice, kernel)
    np.testing.assert_allclose(twice, 1.0 + once, rtol=1e-15)


@pytest.mark.parametrize("kind", ["dense", "factored"])
@pytest.mark.parametrize("spread", [60.0, 351.0, 699.0, 701.0])
def test_saturated_winner_gradient_is_exact_in_relative_terms(kind, spread):
    """Deterministic labels: the top response never loses, so its gradient is a pure small tail
    ~e^-z. Each component matches the per-pair kernel to 1e-12 relative, the top one included
    (computed as 1 - sigma it would be 0 or rounding noise here). With self-pairs, the mu x mu
    pair matrix is rank one (factored kernel); without, it is not (dense kernel)."""
    k = 129
    rng = np.random.default_rng(int(spread))
    mu = rng.dirichlet(np.ones(k))[None]
    r = np.linspace(1.0, -1.0, k)[None]               # strict order: response 0 beats all
    p = np.where(r[:, :, None] > r[:, None, :], 1.0, 0.0)
    w = 2.0 * mu[:, :, None] * mu[:, None, :] * p
    if kind == "factored":
        w[:, np.arange(k), np.arange(k)] = mu ** 2
    w /= w.sum()
    # response 0 on top, every other within the bottom tenth of the range: its margins >= 0.9 R
    u = np.concatenate([[1.0], np.linspace(-0.8, -1.0, k - 1)])[None] * spread / (2.0 * BETA)
    # The self-pairs (i, i) add exactly 0 to the gradient, but the per-pair kernel adds them as
    # -beta/2 + beta/2, which would swamp the tail: the oracle runs without them.
    off = w * (1.0 - np.eye(k))
    expected = _generic(pk.SIGMOID, get_pair_loss("sigmoid").pack({"beta": BETA}), u, off)
    assert 0.0 < -expected[0, 0] < 1e-12
    got, kernel = _fast(w, u, BETA, factored=kind == "factored")
    assert kernel == (fast.FACTORED if kind == "factored" else fast.DENSE)
    assert got[0, 0] < 0.0
    assert got[0, 0] == pytest.approx(expected[0, 0], rel=1e-12)
    assert _relmax(got, expected) <= RTOL


def test_rank_one_factor_reads_back_the_factor_or_refuses():
    rng = np.random.default_rng(0)
    v = rng.random((2, 9)) + 0.1
    s = v[:, :, None] * v[:, None, :]
    np.testing.assert_allclose(fast.rank_one_factor(s), v, rtol=1e-15)
    bumped = s.copy()
    bumped[1, 2, 3] *= 1.0 + 1e-12
    assert fast.rank_one_factor(bumped) is None
    assert fast.rank_one_factor(np.zeros((1, 3, 3))) is None


# ------------------------------------------------------------------------------------------------
# The fast paths of the training loops: one exact GD step, oracle = the generic kernel in numpy


def _one_gd_step_oracle(env, obj, data, lr):
    """Policy after one GD step from pi_ref, the gradient taken by the per-pair kernel."""
    spec = get_pair_loss(obj.pair_loss_name)
    prm = spec.pack(obj.pair_params())
    lp = env.ref_logp2d
    g = np.zeros_like(lp)
    pk.population_pairwise(spec.code, prm, np.ascontiguousarray(lp), np.ascontiguousarray(lp),
                           np.ascontiguousarray(data.weights), g)
    pi = np.exp(lp)
    g_theta = g - pi * g.sum(axis=1, keepdims=True)          # softmax pullback
    theta = lp - lr * g_theta
    theta -= theta.max(axis=1, keepdims=True)
    return np.exp(theta) / np.exp(theta).sum(axis=1, keepdims=True)


def _random_data(env, seed, kind):
    if kind == "factored":
        return cs.offline_pairs(env, env.ref)
    return cs.offline_pairs(env, env.ref, n=50 * env.n_responses, seed=seed)


@pytest.mark.parametrize("k", [7, 129, 520, 1000])
@pytest.mark.parametrize("kind", ["dense", "factored"])
def test_train_serial_and_parallel_rows_match_the_oracle(k, kind):
    env = cs.random_bandit(k, seed=k, min_ref=0.1 / k)
    data = _random_data(env, k, kind)
    obj = cs.objective("sigmoid", beta=BETA)
    expected = _one_gd_step_oracle(env, obj, data, lr=50.0)
    for parallel in (False, True):
        run = cs.train(env, obj, data, steps=1, lr=50.0, optimizer="gd", record=[0, 1],
                       parallel=parallel, eval_data=data)
        change = run.policy - env.ref
        assert _relmax(run.policy - env.ref, expected - env.ref) <= 1e-9, parallel
        assert np.abs(change).max() > 1e-6                    # the step did move the policy


@pytest.mark.parametrize("k", [7, 129, 200])
def test_train_many_matches_the_oracle_for_every_problem(k):
    envs = [cs.random_bandit(k, seed=k + s, min_ref=0.1 / k) for s in range(3)]
    datas = [_random_data(e, s, "dense" if s == 1 else "factored") for s, e in enumerate(envs)]
    objs = [cs.objective("sigmoid", beta=b) for b in (0.3, 0.5, 1.0)]
    runs = cs.train_many(envs, objs, datas, steps=1, lr=50.0, optimizer="gd", record=[0, 1],
                         eval_data=datas[0])
    for env, obj, data, run in zip(envs, objs, datas, runs):
        expected = _one_gd_step_oracle(env, obj, data, lr=50.0)
        assert _relmax(run.policy - env.ref, expected - env.ref) <= 1e-9
