"""Numba engine: policies, the composite population objective, optimisers and the fused step loop.

Everything here works on ``(X, K)`` arrays of log-probabilities over the response set. An objective is
a fixed tuple of *terms* (built by :mod:`coverage_sim.objectives`), each with an exact gradient with
respect to ``log pi`` taken as free coordinates; a policy maps its parameters to ``log pi`` and pulls
that gradient back. So an objective never sees how the policy is parameterised.

Terms (``terms`` tuple, in this order; ``N_TERMS = 21``)::

     0 codes     (n,) int64    pairwise loss codes of a (combined) pairwise term, one per
                               component of TRL's list-valued loss_type; empty: no pairwise term
     1 prms      (n, N_PRM)    their parameter vectors (coverage_sim._pair_kernels: beta,
                               label_smoothing, length, discopop_tau, f-divergence code and
                               coefficient, WPO flag)
     2 source    int    OFFLINE: fixed joint pair weights W; ONLINE: W = 2 rho_x pi_i pi_j P_ij
                        (ordered draws (y, y') ~ pi x pi, either may win); ONLINE_REF (XPO):
                        W = rho_x (pi_i piref_j P_ij + piref_i pi_j (1 - P_ji)) for one draw from
                        pi and one from pi_ref, P_ij = Pr(policy draw i beats reference draw j).
                        Online pairs are drawn from the current policy, held fixed in the
                        gradient (semi-gradient)
     3 W         (X,K,K) joint pair weights (OFFLINE)
     4 P         (X,K,K) label probabilities (ONLINE, ONLINE_REF, and Nash-MD's preference)
     5 fast      int    0, or the S = W + W^T DPO kernel (one sigmoid-family component, reverse
                        KL, no WPO, weight 1, OFFLINE): 1 dense S, 2 rank-one S = v v^T (exact
                        mu x mu pairs), coverage_sim._dpo_fast
     6 S, 7 d, 8 act    its precomputed arrays (S is (X, 1, K) holding v when fast == 2)
     9 C         (X,K)  linear log-likelihood term: L += -sum C * log pi
    10 kl_coef   float  L += kl_coef * sum_x rho_x KL(pi_x || pi_ref_x)
    11 reward_coef float L += -reward_coef * sum_x rho_x E_pi R
    12 R         (X,K)  reward of that term
    13 rho       (X,)   context weights
    14 loss_weights (n,) weights of the pairwise components (TRL's loss_weights)
    15 unpaired  int    -1, or an unpaired (KTO-trainer) term: _pair_kernels.KTO or
                        APO_ZERO_UNPAIRED
    16 uprm      (3,)   its beta, desirable_weight, undesirable_weight
    17 U         (2,X,K) desirable and undesirable example masses (U[0], U[1])
    18 M         (X,K)  weights of the mismatched (x, y') pairs whose mean log-ratio, clamped at 0
                        and held fixed, is KTO's reference point z0; all zero: z0 = 0
    19 pg        int    0, or NASH_MD: Nash-MD's policy-gradient term (sampler held fixed)
    20 pg_prm    (2,)   its beta and mixture_coef

Every pairwise evaluation goes through the per-pair layer of :mod:`coverage_sim._pair_kernels`
(``pair_value_grad_sum``, ``unpaired_value_grad``): a kernel that evaluates pairs (exact or sampled)
gets combined losses, f-divergences and WPO weights by calling it with ``codes, prms, loss_weights``.

The fused loop :func:`run_chunk` can also move the reference (TR-DPO, Gorbatovski et al. 2024,
arXiv:2404.09656): every ``ref_sync_every`` updates, log pi_ref <- normalise(alpha log pi +
(1 - alpha) log pi_ref), keeping the optimiser state.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from coverage_sim._dpo_fast import (_exp_inplace, dpo_fast_grad_parallel, dpo_fast_grad_ws,
                                    dpo_fast_loss_parallel, dpo_fast_loss_ws, dpo_fast_workspace)
from coverage_sim._pair_kernels import (KTO, N_PRM, P_LABEL_SMOOTHING, ROBUST,
                                        population_pairwise_sum, unpaired_value_grad)
from coverage_sim._threads import for_each

TABULAR = 0
LOGLINEAR = 1

OFFLINE = 0
ONLINE = 1
ONLINE_REF = 2

NASH_MD = 1

N_TERMS = 21

GD = 0
ADAM = 1
NPG = 2

_JIT = dict(cache=True, error_model="numpy")


def needs_pair_buffer(terms) -> bool:
    """Whether ``terms`` draws its pairs from the policy (and needs an (X, K, K) pair buffer)."""
    return terms[2] in (ONLINE, ONLINE_REF) and len(terms[0]) > 0


def empty_terms(n_ctx: int, k: int) -> tuple:
    """A term tuple with every term off, shaped for ``n_ctx`` contexts and ``k`` responses.

    Objectives build theirs from it (``_replace``-style by index) so that every tuple has the same
    numba type: pointwise objectives carry empty (X, 0, 0) pair arrays.
    """
    empty3 = np.zeros((n_ctx, 0, 0))
    return (np.zeros(0, dtype=np.int64), np.zeros((0, N_PRM)), OFFLINE, empty3, empty3, 0,
            empty3[:0], np.zeros((0, 2, k)), np.zeros((0, k), dtype=np.bool_), np.zeros((n_ctx, k)),
            0.0, 0.0, np.zeros((n_ctx, k)), np.zeros(n_ctx), np.zeros(0), -1, np.zeros(3),
            np.zeros((2, n_ctx, k)), np.zeros((n_ctx, k)), 0, np.zeros(2))


def compile_terms(t) -> tuple:
    """The kernel layout of a term list (:func:`empty_terms` with some entries replaced): every
    array C-contiguous float64 (int64 codes, bool ``act``), ``W`` read-only (:func:`pair_array`),
    the flags Python ints and the coefficients floats, so that every tuple has one numba type."""
    arr = kernel_array
    return (arr(t[0], np.int64), arr(t[1]), int(t[2]), pair_array(t[3]), arr(t[4]), int(t[5]),
            arr(t[6]), arr(t[7]), arr(t[8], np.bool_), arr(t[9]), float(t[10]), float(t[11]),
            arr(t[12]), arr(t[13]), arr(t[14]), int(t[15]), arr(t[16]), arr(t[17]), arr(t[18]),
            int(t[19]), arr(t[20]))


def kernel_array(arr, dtype=np.float64) -> np.ndarray:
    """C-contiguous, writable float64 (or bool): the one layout the kernels are compiled for.

    Read-only inputs (environments and data are frozen) would otherwise make numba compile a second
    specialisation of the whole engine.
    """
    return np.require(arr, dtype=dtype, requirements=("C", "W"))


def row_mode(parallel: bool) -> bool | None:
    """The kernels' ``parallel_rows`` argument for a run that splits one problem's pair rows over
    threads (``True``) or not (``None``, not ``False``).

    numba drops the branch ``parallel_rows is not None`` when the argument is ``None``, so a
    process that never splits rows never compiles the parallel DPO kernels (their own compile is
    about 6 s of one core in a fresh clone, measured 2026-12-04); a ``bool`` compiles both paths
    and picks one at run time. Each of the two is one specialisation of the engine, compiled when
    first used.
    """
    return True if parallel else None


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
    centred margins (:func:`coverage_sim._dpo_fast.dpo_fast_loss_ws`). ``parallel_rows``: as
    :func:`row_mode` gives it.
    """
    n_ctx, k = lp.shape
    return _objective_grad(terms, lp, np.exp(lp), rlp, grad_out, want_loss, parallel_rows, wbuf,
                           np.empty((n_ctx, k)), dpo_fast_workspace(k))


@njit(**_JIT)
def _unpaired_term(code, uprm, U, M, lp, rlp, grad_out, want_loss):
    """KTO / unpaired APO-zero population loss, gradient added into ``grad_out``.

    z0 = max(0, sum M (lp - rlp)) is computed from the current policy and held fixed (TRL detaches
    it and clamps it at 0).
    """
    n_ctx, k = lp.shape
    beta, w_des, w_und = uprm[0], uprm[1], uprm[2]
    z0 = 0.0
    if code == KTO:
        for x in range(n_ctx):
            for i in range(k):
                if M[x, i] != 0.0:
                    z0 += M[x, i] * (lp[x, i] - rlp[x, i])
        z0 = max(z0, 0.0)
    loss = 0.0
    for x in range(n_ctx):
        for i in range(k):
            d_mass = U[0, x, i] * w_des
            u_mass = U[1, x, i] * w_und
            if d_mass == 0.0 and u_mass == 0.0:
                continue
            u = lp[x, i] - rlp[x, i]
            if d_mass != 0.0:
                v, g = unpaired_value_grad(code, np.bool_(True), u, z0, beta)   # not literals:
                grad_out[x, i] += d_mass * g
                loss += d_mass * v
            if u_mass != 0.0:
                v, g = unpaired_value_grad(code, np.bool_(False), u, z0, beta)  # one compile
                grad_out[x, i] += u_mass * g
                loss += u_mass * v
    return loss


@njit(**_JIT)
def _nash_md_term(pg_prm, P, rho, lp, pi, rlp, grad_out, mix):
    """Nash-MD's loss (TRL's ``NashMDTrainer``) in population form, gradient into ``grad_out``.

    L = sum_x rho_x sum_y pi(y|x) [beta sg(log pi(y) - log pi_ref(y)) log pi(y)
    - (P(y > pi_mix) - 1/2) log pi(y)], with y ~ pi held fixed, pi_mix proportional to
    pi_ref^m pi^(1-m) (m = mixture_coef) and P(y > pi_mix) = sum_y' pi_mix(y') P[x, y, y'].
    ``mix``: (K,) scratch.
    """
    n_ctx, k = lp.shape
    beta, m = pg_prm[0], pg_prm[1]
    loss = 0.0
    for x in range(n_ctx):
        top = -np.inf
        for j in range(k):
            if lp[x, j] > -np.inf and rlp[x, j] > -np.inf:
                mix[j] = m * rlp[x, j] + (1.0 - m) * lp[x, j]
                if mix[j] > top:
                    top = mix[j]
            else:
                mix[j] = -np.inf
        tot = 0.0
        for j in range(k):
            mix[j] = np.exp(mix[j] - top)
            tot += mix[j]
        for j in range(k):
            mix[j] /= tot
        for i in range(k):
            p = pi[x, i]
            if p == 0.0:
                continue
            win = 0.0
            for j in range(k):
                win += mix[j] * P[x, i, j]
            ratio = lp[x, i] - rlp[x, i]
            grad_out[x, i] += rho[x] * p * (beta * ratio - (win - 0.5))
            loss += rho[x] * p * (beta * ratio - (win - 0.5)) * lp[x, i]
    return loss


@intrinsic
def _read_only(typingctx, arr):
    """The array ``arr`` typed read-only (the same data, no copy) inside a kernel.

    The online objectives fill their pair weights in a writable buffer, the offline ones read the
    data's frozen ``W`` (:func:`pair_array`); passing the buffer read-only gives the pairwise
    kernels one specialisation instead of two (about 6 s of one core in a fresh clone's warm-up).
    """
    if not isinstance(arr, types.Array):
        return None
    sig = arr.copy(readonly=True)(arr)

    def codegen(context, builder, signature, args):
        # the same array structure: only numba's type changes
        context.nrt.incref(builder, signature.args[0], args[0])
        return args[0]

    return sig, codegen


@njit(**_JIT)
def _objective_grad(terms, lp, pi, rlp, grad_out, want_loss, parallel_rows, wbuf, u, ws):
    """:func:`objective_grad` at ``pi = exp(lp)``, with scratch ``u`` (X, K) and ``ws``
    (:func:`coverage_sim._dpo_fast.dpo_fast_workspace`)."""
    (codes, prms, source, W, P, fast, S, d, act, C, kl_coef, reward_coef, R, rho, loss_weights,
     unpaired, uprm, U, M, pg, pg_prm) = terms
    n_ctx, k = lp.shape
    loss = 0.0
    if codes.shape[0] > 0:
        if source == ONLINE:
            for x in range(n_ctx):
                for i in range(k):
                    pi_i = pi[x, i]
                    for j in range(k):
                        wbuf[x, i, j] = 2.0 * rho[x] * pi_i * pi[x, j] * P[x, i, j]
            loss += population_pairwise_sum(codes, prms, loss_weights, lp, rlp, _read_only(wbuf),
                                            grad_out)
        elif source == ONLINE_REF:
            for x in range(n_ctx):
                for i in range(k):
                    pi_i = pi[x, i]
                    ref_i = np.exp(rlp[x, i])
                    for j in range(k):
                        wbuf[x, i, j] = rho[x] * (pi_i * np.exp(rlp[x, j]) * P[x, i, j]
                                                  + ref_i * pi[x, j] * (1.0 - P[x, j, i]))
            loss += population_pairwise_sum(codes, prms, loss_weights, lp, rlp, _read_only(wbuf),
                                            grad_out)
        elif fast != 0:
            for x in range(n_ctx):
                for i in range(k):
                    u[x, i] = lp[x, i] - rlp[x, i] if act[x, i] else 0.0
            beta = prms[0, 0] / prms[0, 2]
            if parallel_rows is not None and parallel_rows:
                dpo_fast_grad_parallel(S, d, act, u, beta, grad_out, fast)
            else:
                dpo_fast_grad_ws(S, d, act, u, beta, grad_out, fast, ws)
            if want_loss:
                eps = prms[0, P_LABEL_SMOOTHING]
                robust = codes[0] == ROBUST
                if parallel_rows is not None and parallel_rows:
                    loss += dpo_fast_loss_parallel(S, W, act, u, beta, eps, robust, fast)
                else:
                    loss += dpo_fast_loss_ws(S, W, act, u, beta, eps, robust, fast, ws)
        else:
            loss += population_pairwise_sum(codes, prms, loss_weights, lp, rlp, W, grad_out)
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
    if unpaired >= 0:
        loss += _unpaired_term(unpaired, uprm, U, M, lp, rlp, grad_out, want_loss)
    if pg == NASH_MD:
        loss += _nash_md_term(pg_prm, P, rho, lp, pi, rlp, grad_out, np.empty(k))
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
def mix_reference(ref_lp, lp, alpha):
    """TR-DPO's soft update in place: log pi_ref <- normalise(alpha log pi + (1 - alpha) log pi_ref).

    TRL's ``SyncRefModelCallback`` mixes the reference model's *parameters*,
    theta_ref <- alpha theta + (1 - alpha) theta_ref; for a policy whose logits are affine in its
    parameters (tabular softmax, log-linear) that is exactly this geometric mixture of the two
    distributions, row by row. alpha = 1 is the hard sync pi_ref <- pi. Entries that are -inf in
    either (outside a support) stay -inf.
    """
    n_ctx, k = lp.shape
    for x in range(n_ctx):
        top = -np.inf
        for i in range(k):
            if alpha == 1.0:
                t = lp[x, i]
            elif lp[x, i] == -np.inf or ref_lp[x, i] == -np.inf:
                t = -np.inf
            else:
                t = alpha * lp[x, i] + (1.0 - alpha) * ref_lp[x, i]
            ref_lp[x, i] = t
            if t > top:
                top = t
        tot = 0.0
        for i in range(k):
            tot += np.exp(ref_lp[x, i] - top)
        norm = top + np.log(tot)
        for i in range(k):
            ref_lp[x, i] -= norm


def run_one(theta, kind, features, base, rlp, terms, optimizer, lr, adam_b1, adam_b2, adam_eps,
            steps, record_steps, out_lp, out_loss, parallel_rows):
    """Fused exact-gradient loop with a fixed reference; updates ``theta`` in place and fills the
    record buffers.

    Records the state after ``s`` updates for each ``s`` in ``record_steps`` (sorted, within
    ``[0, steps]``): ``out_lp[r]`` = log pi and ``out_loss[r]`` = loss. A moving reference
    (TR-DPO) runs through :func:`run_chunk`.
    """
    # A Python wrapper, not a jitted one: its constants (last=True, t0=0, ...) would be numba
    # literals and compile a second specialisation of the whole engine beside the one that
    # chunked runs and train_many use (about 40 s of a cold compile).
    n_ctx, k = rlp.shape
    run_chunk(theta, kind, features, base, rlp, terms, optimizer, lr, adam_b1, adam_b2, adam_eps,
              steps, True, record_steps, out_lp, out_loss, row_mode(parallel_rows),
              np.zeros(theta.size), np.zeros(theta.size), 0, rlp, 0, 1.0, np.zeros((0, n_ctx, k)))


@njit(nogil=True, **_JIT)
def run_chunk(theta, kind, features, base, rlp, terms, optimizer, lr, adam_b1, adam_b2, adam_eps,
              steps, last, record_steps, out_lp, out_loss, parallel_rows, m, v, t0, ref,
              ref_sync_every, ref_mix_alpha, out_rlp):
    """``steps`` updates of :func:`run_one`'s loop, resumable: Adam's moments ``m``, ``v`` and its
    step count ``t0`` (updates already made with them) carry over between chunks, so that chunks
    give the very same bits as one call. ``record_steps`` are relative to the chunk's start; the
    state after the last update is evaluated (and recorded) only when ``last``, as the next chunk
    starts from it otherwise.

    The gradients read the reference ``ref`` (X, K) (pass ``rlp`` itself for a fixed one). With
    ``ref_sync_every = tau > 0`` it moves (TR-DPO, Gorbatovski et al. 2024, arXiv:2404.09656):
    after every update whose global index ``t0 + s`` is a multiple of tau, ``ref`` becomes
    :func:`mix_reference` of itself and the current policy with ``ref_mix_alpha`` (TRL's
    ``SyncRefModelCallback.on_step_end`` at ``global_step % tau == 0``), in place, so that it
    carries over to the next chunk with Adam's state; the optimiser state is kept across syncs.
    ``out_rlp`` (R, X, K) records the reference with the policy (R = 0: not recorded).
    ``parallel_rows``: as :func:`row_mode` gives it.
    """
    n_ctx, k = rlp.shape
    rho = terms[13]
    wbuf = (np.zeros((n_ctx, k, k)) if (terms[2] == ONLINE or terms[2] == ONLINE_REF)
            and terms[0].shape[0] > 0 else np.zeros((0, 0, 0)))
    # Every per-step buffer is allocated once here: at K = 100 a step takes a few microseconds, so
    # per-step allocations would cost as much as the arithmetic.
    g = np.empty(theta.size)
    lp = np.empty((n_ctx, k))
    pi = np.empty((n_ctx, k))
    u = np.empty((n_ctx, k))
    bits = np.empty(k, dtype=np.int64)
    ws = dpo_fast_workspace(k)
    grad_lp = np.zeros((n_ctx, k))
    record_ref = out_rlp.shape[0] > 0
    nxt = 0
    n_rec = record_steps.size
    for s in range(steps + 1):
        if s == steps and not last:
            break
        _softmax_into(kind, theta, features, base, lp, pi, bits)
        if ref_sync_every > 0 and t0 + s > 0 and (t0 + s) % ref_sync_every == 0:
            mix_reference(ref, lp, ref_mix_alpha)
        recording = nxt < n_rec and record_steps[nxt] == s
        if s == steps and not recording:
            break
        grad_lp[:] = 0.0
        loss = _objective_grad(terms, lp, pi, ref, grad_lp, recording, parallel_rows, wbuf, u, ws)
        if recording:
            out_lp[nxt] = lp
            out_loss[nxt] = loss
            if record_ref:
                out_rlp[nxt] = ref
            nxt += 1
        if s == steps:
            break
        _backprop_into(kind, features, pi, grad_lp, g)
        apply_update(optimizer, theta, g, m, v, t0 + s + 1, lr, adam_b1, adam_b2, adam_eps, kind,
                     features, lp, grad_lp, rho)


def run_batch(theta, kind, features, base, rlp, stacked_terms, optimizer, lr, adam_b1, adam_b2,
              adam_eps, steps, record_steps, out_lp, out_loss, ref_sync_every, ref_mix_alpha,
              out_rlp, threads=1):
    """:func:`run_one` over a leading batch axis of independent problems, whole problems per
    thread (``threads`` Python threads; the jitted loop releases the GIL).

    ``stacked_terms``: the ``N_TERMS`` term arrays of the problems stacked along a new axis 0
    (:func:`stack_terms`); ``ref_sync_every`` (B,) int64 (0: a fixed reference), ``ref_mix_alpha``
    (B,), ``out_rlp`` (B, R, X, K) (R = 0 to skip recording the reference).
    """
    run_batch_chunk(theta, kind, features, base, rlp, stacked_terms, optimizer, lr, adam_b1,
                    adam_b2, adam_eps, steps, True, record_steps, out_lp, out_loss,
                    np.zeros(theta.shape), np.zeros(theta.shape), 0, rlp.copy(), ref_sync_every,
                    ref_mix_alpha, out_rlp, threads)


def run_batch_chunk(theta, kind, features, base, rlp, stacked_terms, optimizer, lr, adam_b1,
                    adam_b2, adam_eps, steps, last, record_steps, out_lp, out_loss, m, v, t0, refs,
                    ref_sync_every, ref_mix_alpha, out_rlp, threads=1):
    """:func:`run_chunk` over a leading batch axis (``m``, ``v`` shaped like ``theta``; ``refs``
    (B, X, K) the problems' current references, moved in place by those that sync), whole
    problems per thread (:func:`coverage_sim._threads.for_each`).

    Python threads over the one compiled :func:`run_chunk`, not a numba ``prange``: a parallel
    kernel would be a second top-level compile of the whole engine (about 25 s in a fresh clone,
    in every process that trains a batch), and problems take far longer than a call's dispatch
    (a few microseconds).
    """
    last, t0 = bool(last), int(t0)

    def one(b):
        run_chunk(theta[b], kind, features[b], base[b], rlp[b], terms_at(stacked_terms, b),
                  optimizer, lr[b], adam_b1, adam_b2, adam_eps, steps, last, record_steps,
                  out_lp[b], out_loss[b], None, m[b], v[b], t0, refs[b], ref_sync_every[b],
                  ref_mix_alpha[b], out_rlp[b])

    for_each(one, theta.shape[0], threads)


def terms_at(stacked_terms, b: int) -> tuple:
    """Problem ``b`` of a stacked term tuple (every entry with a leading batch axis)."""
    return tuple(entry[b] for entry in stacked_terms)


def stack_terms(all_terms: list) -> tuple:
    """Stack the term tuples of B problems entry by entry (C-contiguous), for :func:`run_batch`;
    the pair weights ``W`` as :func:`pair_array` (the kernels' one layout for it)."""
    stacked = [np.ascontiguousarray(np.stack([t[i] for t in all_terms])) for i in range(N_TERMS)]
    stacked[3] = pair_array(stacked[3])
    return tuple(stacked)
