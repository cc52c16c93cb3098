"""Numba kernels behind :mod:`coverage_sim.metrics`: the pairwise metrics without K x K temporaries.

Each kernel reads a pair-weight matrix (or builds the weights of the exact ``pi_ref x pi_ref``
Bradley-Terry pairs on the fly) once, and evaluates every snapshot of a stack of policies against
it, so a training run's metrics cost one pass over the pairs, not one per snapshot:

- :func:`preference_matvec`: ``v_i = sum_j sigma(r_i - r_j) q_j`` (the gold win rate of ``pi``
  against ``q`` is then ``pi . v``, O(K) per policy);
- :func:`ranking_counts` / :func:`reference_ranking_counts`: Chen et al.'s ranking accuracy
  ``sum_{i != j} W_ij 1[pi_i >= pi_j]`` for R policies at once, in O(R K^2);
  :func:`ordered_ranking_counts`: the same in O(R K log K) when the weights factor along an order
  (deterministic labels on pairs from ``mu x mu``);
- :func:`ideal_ranking` / :func:`reference_ideal_ranking`: the idealised ranking accuracy ``R*``.

Bradley-Terry probabilities ``sigma(r_i - r_j) = e_i / (e_i + e_j)`` with ``e = exp(r - c)`` (``c``
the midrange of the context's rewards): one division per pair and no exp, valid while the reward
range is at most 700 (``e`` stays a normal double); wider ranges take a stable sigmoid per pair.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from coverage_sim._pair_kernels import _sigmoid
from coverage_sim._threads import numba_threads

__all__ = ["N_BLOCKS", "preference_matvec", "ranking_block", "ranking_counts",
           "reference_ranking_block", "reference_ranking_counts", "ordered_ranking_counts",
           "ideal_ranking", "reference_ideal_ranking"]

_JIT = dict(cache=True, error_model="numpy", fastmath={"reassoc"})
#: Reward range (per context) up to which sigma(r_i - r_j) comes from e = exp(r - c) ratios.
_EXP_FREE_RANGE = 700.0


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
    ei = e[i]
    er = e[i + 1:]
    if ok:
        for j in range(er.size):
            t = 1.0 / (ei + er[j])
            p_win[j] = ei * t
            p_lose[j] = er[j] * t
    else:
        rr = r[i + 1:]
        for j in range(rr.size):
            p_win[j] = _sigmoid(r[i] - rr[j])
            p_lose[j] = _sigmoid(rr[j] - r[i])


@njit(**_JIT)
def preference_matvec(reward, other):
    """``v[x, i] = sum_j sigma(r[x, i] - r[x, j]) other[x, j]``; reward, other (X, K) -> (X, K).

    The upper triangle once: each pair's probability serves both ``v_i`` and ``v_j``
    (``sigma(r_j - r_i) = 1 - sigma(r_i - r_j)``, taken as ``e_j / (e_i + e_j)``, not by a
    subtraction).
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


#: Row blocks of the ranking passes (split over threads; fixed, so that sums do not depend on them).
N_BLOCKS = 16


@njit(**_JIT)
def _row_blocks(k, n, triangle):
    """``n + 1`` boundaries splitting rows ``[0, k)`` evenly, or (``triangle``) into blocks of about
    equal upper-triangle area (row ``i`` has ``k - i - 1`` pairs)."""
    b = np.empty(n + 1, dtype=np.int64)
    b[0] = 0
    for c in range(1, n):
        if triangle:
            r = k - np.sqrt(max(k * k * (1.0 - c / n), 0.0))
            b[c] = min(max(int(r), b[c - 1]), k)
        else:
            b[c] = (c * k) // n
    b[n] = k
    return b


@njit(**_JIT)
def ranking_block(ranked, weights, c, part, part_total):
    """Row block ``c`` (of :data:`N_BLOCKS`) of :func:`ranking_counts`: for each context ``x``,
    ``part[x, c, r]`` the weight of block ``c``'s pairs that policy ``r`` orders correctly and
    ``part_total[x, c]`` the block's weight; part (X, N_BLOCKS, R), part_total (X, N_BLOCKS)."""
    n_rec, n_ctx, k = ranked.shape
    bounds = _row_blocks(k, N_BLOCKS, False)
    for x in range(n_ctx):
        w = weights[x]
        for i in range(bounds[c], bounds[c + 1]):
            row = w[i]
            mass = 0.0
            for j in range(k):
                mass += row[j]
            mass -= row[i]
            if mass == 0.0:
                continue
            part_total[x, c] += mass
            left = row[:i]
            right = row[i + 1:]
            for r in range(n_rec):
                pr = ranked[r, x]
                pi = pr[i]
                pl = pr[:i]
                ph = pr[i + 1:]
                acc = 0.0
                for j in range(left.size):
                    acc += left[j] if pi >= pl[j] else 0.0
                for j in range(right.size):
                    acc += right[j] if pi >= ph[j] else 0.0
                part[x, c, r] += acc


def ranking_counts(ranked: np.ndarray, weights: np.ndarray, threads: int = 1):
    """``(num[r], total)``: ``num[r] = sum_{x, i != j} W[x, i, j] 1[ranked[r, x, i] >=
    ranked[r, x, j]]`` and ``total = sum_{x, i != j} W[x, i, j]``; ranked (R, X, K), weights
    (X, K, K), both C-contiguous float64.

    O(R X K^2) compares, vectorised over ``j``; rows without weight are skipped (a sparse list of
    pairs costs O(R X K) per listed winner). The rows are cut into :data:`N_BLOCKS` fixed blocks
    (:func:`ranking_block`), run on ``threads`` threads, and the blocks' sums are added in one
    order, so the result does not depend on ``threads``.
    """
    return _by_blocks(ranked, threads, _ranking_serial, _ranking_parallel, weights)


@njit(**_JIT)
def _ranking_serial(ranked, weights, part, part_total):
    for c in range(N_BLOCKS):
        ranking_block(ranked, weights, c, part, part_total)


@njit(parallel=True, **_JIT)
def _ranking_parallel(ranked, weights, part, part_total):
    for c in prange(N_BLOCKS):   # prange's index is unsigned: int64 keeps one specialisation
        ranking_block(ranked, weights, np.int64(c), part, part_total)


@njit(**_JIT)
def _centred_exps(reward):
    """:func:`_centred_exp` of each context: ``e`` (X, K) and ``ok`` (X,)."""
    e = np.empty(reward.shape)
    ok = np.empty(reward.shape[0], dtype=np.bool_)
    for x in range(reward.shape[0]):
        e[x], ok[x] = _centred_exp(reward[x])
    return e, ok


@njit(**_JIT)
def reference_ranking_block(ranked, ref, reward, rho, e, ok, c, part, part_total):
    """Row block ``c`` of :func:`reference_ranking_counts` (``e, ok`` from :func:`_centred_exps`
    of ``reward``; ``part``, ``part_total`` as in :func:`ranking_block`)."""
    n_rec, n_ctx, k = ranked.shape
    bounds = _row_blocks(k, N_BLOCKS, True)
    p_win = np.empty(k)
    p_lose = np.empty(k)
    w_ij = np.empty(k)
    w_ji = np.empty(k)
    for x in range(n_ctx):
        if rho[x] == 0.0:
            continue
        r = reward[x]
        a = ref[x]
        for i in range(bounds[c], bounds[c + 1]):
            if a[i] == 0.0:
                continue
            _bt_row(r, e[x], ok[x], i, p_win, p_lose)
            n = k - i - 1
            ci = rho[x] * a[i]
            tail_a = a[i + 1:]
            mass = 0.0
            for j in range(n):
                cij = ci * tail_a[j]
                w_ij[j] = cij * p_win[j]
                w_ji[j] = cij * p_lose[j]
                mass += w_ij[j] + w_ji[j]
            part_total[x, c] += mass
            wi = w_ij[:n]
            wj = w_ji[:n]
            for rr in range(n_rec):
                pr = ranked[rr, x]
                pi = pr[i]
                tail_p = pr[i + 1:]
                acc = 0.0
                for j in range(n):
                    pj = tail_p[j]
                    acc += (wi[j] if pi >= pj else 0.0) + (wj[j] if pj >= pi else 0.0)
                part[x, c, rr] += acc


def reference_ranking_counts(ranked: np.ndarray, ref: np.ndarray, reward: np.ndarray,
                             rho: np.ndarray, threads: int = 1):
    """:func:`ranking_counts` for the exact ``pi_ref x pi_ref`` pairs with gold Bradley-Terry
    labels, ``W[x, i, j] = rho_x ref_xi ref_xj sigma(r_xi - r_xj)`` (up to a constant), without
    forming them; ref, reward (X, K), rho (X,).

    Each unordered pair is visited once: ``i`` ahead of ``j`` scores ``W_ij``, behind scores
    ``W_ji``, a tie both. O(R X K^2 / 2) compares after one division per pair; blocks of about
    equal upper-triangle area over ``threads`` threads, as in :func:`ranking_counts`.
    """
    return _by_blocks(ranked, threads, _reference_serial, _reference_parallel, ref, reward, rho)


@njit(**_JIT)
def _reference_serial(ranked, ref, reward, rho, part, part_total):
    e, ok = _centred_exps(reward)
    for c in range(N_BLOCKS):
        reference_ranking_block(ranked, ref, reward, rho, e, ok, c, part, part_total)


@njit(parallel=True, **_JIT)
def _reference_parallel(ranked, ref, reward, rho, part, part_total):
    e, ok = _centred_exps(reward)
    for c in prange(N_BLOCKS):
        reference_ranking_block(ranked, ref, reward, rho, e, ok, np.int64(c), part, part_total)


def _by_blocks(ranked: np.ndarray, threads: int, serial, parallel, *data):
    """``(num, total)`` of a ranking pass: ``serial(ranked, *data, part, part_total)`` fills the
    blocks' sums on this thread, ``parallel`` (the same over a numba ``prange``) on ``threads``
    threads; the sums are added context by context, block by block.

    Two kernels because numba compiles a ``parallel=True`` kernel (its loop lowered to a thread
    pool) for seconds, about 5 s of one core for the two passes in a fresh clone: a process whose
    passes are all small (below ``metrics``' threshold, or on a busy machine) runs the serial ones
    and never compiles the parallel ones.
    """
    n_rec, n_ctx, _ = ranked.shape
    part = np.zeros((n_ctx, N_BLOCKS, n_rec))
    part_total = np.zeros((n_ctx, N_BLOCKS))
    if threads > 1:
        with numba_threads(threads):
            parallel(ranked, *data, part, part_total)
    else:
        serial(ranked, *data, part, part_total)
    return _sum_parts(part, part_total)


@njit(**_JIT)
def _sum_parts(part, part_total):
    n_ctx, n_blocks, n_rec = part.shape
    num = np.zeros(n_rec)
    total = 0.0
    for x in range(n_ctx):
        for c in range(n_blocks):
            total += part_total[x, c]
            for r in range(n_rec):
                num[r] += part[x, c, r]
    return num, total


@njit(cache=True, error_model="numpy")
def ideal_ranking(weights, log_ref, beta, cap):
    """``(num, total)`` of Chen et al.'s ``R*`` over explicit pair weights (X, K, K):
    ``num = sum W_ij 1[log ref_i - log ref_j + logit(alpha_ij) / beta > 0]`` over ``W_ij > 0``,
    ``alpha_ij = W_ij / (W_ij + W_ji)`` clipped to ``[cap, 1 - cap]``;
    ``total = sum_{i != j} W_ij``.

    Each unordered pair once: ``logit(alpha_ij) = log W_ij - log W_ji`` (infinite when one side is
    empty, then clipped) and ``score_ji = -score_ij``, so two logarithms per pair.
    """
    n_ctx, k, _ = weights.shape
    bound = np.log1p(-cap) - np.log(cap)
    num = 0.0
    total = 0.0
    for x in range(n_ctx):
        w = weights[x]
        lr = log_ref[x]
        for i in range(k):
            for j in range(i + 1, k):
                wij = w[i, j]
                wji = w[j, i]
                if not (wij > 0.0 or wji > 0.0):
                    continue
                total += wij + wji
                logit = min(max(np.log(wij) - np.log(wji), -bound), bound)
                score = (lr[i] - lr[j]) + logit / beta
                if score > 0.0:
                    num += wij
                elif score < 0.0:
                    num += wji
    return num, total


@njit(**_JIT)
def reference_ideal_ranking(ref, reward, rho, beta, cap):
    """:func:`ideal_ranking` for the exact ``pi_ref x pi_ref`` Bradley-Terry pairs: there
    ``logit(alpha_ij) = r_i - r_j``, clipped to ``+-logit(1 - cap)``, so no logarithm per pair
    (``score_ji = -score_ij`` exactly, so the pair scores one of its two directions or neither)."""
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
            ci = rho[x] * a[i]
            ar = a[i + 1:]
            lr = log_a[i + 1:]
            rr = r[i + 1:]
            acc = 0.0
            mass = 0.0
            for j in range(ar.size):
                c = ci * ar[j]
                wij = c * p_win[j]
                wji = c * p_lose[j]
                mass += wij + wji
                # a zero ar[j] has c = 0 and an infinite score: it adds nothing either way
                score = (log_a[i] - lr[j]) + min(max(r[i] - rr[j], -bound), bound) / beta
                acc += (wij if score > 0.0 else 0.0) + (wji if score < 0.0 else 0.0)
            num += acc
            total += mass
    return num, total


@njit(**_JIT)
def _fenwick_add(tree, i, value):
    i += 1
    while i < tree.size:
        tree[i] += value
        i += i & -i


@njit(**_JIT)
def _fenwick_prefix(tree, i):
    """Sum of the values added at positions ``0 .. i`` (inclusive)."""
    total = 0.0
    i += 1
    while i > 0:
        total += tree[i]
        i -= i & -i
    return total


@njit(cache=True, error_model="numpy")
def ordered_ranking_counts(ranked, mu, score, rho):
    """:func:`ranking_counts` in O(R X K log K) for pair weights that factor along an order,
    ``W[x, i, j] = rho_x mu_xi mu_xj D(s_xi, s_xj)`` with ``D = 1`` if ``s_i > s_j``, ``1/2`` on a
    tie and 0 otherwise (``i != j``): deterministic labels on the score ``s`` of pairs drawn from
    ``mu x mu`` (up to a constant factor).

    Per policy and context: visit the responses in increasing ``s``; a weighted concordance count
    (a Fenwick tree over the policy's ranks, ties in the policy counting as correct) gives each
    response's mass of already-visited, lower-scored responses it ranks at or above; responses of
    equal score add half of that among themselves.
    """
    n_rec, n_ctx, k = ranked.shape
    num = np.zeros(n_rec)
    total = 0.0
    tree = np.zeros(k + 1)
    for x in range(n_ctx):
        if rho[x] == 0.0:
            continue
        m = mu[x]
        by_score = np.argsort(score[x], kind="mergesort")
        s_sorted = score[x][by_score]
        # total = sum_{i != j} mu_i mu_j D_ij over this context (policy independent)
        below = 0.0
        g = 0
        while g < k:
            h = g
            mass = 0.0
            sq = 0.0
            while h < k and s_sorted[h] == s_sorted[g]:
                mass += m[by_score[h]]
                sq += m[by_score[h]] * m[by_score[h]]
                h += 1
            total += rho[x] * (mass * below + 0.5 * (mass * mass - sq))
            below += mass
            g = h
        for r in range(n_rec):
            p = ranked[r, x]
            by_p = np.argsort(p, kind="mergesort")
            rank = np.empty(k, dtype=np.int64)    # the last position of each response's p-tie
            j = 0
            while j < k:
                h = j
                while h + 1 < k and p[by_p[h + 1]] == p[by_p[j]]:
                    h += 1
                for q in range(j, h + 1):
                    rank[by_p[q]] = h
                j = h + 1
            tree[:] = 0.0
            acc = 0.0
            g = 0
            while g < k:
                h = g
                while h < k and s_sorted[h] == s_sorted[g]:
                    h += 1
                for a in range(g, h):            # lower-scored responses, weight 1
                    i = by_score[a]
                    acc += m[i] * _fenwick_prefix(tree, rank[i])
                for a in range(g, h):            # equal scores, weight 1/2, pairs (i, j) j != i
                    i = by_score[a]
                    for b in range(g, h):
                        jj = by_score[b]
                        if b != a and p[i] >= p[jj]:
                            acc += 0.5 * m[i] * m[jj]
                for a in range(g, h):
                    i = by_score[a]
                    _fenwick_add(tree, rank[i], m[i])
                g = h
            num[r] += rho[x] * acc
    return num, total
