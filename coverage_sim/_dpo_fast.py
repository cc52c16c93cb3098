"""Fast exact gradient of the population DPO loss (and its label-smoothed / robust variants).

For the sigmoid family the loss over joint pair weights ``W`` (winner ``i``, loser ``j``) is

    L = sum_ij W'_ij * -log sigma(z_ij),   z_ij = beta * (u_i - u_j),   u = log pi - log pi_ref,

with effective weights ``W' = (1 - eps) W + eps W^T`` (cDPO label smoothing) or
``W' = ((1 - eps) W - eps W^T) / (1 - 2 eps)`` (robust DPO). Because ``sigma(-z) = 1 - sigma(z)``,

    dL/du_k = beta * sum_j S_kj sigma(z_kj) - d_k,   S = W + W^T,   d = beta * W' 1,

so one step reads one K x K matrix (docs/theory.md, "Offline pairwise losses"). With ``w = exp(beta (u - c))`` (``c`` the
midrange of ``u``), ``sigma(z_kj) = w_k / (w_k + w_j)``, so with ``q_kj = S_kj / (w_k + w_j)`` (symmetric)

    dL/du_k = beta * w_k * sum_j q_kj - d_k

and each unordered pair ``k < j`` is computed once and added to both rows: the kernel reads only the
upper triangle of ``S``. Rows are taken four at a time, ``i .. i+3``, sharing one division per column:
with ``x_a = w_{i+a} + w_j``, ``r = 1 / (x_0 x_1 x_2 x_3)`` gives all four reciprocals
(``1 / x_0 = x_1 (x_2 x_3 r)``, ...). The inner loop is exp-free and vectorises. Let
``R = beta * range(u)``; the sums lie in ``[2 e^(-R/2), 2 e^(R/2)]``, so the product of four stays a
normal double while ``R <= 350``; for ``350 < R <= 700`` rows go two at a time (product of two); beyond
that a per-pair stable sigmoid over the full rows is used.

Rank-one pair matrices. Exact pairs from a behaviour policy with complementary labels
(``P_ij + P_ji = 1``) have ``S = 2 rho mu mu^T`` (``offline_pairs(env, mu)``, the common case), so
with ``S = v v^T`` the sums become ``v_k sum_j v_j / (w_k + w_j)``: the *factored* kernel reads two
vectors instead of a K x K matrix, which makes a step compute-bound rather than memory-bound. It is
chosen when every entry of ``S`` matches ``v v^T`` to 1e-14 relative (:func:`rank_one_factor`);
any other pair matrix (sampled pairs, lists) takes the dense kernel.

Small tails. ``dL/du_k`` above is a difference of two O(beta) sums, exact to about 1e-16 * beta in
absolute terms. A response that (almost) never loses in the data and whose margins saturate
(beta h >~ 37) has a true gradient below that: ``beta S sigma(z) - d`` would be ``1 - sigma(z)``
computed by cancellation, and round to exactly 0. The same gradient is also

    dL/du_k = e_k - beta * sum_{j != k} S_kj sigma(-z_kj),   e = beta * W'^T 1 (off the diagonal),

whose terms are all small for such a response. So for a response that essentially never loses
(``e_k < 2^-20 d_k``) whose first form lost more than 4 bits (``|g_k| < d_k / 16``), the row is
recomputed in this second form with a per-pair stable ``sigma(-z) = e^-z / (1 + e^-z)``: the tail is
computed directly, never as ``1 - sigma``. Only such rows pay for it (one exp per pair; typically
the one response per context that nothing beats), so the kernel's speed is unchanged elsewhere. A
response that both wins and loses against saturated margins keeps the absolute accuracy above: its
gradient is a difference of two sums that are genuinely almost equal.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba.np.ufunc.parallel import _launch_threads

# A serial caller loaded from numba's cache links against the parallel runtime's symbols
# (allocate_sched, ...) without compiling a parallel function first; start that runtime up front.
_launch_threads()

__all__ = ["DENSE", "FACTORED", "dpo_fast_precompute", "rank_one_factor", "dpo_fast_grad",
           "dpo_fast_loss_ws", "dpo_fast_loss_parallel",
           "dpo_fast_grad_ws", "dpo_fast_workspace", "dpo_fast_grad_parallel"]

# A row is recomputed in the direct small-tail form when its loser mass is below _TAIL_LOSER and its
# gradient below _TAIL_CANCEL times its winner mass d_k (module docstring, "Small tails").
_TAIL_LOSER = 2.0 ** -20
_TAIL_CANCEL = 2.0 ** -4
# R = beta * range(u) up to which the product of four (two) sums w_i + w_j is a normal double.
_RANGE_FOUR_ROWS = 350.0
_RANGE_TWO_ROWS = 700.0
# Rows are cut into blocks of equal triangle area, each adding into its own accumulator row; the
# parallel kernel runs the blocks on threads. The serial kernel uses the very same blocks and
# summation order, so that both give bit-identical gradients (a run must not depend on the thread
# split). The count depends on K only (numba.get_num_threads() inside a kernel would stop numba from
# caching it): one block below 128 responses, up to _MAX_BLOCKS (summing them costs blocks * K).
_MAX_BLOCKS = 16
_ROWS_PER_BLOCK = 64
# Kernels for S: DENSE reads S's upper triangle; FACTORED uses S = v v^T (rank one) and reads no
# K x K matrix. _FACTOR_RTOL: entrywise agreement required to take the factored kernel.
DENSE = 1
FACTORED = 2
_FACTOR_RTOL = 1e-14
# Tile edge of the rank-one test's blocked pass (two 64 x 64 float64 tiles fit in L1/L2).
_TILE = 64


def dpo_fast_precompute(weights: np.ndarray, label_smoothing: float, robust: bool, beta: float,
                        factored: bool = True):
    """Return ``(S, d, active, kernel)`` for :func:`dpo_fast_grad` from joint pair weights ``(X, K, K)``.

    ``d`` is ``(X, 2, K)``: ``d[:, 0] = beta W' 1`` (each response's winner mass, the term the
    gradient subtracts) and ``d[:, 1] = beta W'^T 1`` off the diagonal (its loser mass, for the
    direct small-tail form; module docstring). ``active[x, k]`` marks the responses some pair touches; the others get no gradient. ``kernel``
    is :data:`DENSE` (``S`` is ``(X, K, K)``) or, when ``factored`` and every context's ``S`` is
    rank one, :data:`FACTORED`: ``S`` is then ``(X, 1, K)`` holding ``v`` with ``S[x] = v v^T``.
    Exact pairs from a behaviour policy with complementary labels (``P_ij + P_ji = 1``, as every
    label model here gives) are rank one: ``S = 2 rho mu mu^T``, so one step needs no K x K reads.

    Cost: two row/column sums of ``weights`` and the rank-one test (one blocked pass over the upper
    triangle that stops at the first entry off ``v v^T``); the dense ``S = W + W^T`` is built only
    when the factored kernel does not apply.
    """
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    won = weights.sum(axis=2)           # W 1: mass of each response as the winner
    lost = weights.sum(axis=1)          # W^T 1: as the loser
    if robust:
        eff = (((1.0 - label_smoothing) * won - label_smoothing * lost)
               / (1.0 - 2.0 * label_smoothing))
    else:
        eff = (1.0 - label_smoothing) * won + label_smoothing * lost
    # The winner mass (row 0) and, for the direct small-tail form, the off-diagonal loser mass
    # (row 1) of each response under the label-smoothed weights: the column sums of
    # (1 - eps) W + eps W^T (robust: ((1 - eps) W - eps W^T) / (1 - 2 eps)) less the diagonal,
    # which is W_ii in both cases.
    if robust:
        eff_lost = (((1.0 - label_smoothing) * lost - label_smoothing * won)
                    / (1.0 - 2.0 * label_smoothing))
    else:
        eff_lost = (1.0 - label_smoothing) * lost + label_smoothing * won
    eff_lost = eff_lost - np.diagonal(weights, axis1=1, axis2=2)
    d = np.ascontiguousarray(np.stack([beta * eff, beta * eff_lost], axis=1))
    active = np.ascontiguousarray(won + lost > 0.0)
    factor = _rank_one_of_pairs(weights, _FACTOR_RTOL) if factored else None
    if factor is not None:
        return np.ascontiguousarray(factor[:, None, :]), d, active, FACTORED
    return np.ascontiguousarray(weights + np.swapaxes(weights, 1, 2)), d, active, DENSE


def rank_one_factor(sym: np.ndarray, rtol: float = _FACTOR_RTOL) -> np.ndarray | None:
    """``v`` (X, K) with ``sym[x] = v[x] v[x]^T`` entrywise to ``rtol``, or None if some context
    is not rank one (or has an empty diagonal).

    ``v`` is read off the column of the largest diagonal entry, ``v_i = S_im / sqrt(S_mm)``, so each
    entry is within a few ulp of the exact factor (row sums would add K ulp of rounding).
    """
    sym = np.ascontiguousarray(sym, dtype=np.float64)
    # S = W + W^T with W = S / 2 gives the same S entrywise (halving and doubling are exact).
    return _rank_one_of_pairs(0.5 * sym, float(rtol))


@njit(cache=True, error_model="numpy")
def _rank_one_of_pairs(weights, rtol):
    """:func:`rank_one_factor` of ``S = W + W^T`` read from ``W`` (X, K, K), without forming ``S``.

    Upper-triangle tiles of ``_TILE`` x ``_TILE``: the transposed tile is copied into a small
    buffer first, so that the test itself runs over contiguous rows (and vectorises); returns after
    the first tile row with an entry that is not ``v_i v_j`` to ``rtol``.
    """
    n_ctx, k, _ = weights.shape
    v = np.zeros((n_ctx, k))
    tile_t = np.empty((_TILE, _TILE))
    for x in range(n_ctx):
        w = weights[x]
        m = 0
        for i in range(1, k):
            if w[i, i] > w[m, m]:
                m = i
        smm = w[m, m] + w[m, m]
        if not smm > 0.0:
            return None
        root = np.sqrt(smm)
        vx = v[x]
        for i in range(k):
            vx[i] = (w[i, m] + w[m, i]) / root
        for bi in range(0, k, _TILE):
            ni = min(_TILE, k - bi)
            for bj in range(bi, k, _TILE):
                nj = min(_TILE, k - bj)
                for jj in range(nj):          # tile_t[ii, jj] = w[bj + jj, bi + ii]
                    src = w[bj + jj, bi:bi + ni]
                    for ii in range(ni):
                        tile_t[ii, jj] = src[ii]
                for ii in range(ni):
                    i = bi + ii
                    row = w[i, bj:bj + nj]
                    col = tile_t[ii, :nj]
                    vr = vx[bj:bj + nj]
                    vi = vx[i]
                    bad = 0
                    for jj in range(nj):
                        s = row[jj] + col[jj]
                        bad += not (abs(s - vi * vr[jj]) <= rtol * abs(s))
                    if bad:
                        return None
    return v


_FLAGS = dict(cache=True, error_model="numpy", fastmath={"reassoc"})


# exp(x) = 2^n e^r, n = round(x / ln 2), r = x - n ln 2 in Cody-Waite form (n * _LN2_HI is exact).
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_FACT = tuple(1.0 / float(np.prod(np.arange(1, n + 1))) for n in range(14))


@njit(cache=True, error_model="numpy")
def _exp_inplace(x, bits):
    """``x[:] = exp(x)`` for ``|x| <= 700``, vectorised (the libm ``exp`` call is scalar); bits: int64
    scratch of x's size. Degree-13 Taylor polynomial on ``|r| <= ln(2)/2``: within 2 ulp of exp."""
    c = _INV_FACT
    for i in range(x.size):
        n = np.floor(x[i] * _LOG2E + 0.5)
        r = (x[i] - n * _LN2_HI) - n * _LN2_LO
        p = c[13]
        p = p * r + c[12]
        p = p * r + c[11]
        p = p * r + c[10]
        p = p * r + c[9]
        p = p * r + c[8]
        p = p * r + c[7]
        p = p * r + c[6]
        p = p * r + c[5]
        p = p * r + c[4]
        p = p * r + c[3]
        p = p * r + c[2]
        p = p * r + c[1]
        x[i] = p * r + c[0]
        bits[i] = (np.int64(n) + 1023) << 52
    scale = bits.view(np.float64)
    for i in range(x.size):
        x[i] *= scale[i]


@njit(**_FLAGS)
def _centre(u_row, active, beta, u, w, bits):
    """Fill centred ``u`` and, when ``R <= 700``, ``w = exp(beta u)``.

    Returns ``R = beta * range(u)`` over the active responses, or -1.0 if none is active.
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
        return -1.0
    centre = 0.5 * (lo + hi)
    for i in range(k):
        u[i] = u_row[i] - centre if active[i] else 0.0
    spread = beta * (hi - lo)
    if spread <= _RANGE_TWO_ROWS:
        for i in range(k):
            w[i] = beta * u[i]
        _exp_inplace(w, bits)
    return spread


@njit(**_FLAGS)
def _triangle_rows(sym, lo, hi, w, acc):
    """For rows ``lo <= i < hi`` and every ``j >= i``: ``acc[i] += q_ij``, and ``acc[j] += q_ij`` for
    ``j > i``, with ``q_ij = S_ij / (w_i + w_j)`` (the diagonal counts half: ``sigma(0) = 1/2``).

    Rows two at a time, one division per two pairs (``R <= 700``)."""
    i = lo
    while i < hi:
        wi = w[i]
        if i + 1 == hi:  # a last unpaired row
            row = sym[i, i + 1:]
            wr = w[i + 1:]
            ar = acc[i + 1:]
            a = 0.5 * sym[i, i] / wi
            for j in range(row.size):
                q = row[j] / (wi + wr[j])
                a += q
                ar[j] += q
            acc[i] += a
            break
        wn = w[i + 1]
        q01 = sym[i, i + 1] / (wi + wn)
        a0 = 0.5 * sym[i, i] / wi + q01
        a1 = 0.5 * sym[i + 1, i + 1] / wn + q01
        r0 = sym[i, i + 2:]
        r1 = sym[i + 1, i + 2:]
        wr = w[i + 2:]
        ar = acc[i + 2:]
        for j in range(r0.size):
            x0 = wi + wr[j]
            x1 = wn + wr[j]
            rr = 1.0 / (x0 * x1)
            q0 = r0[j] * (x1 * rr)
            q1 = r1[j] * (x0 * rr)
            a0 += q0
            a1 += q1
            ar[j] += q0 + q1
        acc[i] += a0
        acc[i + 1] += a1
        i += 2


@njit(**_FLAGS)
def _triangle_rows4(sym, lo, hi, w, acc):
    """:func:`_triangle_rows` four rows at a time, one division per four pairs (``R <= 350``)."""
    i = lo
    while i + 4 <= hi:
        w0 = w[i]
        w1 = w[i + 1]
        w2 = w[i + 2]
        w3 = w[i + 3]
        # pairs inside the group, and the diagonal
        a0 = 0.5 * sym[i, i] / w0
        a1 = 0.5 * sym[i + 1, i + 1] / w1
        a2 = 0.5 * sym[i + 2, i + 2] / w2
        a3 = 0.5 * sym[i + 3, i + 3] / w3
        q = sym[i, i + 1] / (w0 + w1)
        a0 += q
        a1 += q
        q = sym[i, i + 2] / (w0 + w2)
        a0 += q
        a2 += q
        q = sym[i, i + 3] / (w0 + w3)
        a0 += q
        a3 += q
        q = sym[i + 1, i + 2] / (w1 + w2)
        a1 += q
        a2 += q
        q = sym[i + 1, i + 3] / (w1 + w3)
        a1 += q
        a3 += q
        q = sym[i + 2, i + 3] / (w2 + w3)
        a2 += q
        a3 += q
        r0 = sym[i, i + 4:]
        r1 = sym[i + 1, i + 4:]
        r2 = sym[i + 2, i + 4:]
        r3 = sym[i + 3, i + 4:]
        wr = w[i + 4:]
        ar = acc[i + 4:]
        for j in range(r0.size):
            x0 = w0 + wr[j]
            x1 = w1 + wr[j]
            x2 = w2 + wr[j]
            x3 = w3 + wr[j]
            p01 = x0 * x1
            p23 = x2 * x3
            rr = 1.0 / (p01 * p23)
            i01 = p23 * rr
            i23 = p01 * rr
            q0 = r0[j] * (x1 * i01)
            q1 = r1[j] * (x0 * i01)
            q2 = r2[j] * (x3 * i23)
            q3 = r3[j] * (x2 * i23)
            a0 += q0
            a1 += q1
            a2 += q2
            a3 += q3
            ar[j] += (q0 + q1) + (q2 + q3)
        acc[i] += a0
        acc[i + 1] += a1
        acc[i + 2] += a2
        acc[i + 3] += a3
        i += 4
    if i < hi:
        _triangle_rows(sym, i, hi, w, acc)


@njit(**_FLAGS)
def _factored_rows(v, lo, hi, w, acc):
    """:func:`_triangle_rows` for a rank-one ``S = v v^T``, reading no K x K matrix.

    With ``t_ij = 1 / (w_i + w_j)``: ``acc[i] += v_j t_ij`` and ``acc[j] += v_i t_ij`` (``j > i``),
    so that ``sum_j q_ij = v_i acc[i]`` (:func:`_finish` multiplies by ``v``). Rows two at a time.
    """
    i = lo
    while i < hi:
        wi = w[i]
        vi = v[i]
        if i + 1 == hi:  # a last unpaired row
            wr = w[i + 1:]
            vr = v[i + 1:]
            ar = acc[i + 1:]
            a = 0.5 * vi / wi
            for j in range(wr.size):
                t = 1.0 / (wi + wr[j])
                a += vr[j] * t
                ar[j] += vi * t
            acc[i] += a
            break
        wn = w[i + 1]
        vn = v[i + 1]
        t01 = 1.0 / (wi + wn)
        a0 = 0.5 * vi / wi + vn * t01
        a1 = 0.5 * vn / wn + vi * t01
        wr = w[i + 2:]
        vr = v[i + 2:]
        ar = acc[i + 2:]
        for j in range(wr.size):
            x0 = wi + wr[j]
            x1 = wn + wr[j]
            rr = 1.0 / (x0 * x1)
            t0 = x1 * rr
            t1 = x0 * rr
            a0 += vr[j] * t0
            a1 += vr[j] * t1
            ar[j] += vi * t0 + vn * t1
        acc[i] += a0
        acc[i + 1] += a1
        i += 2


@njit(**_FLAGS)
def _factored_rows4(v, lo, hi, w, acc):
    """:func:`_factored_rows` four rows at a time, one division per four pairs (``R <= 350``)."""
    i = lo
    while i + 4 <= hi:
        w0 = w[i]
        w1 = w[i + 1]
        w2 = w[i + 2]
        w3 = w[i + 3]
        v0 = v[i]
        v1 = v[i + 1]
        v2 = v[i + 2]
        v3 = v[i + 3]
        t = 1.0 / (w0 + w1)
        a0 = 0.5 * v0 / w0 + v1 * t
        a1 = 0.5 * v1 / w1 + v0 * t
        t = 1.0 / (w0 + w2)
        a0 += v2 * t
        a2 = 0.5 * v2 / w2 + v0 * t
        t = 1.0 / (w0 + w3)
        a0 += v3 * t
        a3 = 0.5 * v3 / w3 + v0 * t
        t = 1.0 / (w1 + w2)
        a1 += v2 * t
        a2 += v1 * t
        t = 1.0 / (w1 + w3)
        a1 += v3 * t
        a3 += v1 * t
        t = 1.0 / (w2 + w3)
        a2 += v3 * t
        a3 += v2 * t
        wr = w[i + 4:]
        vr = v[i + 4:]
        ar = acc[i + 4:]
        for j in range(wr.size):
            x0 = w0 + wr[j]
            x1 = w1 + wr[j]
            x2 = w2 + wr[j]
            x3 = w3 + wr[j]
            p01 = x0 * x1
            p23 = x2 * x3
            rr = 1.0 / (p01 * p23)
            i01 = p23 * rr
            i23 = p01 * rr
            t0 = x1 * i01
            t1 = x0 * i01
            t2 = x3 * i23
            t3 = x2 * i23
            vj = vr[j]
            a0 += vj * t0
            a1 += vj * t1
            a2 += vj * t2
            a3 += vj * t3
            ar[j] += (v0 * t0 + v1 * t1) + (v2 * t2 + v3 * t3)
        acc[i] += a0
        acc[i + 1] += a1
        acc[i + 2] += a2
        acc[i + 3] += a3
        i += 4
    if i < hi:
        _factored_rows(v, i, hi, w, acc)


@njit(**_FLAGS)
def _row_sum_exp(row, i, u, beta):
    """``sum_j S_ij sigma(beta (u_i - u_j))`` with a stable per-pair sigmoid (any range of u)."""
    acc = 0.0
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
def _row_tail(row, i, u, beta):
    """``sum_{j != i} S_ij sigma(-beta (u_i - u_j))``, each term a direct stable tail."""
    acc = 0.0
    for j in range(row.size):
        if j == i:
            continue
        z = beta * (u[i] - u[j])
        if z >= 0:
            e = np.exp(-z)
            s = e / (1.0 + e)
        else:
            s = 1.0 / (1.0 + np.exp(z))
        acc += row[j] * s
    return acc


@njit(**_FLAGS)
def _small_tail(g, sym, i, u, beta, kernel, d):
    """Row ``i``'s gradient ``g`` (computed as ``beta S sigma(z) - d``), recomputed in the direct
    small-tail form ``e - beta S sigma(-z)`` where the first form cancelled (module docstring)."""
    win = d[0, i]
    if abs(g) >= _TAIL_CANCEL * win or d[1, i] >= _TAIL_LOSER * win:
        return g
    return _tail_form(sym, i, u, beta, kernel, d)


@njit(**_FLAGS)
def _tail_form(sym, i, u, beta, kernel, d):
    """``e_i - beta sum_{j != i} S_ij sigma(-z_ij)``: row ``i``'s gradient by its direct tails."""
    if kernel == FACTORED:
        tail = sym[0, i] * _row_tail(sym[0], i, u, beta)
    else:
        tail = _row_tail(sym[i], i, u, beta)
    return d[1, i] - beta * tail


@njit(**_FLAGS)
def _split(k, n):
    """Boundaries splitting rows ``[0, k)`` into ``n`` blocks of about equal triangle area.

    Rows ``[0, r)`` cover ``A(r) = r (2k + 1 - r) / 2`` pairs (row ``i`` has ``k - i``); invert it.
    """
    b = np.empty(n + 1, dtype=np.int64)
    b[0] = 0
    total = 0.5 * k * (k + 1)
    for c in range(1, n):
        disc = (2.0 * k + 1.0) ** 2 - 8.0 * total * c / n
        r = int(np.round(0.5 * (2.0 * k + 1.0 - np.sqrt(max(disc, 0.0)))))
        b[c] = min(max(r, b[c - 1]), k)
    b[n] = k
    return b


@njit(**_FLAGS)
def _n_blocks(k):
    return min(_MAX_BLOCKS, max(1, k // _ROWS_PER_BLOCK))


@njit(**_FLAGS)
def _block(sym, bounds, c, w, acc, four, kernel):
    """Rows ``bounds[c] <= i < bounds[c + 1]`` into ``acc[c, bounds[c]:]`` (zeroed first); ``sym``
    is the context's ``S`` (K, K), or (1, K) holding ``v`` when ``kernel == FACTORED``."""
    mine = acc[c, bounds[c]:]
    mine[:] = 0.0
    if kernel == FACTORED:
        if four:
            _factored_rows4(sym[0], bounds[c], bounds[c + 1], w, acc[c])
        else:
            _factored_rows(sym[0], bounds[c], bounds[c + 1], w, acc[c])
    elif four:
        _triangle_rows4(sym, bounds[c], bounds[c + 1], w, acc[c])
    else:
        _triangle_rows(sym, bounds[c], bounds[c + 1], w, acc[c])


@njit(**_FLAGS)
def _finish(bounds, w, acc, active, d, beta, grad_out, sym, kernel, u):
    """Sum the blocks' accumulator rows into ``acc[0]`` and add the gradient of the active rows."""
    tot = acc[0]
    for c in range(1, bounds.size - 1):
        lo = bounds[c]
        src = acc[c, lo:]
        dst = tot[lo:]
        for i in range(src.size):
            dst[i] += src[i]
    if kernel == FACTORED:
        v = sym[0]
        for i in range(tot.size):
            tot[i] *= v[i]
    for i in range(tot.size):
        tot[i] = beta * w[i] * tot[i] - d[0, i]
    for i in range(tot.size):
        if active[i]:
            g = tot[i]
            # the test of _small_tail inline: the common path makes no call
            if abs(g) < _TAIL_CANCEL * d[0, i] and d[1, i] < _TAIL_LOSER * d[0, i]:
                g = _tail_form(sym, i, u, beta, kernel, d)
            grad_out[i] += g


@njit(**_FLAGS)
def _exact_row(sym, i, u, beta, kernel):
    """``sum_j S_ij sigma(beta (u_i - u_j))`` by the per-pair stable sigmoid (any range of u)."""
    if kernel == FACTORED:
        return sym[0, i] * _row_sum_exp(sym[0], i, u, beta)
    return _row_sum_exp(sym[i], i, u, beta)


@njit(**_FLAGS)
def dpo_fast_workspace(k):
    """Scratch for :func:`dpo_fast_grad_ws` at ``k`` responses: ``(u, w, bits, acc, bounds)``."""
    n_blocks = _n_blocks(k)
    return (np.empty(k), np.empty(k), np.empty(k, dtype=np.int64), np.empty((n_blocks, k)),
            _split(k, n_blocks))


@njit(**_FLAGS)
def dpo_fast_grad_ws(sym, d, active, u_in, beta, grad_out, kernel, ws):
    """:func:`dpo_fast_grad` with its scratch ``ws`` from :func:`dpo_fast_workspace` (a fused
    training loop allocates it once rather than at every step)."""
    u, w, bits, acc, bounds = ws
    n_ctx, k = u_in.shape
    n_blocks = bounds.size - 1
    for x in range(n_ctx):
        spread = _centre(u_in[x], active[x], beta, u, w, bits)
        if spread < 0.0:
            continue
        if spread <= _RANGE_TWO_ROWS:
            four = spread <= _RANGE_FOUR_ROWS
            for c in range(n_blocks):
                _block(sym[x], bounds, c, w, acc, four, kernel)
            _finish(bounds, w, acc, active[x], d[x], beta, grad_out[x], sym[x], kernel, u)
        else:
            for i in range(k):
                if active[x, i]:
                    g = beta * _exact_row(sym[x], i, u, beta, kernel) - d[x, 0, i]
                    grad_out[x, i] += _small_tail(g, sym[x], i, u, beta, kernel, d[x])


@njit(**_FLAGS)
def dpo_fast_grad(sym, d, active, u_in, beta, grad_out, kernel):
    """Add ``dL/du`` (== ``dL/dlog pi``) into ``grad_out`` (X, K); serial, for batched runs.

    ``sym``, ``d``, ``active`` and ``kernel`` come from :func:`dpo_fast_precompute`.
    """
    dpo_fast_grad_ws(sym, d, active, u_in, beta, grad_out, kernel,
                     dpo_fast_workspace(u_in.shape[1]))


@njit(parallel=True, **_FLAGS)
def dpo_fast_grad_parallel(sym, d, active, u_in, beta, grad_out, kernel):
    """:func:`dpo_fast_grad` with the row blocks split over threads, for one large problem."""
    n_ctx, k = u_in.shape
    u, w = np.empty(k), np.empty(k)
    bits = np.empty(k, dtype=np.int64)
    n_blocks = _n_blocks(k)
    acc = np.empty((n_blocks, k))
    bounds = _split(k, n_blocks)
    for x in range(n_ctx):
        spread = _centre(u_in[x], active[x], beta, u, w, bits)
        if spread < 0.0:
            continue
        if spread <= _RANGE_TWO_ROWS:
            four = spread <= _RANGE_FOUR_ROWS
            # prange's index is unsigned; np.int64 keeps the helpers to the one (int64)
            # specialisation that the serial kernels compile.
            for c in prange(n_blocks):
                _block(sym[x], bounds, np.int64(c), w, acc, four, kernel)
            _finish(bounds, w, acc, active[x], d[x], beta, grad_out[x], sym[x], kernel, u)
        else:
            for row in prange(k):
                i = np.int64(row)
                if active[x, i]:
                    g = beta * _exact_row(sym[x], i, u, beta, kernel) - d[x, 0, i]
                    grad_out[x, i] += _small_tail(g, sym[x], i, u, beta, kernel, d[x])


# ------------------------------------------------------------------------------------------------
# The loss, from the same centred u and w = exp(beta u) as the gradient.
#
# Per ordered pair the sigmoid-family loss is l(z) = (1 - eps) sp(-z) + eps sp(z) (cDPO; robust:
# [(1 - eps) sp(-z) - eps sp(z)] / (1 - 2 eps)), sp = softplus, z = z_ij = beta (u_i - u_j). With
# sp(+-z) = sp(-|z|) + relu(+-z) (the stable form of the per-pair kernel's log-sigmoid):
#
#     L = sum_{i<=j} S_ij sp(-|z_ij|) [diagonal: W_ii log 2] + beta [(1 - eps) A + eps B]   (cDPO)
#     A = sum_ij W_ij relu(u_j - u_i),  B = sum_ij W_ij relu(u_i - u_j)
#
# (robust: [(1 - 2 eps) (first sum) + beta ((1 - eps) A - eps B)] / (1 - 2 eps)). Every term is
# non-negative for cDPO, so nothing cancels, however small the loss. The first sum runs over the
# upper triangle of the symmetric S (or its factor v); sp(-|z|) = log1p(t), t = min(w_i, w_j) /
# max(w_i, w_j) = e^(-|z|), needs no exp: log1p(t) = 2 atanh(s), s = t / (2 + t) for
# t <= sqrt(2) - 1, else log 2 + 2 atanh(s) with s = (t - 1) / (t + 3), so that |s| <= 0.1716, where
# atanh(s) / s is a degree-6 polynomial in s^2 (interpolated at Chebyshev nodes: log1p within
# 7e-16 relative). For t <= 1e-4, log1p(t) = t - t^2/2 + t^3/3 - t^4/4 (to 2e-17), no division.
# With a rank-one S = v v^T the responses are visited in increasing w, so each row splits into
# these three ranges without a comparison per pair. A and B read W row by row, exp-free.
_LOG2 = 0.6931471805599453
# The polynomial is most of the work: fused multiply-adds ("contract") make it twice as fast.
_LOSS_FLAGS = dict(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
_SQRT2_M1 = 0.41421356237309503
_FAR = 1e-4
# atanh(s) / s = sum_n _ATANH_C[n] s^(2n) on |s| <= (sqrt 2 - 1) / (sqrt 2 + 1).
_ATANH_C = (1.0000000000000002, 0.3333333333327646, 0.20000000030870807, 0.14285708010553835,
            0.11111717273758953, 0.09060967215607607, 0.08418829985340244)


@njit(**_LOSS_FLAGS)
def _atanh2(s, offset):
    """``2 atanh(s) + offset`` for ``|s| <= 0.1716``."""
    c = _ATANH_C
    x = s * s
    p = c[6]
    p = p * x + c[5]
    p = p * x + c[4]
    p = p * x + c[3]
    p = p * x + c[2]
    p = p * x + c[1]
    p = p * x + c[0]
    return 2.0 * s * p + offset


@njit(**_LOSS_FLAGS)
def _log1p_ratio(a, b):
    """``log1p(min(a, b) / max(a, b))`` for positive ``a``, ``b``; branch-free, so that a loop over
    pairs vectorises (the range of ``s`` is chosen by arithmetic, not by a jump)."""
    swap = a < b
    lo = a if swap else b
    hi = b if swap else a
    big = 1.0 * (lo > _SQRT2_M1 * hi)
    return _atanh2((lo - big * hi) / (lo + (2.0 + big) * hi), big * _LOG2)


@njit(**_LOSS_FLAGS)
def _dense_sym_rows(sym, lo, hi, w):
    """``sum_{i<j} S_ij log1p(e^(-|z_ij|)) + sum_i S_ii log(2) / 2`` over rows ``lo <= i < hi``."""
    total = 0.0
    for i in range(lo, hi):
        wi = w[i]
        row = sym[i, i + 1:]
        wr = w[i + 1:]
        acc = 0.5 * _LOG2 * sym[i, i]
        for j in range(wr.size):
            acc += row[j] * _log1p_ratio(wi, wr[j])
        total += acc
    return total


@njit(**_LOSS_FLAGS)
def _factored_sym_rows(vs, ws, inv_ws, lo, hi):
    """:func:`_dense_sym_rows` for ``S = v v^T`` over sorted positions ``lo <= i < hi``: ``ws``
    ascending, ``vs`` in the same order, ``inv_ws = 1 / ws``. Row ``i`` meets ``t = ws_i / ws_j``
    decreasing in ``j``, so it splits at the two thresholds found by bisection."""
    total = 0.0
    for i in range(lo, hi):
        wi = ws[i]
        near = max(i + 1, np.searchsorted(ws, wi / _SQRT2_M1))
        far = max(near, np.searchsorted(ws, wi / _FAR))
        acc = 0.5 * _LOG2 * vs[i]
        wr = ws[i + 1:near]
        vr = vs[i + 1:near]
        for j in range(wr.size):
            acc += vr[j] * _atanh2((wi - wr[j]) / (wi + 3.0 * wr[j]), _LOG2)
        wr = ws[near:far]
        vr = vs[near:far]
        for j in range(wr.size):
            acc += vr[j] * _atanh2(wi / (2.0 * wr[j] + wi), 0.0)
        ir = inv_ws[far:]
        vr = vs[far:]
        for j in range(ir.size):
            t = wi * ir[j]
            acc += vr[j] * (t * (1.0 - t * (0.5 - t * (1.0 / 3.0 - 0.25 * t))))
        total += vs[i] * acc
    return total


@njit(**_LOSS_FLAGS)
def _exact_sym_rows(sym, lo, hi, u, beta, kernel):
    """The symmetric sum for ``R > 700`` (no ``w``): ``t = exp(-beta |u_i - u_j|)`` pair by pair."""
    total = 0.0
    for i in range(lo, hi):
        vi = sym[0, i] if kernel == FACTORED else 1.0
        acc = 0.5 * _LOG2 * (vi if kernel == FACTORED else sym[i, i])
        ur = u[i + 1:]
        for j in range(ur.size):
            t = np.exp(-beta * abs(u[i] - ur[j]))
            s_ij = sym[0, i + 1 + j] if kernel == FACTORED else sym[i, i + 1 + j]
            acc += s_ij * _log1p_ratio(t, 1.0)
        total += vi * acc
    return total


@njit(**_LOSS_FLAGS)
def _relu_rows(weights, lo, hi, u, both):
    """``(sum W_ij relu(u_j - u_i), sum W_ij relu(u_i - u_j))`` over rows ``lo <= i < hi``, all j
    (the second only when ``both``)."""
    a = 0.0
    b = 0.0
    for i in range(lo, hi):
        row = weights[i]
        ui = u[i]
        ra = 0.0
        rb = 0.0
        if both:
            for j in range(u.size):
                diff = u[j] - ui
                ra += row[j] * max(diff, 0.0)
                rb += row[j] * max(-diff, 0.0)
        else:
            for j in range(u.size):
                ra += row[j] * max(u[j] - ui, 0.0)
        a += ra
        b += rb
    return a, b


@njit(**_LOSS_FLAGS)
def _sorted_factor(v, w):
    """``(v, w, 1 / w)`` in increasing ``w`` (a stable order, so the sum is reproducible)."""
    order = np.argsort(w, kind="mergesort")
    ws = w[order]
    return v[order], ws, 1.0 / ws


@njit(**_LOSS_FLAGS)
def _loss_block(sym, weights, bounds, c, n_blocks, u, w, sorted_v, beta, spread, kernel, both,
                parts):
    """Block ``c`` of the loss: upper-triangle rows ``bounds[c] .. bounds[c+1]`` of the symmetric
    sum (sorted positions for a factored S) and an even share of the rows of ``A`` and ``B``, into
    ``parts[c]``."""
    k = u.size
    lo, hi = bounds[c], bounds[c + 1]
    if spread > _RANGE_TWO_ROWS:
        parts[c, 0] = _exact_sym_rows(sym, lo, hi, u, beta, kernel)
    elif kernel == FACTORED:
        vs, ws, inv_ws = sorted_v
        parts[c, 0] = _factored_sym_rows(vs, ws, inv_ws, lo, hi)
    else:
        parts[c, 0] = _dense_sym_rows(sym, lo, hi, w)
    a, b = _relu_rows(weights, (c * k) // n_blocks, ((c + 1) * k) // n_blocks, u, both)
    parts[c, 1] = a
    parts[c, 2] = b


@njit(**_LOSS_FLAGS)
def _prepare(sym, u, w, spread, kernel):
    """The sorted factor for :func:`_factored_sym_rows` (empty arrays when it is not used)."""
    if kernel == FACTORED and spread <= _RANGE_TWO_ROWS:
        return _sorted_factor(sym[0], w)
    empty = np.empty(0)
    return empty, empty, empty


@njit(**_LOSS_FLAGS)
def _combine(parts, beta, eps, robust):
    sym_sum = 0.0
    a = 0.0
    b = 0.0
    for c in range(parts.shape[0]):
        sym_sum += parts[c, 0]
        a += parts[c, 1]
        b += parts[c, 2]
    if robust:
        scaled = (1.0 - 2.0 * eps) * sym_sum + beta * ((1.0 - eps) * a - eps * b)
        return scaled / (1.0 - 2.0 * eps)
    return sym_sum + beta * ((1.0 - eps) * a + eps * b)


@njit(**_LOSS_FLAGS)
def dpo_fast_loss_ws(sym, weights, active, u_in, beta, eps, robust, kernel, ws):
    """The sigmoid-family population loss (cDPO with ``eps``, or robust DPO when ``robust``) at
    ``u = log pi - log pi_ref`` (X, K), from :func:`dpo_fast_precompute`'s ``S`` and the joint pair
    weights ``weights`` (X, K, K); ``ws`` from :func:`dpo_fast_workspace`.

    Equals :func:`coverage_sim._pair_kernels.population_pairwise` to rounding (every term is
    non-negative for cDPO, see the comment above :data:`_LOG2`). Cost: the upper triangle once with
    a division and a degree-13 odd polynomial per pair (none past ``|z| = log 1e4``), plus one
    exp-free pass over ``weights``: a few gradient steps, paid at recorded steps only.
    """
    u, w, bits, _, bounds = ws
    n_ctx, k = u_in.shape
    n_blocks = bounds.size - 1
    parts = np.zeros((n_blocks, 3))
    loss = 0.0
    for x in range(n_ctx):
        spread = _centre(u_in[x], active[x], beta, u, w, bits)
        if spread < 0.0:
            continue
        sorted_v = _prepare(sym[x], u, w, spread, kernel)
        for c in range(n_blocks):
            _loss_block(sym[x], weights[x], bounds, c, n_blocks, u, w, sorted_v, beta, spread,
                        kernel, eps != 0.0, parts)
        loss += _combine(parts, beta, eps, robust)
    return loss


@njit(parallel=True, **_LOSS_FLAGS)
def dpo_fast_loss_parallel(sym, weights, active, u_in, beta, eps, robust, kernel):
    """:func:`dpo_fast_loss_ws` with the blocks split over threads (the same blocks and summation
    order, so the same bits)."""
    n_ctx, k = u_in.shape
    u, w = np.empty(k), np.empty(k)
    bits = np.empty(k, dtype=np.int64)
    n_blocks = _n_blocks(k)
    bounds = _split(k, n_blocks)
    parts = np.zeros((n_blocks, 3))
    loss = 0.0
    for x in range(n_ctx):
        spread = _centre(u_in[x], active[x], beta, u, w, bits)
        if spread < 0.0:
            continue
        sorted_v = _prepare(sym[x], u, w, spread, kernel)
        for c in prange(n_blocks):   # np.int64: as in dpo_fast_grad_parallel
            _loss_block(sym[x], weights[x], bounds, np.int64(c), n_blocks, u, w, sorted_v, beta,
                        spread, kernel, eps != 0.0, parts)
        loss += _combine(parts, beta, eps, robust)
    return loss
