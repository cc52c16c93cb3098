"""Numba kernels for the pairwise preference losses of :mod:`coverage_sim.losses`.

These are the fast path; the reference definitions are :func:`coverage_sim.losses.pair_loss` and
:func:`coverage_sim.losses.population_loss`, and the tests check these kernels against them (values
to 1e-12, gradients against torch autograd to 1e-10 relative max-norm).

Everything is float64. Pass C-contiguous float64 arrays and a Python ``int`` code so that each
kernel compiles for one signature only (engineering.md §E).

Loss codes (keep in sync with ``coverage_sim.losses.PAIR_LOSSES``): the module constants
``SIGMOID = 0`` ... ``SIGMOID_NORM = 14``. Parameter vector ``prm`` (length ``N_PRM = 4``):
``prm[P_BETA]`` = beta, ``prm[P_LABEL_SMOOTHING]`` = label_smoothing (epsilon), ``prm[P_LENGTH]`` =
response length used by the length-normalised losses, ``prm[P_DISCOPOP_TAU]`` = discopop_tau. Build
it with ``coverage_sim.losses.get_pair_loss(name).pack(params)``, which validates the values; the
kernels do not.

Notation: u_w = lw - rw, u_l = ll - rl, h = u_w - u_l, where lw, ll are log pi of the winner and the
loser and rw, rl the reference log-probs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "SIGMOID", "HINGE", "IPO", "EXO_PAIR", "NCA_PAIR", "ROBUST", "BCO_PAIR", "SPPO_HARD", "AOT",
    "AOT_UNPAIRED", "APO_ZERO", "APO_DOWN", "DISCOPOP", "SFT", "SIGMOID_NORM", "N_CODES",
    "P_BETA", "P_LABEL_SMOOTHING", "P_LENGTH", "P_DISCOPOP_TAU", "N_PRM",
    "pair_value_grad", "population_pairwise", "aot_population", "aot_unpaired_marginals",
    "quantile_coupling_loss",
]

SIGMOID = 0
HINGE = 1
IPO = 2
EXO_PAIR = 3
NCA_PAIR = 4
ROBUST = 5
BCO_PAIR = 6
SPPO_HARD = 7
AOT = 8
AOT_UNPAIRED = 9
APO_ZERO = 10
APO_DOWN = 11
DISCOPOP = 12
SFT = 13
SIGMOID_NORM = 14
N_CODES = 15

P_BETA = 0
P_LABEL_SMOOTHING = 1
P_LENGTH = 2
P_DISCOPOP_TAU = 3
N_PRM = 4

_JIT = dict(cache=True, error_model="numpy")


@njit(**_JIT)
def _log_sigmoid(z):
    # log sigma(z) = min(z, 0) - log1p(e^{-|z|}): no overflow for any finite z.
    return min(z, 0.0) - np.log1p(np.exp(-abs(z)))


@njit(**_JIT)
def _sigmoid(z):
    # Only exponentiate a non-positive number so neither branch overflows.
    if z >= 0.0:
        return 1.0 / (1.0 + np.exp(-z))
    e = np.exp(z)
    return e / (1.0 + e)


@njit(**_JIT)
def _sigmoid_prime(z):
    # sigma(z) sigma(-z) = e^{-|z|} / (1 + e^{-|z|})^2, symmetric in z; underflows to 0, never NaN.
    e = np.exp(-abs(z))
    return e / ((1.0 + e) * (1.0 + e))


@njit(**_JIT)
def _smoothed_logistic(z, eps):
    """Value and d/dz of -(1-eps) log sigma(z) - eps log sigma(-z) (cDPO and the AOT link)."""
    if eps == 0.0:
        # Plain DPO, the hot path of sampled minibatches: one exp shared by log sigma(z) and
        # sigma(-z), bit-identical to the general branch (whose eps terms are exact zeros).
        e = np.exp(-abs(z))
        sig_neg = e / (1.0 + e) if z >= 0.0 else 1.0 / (1.0 + e)
        return -(min(z, 0.0) - np.log1p(e)), -sig_neg
    v = -(1.0 - eps) * _log_sigmoid(z) - eps * _log_sigmoid(-z)
    # sigma(z) - (1 - eps) written without the cancellation 1 - sigma(-z).
    g = eps * _sigmoid(z) - (1.0 - eps) * _sigmoid(-z)
    return v, g


@njit(**_JIT)
def pair_value_grad(code, lw, ll, rw, rl, prm):
    """Per-pair loss and its analytic derivatives with respect to ``lw`` and ``ll``.

    Args:
      code: integer loss code (module constants ``SIGMOID`` ... ``SIGMOID_NORM``).
      lw, ll: log pi(y_w | x) and log pi(y_l | x), floats.
      rw, rl: log pi_ref(y_w | x) and log pi_ref(y_l | x), floats.
      prm: float64 array of length 4 (beta, label_smoothing, length, discopop_tau); not validated
        here.

    Returns:
      ``(value, d value / d lw, d value / d ll)``. NaNs for ``AOT``/``AOT_UNPAIRED`` (they are not
      per-pair losses: use :func:`aot_population`) and for unknown codes. Hinge uses the subgradient
      0 at its kink.
    """
    beta = prm[P_BETA]
    eps = prm[P_LABEL_SMOOTHING]
    uw = lw - rw
    ul = ll - rl
    h = uw - ul
    if code == SIGMOID:
        v, g = _smoothed_logistic(beta * h, eps)
        g *= beta
        return v, g, -g
    if code == HINGE:
        m = 1.0 - beta * h
        if m > 0.0:
            return m, -beta, beta
        return 0.0, 0.0, 0.0
    if code == IPO:
        length = prm[P_LENGTH]
        r = h / length - 0.5 / beta
        g = 2.0 * r / length
        return r * r, g, -g
    if code == EXO_PAIR:
        z = beta * h
        lsp = _log_sigmoid(z)
        lsm = _log_sigmoid(-z)
        log_pw = np.log1p(-eps)
        log_pl = np.log(eps)
        v = _sigmoid(z) * (lsp - log_pw) + _sigmoid(-z) * (lsm - log_pl)
        # dv/dz = sigma(z) sigma(-z) [z - log((1-eps)/eps)], using log sigma(z) - log sigma(-z) = z.
        g = beta * _sigmoid_prime(z) * (z - log_pw + log_pl)
        return v, g, -g
    if code == NCA_PAIR:
        a = beta * uw
        b = beta * ul
        v = -_log_sigmoid(a) - 0.5 * _log_sigmoid(-a) - 0.5 * _log_sigmoid(-b)
        return v, beta * (0.5 * _sigmoid(a) - _sigmoid(-a)), 0.5 * beta * _sigmoid(b)
    if code == ROBUST:
        z = beta * h
        c = 1.0 / (1.0 - 2.0 * eps)
        v = c * (-(1.0 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z))
        g = -beta * c * ((1.0 - eps) * _sigmoid(-z) + eps * _sigmoid(z))
        return v, g, -g
    if code == BCO_PAIR:
        a = beta * uw
        b = beta * ul
        return -_log_sigmoid(a) - _log_sigmoid(-b), -beta * _sigmoid(-a), beta * _sigmoid(b)
    if code == SPPO_HARD:
        c = 0.5 / beta
        rw_ = uw - c
        rl_ = ul + c
        return rw_ * rw_ + rl_ * rl_, 2.0 * rw_, 2.0 * rl_
    if code == APO_ZERO:
        a = beta * uw
        b = beta * ul
        return _sigmoid(-a) + _sigmoid(b), -beta * _sigmoid_prime(a), beta * _sigmoid_prime(b)
    if code == APO_DOWN:
        a = beta * uw
        z = beta * h
        gz = beta * _sigmoid_prime(z)
        return _sigmoid(a) + _sigmoid(-z), beta * _sigmoid_prime(a) - gz, gz
    if code == DISCOPOP:
        tau = prm[P_DISCOPOP_TAU]
        z = beta * h
        zt = z / tau
        one_minus_m = _sigmoid(-zt)
        ls = _log_sigmoid(z)
        # m e^{-z} = exp(log sigma(z/tau) - z): finite whenever the loss itself is.
        mexp = np.exp(_log_sigmoid(zt) - z)
        v = -one_minus_m * ls + mexp
        dv = (_sigmoid_prime(zt) / tau * ls - one_minus_m * _sigmoid(-z)
              + mexp * (one_minus_m / tau - 1.0))
        g = beta * dv
        return v, g, -g
    if code == SFT:
        return -lw, -1.0, 0.0
    if code == SIGMOID_NORM:
        length = prm[P_LENGTH]
        z = beta * h / length
        g = -beta / length * _sigmoid(-z)
        return -_log_sigmoid(z), g, -g
    return np.nan, np.nan, np.nan


@njit(**_JIT)
def quantile_coupling_loss(a, wa, b, wb, beta, eps, ga, gb):
    """Loss of the monotone (quantile) coupling of two weighted 1-D samples under the AOT link.

    Sorts ``a`` with weights ``wa`` and ``b`` with weights ``wb`` (stable sort), walks the merged
    cumulative weights and, for each segment of length delta where sorted a-entry p and b-entry q
    overlap, adds ``delta * l(a[p] - b[q])`` with ``l(D) = -(1-eps) log sigma(beta D) - eps log
    sigma(-beta D)``. With equal unit weights this is TRL's "sort both, pair by rank" (AOT, Melnyk
    et al. 2024, arXiv:2406.05882) summed instead of averaged.

    Args:
      a, wa: values and positive weights, shape (n_a,).
      b, wb: values and positive weights, shape (n_b,); same total weight as ``wa`` (a tail beyond
        the smaller total, e.g. from rounding, is dropped).
      beta, eps: AOT beta and label_smoothing.
      ga, gb: shape (n_a,), (n_b,); the gradient with respect to ``a`` and ``b`` is ADDED into them
        (ties: a valid subgradient, given by the stable sort order).

    Returns:
      The loss (a float).
    """
    na = a.shape[0]
    nb = b.shape[0]
    if na == 0 or nb == 0:
        return 0.0
    # Stable sort so that the coupling (and the subgradient at ties) is the one the numpy reference
    # in coverage_sim.losses computes with kind="stable".
    oa = np.argsort(a, kind="mergesort")
    ob = np.argsort(b, kind="mergesort")
    p = 0
    q = 0
    ca = wa[oa[0]]
    cb = wb[ob[0]]
    t = 0.0
    loss = 0.0
    while p < na and q < nb:
        tn = min(ca, cb)
        d = tn - t
        if d > 0.0:
            ia = oa[p]
            ib = ob[q]
            v, g = _smoothed_logistic(beta * (a[ia] - b[ib]), eps)
            loss += d * v
            ga[ia] += d * beta * g
            gb[ib] -= d * beta * g
        t = tn
        # Sequential cumulative sums, as np.cumsum, so the breakpoints agree with the reference.
        if ca <= tn:
            p += 1
            if p < na:
                ca += wa[oa[p]]
        if cb <= tn:
            q += 1
            if q < nb:
                cb += wb[ob[q]]
    return loss


@njit(**_JIT)
def aot_unpaired_marginals(prm, lp, rlp, ww, wl, grad_out):
    """AOT-unpaired loss from the winner and loser marginals ``ww``, ``wl`` (X, K) of the pair
    weights: the quantile coupling of u = lp - rlp under ``ww`` against u under ``wl`` (zero weights
    skipped, entries in (x, k) order); the gradient is ADDED into ``grad_out``."""
    X, K = lp.shape
    beta = prm[P_BETA]
    eps = prm[P_LABEL_SMOOTHING]
    na = 0
    nb = 0
    for x in range(X):
        for k in range(K):
            if ww[x, k] != 0.0:
                na += 1
            if wl[x, k] != 0.0:
                nb += 1
    a = np.empty(na)
    wa = np.empty(na)
    ia = np.empty(na, dtype=np.int64)
    b = np.empty(nb)
    wb = np.empty(nb)
    ib = np.empty(nb, dtype=np.int64)
    na = 0
    nb = 0
    for x in range(X):
        for k in range(K):
            if ww[x, k] != 0.0:
                a[na] = lp[x, k] - rlp[x, k]
                wa[na] = ww[x, k]
                ia[na] = x * K + k
                na += 1
            if wl[x, k] != 0.0:
                b[nb] = lp[x, k] - rlp[x, k]
                wb[nb] = wl[x, k]
                ib[nb] = x * K + k
                nb += 1
    ga = np.zeros(na)
    gb = np.zeros(nb)
    loss = quantile_coupling_loss(a, wa, b, wb, beta, eps, ga, gb)
    for m in range(na):
        grad_out[ia[m] // K, ia[m] % K] += ga[m]
    for m in range(nb):
        grad_out[ib[m] // K, ib[m] % K] += gb[m]
    return loss


@njit(**_JIT)
def aot_population(code, prm, lp, rlp, W, grad_out):
    """Population AOT / AOT-unpaired loss by the quantile coupling; gradient added to grad_out.

    ``AOT``: a_{xij} = lp[x,i] - lp[x,j], b_{xij} = rlp[x,i] - rlp[x,j], both with weights W[x,i,j],
    all contexts pooled (TRL sorts over the whole batch); the gradient flows to a only.
    ``AOT_UNPAIRED``: a = u[x,k] = lp[x,k] - rlp[x,k] with the winner marginal sum_j W[x,k,j], b =
    u[x,k] with the loser marginal sum_i W[x,i,k]; the gradient flows to both. Zero weights are
    skipped.

    Args and Returns: as :func:`population_pairwise`.
    """
    X, K = lp.shape
    beta = prm[P_BETA]
    eps = prm[P_LABEL_SMOOTHING]
    if code == AOT:
        n = 0
        for x in range(X):
            for i in range(K):
                for j in range(K):
                    if W[x, i, j] != 0.0:
                        n += 1
        a = np.empty(n)
        b = np.empty(n)
        w = np.empty(n)
        xs = np.empty(n, dtype=np.int64)
        is_ = np.empty(n, dtype=np.int64)
        js = np.empty(n, dtype=np.int64)
        n = 0
        for x in range(X):
            for i in range(K):
                for j in range(K):
                    if W[x, i, j] != 0.0:
                        a[n] = lp[x, i] - lp[x, j]
                        b[n] = rlp[x, i] - rlp[x, j]
                        w[n] = W[x, i, j]
                        xs[n] = x
                        is_[n] = i
                        js[n] = j
                        n += 1
        ga = np.zeros(n)
        gb = np.zeros(n)
        loss = quantile_coupling_loss(a, w, b, w, beta, eps, ga, gb)
        for m in range(n):
            grad_out[xs[m], is_[m]] += ga[m]
            grad_out[xs[m], js[m]] -= ga[m]
        return loss
    if code == AOT_UNPAIRED:
        ww = np.zeros((X, K))
        wl = np.zeros((X, K))
        for x in range(X):
            for i in range(K):
                for j in range(K):
                    wij = W[x, i, j]
                    if wij != 0.0:
                        ww[x, i] += wij
                        wl[x, j] += wij
        return aot_unpaired_marginals(prm, lp, rlp, ww, wl, grad_out)
    raise ValueError("aot_population: code must be AOT (8) or AOT_UNPAIRED (9)")


@njit(**_JIT)
def population_pairwise(code, prm, lp, rlp, W, grad_out):
    """Exact population pairwise loss sum_{x,i,j} W[x,i,j] l(lp[x,i], lp[x,j], rlp[x,i], rlp[x,j]).

    Args:
      code: integer loss code, 0..14.
      prm: float64 (4,): beta, label_smoothing, length, discopop_tau (validated by the caller).
      lp: (X, K) log pi(y | x).
      rlp: (X, K) log pi_ref(y | x); may hold -inf where W is zero.
      W: (X, K, K) joint weights, W[x, i, j] = P(context x, winner i, loser j). Pairs with W == 0
        are skipped, so -inf log-probs outside the data support never produce NaN.
      grad_out: (X, K); d loss / d lp (every lp entry an independent coordinate) is ADDED into it.

    Returns:
      The loss (a float). ``AOT`` and ``AOT_UNPAIRED`` go through :func:`aot_population`.
    """
    X, K = lp.shape
    if rlp.shape[0] != X or rlp.shape[1] != K:
        raise ValueError("population_pairwise: rlp must have the shape of lp (X, K)")
    if W.shape[0] != X or W.shape[1] != K or W.shape[2] != K:
        raise ValueError("population_pairwise: W must have shape (X, K, K)")
    if grad_out.shape[0] != X or grad_out.shape[1] != K:
        raise ValueError("population_pairwise: grad_out must have the shape of lp (X, K)")
    if prm.shape[0] < N_PRM:
        raise ValueError("population_pairwise: prm must have length 4")
    if code < 0 or code >= N_CODES:
        raise ValueError("population_pairwise: unknown loss code (valid: 0..14)")
    if code == AOT or code == AOT_UNPAIRED:
        return aot_population(code, prm, lp, rlp, W, grad_out)
    loss = 0.0
    for x in range(X):
        for i in range(K):
            lwi = lp[x, i]
            rwi = rlp[x, i]
            gi = 0.0
            for j in range(K):
                w = W[x, i, j]
                if w == 0.0:
                    continue
                v, dw, dl = pair_value_grad(code, lwi, lp[x, j], rwi, rlp[x, j], prm)
                loss += w * v
                gi += w * dw
                grad_out[x, j] += w * dl
            grad_out[x, i] += gi
    return loss
