"""Numba kernels for the pairwise preference losses of :mod:`coverage_sim.losses`.

These are the fast path; the reference definitions are :func:`coverage_sim.losses.pair_loss` and
:func:`coverage_sim.losses.population_loss`, and the tests check these kernels against them (values
to 1e-12, gradients against torch autograd to 1e-10 relative max-norm).

Everything is float64. Pass C-contiguous float64 arrays and a Python ``int`` code so that each
kernel compiles for one signature only (numba compiles, and caches, one machine-code version
per argument-type signature; a cold clone pays each one).

Loss codes (keep in sync with ``coverage_sim.losses.PAIR_LOSSES``): the module constants
``SIGMOID = 0`` ... ``SIGMOID_NORM = 14``. Parameter vector ``prm`` (length ``N_PRM = 7``):

====================  =====================================================================
``prm[P_BETA]``        beta
``prm[P_LABEL_SMOOTHING]``  label_smoothing (epsilon)
``prm[P_LENGTH]``      response length used by the length-normalised losses
``prm[P_DISCOPOP_TAU]``  discopop_tau
``prm[P_DIVERGENCE]``  TRL's ``f_divergence_type`` as a code: ``REVERSE_KL = 0`` (DPO),
                       ``FORWARD_KL = 1``, ``JS_DIVERGENCE = 2``, ``ALPHA_DIVERGENCE = 3``
``prm[P_ALPHA_COEF]``  TRL's ``f_alpha_divergence_coef`` (read by ``ALPHA_DIVERGENCE`` only)
``prm[P_USE_WEIGHTING]``  1.0 for WPO's per-pair weight (``use_weighting``), else 0.0; read by
                       :func:`pair_value_grad_sum` and the population kernels, not by
                       :func:`pair_value_grad`, because the weight needs the whole row of pi
====================  =====================================================================

Build it with ``coverage_sim.losses.get_pair_loss(name).pack(params)``, which validates the values;
the kernels do not.

Notation: u_w = lw - rw, u_l = ll - rl, h = u_w - u_l, where lw, ll are log pi of the winner and the
loser and rw, rl the reference log-probs. With an f-divergence (Wang et al. 2023, "Beyond Reverse
KL", arXiv:2309.16240) the losses read the scores s(u_w), s(u_l) and delta = s(u_w) - s(u_l) in place
of u_w, u_l and h, exactly where TRL's ``DPOTrainer._compute_loss`` does: every loss except
``apo_zero`` and ``sft`` (raw log-ratios or none), ``apo_down``'s first term (raw u_w) and
``aot``/``aot_unpaired`` (sorted raw log-ratios).

Per-pair layer (what every kernel that evaluates pairs should call, exact or sampled):

- :func:`pair_value_grad` -- one loss, one pair, divergence included.
- :func:`pair_value_grad_sum` -- a combined loss (TRL's list ``loss_type`` with ``loss_weights``):
  the weighted sum over components, each with WPO's weight when its ``P_USE_WEIGHTING`` slot is set.
- :func:`log_sq_norm` -- the per-context WPO normaliser ``log sum_a pi(a|x)^2`` it needs.
- :func:`unpaired_value_grad` -- one KTO / unpaired APO-zero example.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "SIGMOID", "HINGE", "IPO", "EXO_PAIR", "NCA_PAIR", "ROBUST", "BCO_PAIR", "SPPO_HARD", "AOT",
    "AOT_UNPAIRED", "APO_ZERO", "APO_DOWN", "DISCOPOP", "SFT", "SIGMOID_NORM", "N_CODES",
    "P_BETA", "P_LABEL_SMOOTHING", "P_LENGTH", "P_DISCOPOP_TAU", "P_DIVERGENCE", "P_ALPHA_COEF",
    "P_USE_WEIGHTING", "N_PRM", "REVERSE_KL", "FORWARD_KL", "JS_DIVERGENCE", "ALPHA_DIVERGENCE",
    "DIVERGENCE_CODES", "KTO", "APO_ZERO_UNPAIRED",
    "divergence_score", "divergence_score_diff", "pair_value_grad", "pair_value_grad_sum",
    "log_sq_norm", "unpaired_value_grad", "population_pairwise", "population_pairwise_sum",
    "aot_population", "aot_unpaired_marginals", "quantile_coupling_loss",
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
P_DIVERGENCE = 4
P_ALPHA_COEF = 5
P_USE_WEIGHTING = 6
N_PRM = 7

# TRL's f_divergence_type values, as the codes stored in prm[P_DIVERGENCE].
REVERSE_KL = 0
FORWARD_KL = 1
JS_DIVERGENCE = 2
ALPHA_DIVERGENCE = 3
DIVERGENCE_CODES = {"reverse_kl": REVERSE_KL, "forward_kl": FORWARD_KL,
                    "js_divergence": JS_DIVERGENCE, "alpha_divergence": ALPHA_DIVERGENCE}
# TRL falls back to reverse KL when |f_alpha_divergence_coef - 1| < 1e-6 (the limit f'(t) -> log t).
_ALPHA_AS_REVERSE_KL = 1e-6

# Unpaired (KTO-trainer) loss codes.
KTO = 0
APO_ZERO_UNPAIRED = 1

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
def _exponent_coef(div, alpha_coef):
    """c with s(u) = e^{c u} / c for the exponential scores, or 0.0 for the others."""
    if div == FORWARD_KL:
        return -1.0
    if div == ALPHA_DIVERGENCE and abs(alpha_coef - 1.0) >= _ALPHA_AS_REVERSE_KL:
        return alpha_coef - 1.0
    return 0.0


@njit(**_JIT)
def divergence_score(div, alpha_coef, u):
    """TRL's f-divergence score s(u) of a log-ratio u = log pi/pi_ref and its derivative s'(u).

    ``REVERSE_KL``: s = u. ``FORWARD_KL``: s = -e^{-u}. ``JS_DIVERGENCE``: s = log sigma(u).
    ``ALPHA_DIVERGENCE`` with a = ``alpha_coef``: s = e^{(a-1) u} / (a - 1), and s = u when
    |a - 1| < 1e-6 (TRL's fallback). These are f'(pi/pi_ref) of Wang et al. (arXiv:2309.16240) up to
    the additive constants TRL drops (they cancel in s(u_w) - s(u_l)).

    Returns:
      ``(s(u), s'(u))``.
    """
    c = _exponent_coef(div, alpha_coef)
    if c != 0.0:
        e = np.exp(c * u)
        return e / c, e
    if div == JS_DIVERGENCE:
        return _log_sigmoid(u), _sigmoid(-u)
    return u, 1.0


@njit(**_JIT)
def divergence_score_diff(div, alpha_coef, uw, ul):
    """s(u_w) - s(u_l) for TRL's f-divergence score, without cancellation.

    The exponential scores are written e^{max} * expm1(...) / c so that two nearly equal large
    scores do not cancel; the difference overflows only when the scores themselves do.
    """
    c = _exponent_coef(div, alpha_coef)
    if c != 0.0:
        a = c * uw
        b = c * ul
        if a == b:
            return 0.0
        if a > b:
            return -np.exp(a) * np.expm1(b - a) / c
        return np.exp(b) * np.expm1(a - b) / c
    if div == JS_DIVERGENCE:
        return _log_sigmoid(uw) - _log_sigmoid(ul)
    return uw - ul


@njit(inline="always", **_JIT)
def _loss_on_scores(code, sw, sl, h, lw, prm):
    """Value and derivatives with respect to the scores (s_w, s_l) of one pair.

    ``h`` = s_w - s_l (the margin). SFT's derivative is with respect to ``lw`` (it reads no score).
    """
    beta = prm[P_BETA]
    eps = prm[P_LABEL_SMOOTHING]
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
        a = beta * sw
        b = beta * sl
        v = -_log_sigmoid(a) - 0.5 * _log_sigmoid(-a) - 0.5 * _log_sigmoid(-b)
        return v, beta * (0.5 * _sigmoid(a) - _sigmoid(-a)), 0.5 * beta * _sigmoid(b)
    if code == ROBUST:
        z = beta * h
        c = 1.0 / (1.0 - 2.0 * eps)
        v = c * (-(1.0 - eps) * _log_sigmoid(z) + eps * _log_sigmoid(-z))
        g = -beta * c * ((1.0 - eps) * _sigmoid(-z) + eps * _sigmoid(z))
        return v, g, -g
    if code == BCO_PAIR:
        a = beta * sw
        b = beta * sl
        return -_log_sigmoid(a) - _log_sigmoid(-b), -beta * _sigmoid(-a), beta * _sigmoid(b)
    if code == SPPO_HARD:
        c = 0.5 / beta
        rw_ = sw - c
        rl_ = sl + c
        return rw_ * rw_ + rl_ * rl_, 2.0 * rw_, 2.0 * rl_
    if code == APO_ZERO:
        a = beta * sw
        b = beta * sl
        return _sigmoid(-a) + _sigmoid(b), -beta * _sigmoid_prime(a), beta * _sigmoid_prime(b)
    if code == APO_DOWN:
        a = beta * sw
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
def pair_value_grad(code, lw, ll, rw, rl, prm):
    """Per-pair loss and its analytic derivatives with respect to ``lw`` and ``ll``.

    Includes the f-divergence score of ``prm[P_DIVERGENCE]`` wherever TRL applies it (see the
    module docstring); ignores ``prm[P_USE_WEIGHTING]`` (use :func:`pair_value_grad_sum`).

    Args:
      code: integer loss code (module constants ``SIGMOID`` ... ``SIGMOID_NORM``).
      lw, ll: log pi(y_w | x) and log pi(y_l | x), floats.
      rw, rl: log pi_ref(y_w | x) and log pi_ref(y_l | x), floats.
      prm: float64 array of length ``N_PRM`` (see the module docstring); not validated here.

    Returns:
      ``(value, d value / d lw, d value / d ll)``. NaNs for ``AOT``/``AOT_UNPAIRED`` (they are not
      per-pair losses: use :func:`aot_population`) and for unknown codes. Hinge uses the subgradient
      0 at its kink.
    """
    uw = lw - rw
    ul = ll - rl
    div = int(prm[P_DIVERGENCE])
    if code == AOT or code == AOT_UNPAIRED:
        return np.nan, np.nan, np.nan
    if div == REVERSE_KL or code == APO_ZERO or code == SFT:
        # Identity score: also the losses TRL computes on the raw log-ratios whatever the divergence.
        v, gw, gl = _loss_on_scores(code, uw, ul, uw - ul, lw, prm)
        return v, gw, gl
    a = prm[P_ALPHA_COEF]
    sw, dsw = divergence_score(div, a, uw)
    sl, dsl = divergence_score(div, a, ul)
    h = divergence_score_diff(div, a, uw, ul)
    if code == APO_DOWN:
        # TRL: sigma(beta u_w) on the raw log-ratio + (1 - sigma(beta delta)) on the scores.
        beta = prm[P_BETA]
        gz = beta * _sigmoid_prime(beta * h)
        return (_sigmoid(beta * uw) + _sigmoid(-beta * h),
                beta * _sigmoid_prime(beta * uw) - gz * dsw, gz * dsl)
    v, gw, gl = _loss_on_scores(code, sw, sl, h, lw, prm)
    return v, gw * dsw, gl * dsl


@njit(**_JIT)
def pair_value_grad_sum(codes, prms, loss_weights, lw, ll, rw, rl, log_norm):
    """A combined per-pair loss: sum_c loss_weights[c] * w_c * l_c, with derivatives.

    TRL's list-valued ``loss_type`` with ``loss_weights`` (``DPOTrainer._compute_loss`` sums
    ``per_sequence_loss.mean() * loss_weight`` over the components). When component c has
    ``prms[c, P_USE_WEIGHTING]`` set, w_c is WPO's weight w(y_w) w(y_l) (Zhou et al. 2024,
    arXiv:2406.11827) in its one-step form w(y) = pi(y|x) / sum_a pi(a|x)^2, i.e.
    ``exp(lw + ll - 2 log_norm)``, held fixed in the gradient (TRL computes it under
    ``torch.no_grad``); otherwise w_c = 1. ``AOT``/``AOT_UNPAIRED`` components are skipped: they are
    batch losses (:func:`aot_population`).

    Args:
      codes: (n,) int64 loss codes.
      prms: (n, N_PRM) float64 parameter vectors, one per component.
      loss_weights: (n,) float64.
      lw, ll, rw, rl: as :func:`pair_value_grad`.
      log_norm: ``log sum_a pi(a|x)^2`` of this pair's context (:func:`log_sq_norm`); read only by
        components with ``P_USE_WEIGHTING`` set.

    Returns:
      ``(value, d value / d lw, d value / d ll)``.
    """
    v = 0.0
    gw = 0.0
    gl = 0.0
    for c in range(codes.shape[0]):
        code = codes[c]
        if code == AOT or code == AOT_UNPAIRED:
            continue
        vc, gwc, glc = pair_value_grad(code, lw, ll, rw, rl, prms[c])
        scale = loss_weights[c]
        if prms[c, P_USE_WEIGHTING] != 0.0:
            scale *= np.exp(lw + ll - 2.0 * log_norm)
        v += scale * vc
        gw += scale * gwc
        gl += scale * glc
    return v, gw, gl


@njit(**_JIT)
def log_sq_norm(lp_row):
    """``log sum_a pi(a|x)^2`` of one context's log-probabilities (entries -inf allowed).

    The normaliser of WPO's one-step weight w(y) = pi(y) / sum_a pi(a)^2: TRL's token weight
    ``exp(log p - (logsumexp(2 z) - 2 logsumexp(z)))`` for one token with logits z = ``lp_row``.
    """
    m = -np.inf
    for k in range(lp_row.shape[0]):
        if lp_row[k] > m:
            m = lp_row[k]
    if m == -np.inf:
        return -np.inf
    s = 0.0
    for k in range(lp_row.shape[0]):
        s += np.exp(2.0 * (lp_row[k] - m))
    return 2.0 * m + np.log(s)


@njit(**_JIT)
def unpaired_value_grad(code, desirable, u, z0, beta):
    """One unpaired example of TRL's KTO trainer: loss and d loss / d u.

    ``KTO`` (Ethayarajh et al. 2024, arXiv:2402.01306, eq. 7 as in TRL): desirable
    1 - sigma(beta (u - z0)), undesirable 1 - sigma(beta (z0 - u)). ``APO_ZERO_UNPAIRED``
    (D'Oosterlinck et al. 2024, arXiv:2408.06266): desirable 1 - sigma(beta u), undesirable
    sigma(beta u); it reads no z0. The desirable/undesirable weights multiply outside.

    Args:
      code: ``KTO`` or ``APO_ZERO_UNPAIRED``.
      desirable: True for a desirable example.
      u: log pi(y|x) - log pi_ref(y|x).
      z0: KTO's reference point (held fixed in the gradient).
      beta: KTO's beta.

    Returns:
      ``(value, d value / d u)``; NaNs for an unknown code.
    """
    if code == KTO:
        z = beta * (u - z0)
    elif code == APO_ZERO_UNPAIRED:
        z = beta * u
    else:
        return np.nan, np.nan
    g = beta * _sigmoid_prime(z)
    if desirable:
        return _sigmoid(-z), -g
    return _sigmoid(z), g


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
    skipped. TRL sorts the raw log-ratios, so no f-divergence score applies.

    Args and Returns: as :func:`population_pairwise`.
    """
    return _aot_population_scaled(code, prm, lp, rlp, W, grad_out, 1.0)


@njit(**_JIT)
def _aot_population_scaled(code, prm, lp, rlp, W, grad_out, scale):
    """:func:`aot_population` times ``scale`` (loss and gradient), for a combined loss."""
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
            grad_out[xs[m], is_[m]] += scale * ga[m]
            grad_out[xs[m], js[m]] -= scale * ga[m]
        return scale * loss
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
        if scale == 1.0:
            return aot_unpaired_marginals(prm, lp, rlp, ww, wl, grad_out)
        g = np.zeros((X, K))
        loss = aot_unpaired_marginals(prm, lp, rlp, ww, wl, g)
        for x in range(X):
            for k in range(K):
                grad_out[x, k] += scale * g[x, k]
        return scale * loss
    raise ValueError("aot_population: code must be AOT (8) or AOT_UNPAIRED (9)")


@njit(**_JIT)
def population_pairwise(code, prm, lp, rlp, W, grad_out):
    """Exact population pairwise loss sum_{x,i,j} W[x,i,j] l(lp[x,i], lp[x,j], rlp[x,i], rlp[x,j]).

    One loss; :func:`population_pairwise_sum` with a single component of weight 1.

    Args:
      code: integer loss code, 0..14.
      prm: float64 (N_PRM,) parameter vector (validated by the caller); with
        ``prm[P_USE_WEIGHTING]`` set each pair is weighted by WPO's w(y_w) w(y_l) computed from
        ``lp`` and held fixed in the gradient.
      lp: (X, K) log pi(y | x).
      rlp: (X, K) log pi_ref(y | x); may hold -inf where W is zero.
      W: (X, K, K) joint weights, W[x, i, j] = P(context x, winner i, loser j). Pairs with W == 0
        are skipped, so -inf log-probs outside the data support never produce NaN.
      grad_out: (X, K); d loss / d lp (every lp entry an independent coordinate) is ADDED into it.

    Returns:
      The loss (a float). ``AOT`` and ``AOT_UNPAIRED`` go through :func:`aot_population`.
    """
    if prm.shape[0] < N_PRM:
        raise ValueError("population_pairwise: prm must have length N_PRM = 7")
    codes = np.empty(1, dtype=np.int64)
    codes[0] = code
    prms = np.empty((1, prm.shape[0]))
    prms[0] = prm
    return population_pairwise_sum(codes, prms, np.ones(1), lp, rlp, W, grad_out)


@njit(**_JIT)
def population_pairwise_sum(codes, prms, loss_weights, lp, rlp, W, grad_out):
    """Population loss of a combined pairwise loss: sum_c loss_weights[c] * L_c(W).

    Per pair it evaluates :func:`pair_value_grad_sum` (component by component); AOT components go
    through the quantile coupling of :func:`aot_population`, scaled by their weight. WPO's
    per-context normaliser is computed from ``lp`` when some component uses it.

    Args:
      codes: (n,) int64 loss codes, each 0..14.
      prms: (n, N_PRM) float64, one validated parameter vector per component.
      loss_weights: (n,) float64.
      lp, rlp, W, grad_out: as :func:`population_pairwise`.

    Returns:
      The loss (a float).
    """
    X, K = lp.shape
    if rlp.shape[0] != X or rlp.shape[1] != K:
        raise ValueError("population_pairwise: rlp must have the shape of lp (X, K)")
    if W.shape[0] != X or W.shape[1] != K or W.shape[2] != K:
        raise ValueError("population_pairwise: W must have shape (X, K, K)")
    if grad_out.shape[0] != X or grad_out.shape[1] != K:
        raise ValueError("population_pairwise: grad_out must have the shape of lp (X, K)")
    n = codes.shape[0]
    if prms.shape[0] != n or prms.shape[1] < N_PRM or loss_weights.shape[0] != n:
        raise ValueError("population_pairwise: prms must be (n, N_PRM = 7) and loss_weights (n,) "
                         "for n loss codes")
    loss = 0.0
    per_pair = False
    weighted = False
    for c in range(n):
        code = codes[c]
        if code < 0 or code >= N_CODES:
            raise ValueError("population_pairwise: unknown loss code (valid: 0..14)")
        if code == AOT or code == AOT_UNPAIRED:
            loss += _aot_population_scaled(code, prms[c], lp, rlp, W, grad_out, loss_weights[c])
        else:
            per_pair = True
            if prms[c, P_USE_WEIGHTING] != 0.0:
                weighted = True
    if not per_pair:
        return loss
    log_norm = np.zeros(X)
    if weighted:
        for x in range(X):
            log_norm[x] = log_sq_norm(lp[x])
    # Component by component (each pass is the single-loss loop, its parameter row sliced once:
    # slicing prms per pair would cost more than the pair itself). Per pair this is
    # pair_value_grad_sum, summed in another order.
    for c in range(n):
        code = codes[c]
        if code != AOT and code != AOT_UNPAIRED:
            loss += _population_component(code, prms[c], loss_weights[c], lp, rlp, W, grad_out,
                                          log_norm)
    return loss


@njit(**_JIT)
def _population_component(code, prm, scale, lp, rlp, W, grad_out, log_norm):
    """``scale`` times one per-pair loss over the pair weights ``W``, with WPO's weight
    exp(lw + ll - 2 log_norm[x]) (held fixed) when ``prm[P_USE_WEIGHTING]`` is set; gradient ADDED
    into ``grad_out``. With scale 1 and no WPO the arithmetic is that of the single-loss kernel."""
    X, K = lp.shape
    weighted = prm[P_USE_WEIGHTING] != 0.0
    # Reverse KL (and the losses TRL computes on raw log-ratios): the loss of the scores u_w, u_l
    # directly, inlined, as the single-loss kernel always did (the divergence branch in the loop
    # would cost a call per pair).
    raw = int(prm[P_DIVERGENCE]) == REVERSE_KL or code == APO_ZERO or code == SFT
    loss = 0.0
    for x in range(X):
        for i in range(K):
            lwi = lp[x, i]
            rwi = rlp[x, i]
            uw = lwi - rwi
            gi = 0.0
            for j in range(K):
                w = W[x, i, j]
                if w == 0.0:
                    continue
                if raw:
                    ul = lp[x, j] - rlp[x, j]
                    v, dw, dl = _loss_on_scores(code, uw, ul, uw - ul, lwi, prm)
                else:
                    v, dw, dl = pair_value_grad(code, lwi, lp[x, j], rwi, rlp[x, j], prm)
                if weighted:
                    w *= np.exp(lwi + lp[x, j] - 2.0 * log_norm[x])
                w *= scale
                loss += w * v
                gi += w * dw
                grad_out[x, j] += w * dl
            grad_out[x, i] += gi
    return loss
