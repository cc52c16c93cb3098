"""Numba kernels behind :mod:`coverage_sim.metrics`: the pairwise metrics without K x K temporaries.

Each kernel reads a pair-weight matrix (or builds the weights of the exact ``pi_ref x pi_ref``
Bradley-Terry pairs on the fly) once, and evaluates every snapshot of a stack of policies against
it, so a training run's metrics cost one pass over the pairs, not one per snapshot:

- :func:`preference_matvec`: ``v_i = sum_j sigma(r_i - r_j) q_j`` (the gold win rate of ``pi``
  against ``q`` is then ``pi . v``, O(K) per policy);
- :func:`ranking_counts` / :func:`reference_ranking_counts`: Chen et al.'s ranking accuracy
  ``sum_{i != j} W_ij 1[pi_i >= pi_j]`` for R policies at once;
- :func:`ideal_ranking` / :func:`reference_ideal_ranking`: the idealised ranking accuracy ``R*``.

Bradley-Terry probabilities ``sigma(r_i - r_j) = e_i / (e_i + e_j)`` with ``e = exp(r - c)`` (``c``
the midrange of the context's rewards): one division per pair and no exp, valid while the reward
range is at most 700 (``e`` stays a normal double); wider ranges take a stable sigmoid per pair.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["preference_matvec", "ranking_counts", "reference_ranking_counts", "ideal_ranking",
           "reference_ideal_ranking"]

_JIT = dict(cache=True, error_model="numpy", fastmath={"reassoc"})
#: Reward range (per context) up to which sigma(r_i - r_j) comes from e = exp(r - c) ratios.
_EXP_FREE_RANGE = 700.0


@njit(**_JIT)
def _sigmoid(z):
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(**_JIT)
def _centred_exp(r):
    """``(e, ok)``: ``e = exp(r - midrange(r))`` and whether ``range(r) <= 700``."""
    lo = np.min(r)
    hi = np.max(r)
    e = np.exp(r - 0.5 * (lo + hi))
    return e, hi - lo <= _EXP_FREE_RANGE


@njit(**_JIT)
def _bt_row(r, e, ok, i, p_win, p_lose):
    """``p_win[j - i - 1] = sigma(r_i - r_j)``, ``p_lose[...] = sigma(r_j - r_i)`` for ``j > i``."""
    k = r.size
    ei = e[i]
    for j in range(i + 1, k):
        if ok:
            t = 1.0 / (ei + e[j])
            p_win[j - i - 1] = ei * t
            p_lose[j - i - 1] = e[j] * t
        else:
            p_win[j - i - 1] = _sigmoid(r[i] - r[j])
            p_lose[j - i - 1] = _sigmoid(r[j] - r[i])


@njit(**_JIT)
def preference_matvec(reward, other):
    """``v[x, i] = sum_j sigma(r[x, i] - r[x, j]) other[x, j]``; reward, other (X, K) -> (X, K).

    The upper triangle once: each pair's probability serves both ``v_i`` and ``v_j``
    (``sigma(r_j - r_i) = 1 - sigma(r_i - r_j)``, taken as ``e_j / (e_i + e_j)``, not by a subtraction).
    """
    n_ctx, k = reward.shape
    v = np.zeros((n_ctx, k))
    p_win = np.empty(k)
    p_lose = np.empty(k)
    for x in range(n_ctx):
        r = reward[x]
        q = other[x]
        vx = v[x]
        e, ok = _centred_exp(r)
        for i in range(k):
            _bt_row(r, e, ok, i, p_win, p_lose)
            acc = 0.5 * q[i]
            qi = q[i]
            n = k - i - 1
            tail_q = q[i + 1:]
            tail_v = vx[i + 1:]
            for j in range(n):
                acc += p_win[j] * tail_q[j]
                tail_v[j] += p_lose[j] * qi
            vx[i] += acc
    return v


@njit(**_JIT)
def ranking_counts(ranked, weights):
    """``(num[r], total)``: ``num[r] = sum_{x, i != j} W[x, i, j] 1[ranked[r, x, i] >= ranked[r, x, j]]``
    and ``total = sum_{x, i != j} W[x, i, j]``; ranked (R, X, K), weights (X, K, K).

    O(R X K^2) compares, vectorised over ``j``; rows without weight are skipped (sparse pair lists
    cost O(R X K) per listed winner).
    """
    n_rec, n_ctx, k = ranked.shape
    num = np.zeros(n_rec)
    total = 0.0
    for x in range(n_ctx):
        w = weights[x]
        for i in range(k):
            row = w[i]
            mass = 0.0
            for j in range(k):
                if j != i:
                    mass += row[j]
            if mass == 0.0:
                continue
            total += mass
            for r in range(n_rec):
                pr = ranked[r, x]
                pi = pr[i]
                acc = 0.0
                for j in range(i):
                    acc += row[j] if pi >= pr[j] else 0.0
                for j in range(i + 1, k):
                    acc += row[j] if pi >= pr[j] else 0.0
                num[r] += acc
    return num, total


@njit(**_JIT)
def reference_ranking_counts(ranked, ref, reward, rho):
    """:func:`ranking_counts` for the exact ``pi_ref x pi_ref`` pairs with gold Bradley-Terry labels,
    ``W[x, i, j] = rho_x ref_xi ref_xj sigma(r_xi - r_xj)`` (up to a constant), without forming them.

    Each unordered pair is visited once: ``i`` ahead of ``j`` scores ``W_ij``, behind scores ``W_ji``,
    a tie both. O(R X K^2 / 2) compares after one division per pair.
    """
    n_rec, n_ctx, k = ranked.shape
    num = np.zeros(n_rec)
    total = 0.0
    p_win = np.empty(k)
    p_lose = np.empty(k)
    w_ij = np.empty(k)
    w_ji = np.empty(k)
    for x in range(n_ctx):
        if rho[x] == 0.0:
            continue
        r = reward[x]
        a = ref[x]
        e, ok = _centred_exp(r)
        for i in range(k):
            if a[i] == 0.0:
                continue
            _bt_row(r, e, ok, i, p_win, p_lose)
            n = k - i - 1
            ci = rho[x] * a[i]
            tail_a = a[i + 1:]
            mass = 0.0
            for j in range(n):
                c = ci * tail_a[j]
                w_ij[j] = c * p_win[j]
                w_ji[j] = c * p_lose[j]
                mass += w_ij[j] + w_ji[j]
            total += mass
            for rr in range(n_rec):
                pr = ranked[rr, x]
                pi = pr[i]
                tail_p = pr[i + 1:]
                acc = 0.0
                for j in range(n):
                    pj = tail_p[j]
                    acc += (w_ij[j] if pi >= pj else 0.0) + (w_ji[j] if pj >= pi else 0.0)
                num[rr] += acc
    return num, total


@njit(cache=True, error_model="numpy")
def ideal_ranking(weights, log_ref, beta, cap):
    """``(num, total)`` of Chen et al.'s ``R*`` over explicit pair weights (X, K, K):
    ``num = sum W_ij 1[log ref_i - log ref_j + logit(alpha_ij) / beta > 0]`` over ``W_ij > 0``,
    ``alpha_ij = W_ij / (W_ij + W_ji)`` clipped to ``[cap, 1 - cap]``; ``total = sum_{i != j} W_ij``.
    """
    n_ctx, k, _ = weights.shape
    num = 0.0
    total = 0.0
    for x in range(n_ctx):
        w = weights[x]
        lr = log_ref[x]
        for i in range(k):
            for j in range(k):
                wij = w[i, j]
                if i == j or not wij > 0.0:
                    continue
                total += wij
                alpha = min(max(wij / (wij + w[j, i]), cap), 1.0 - cap)
                score = (lr[i] - lr[j]) + (np.log(alpha) - np.log1p(-alpha)) / beta
                if score > 0.0:
                    num += wij
    return num, total


@njit(cache=True, error_model="numpy")
def reference_ideal_ranking(ref, reward, rho, beta, cap):
    """:func:`ideal_ranking` for the exact ``pi_ref x pi_ref`` Bradley-Terry pairs: there
    ``logit(alpha_ij) = r_i - r_j``, clipped to ``+-logit(1 - cap)``, so no logarithm per pair."""
    n_ctx, k = ref.shape
    bound = np.log1p(-cap) - np.log(cap)
    num = 0.0
    total = 0.0
    p_win = np.empty(k)
    p_lose = np.empty(k)
    for x in range(n_ctx):
        if rho[x] == 0.0:
            continue
        r = reward[x]
        a = ref[x]
        e, ok = _centred_exp(r)
        log_a = np.log(a)
        for i in range(k):
            if a[i] == 0.0:
                continue
            _bt_row(r, e, ok, i, p_win, p_lose)
            for j in range(i + 1, k):
                if a[j] == 0.0:
                    continue
                c = rho[x] * a[i] * a[j]
                wij = c * p_win[j - i - 1]
                wji = c * p_lose[j - i - 1]
                total += wij + wji
                margin = min(max(r[i] - r[j], -bound), bound) / beta
                score = (log_a[i] - log_a[j]) + margin
                if score > 0.0:
                    num += wij
                elif score < 0.0:
                    num += wji
    return num, total
