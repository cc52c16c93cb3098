"""Fast exact gradient of the population DPO loss (and its label-smoothed / robust variants).

For the sigmoid family the loss over joint pair weights ``W`` (winner ``i``, loser ``j``) is

    L = sum_ij W'_ij * -log sigma(z_ij),   z_ij = beta * (u_i - u_j),   u = log pi - log pi_ref,

with effective weights ``W' = (1 - eps) W + eps W^T`` (cDPO label smoothing) or
``W' = ((1 - eps) W - eps W^T) / (1 - 2 eps)`` (robust DPO). Because ``sigma(-z) = 1 - sigma(z)``,

    dL/du_k = beta * sum_j S_kj sigma(z_kj) - d_k,   S = W + W^T,   d = beta * W' 1,

so one step reads one K x K matrix once (engineering.md §C). ``sigma(z_kj) = 1 / (1 + v_k w_j)`` with
``v = exp(-beta (u - c))``, ``w = exp(beta (u - c))`` and ``c`` the midrange of ``u`` makes the inner
loop exp-free and vectorisable; it is exact while ``beta * range(u) <= 1400`` (each factor stays below
``e^700``); beyond that a per-pair stable sigmoid is used.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.np.ufunc.parallel import _launch_threads

# A serial caller loaded from numba's cache links against the parallel runtime's symbols
# (allocate_sched, ...) without compiling a parallel function first; start that runtime up front.
_launch_threads()

__all__ = ["dpo_fast_precompute", "dpo_fast_grad", "dpo_fast_grad_parallel"]

# Beyond this beta * range(u) one of exp(+-beta (u - c)) would overflow.
_EXP_FREE_RANGE = 1400.0


def dpo_fast_precompute(weights: np.ndarray, label_smoothing: float, robust: bool, beta: float):
    """Return ``(S, d, active)`` for :func:`dpo_fast_grad` from joint pair weights ``(X, K, K)``.

    ``active[x, k]`` marks the responses some pair touches; the others get no gradient.
    """
    wt = np.swapaxes(weights, 1, 2)
    if robust:
        eff = ((1.0 - label_smoothing) * weights - label_smoothing * wt) / (1.0 - 2.0 * label_smoothing)
    else:
        eff = (1.0 - label_smoothing) * weights + label_smoothing * wt
    sym = np.ascontiguousarray(weights + wt)
    d = np.ascontiguousarray(beta * eff.sum(axis=2))
    active = np.ascontiguousarray(sym.sum(axis=2) > 0.0)
    return sym, d, active


_FLAGS = dict(cache=True, error_model="numpy", fastmath={"reassoc"})


@njit(**_FLAGS)
def _centre(u_row, active, beta, u, v, w):
    """Fill centred ``u`` and the exp factors ``v, w``; False if no response is active.

    Returns ``(any_active, exp_free)``.
    """
    k = u_row.size
    lo = np.inf
    hi = -np.inf
    for i in range(k):
        # A response no pair touches may have u = -inf - (-inf); keep it out of the centring.
        if active[i]:
            lo = min(lo, u_row[i])
            hi = max(hi, u_row[i])
    if not lo <= hi:
        return False, False
    centre = 0.5 * (lo + hi)
    for i in range(k):
        u[i] = u_row[i] - centre if active[i] else 0.0
        v[i] = np.exp(-beta * u[i])
        w[i] = np.exp(beta * u[i])
    return True, beta * (hi - lo) <= _EXP_FREE_RANGE


@njit(**_FLAGS)
def _row_sum(row, i, u, v, w, beta, exp_free):
    """``sum_j S_ij sigma(beta (u_i - u_j))``."""
    acc = 0.0
    if exp_free:
        vi = v[i]
        for j in range(row.size):
            acc += row[j] / (1.0 + vi * w[j])
    else:
        for j in range(row.size):
            z = beta * (u[i] - u[j])
            if z >= 0:
                s = 1.0 / (1.0 + np.exp(-z))
            else:
                e = np.exp(z)
                s = e / (1.0 + e)
            acc += row[j] * s
    return acc


@njit(**_FLAGS)
def dpo_fast_grad(sym, d, active, u_in, beta, grad_out):
    """Add ``dL/du`` (== ``dL/dlog pi``) into ``grad_out`` (X, K); serial, for batched runs."""
    n_ctx, k = u_in.shape
    u, v, w = np.empty(k), np.empty(k), np.empty(k)
    for x in range(n_ctx):
        ok, exp_free = _centre(u_in[x], active[x], beta, u, v, w)
        if not ok:
            continue
        for i in range(k):
            if active[x, i]:
                grad_out[x, i] += beta * _row_sum(sym[x, i], i, u, v, w, beta, exp_free) - d[x, i]


@njit(parallel=True, **_FLAGS)
def dpo_fast_grad_parallel(sym, d, active, u_in, beta, grad_out):
    """:func:`dpo_fast_grad` with the rows split over threads, for one large problem."""
    n_ctx, k = u_in.shape
    u, v, w = np.empty(k), np.empty(k), np.empty(k)
    for x in range(n_ctx):
        ok, exp_free = _centre(u_in[x], active[x], beta, u, v, w)
        if not ok:
            continue
        for i in prange(k):
            if active[x, i]:
                grad_out[x, i] += beta * _row_sum(sym[x, i], i, u, v, w, beta, exp_free) - d[x, i]
