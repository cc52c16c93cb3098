"""Numba engine: policies, the composite population objective, optimisers and the fused step loop.

Everything here works on ``(X, K)`` arrays of log-probabilities over the response set. An objective is
a fixed tuple of *terms* (built by :mod:`coverage_sim.objectives`), each with an exact gradient with
respect to ``log pi`` taken as free coordinates; a policy maps its parameters to ``log pi`` and pulls
that gradient back. So an objective never sees how the policy is parameterised.

Terms (``terms`` tuple, in this order)::

    code      int    pairwise loss code (coverage_sim._pair_kernels), -1 for none
    prm       (4,)   pairwise loss parameters [beta, label_smoothing, length, discopop_tau]
    source    int    OFFLINE: fixed joint pair weights W; ONLINE: W = 2 rho_x pi_i pi_j P_ij (ordered
                     draws (y, y') ~ pi x pi, either may win) from the current policy, held fixed in
                     the gradient (semi-gradient)
    W         (X,K,K) joint pair weights (OFFLINE)
    P         (X,K,K) label probabilities P[x,i,j] = Pr(i > j) (ONLINE)
    fast      int    0, or the S = W + W^T DPO kernel (sigmoid family, OFFLINE): 1 dense S,
                     2 rank-one S = v v^T (exact mu x mu pairs), coverage_sim._dpo_fast
    S, d, act        its precomputed arrays (S is (X, 1, K) holding v when fast == 2)
    C         (X,K)  linear log-likelihood term: L += -sum C * log pi
    kl_coef   float  L += kl_coef * sum_x rho_x KL(pi_x || pi_ref_x)
    reward_coef float L += -reward_coef * sum_x rho_x E_pi R
    R         (X,K)  reward of that term
    rho       (X,)   context weights
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from coverage_sim._dpo_fast import (_exp_inplace, dpo_fast_grad_parallel, dpo_fast_grad_ws,
                                    dpo_fast_loss_parallel, dpo_fast_loss_ws, dpo_fast_workspace)
from coverage_sim._pair_kernels import ROBUST, population_pairwise

TABULAR = 0
LOGLINEAR = 1

OFFLINE = 0
ONLINE = 1

GD = 0
ADAM = 1
NPG = 2

_JIT = dict(cache=True, error_model="numpy")


def kernel_array(arr, dtype=np.float64) -> np.ndarray:
    """C-contiguous, writable float64 (or bool): the one layout the kernels are compiled for.

    Read-only inputs (environments and data are frozen) would otherwise make numba compile a second
    specialisation of the whole engine.
    """
    return np.require(arr, dtype=dtype, requirements=("C", "W"))


def pair_array(arr) -> np.ndarray:
    """A term's joint pair weights ``W`` (X, K, K) as a C-contiguous float64 view that numba sees
    read-only: data's weights are frozen, and copying them to get a writable array would cost a
    K x K copy per call (128 MB at K = 4000). Every ``W`` the engine receives goes through here,
    so the kernels are compiled for one (read-only) layout."""
    view = np.ascontiguousarray(arr, dtype=np.float64).view()
    view.flags.writeable = False
    return view


@njit(**_JIT)
def _softmax_into(kind, theta, features, base, lp, pi, bits):
    """Fill ``lp`` = log pi and ``pi`` (X, K) of a tabular softmax or log-linear policy.

    One vectorised exp per response (``pi`` = e / s with e = exp(logit - max)); responses more than
    700 nats below the row's maximum take the scalar libm ``exp``, so a logit of ``-inf`` (outside
    the reference's support) gives exactly ``pi = 0``. ``bits``: int64 scratch of size K.
    """
    n_ctx, k = lp.shape
    if kind == TABULAR:
        for x in range(n_ctx):
            for i in range(k):
                lp[x, i] = theta[x * k + i]
    else:
        dim = features.shape[2]
        for x in range(n_ctx):
            for i in range(k):
                acc = base[x, i]
                for a in range(dim):
                    acc += features[x, i, a] * theta[a]
                lp[x, i] = acc
    for x in range(n_ctx):
        row = lp[x]
        e = pi[x]
        m = np.max(row)
        for i in range(k):
            e[i] = max(row[i] - m, -700.0)
        _exp_inplace(e, bits)
        for i in range(k):
            if row[i] - m < -700.0:
                e[i] = np.exp(row[i] - m)
        s = 0.0
        for i in range(k):
            s += e[i]
        inv = 1.0 / s
        norm = m + np.log(s)
        for i in range(k):
            e[i] *= inv
            row[i] -= norm


@njit(**_JIT)
def policy_logp(kind, theta, features, base, n_ctx, k):
    """``log pi`` (X, K) of a tabular softmax (theta = logits) or log-linear policy."""
    lp = np.empty((n_ctx, k))
    _softmax_into(kind, theta, features, base, lp, np.empty((n_ctx, k)), np.empty(k, np.int64))
    return lp


@njit(**_JIT)
def _backprop_into(kind, features, pi, grad_lp, g_out):
    """``g_out`` = dL/dtheta from ``dL/dlog pi`` (X, K) through the softmax at ``pi``."""
    n_ctx, k = pi.shape
    if kind == TABULAR:
        for x in range(n_ctx):
            tot = 0.0
            for i in range(k):
                tot += grad_lp[x, i]
            for i in range(k):
                g_out[x * k + i] = grad_lp[x, i] - pi[x, i] * tot
        return
    dim = features.shape[2]
    g_out[:] = 0.0
    for x in range(n_ctx):
        tot = 0.0
        for i in range(k):
            tot += grad_lp[x, i]
        for i in range(k):
            gi = grad_lp[x, i] - pi[x, i] * tot
            for a in range(dim):
                g_out[a] += features[x, i, a] * gi


@njit(**_JIT)
def policy_backprop(kind, features, lp, grad_lp):
    """Pull ``dL/dlog pi`` (X, K) back to the parameters through the softmax."""
    n_ctx, k = lp.shape
    g = np.empty(n_ctx * k if kind == TABULAR else features.shape[2])
    _backprop_into(kind, features, np.exp(lp), grad_lp, g)
    return g


@njit(**_JIT)
def objective_grad(terms, lp, rlp, grad_out, want_loss, parallel_rows, wbuf):
    """Add the gradient of the composite objective w.r.t. ``log pi`` into ``grad_out``.

    Returns the loss when ``want_loss`` (else 0.0); the fast DPO kernel computes it from the same
    centred margins (:func:`coverage_sim._dpo_fast.dpo_fast_loss_ws`).
    """
    n_ctx, k = lp.shape
    return _objective_grad(terms, lp, np.exp(lp), rlp, grad_out, want_loss, parallel_rows, wbuf,
                           np.empty((n_ctx, k)), dpo_fast_workspace(k))


@njit(**_JIT)
def _objective_grad(terms, lp, pi, rlp, grad_out, want_loss, parallel_rows, wbuf, u, ws):
    """:func:`objective_grad` at ``pi = exp(lp)``, with scratch ``u`` (X, K) and ``ws``
    (:func:`coverage_sim._dpo_fast.dpo_fast_workspace`)."""
    (code, prm, source, W, P, fast, S, d, act, C, kl_coef, reward_coef, R, rho) = terms
    n_ctx, k = lp.shape
    loss = 0.0
    if code >= 0:
        if source == ONLINE:
            for x in range(n_ctx):
                for i in range(k):
                    pi_i = pi[x, i]
                    for j in range(k):
                        wbuf[x, i, j] = 2.0 * rho[x] * pi_i * pi[x, j] * P[x, i, j]
            loss += population_pairwise(code, prm, lp, rlp, wbuf, grad_out)
        elif fast != 0:
            for x in range(n_ctx):
                for i in range(k):
                    u[x, i] = lp[x, i] - rlp[x, i] if act[x, i] else 0.0
            beta = prm[0] / prm[2]
            if parallel_rows:
                dpo_fast_grad_parallel(S, d, act, u, beta, grad_out, fast)
            else:
                dpo_fast_grad_ws(S, d, act, u, beta, grad_out, fast, ws)
            if want_loss:
                if parallel_rows:
                    loss += dpo_fast_loss_parallel(S, W, act, u, beta, prm[1], code == ROBUST,
                                                   fast)
                else:
                    loss += dpo_fast_loss_ws(S, W, act, u, beta, prm[1], code == ROBUST, fast, ws)
        else:
            loss += population_pairwise(code, prm, lp, rlp, W, grad_out)
    for x in range(n_ctx):
        for i in range(k):
            c = C[x, i]
            if c != 0.0:
                grad_out[x, i] -= c
                if want_loss:
                    loss -= c * lp[x, i]
    if kl_coef != 0.0 or reward_coef != 0.0:
        for x in range(n_ctx):
            for i in range(k):
                p = pi[x, i]
                if p > 0.0:
                    if kl_coef != 0.0:
                        g = lp[x, i] - rlp[x, i]
                        grad_out[x, i] += kl_coef * rho[x] * p * (g + 1.0)
                        loss += kl_coef * rho[x] * p * g
                    if reward_coef != 0.0:
                        grad_out[x, i] -= reward_coef * rho[x] * p * R[x, i]
                        loss -= reward_coef * rho[x] * p * R[x, i]
    return loss


@njit(**_JIT)
def _natural_direction(kind, features, lp, grad_lp, g_theta, rho):
    """Natural-gradient direction: Fisher^+ g (mirror descent on each simplex when tabular)."""
    n_ctx, k = lp.shape
    if kind == TABULAR:
        out = np.zeros(n_ctx * k)
        for x in range(n_ctx):
            if rho[x] <= 0.0:
                continue
            for i in range(k):
                pi = np.exp(lp[x, i])
                if pi > 0.0:
                    out[x * k + i] = grad_lp[x, i] / (rho[x] * pi)
        return out
    dim = features.shape[2]
    fisher = np.zeros((dim, dim))
    for x in range(n_ctx):
        mean = np.zeros(dim)
        for i in range(k):
            pi = np.exp(lp[x, i])
            for a in range(dim):
                mean[a] += pi * features[x, i, a]
        for i in range(k):
            pi = np.exp(lp[x, i])
            if pi == 0.0:
                continue
            for a in range(dim):
                da = features[x, i, a] - mean[a]
                for b in range(dim):
                    fisher[a, b] += rho[x] * pi * da * (features[x, i, b] - mean[b])
    damping = 1e-10 * (1.0 + np.trace(fisher) / dim)
    for a in range(dim):
        fisher[a, a] += damping
    return np.linalg.solve(fisher, g_theta)


@njit(**_JIT)
def apply_update(optimizer, theta, g, m, v, t, lr, adam_b1, adam_b2, adam_eps, kind, features, lp,
                 grad_lp, rho):
    """One in-place update of ``theta`` from its gradient ``g``: GD, Adam (step ``t`` >= 1, moments
    ``m``, ``v`` updated in place) or the natural gradient (which needs ``lp``, ``grad_lp``, ``rho``)."""
    if optimizer == GD:
        for p in range(theta.size):
            theta[p] -= lr * g[p]
    elif optimizer == ADAM:
        c1 = 1.0 - adam_b1 ** t
        c2 = 1.0 - adam_b2 ** t
        for p in range(theta.size):
            m[p] = adam_b1 * m[p] + (1.0 - adam_b1) * g[p]
            v[p] = adam_b2 * v[p] + (1.0 - adam_b2) * g[p] * g[p]
            theta[p] -= lr * (m[p] / c1) / (np.sqrt(v[p] / c2) + adam_eps)
    else:
        direction = _natural_direction(kind, features, lp, grad_lp, g, rho)
        for p in range(theta.size):
            theta[p] -= lr * direction[p]


@njit(**_JIT)
def run_one(theta, kind, features, base, rlp, terms, optimizer, lr, adam_b1, adam_b2, adam_eps,
            steps, record_steps, out_lp, out_loss, parallel_rows):
    """Fused exact-gradient loop; updates ``theta`` in place and fills the record buffers.

    Records the state after ``s`` updates for each ``s`` in ``record_steps`` (sorted, within
    ``[0, steps]``): ``out_lp[r]`` = log pi and ``out_loss[r]`` = loss.
    """
    m = np.zeros(theta.size)
    v = np.zeros(theta.size)
    run_chunk(theta, kind, features, base, rlp, terms, optimizer, lr, adam_b1, adam_b2, adam_eps,
              steps, True, record_steps, out_lp, out_loss, parallel_rows, m, v, 0)


@njit(**_JIT)
def run_chunk(theta, kind, features, base, rlp, terms, optimizer, lr, adam_b1, adam_b2, adam_eps,
              steps, last, record_steps, out_lp, out_loss, parallel_rows, m, v, t0):
    """``steps`` updates of :func:`run_one`'s loop, resumable: Adam's moments ``m``, ``v`` and its
    step count ``t0`` (updates already made with them) carry over between chunks, so that chunks
    give the very same bits as one call. ``record_steps`` are relative to the chunk's start; the
    state after the last update is evaluated (and recorded) only when ``last``, as the next chunk
    starts from it otherwise.
    """
    n_ctx, k = rlp.shape
    rho = terms[13]
    wbuf = np.zeros((n_ctx, k, k)) if terms[2] == ONLINE and terms[0] >= 0 else np.zeros((0, 0, 0))
    # Every per-step buffer is allocated once here: at K = 100 a step takes a few microseconds, so
    # per-step allocations would cost as much as the arithmetic.
    g = np.empty(theta.size)
    lp = np.empty((n_ctx, k))
    pi = np.empty((n_ctx, k))
    u = np.empty((n_ctx, k))
    bits = np.empty(k, dtype=np.int64)
    ws = dpo_fast_workspace(k)
    grad_lp = np.zeros((n_ctx, k))
    nxt = 0
    n_rec = record_steps.size
    for s in range(steps + 1):
        if s == steps and not last:
            break
        _softmax_into(kind, theta, features, base, lp, pi, bits)
        recording = nxt < n_rec and record_steps[nxt] == s
        if s == steps and not recording:
            break
        grad_lp[:] = 0.0
        loss = _objective_grad(terms, lp, pi, rlp, grad_lp, recording, parallel_rows, wbuf, u, ws)
        if recording:
            out_lp[nxt] = lp
            out_loss[nxt] = loss
            nxt += 1
        if s == steps:
            break
        _backprop_into(kind, features, pi, grad_lp, g)
        apply_update(optimizer, theta, g, m, v, t0 + s + 1, lr, adam_b1, adam_b2, adam_eps, kind,
                     features, lp, grad_lp, rho)


@njit(**_JIT)
def run_batch(theta, kind, features, base, rlp, code, prm, source, W, P, fast, S, d, act, C,
              kl_coef, reward_coef, R, rho, optimizer, lr, adam_b1, adam_b2, adam_eps, steps,
              record_steps, out_lp, out_loss):
    """:func:`run_one` over a leading batch axis of independent problems, split over threads."""
    m = np.zeros(theta.shape)
    v = np.zeros(theta.shape)
    run_batch_chunk(theta, kind, features, base, rlp, code, prm, source, W, P, fast, S, d, act, C,
                    kl_coef, reward_coef, R, rho, optimizer, lr, adam_b1, adam_b2, adam_eps, steps,
                    True, record_steps, out_lp, out_loss, m, v, 0)


@njit(parallel=True, **_JIT)
def run_batch_chunk(theta, kind, features, base, rlp, code, prm, source, W, P, fast, S, d, act, C,
                    kl_coef, reward_coef, R, rho, optimizer, lr, adam_b1, adam_b2, adam_eps, steps,
                    last, record_steps, out_lp, out_loss, m, v, t0):
    """:func:`run_chunk` over a leading batch axis (``m``, ``v`` shaped like ``theta``)."""
    for b in prange(theta.shape[0]):
        terms = (code[b], prm[b], source, W[b], P[b], fast, S[b], d[b], act[b], C[b], kl_coef[b],
                 reward_coef[b], R[b], rho[b])
        run_chunk(theta[b], kind, features[b], base[b], rlp[b], terms, optimizer, lr[b], adam_b1,
                  adam_b2, adam_eps, steps, last, record_steps, out_lp[b], out_loss[b], False,
                  m[b], v[b], t0)
