"""Numba kernels of the sampled mode: measure draws, sparse term gradients and the fused loops.

A sampled step evaluates the same terms as the exact engine (:mod:`coverage_sim._engine`), but on an
empirical measure drawn for the step instead of on the population:

* pairwise term: sparse labelled pairs ``(x, winner, loser, weight)``, evaluated with the engine's
  per-pair layer :func:`coverage_sim._pair_kernels.pair_value_grad_sum` (combined loss types with
  their weights, f-divergence scores, WPO's weights computed from the current policy; AOT
  components: the quantile coupling of the drawn pairs, TRL's batch-sorted form);
* unpaired term (KTO, unpaired APO-zero): sparse examples ``(x, y, desirable, weight)`` and KTO's
  mismatched pairs ``(x, y', weight)``, whose weighted mean log-ratio (clamped at 0, held fixed) is
  the reference point z0, evaluated with :func:`coverage_sim._pair_kernels.unpaired_value_grad`;
* linear log-likelihood term ``C = Q * c``: sparse responses ``(x, y, weight)``, ``L -= weight * log pi``;
* expected-reward and KL terms: policy samples ``(x, y, weight, advantage, log pi_old(y))``; the
  REINFORCE surrogate puts ``-weight * A`` on ``dL/dlog pi`` at ``y`` (the policy's pull-back turns it
  into ``A (e_y - pi)``, the score function), optionally PPO-clipped; a sampled KL estimator adds its
  pathwise gradient there when it sits in the loss. Nash-MD's samples carry ``P(y > y') - 1/2``
  (``y'`` from the geometric mixture of pi and pi_ref) and add ``beta sg(log pi/pi_ref)`` at ``y``.

Everything is in ``log pi`` coordinates, like the engine, so a policy never learns which measure its
objective was evaluated on. The public side (options, validation, bias notes) is
:mod:`coverage_sim.sampling`.

Drawing. Categorical draws use an inverse CDF with a guide table (Chen and Asau 1974): ``O(n)`` to
build, ``O(1)`` expected per draw, and exactly the first index whose cumulative mass exceeds
``u * total`` (so zero-mass entries are never drawn); offline pair weights (up to K^2 entries) use
Walker's alias method instead, one cache line per draw. The current policy's tables are rebuilt for
every batch, the fixed laws' (contexts, behaviour, offline pair weights) once per run. Randomness comes from the explicit per-problem
xoshiro256** stream of :mod:`coverage_sim._rng`, so a run is bit-identical whatever the thread count.

Plan (per problem): ``ints`` (int64, indices ``I_*``), ``flts`` (float64, ``F_*``), ``rank_reward``
(X, K) labelling/ranking reward, ``lin_q`` (X, K) response law of the linear term, ``lin_c`` (X, K)
its integrand, ``lin_rho`` (X,) its context law, ``tab_p`` (n,) nonzero pair weights of offline data and
``tab_flat`` (n,) their flat indices ``x*K*K + winner*K + loser`` (for unpaired data: the example
masses, flat ``label*X*K + x*K + y`` with label 0 desirable, 1 undesirable), ``mis_p`` (m,) and
``mis_flat`` (m,) KTO's mismatched-pair law (flat ``x*K + y``) when its reference point is exact.
Batch buffers: see :func:`alloc_buffers`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from coverage_sim._engine import (ADAM, NASH_MD, TABULAR, _backprop_into, _softmax_into,
                                  apply_update, mix_reference, terms_at)
from coverage_sim._pair_kernels import (AOT, AOT_UNPAIRED, APO_ZERO, KTO, P_BETA, P_DIVERGENCE,
                                        P_LABEL_SMOOTHING, P_USE_WEIGHTING, REVERSE_KL, SFT,
                                        _loss_on_scores, _sigmoid, aot_unpaired_marginals,
                                        log_sq_norm, pair_value_grad, pair_value_grad_sum,
                                        quantile_coupling_loss, unpaired_value_grad)
from coverage_sim._rng import uniform
from coverage_sim._threads import for_each

_JIT = dict(cache=True, error_model="numpy")

# measure of the pairwise term
PAIRS_NONE = 0
PAIRS_DATA = 1        # i.i.d. draws from offline pair weights W
PAIRS_ONLINE = 2      # groups from the current policy, labelled by Bernoulli(P)
PAIRS_BEST_WORST = 3  # iterative DPO: best vs worst of n from the current policy, ranked by reward
PAIRS_POLICY_REF = 4  # XPO: one response from the current policy, one from pi_ref (lin_q)
# pairs within an online group
PAIRING_ALL = 0
PAIRING_DISJOINT = 1
PAIRING_BEST_WORST = 2
# linear term
LIN_NONE = 0
LIN_DRAW = 1          # own contexts ~ lin_rho, best of lin_n draws from lin_q, weight lin_c / B
LIN_GROUP = 2         # one draw from lin_q in each online group's context, weight lin_c / B
LIN_CHOSEN = 3        # the winners of the drawn data pairs, weight lin_coef / B
LIN_REF_DRAWS = 4     # XPO: the pi_ref responses of the PAIRS_POLICY_REF pairs, weight lin_coef / B
# label models of online pairs: a lookup in P, or computed from the labelling reward (the named
# models, as coverage_sim.preferences defines them: no (X, K, K) array to read per pair)
LABEL_P = 0
LABEL_BRADLEY_TERRY = 1
LABEL_DETERMINISTIC = 2
LABEL_AT_LEAST = 3    # the first response wins iff its reward is >= the second's (XPO, ties to pi)
# REINFORCE baselines
BASE_NONE = 0
BASE_MEAN = 1
BASE_RLOO = 2
BASE_GRPO = 3
BASE_DR_GRPO = 4
# KL term
KL_EXACT = 0
KL_K1 = 1
KL_K2 = 2
KL_K3 = 3
KL_IN_REWARD = 0
KL_IN_LOSS = 1
#: TRL's GRPOTrainer adds 1e-4 to the group's (ddof = 1) reward std.
GRPO_EPS = 1e-4

# plan.ints
I_PAIRS = 0
I_PAIRING = 1
I_GROUP = 2
I_LIN = 3
I_LIN_N = 4
I_LIN_SCORED = 5
I_SCORE = 6
I_BASELINE = 7
I_KL_EST = 8
I_KL_IN = 9
I_BATCH = 10
I_LABEL = 11
I_UNPAIRED = 12       # 1: draw unpaired examples (KTO trainer) from tab_p
I_MISMATCHED = 13     # KTO's mismatched pairs: 0 none, MIS_EXACT (mis_p), MIS_BATCH (rotated batch)
I_NASH = 14           # 1: Nash-MD policy samples against the geometric mixture
I_MIS_CAP = 15        # capacity of the mismatched-pair buffer
N_INTS = 16
# KTO's reference point z0 (the mean log-ratio of mismatched pairs, clamped at 0)
MIS_NONE = 0
MIS_EXACT = 1         # the exact mismatched law of the data (plan mis_p / mis_flat)
MIS_BATCH = 2         # TRL's estimate: the batch's examples rotated by one, (x_i, y_{i-1})
# plan.flts
F_GAP = 0
F_LIN_COEF = 1
F_CLIP = 2
F_NOISE = 3
N_FLTS = 4
# batch counts
C_PAIRS = 0
C_LIN = 1
C_SAMPLES_TERM = 2
C_SAMPLES = 3
C_QUERIES = 4
C_UNPAIRED = 5
C_MISMATCHED = 6
N_COUNTS = 7


# ------------------------------------------------------------------------------------------------
# categorical draws: inverse CDF with a guide table
# ------------------------------------------------------------------------------------------------

#: Guide buckets per entry: with 4 the walk from a bucket's start is 0 steps for most draws, so
#: its branch is predictable (about 3x faster per draw than one bucket per entry, measured).
GUIDE_FACTOR = 4


@njit(**_JIT)
def build_row(p, cdf, guide, x):
    """Fill row ``x`` of ``cdf`` (cumulative sums of ``p[x]``) and of ``guide`` (start indices).

    Tables are 2-D, one law per row (a single law is a (1, n) table), and the draws index them by
    row: slicing a row in a hot loop would create an array view, whose reference counting cost more
    than the draw itself (measured).

    Args:
      p: (R, n) non-negative masses (a row need not sum to 1).
      cdf: (R, n) float64 output.
      guide: (R, m) int64 output, m >= 1 buckets (``GUIDE_FACTOR * n`` by convention).
      x: the row.

    Returns:
      ``last``, the index of the row's last positive mass (-1 when every mass is 0).
    """
    n = p.shape[1]
    acc = 0.0
    last = -1
    for i in range(n):
        acc += p[x, i]
        cdf[x, i] = acc
        if p[x, i] > 0.0:
            last = i
    if last < 0:
        return -1
    # bucket j starts at the first entry whose cumulative mass exceeds j * total / m (up to
    # rounding, which the draw's two-way walk absorbs); filled entry by entry
    m = guide.shape[1]
    scale = m / cdf[x, last]
    j = 0
    for i in range(last):
        hi = cdf[x, i] * scale
        while j < hi:
            guide[x, j] = i
            j += 1
    while j < m:
        guide[x, j] = last
        j += 1
    return last


@njit(**_JIT)
def draw_row(cdf, guide, x, last, u):
    """The first index ``i`` with ``cdf[x, i] > u * total`` (``u`` in [0, 1)); never a zero mass."""
    t = u * cdf[x, last]
    m = guide.shape[1]
    j = int(u * m)
    if j > m - 1:
        j = m - 1
    i = guide[x, j]
    # The bucket only gives a start: walk to the exact answer both ways, so that rounding in the
    # bucket bounds can never change which entry is drawn.
    while i > 0 and cdf[x, i - 1] > t:
        i -= 1
    while i < last and cdf[x, i] <= t:
        i += 1
    return i


@njit(**_JIT)
def build_rows(p, cdf, guide, last, active):
    """:func:`build_row` for every row ``x < cdf.shape[0]`` with ``active[x] > 0`` (``last[x] = -1``
    otherwise)."""
    for x in range(cdf.shape[0]):
        last[x] = build_row(p, cdf, guide, x) if active[x] > 0.0 else -1


@njit(**_JIT)
def build_alias(p, flat):
    """Walker's alias table (Vose's construction) of the masses ``p`` (n,) labelled ``flat``.

    Returns an (n, 3) float64 table whose row j is ``[threshold, label of j, label of its alias]``
    (labels stored as exact float64 integers): a draw reads ONE row, i.e. one cache line. Offline
    pair weights have up to K^2 entries, which outgrow the caches at K = 1000, where the guide
    table's three random reads per draw cost a cache miss each (measured 3x slower per draw).
    Zero masses get threshold 0 and are never drawn.
    """
    n = p.shape[0]
    table = np.zeros((n, 3))
    if n == 0:
        return table
    total = 0.0
    for i in range(n):
        total += p[i]
    scale = n / total
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    alias = np.arange(n)
    prob = np.empty(n)
    n_small = 0
    n_large = 0
    for i in range(n):
        prob[i] = p[i] * scale
        if prob[i] < 1.0:
            small[n_small] = i
            n_small += 1
        else:
            large[n_large] = i
            n_large += 1
    while n_small > 0 and n_large > 0:
        n_small -= 1
        s = small[n_small]
        n_large -= 1
        l = large[n_large]
        alias[s] = l
        prob[l] = (prob[l] + prob[s]) - 1.0
        if prob[l] < 1.0:
            small[n_small] = l
            n_small += 1
        else:
            large[n_large] = l
            n_large += 1
    # Leftovers are 1 up to rounding; a zero mass can never be left over (its deficit is 1).
    for t in range(n_large):
        prob[large[t]] = 1.0
    for t in range(n_small):
        i = small[t]
        prob[i] = 1.0 if p[i] > 0.0 else 0.0
    for i in range(n):
        table[i, 0] = prob[i]
        table[i, 1] = flat[i]
        table[i, 2] = flat[alias[i]]
    return table


@njit(**_JIT)
def draw_alias(table, u1, u2):
    """The label of one draw from an alias table (``u1``, ``u2`` uniform in [0, 1))."""
    n = table.shape[0]
    j = int(u1 * n)
    if j > n - 1:
        j = n - 1
    return int(table[j, 1]) if u2 < table[j, 0] else int(table[j, 2])


# ------------------------------------------------------------------------------------------------
# buffers
# ------------------------------------------------------------------------------------------------

@njit(**_JIT)
def pairs_per_group(pairing, group):
    if pairing == PAIRING_ALL:
        return group * (group - 1) // 2
    if pairing == PAIRING_DISJOINT:
        return group // 2
    return 1


@njit(**_JIT)
def buffer_sizes(ints):
    """Capacity ``(pairs, responses, policy samples, unpaired examples, mismatched pairs)`` of one
    batch under plan ``ints``."""
    b = ints[I_BATCH]
    n_pairs = 0
    if ints[I_PAIRS] == PAIRS_ONLINE:
        n_pairs = b * pairs_per_group(ints[I_PAIRING], ints[I_GROUP])
    elif ints[I_PAIRS] != PAIRS_NONE:
        n_pairs = b
    n_lin = b if ints[I_LIN] != LIN_NONE else 0
    n_samp = b * ints[I_GROUP] if ints[I_SCORE] != 0 else (b if ints[I_NASH] != 0 else 0)
    n_unp = b if ints[I_UNPAIRED] != 0 else 0
    return n_pairs, n_lin, n_samp, n_unp, ints[I_MIS_CAP]


@njit(**_JIT)
def alloc_buffers(ints):
    """Batch buffers ``(px, pw, pl, pwt, lx, ly, lwt, sx, sy, swt, sadv, slp, counts, ux, uy, ulab,
    uwt, mx, my, mwt)``.

    Pairs: context, winner, loser, weight. Responses (linear term): context, response, weight.
    Policy samples: context, response, weight, advantage, log pi_old(y). ``counts`` (int64,
    ``N_COUNTS``): pairs, responses and policy samples in use, responses drawn, reward queries,
    unpaired examples and mismatched pairs in use. Unpaired examples: context, response, label (1
    desirable, 0 undesirable), weight. Mismatched pairs (KTO's reference point): context,
    response, weight.
    """
    n_pairs, n_lin, n_samp, n_unp, n_mis = buffer_sizes(ints)
    return (np.zeros(n_pairs, np.int64), np.zeros(n_pairs, np.int64), np.zeros(n_pairs, np.int64),
            np.zeros(n_pairs), np.zeros(n_lin, np.int64), np.zeros(n_lin, np.int64),
            np.zeros(n_lin), np.zeros(n_samp, np.int64), np.zeros(n_samp, np.int64),
            np.zeros(n_samp), np.zeros(n_samp), np.zeros(n_samp), np.zeros(N_COUNTS, np.int64),
            np.zeros(n_unp, np.int64), np.zeros(n_unp, np.int64), np.zeros(n_unp, np.int64),
            np.zeros(n_unp), np.zeros(n_mis, np.int64), np.zeros(n_mis, np.int64),
            np.zeros(n_mis))


@njit(**_JIT)
def _table(p2, rows, n):
    """``(cdf, guide, last)`` of the first ``rows`` rows of ``p2`` (n entries per row)."""
    cdf = np.empty((rows, n))
    guide = np.empty((rows, GUIDE_FACTOR * n), np.int64)
    last = np.full(max(rows, 1), -1, np.int64)
    build_rows(p2, cdf, guide, last, np.ones(rows))
    return cdf, guide, last


@njit(**_JIT)
def build_static(rho, plan):
    """Draw tables of the fixed laws: guide tables ``(cdf, guide, last)`` of the contexts (rho),
    the linear term's contexts (lin_rho) and response law Q (lin_q), and the alias table of the
    offline pair weights or unpaired examples (tab_p, labelled by tab_flat)."""
    ints, flts, rank_reward, lin_q, lin_c, lin_rho, tab_p, tab_flat, mis_p, mis_flat = plan
    n_ctx, k = lin_q.shape
    use_q = (ints[I_LIN] == LIN_DRAW or ints[I_LIN] == LIN_GROUP
             or ints[I_LIN] == LIN_REF_DRAWS)
    n_tab = tab_p.shape[0] if (ints[I_PAIRS] == PAIRS_DATA or ints[I_UNPAIRED] != 0) else 0
    ctx = _table(rho.reshape(1, n_ctx), np.int64(1), n_ctx)   # not a literal: one compile
    lctx = _table(lin_rho.reshape(1, n_ctx), 1 if ints[I_LIN] == LIN_DRAW else 0, n_ctx)
    q = _table(lin_q, n_ctx if use_q else 0, k)
    tab = build_alias(tab_p[:n_tab], tab_flat[:n_tab])
    return ctx, lctx, q, tab


@njit(**_JIT)
def workspace(ints, n_ctx, k):
    """Scratch of the draws: the current policy's tables, one group's responses and returns, and
    Nash-MD's mixture law with its tables."""
    m = max(ints[I_GROUP], ints[I_LIN_N], 1)
    rows = n_ctx if (ints[I_PAIRS] == PAIRS_ONLINE or ints[I_PAIRS] == PAIRS_BEST_WORST
                     or ints[I_PAIRS] == PAIRS_POLICY_REF or ints[I_SCORE] != 0
                     or ints[I_NASH] != 0) else 0
    mix_rows = n_ctx if ints[I_NASH] != 0 else 0
    return (np.empty((rows, k)), np.empty((rows, GUIDE_FACTOR * k), np.int64),
            np.full(n_ctx, -1, np.int64), np.empty(m, np.int64), np.empty(m),
            np.empty((mix_rows, k)), np.empty((mix_rows, k)),
            np.empty((mix_rows, GUIDE_FACTOR * k), np.int64), np.full(n_ctx, -1, np.int64))


# ------------------------------------------------------------------------------------------------
# KL estimators (Schulman, "Approximating KL divergence", 2020), with g = log pi/pi_ref = -log r
# ------------------------------------------------------------------------------------------------

@njit(**_JIT)
def kl_value_grad(est, g):
    """Value of the estimator k(g) and its derivative with respect to ``log pi`` (at fixed pi_ref).

    k1 = g; k2 = g^2 / 2; k3 = (r - 1) - log r = expm1(-g) + g, with r = pi_ref/pi = e^{-g}. Near
    g = 0 that sum cancels (k3 ~ g^2 / 2), so |g| < 0.01 takes its Taylor series to g^8.
    """
    if est == KL_K1:
        return g, 1.0
    if est == KL_K2:
        return 0.5 * g * g, g
    em1 = np.expm1(-g)
    if abs(g) < 0.01:
        # e^{-g} - 1 + g = sum_{n >= 2} (-g)^n / n!, Horner form; the g^9 term is below 1e-19 here
        series = g * g * (1.0 / 2 - g * (1.0 / 6 - g * (1.0 / 24 - g * (1.0 / 120 - g * (
            1.0 / 720 - g * (1.0 / 5040 - g / 40320.0))))))
        return series, -em1
    return em1 + g, -em1


# ------------------------------------------------------------------------------------------------
# drawing one batch
# ------------------------------------------------------------------------------------------------

# Each measure is drawn by one function that receives its arrays once per batch and writes its loop
# body without array-taking helpers (only the leaf draws ``uniform`` and ``draw_row``): a helper
# call inside the loop that passes arrays can cost reference-count updates per call, which made a
# batch draw several times slower (measured: 190 ns per labelled pair, 50 ns per context draw).
# A context comes from a (1, X) table; a plain bandit (X = 1) draws no random number for it.

@njit(**_JIT)
def _group_pair_indices(pairing, group):
    """Within-group draw indices ``(a, c)`` of the pairs of ``all`` and ``disjoint`` pairing."""
    n = pairs_per_group(pairing, group)
    first = np.zeros(n, np.int64)
    second = np.zeros(n, np.int64)
    t = 0
    if pairing == PAIRING_ALL:
        for a in range(group):
            for c in range(a + 1, group):
                first[t] = a
                second[t] = c
                t += 1
    elif pairing == PAIRING_DISJOINT:
        for t in range(n):
            first[t] = 2 * t
            second[t] = 2 * t + 1
    return first, second


@njit(**_JIT)
def _draw_data_pairs(n_b, k, tab, lin_chosen, lin_coef, px, pw, pl, pwt, lx, ly, lwt, state):
    """``n_b`` i.i.d. pairs from the offline pairs' alias table; the winners again for
    LIN_CHOSEN."""
    wt = 1.0 / n_b
    kk = k * k
    for m in range(n_b):
        u1 = uniform(state)
        f = draw_alias(tab, u1, uniform(state))
        x = f // kk
        w = (f // k) % k
        px[m] = x
        pw[m] = w
        pl[m] = f % k
        pwt[m] = wt
        if lin_chosen:
            lx[m] = x
            ly[m] = w
            lwt[m] = lin_coef * wt
    return n_b, n_b if lin_chosen else 0


@njit(**_JIT)
def _label_prob(label, noise, diff):
    """Pr(the first response wins) under a named label model, from the labelling-reward difference
    ``diff`` = first - second (as :func:`coverage_sim.preferences.preference_probs` defines them),
    with flip rate ``noise``. Scalars only, so calling it in a draw loop costs no reference counts."""
    if label == LABEL_BRADLEY_TERRY:
        prob = _sigmoid(diff)
    elif label == LABEL_AT_LEAST:
        prob = 1.0 if diff >= 0.0 else 0.0
    else:
        prob = 1.0 if diff > 0.0 else (0.0 if diff < 0.0 else 0.5)
    if noise > 0.0:
        prob = (1.0 - noise) * prob + noise * (1.0 - prob)
    return prob


@njit(**_JIT)
def _draw_online_pairs(n_b, group, pairing, gap, label, noise, P, rank_reward, ctx, pi_tab, ys,
                       lin_group, q, lin_c, px, pw, pl, pwt, lx, ly, lwt, state):
    """``n_b`` groups of ``group`` responses from the policy table, paired and labelled by one
    Bernoulli(P[x, y, y']) draw each (P looked up, or computed from the labelling reward with
    flip rate ``noise``); for LIN_GROUP one draw from Q per group. Returns (pairs, responses)."""
    ctx_cdf, ctx_guide, ctx_last = ctx
    pi_cdf, pi_guide, pi_last = pi_tab
    q_cdf, q_guide, q_last = q
    first, second = _group_pair_indices(pairing, group)
    n_pg = pairs_per_group(pairing, group)
    wt = 1.0 / (n_b * n_pg)
    many = ctx_cdf.shape[1] > 1
    ctx_end = ctx_last[0]
    n = 0
    for b in range(n_b):
        x = draw_row(ctx_cdf, ctx_guide, 0, ctx_end, uniform(state)) if many else 0
        last = pi_last[x]
        for g in range(group):
            ys[g] = draw_row(pi_cdf, pi_guide, x, last, uniform(state))
        if pairing == PAIRING_BEST_WORST:
            # highest labelling reward (the last such draw) vs lowest (the first such draw); if
            # every draw ties, that is the last draw against the first
            best = 0
            worst = 0
            for g in range(1, group):
                r = rank_reward[x, ys[g]]
                if r >= rank_reward[x, ys[best]]:
                    best = g
                if r < rank_reward[x, ys[worst]]:
                    worst = g
            first[0] = best
            second[0] = worst
        for t in range(n_pg):
            ya = ys[first[t]]
            yb = ys[second[t]]
            if gap > 0.0 and abs(rank_reward[x, ya] - rank_reward[x, yb]) < gap:
                continue
            px[n] = x
            pwt[n] = wt
            if label == LABEL_P:
                prob = P[x, ya, yb]
            else:
                prob = _label_prob(label, noise, rank_reward[x, ya] - rank_reward[x, yb])
            if uniform(state) < prob:
                pw[n] = ya
                pl[n] = yb
            else:
                pw[n] = yb
                pl[n] = ya
            n += 1
        if lin_group:
            y = draw_row(q_cdf, q_guide, x, q_last[x], uniform(state))
            lx[b] = x
            ly[b] = y
            lwt[b] = lin_c[x, y] / n_b
    return n, n_b if lin_group else 0


@njit(**_JIT)
def _draw_policy_ref_pairs(n_b, label, noise, P, rank_reward, ctx, pi_tab, q, lin_coef, px, pw,
                           pl, pwt, lx, ly, lwt, state):
    """XPO's measure (TRL's XPOTrainer): per group a context x ~ rho, y ~ pi (the policy table) and
    y' ~ pi_ref (the q table); the pair labelled by one Bernoulli(Pr(y beats y')) draw, weight
    1/n_b; y' also enters the linear term with weight ``lin_coef / n_b``. Returns n_b."""
    ctx_cdf, ctx_guide, ctx_last = ctx
    pi_cdf, pi_guide, pi_last = pi_tab
    q_cdf, q_guide, q_last = q
    wt = 1.0 / n_b
    many = ctx_cdf.shape[1] > 1
    ctx_end = ctx_last[0]
    for b in range(n_b):
        x = draw_row(ctx_cdf, ctx_guide, 0, ctx_end, uniform(state)) if many else 0
        y = draw_row(pi_cdf, pi_guide, x, pi_last[x], uniform(state))
        yr = draw_row(q_cdf, q_guide, x, q_last[x], uniform(state))
        if label == LABEL_P:
            prob = P[x, y, yr]
        else:
            prob = _label_prob(label, noise, rank_reward[x, y] - rank_reward[x, yr])
        px[b] = x
        pwt[b] = wt
        if uniform(state) < prob:
            pw[b] = y
            pl[b] = yr
        else:
            pw[b] = yr
            pl[b] = y
        lx[b] = x
        ly[b] = yr
        lwt[b] = lin_coef * wt
    return n_b


@njit(**_JIT)
def _mixture_rows(lp, rlp, mixture_coef, rho, mix):
    """Nash-MD's opponent: row x of ``mix`` = normalise(m log pi_ref + (1 - m) log pi), m =
    ``mixture_coef``, for every context with ``rho[x] > 0`` (as the exact Nash-MD term)."""
    n_ctx, k = lp.shape
    for x in range(n_ctx):
        if rho[x] <= 0.0:
            continue
        top = -np.inf
        for j in range(k):
            if lp[x, j] > -np.inf and rlp[x, j] > -np.inf:
                t = mixture_coef * rlp[x, j] + (1.0 - mixture_coef) * lp[x, j]
            else:
                t = -np.inf
            mix[x, j] = t
            if t > top:
                top = t
        tot = 0.0
        for j in range(k):
            mix[x, j] = np.exp(mix[x, j] - top)
            tot += mix[x, j]
        for j in range(k):
            mix[x, j] /= tot


@njit(**_JIT)
def _draw_nash_md(n_b, label, noise, P, rank_reward, lp, ctx, pi_tab, mix_tab, sx, sy, swt, sadv,
                  slp, state):
    """Nash-MD's samples (TRL's NashMDTrainer): per group a context x ~ rho, y ~ pi and y' from the
    mixture table; the sample carries ``P(y > y') - 1/2`` (the preference probability itself, as
    TRL's reward-model score sigma(r(y) - r(y')), not a Bernoulli label), weight 1/n_b. Returns
    n_b."""
    ctx_cdf, ctx_guide, ctx_last = ctx
    pi_cdf, pi_guide, pi_last = pi_tab
    mix_cdf, mix_guide, mix_last = mix_tab
    wt = 1.0 / n_b
    many = ctx_cdf.shape[1] > 1
    ctx_end = ctx_last[0]
    for b in range(n_b):
        x = draw_row(ctx_cdf, ctx_guide, 0, ctx_end, uniform(state)) if many else 0
        y = draw_row(pi_cdf, pi_guide, x, pi_last[x], uniform(state))
        ym = draw_row(mix_cdf, mix_guide, x, mix_last[x], uniform(state))
        if label == LABEL_P:
            prob = P[x, y, ym]
        else:
            prob = _label_prob(label, noise, rank_reward[x, y] - rank_reward[x, ym])
        sx[b] = x
        sy[b] = y
        swt[b] = wt
        sadv[b] = prob - 0.5
        slp[b] = lp[x, y]
    return n_b


@njit(**_JIT)
def _draw_unpaired(n_b, n_ctx, k, tab, mis_mode, mis_n, mis_p, mis_flat, ux, uy, ulab, uwt, mx, my,
                   mwt, state):
    """``n_b`` i.i.d. unpaired examples from the alias table of the example masses (flat
    ``label*X*K + x*K + y``, label 0 desirable), weight 1/n_b, and KTO's mismatched pairs:
    MIS_BATCH, TRL's KL dataset: the batch's completions rotated by one, (x_i, y_{i-1}) cyclically,
    weight 1/n_b; MIS_EXACT: the exact mismatched law, the first ``mis_n`` entries of ``mis_p``
    (the rest is padding of a batch of problems). Returns (examples, mismatched)."""
    xk = n_ctx * k
    wt = 1.0 / n_b
    for m in range(n_b):
        u1 = uniform(state)
        f = draw_alias(tab, u1, uniform(state))
        r = f % xk
        ux[m] = r // k
        uy[m] = r % k
        ulab[m] = 1 if f < xk else 0
        uwt[m] = wt
    n_mis = 0
    if mis_mode == MIS_BATCH:
        for m in range(n_b):
            mx[m] = ux[m]
            my[m] = uy[m - 1] if m > 0 else uy[n_b - 1]
            mwt[m] = wt
        n_mis = n_b
    elif mis_mode == MIS_EXACT:
        n_mis = mis_n
        for m in range(n_mis):
            mx[m] = mis_flat[m] // k
            my[m] = mis_flat[m] % k
            mwt[m] = mis_p[m]
    return n_b, n_mis


@njit(**_JIT)
def _draw_best_worst_pairs(n_b, group, rank_reward, ctx, pi_tab, ys, px, pw, pl, pwt, state):
    """Iterative DPO's dataset: per group the best vs the worst of ``group`` draws, ranked by
    (reward, index) as the exact law; groups whose draws are all one response are dropped and the
    kept pairs weigh 1/kept. Returns the number of pairs."""
    ctx_cdf, ctx_guide, ctx_last = ctx
    pi_cdf, pi_guide, pi_last = pi_tab
    many = ctx_cdf.shape[1] > 1
    ctx_end = ctx_last[0]
    n = 0
    for _ in range(n_b):
        x = draw_row(ctx_cdf, ctx_guide, 0, ctx_end, uniform(state)) if many else 0
        last = pi_last[x]
        for g in range(group):
            ys[g] = draw_row(pi_cdf, pi_guide, x, last, uniform(state))
        best = ys[0]
        worst = ys[0]
        for g in range(1, group):
            y = ys[g]
            r = rank_reward[x, y]
            rb = rank_reward[x, best]
            if r > rb or (r == rb and y > best):
                best = y
            rw = rank_reward[x, worst]
            if r < rw or (r == rw and y < worst):
                worst = y
        if best != worst:
            px[n] = x
            pw[n] = best
            pl[n] = worst
            n += 1
    for m in range(n):
        pwt[m] = 1.0 / n
    return n


@njit(**_JIT)
def _draw_best_of_n(n_b, n_draw, rank_reward, lctx, q, lin_c, lx, ly, lwt, state):
    """``n_b`` responses, each the best of ``n_draw`` draws from Q in a context ~ lin_rho (the
    highest reward wins; ties uniformly, by a reservoir step), weight ``lin_c / n_b``."""
    ctx_cdf, ctx_guide, ctx_last = lctx
    q_cdf, q_guide, q_last = q
    many = ctx_cdf.shape[1] > 1
    ctx_end = ctx_last[0]
    for m in range(n_b):
        x = draw_row(ctx_cdf, ctx_guide, 0, ctx_end, uniform(state)) if many else 0
        last = q_last[x]
        best = -1
        best_r = 0.0
        ties = 0
        for _t in range(n_draw):
            y = draw_row(q_cdf, q_guide, x, last, uniform(state))
            r = rank_reward[x, y]
            if best < 0 or r > best_r:
                best = y
                best_r = r
                ties = 1
            elif r == best_r:
                ties += 1  # each tied draw ends up chosen with probability 1/ties
                if uniform(state) * ties < 1.0:
                    best = y
        lx[m] = x
        ly[m] = best
        lwt[m] = lin_c[x, best] / n_b
    return n_b


@njit(**_JIT)
def _draw_policy_samples(n_b, group, baseline, kl_est, kl_reward, kl_coef, reward_coef, R, lp,
                         rlp, ctx, pi_tab, ys, rets, sx, sy, swt, sadv, slp, state):
    """``n_b`` groups of ``group`` policy samples with their advantages (return = reward_coef R
    minus kl_coef k when the KL estimate sits in the reward; then the group baseline)."""
    ctx_cdf, ctx_guide, ctx_last = ctx
    pi_cdf, pi_guide, pi_last = pi_tab
    wt = 1.0 / (n_b * group)
    many = ctx_cdf.shape[1] > 1
    ctx_end = ctx_last[0]
    n = 0
    for _ in range(n_b):
        x = draw_row(ctx_cdf, ctx_guide, 0, ctx_end, uniform(state)) if many else 0
        last = pi_last[x]
        for g in range(group):
            y = draw_row(pi_cdf, pi_guide, x, last, uniform(state))
            ys[g] = y
            ret = reward_coef * R[x, y]
            if kl_reward:
                kv, _dk = kl_value_grad(kl_est, lp[x, y] - rlp[x, y])
                ret -= kl_coef * kv
            rets[g] = ret
        _group_advantages(rets, group, baseline)
        for g in range(group):
            sx[n] = x
            sy[n] = ys[g]
            swt[n] = wt
            sadv[n] = rets[g]
            slp[n] = lp[x, ys[g]]
            n += 1
    return n


@njit(**_JIT)
def _group_advantages(rets, size, baseline):
    """Replace the returns ``rets[:size]`` of one group by their advantages under ``baseline``."""
    if baseline == BASE_NONE:
        return
    total = 0.0
    for g in range(size):
        total += rets[g]
    mean = total / size
    if baseline == BASE_RLOO:
        for g in range(size):
            rets[g] = rets[g] - (total - rets[g]) / (size - 1)
        return
    if baseline == BASE_GRPO:
        ss = 0.0
        for g in range(size):
            ss += (rets[g] - mean) ** 2
        scale = 1.0 / (np.sqrt(ss / (size - 1)) + GRPO_EPS)
        for g in range(size):
            rets[g] = (rets[g] - mean) * scale
        return
    for g in range(size):  # BASE_MEAN and BASE_DR_GRPO: the group mean, y_i included
        rets[g] = rets[g] - mean


@njit(**_JIT)
def draw_batch(terms, plan, static, lp, pi, rlp, state, ws, buf):
    """Draw one batch at the current policy (``lp``, ``pi``) into ``buf``; advances ``state``.

    The current policy is the sampler of every online measure and the ``pi_old`` of the score terms.
    """
    (codes, prms, source, W, P, fast, S, d, act, C, kl_coef, reward_coef, R, rho, loss_weights,
     unpaired, uprm, U, M, pg, pg_prm) = terms
    ints, flts, rank_reward, lin_q, lin_c, lin_rho, tab_p, tab_flat, mis_p, mis_flat = plan
    ctx, lctx, q, tab = static
    pi_cdf, pi_guide, pi_last, ys, rets, mix_p, mix_cdf, mix_guide, mix_last = ws
    (px, pw, pl, pwt, lx, ly, lwt, sx, sy, swt, sadv, slp, counts, ux, uy, ulab, uwt, mx, my,
     mwt) = buf
    k = lp.shape[1]
    counts[:] = 0
    n_b = ints[I_BATCH]
    group = ints[I_GROUP]
    pair_mode = ints[I_PAIRS]
    lin_mode = ints[I_LIN]
    samples = 0
    queries = 0
    pi_tab = (pi_cdf, pi_guide, pi_last)
    if (pair_mode == PAIRS_ONLINE or pair_mode == PAIRS_BEST_WORST or pair_mode == PAIRS_POLICY_REF
            or ints[I_SCORE] != 0 or ints[I_NASH] != 0):
        build_rows(pi, pi_cdf, pi_guide, pi_last, rho)
    if pair_mode == PAIRS_DATA:
        n_pairs, n_lin = _draw_data_pairs(n_b, k, tab, lin_mode == LIN_CHOSEN, flts[F_LIN_COEF],
                                          px, pw, pl, pwt, lx, ly, lwt, state)
        counts[C_PAIRS] = n_pairs
        counts[C_LIN] = n_lin
        samples += 2 * n_b
    elif pair_mode == PAIRS_ONLINE:
        n_pairs, n_lin = _draw_online_pairs(n_b, group, ints[I_PAIRING], flts[F_GAP],
                                            ints[I_LABEL], flts[F_NOISE], P, rank_reward, ctx,
                                            pi_tab, ys, lin_mode == LIN_GROUP,
                                            q, lin_c, px, pw, pl, pwt, lx, ly, lwt, state)
        counts[C_PAIRS] = n_pairs
        counts[C_LIN] = n_lin
        samples += n_b * group + n_lin
        queries += n_b * group
    elif pair_mode == PAIRS_BEST_WORST:
        counts[C_PAIRS] = _draw_best_worst_pairs(n_b, group, rank_reward, ctx, pi_tab, ys, px, pw,
                                                 pl, pwt, state)
        samples += n_b * group
        queries += n_b * group
    elif pair_mode == PAIRS_POLICY_REF:
        counts[C_PAIRS] = _draw_policy_ref_pairs(n_b, ints[I_LABEL], flts[F_NOISE], P,
                                                 rank_reward, ctx, pi_tab, q, flts[F_LIN_COEF],
                                                 px, pw, pl, pwt, lx, ly, lwt, state)
        counts[C_LIN] = n_b
        samples += 2 * n_b
        queries += 2 * n_b
    if lin_mode == LIN_DRAW:
        n_draw = ints[I_LIN_N]
        counts[C_LIN] = _draw_best_of_n(n_b, n_draw, rank_reward, lctx, q, lin_c, lx, ly, lwt,
                                        state)
        samples += n_b * n_draw
        if ints[I_LIN_SCORED] != 0:
            queries += n_b * n_draw
    if ints[I_SCORE] != 0:
        kl_est = ints[I_KL_EST]
        kl_reward = kl_est != KL_EXACT and ints[I_KL_IN] == KL_IN_REWARD
        counts[C_SAMPLES_TERM] = _draw_policy_samples(
            n_b, group, ints[I_BASELINE], kl_est, kl_reward, kl_coef, reward_coef, R, lp, rlp,
            ctx, pi_tab, ys, rets, sx, sy, swt, sadv, slp, state)
        samples += n_b * group
        if reward_coef != 0.0:
            queries += n_b * group
    if ints[I_NASH] != 0:
        _mixture_rows(lp, rlp, pg_prm[1], rho, mix_p)
        build_rows(mix_p, mix_cdf, mix_guide, mix_last, rho)
        counts[C_SAMPLES_TERM] = _draw_nash_md(n_b, ints[I_LABEL], flts[F_NOISE], P, rank_reward,
                                               lp, ctx, pi_tab, (mix_cdf, mix_guide, mix_last),
                                               sx, sy, swt, sadv, slp, state)
        samples += 2 * n_b
        queries += 2 * n_b
    if ints[I_UNPAIRED] != 0:
        n_ctx = lp.shape[0]
        counts[C_UNPAIRED], counts[C_MISMATCHED] = _draw_unpaired(
            n_b, n_ctx, k, tab, ints[I_MISMATCHED], ints[I_MIS_CAP], mis_p, mis_flat, ux, uy, ulab,
            uwt, mx, my, mwt, state)
        samples += n_b
    counts[C_SAMPLES] = samples
    counts[C_QUERIES] = queries


# ------------------------------------------------------------------------------------------------
# evaluating the terms on a batch
# ------------------------------------------------------------------------------------------------

@njit(**_JIT)
def _sparse_aot(code, prm, scale, lp, rlp, px, pw, pl, pwt, n, grad_out):
    """``scale`` times one AOT component on the ``n`` pairs: the quantile coupling of the drawn
    pairs (TRL's sort over the batch, weighted); the unpaired form couples the pooled winner and
    loser marginals, as :func:`coverage_sim._pair_kernels.aot_population`. Gradient ADDED."""
    beta = prm[P_BETA]
    eps = prm[P_LABEL_SMOOTHING]
    if code == AOT:
        a = np.empty(n)
        b = np.empty(n)
        wt = np.empty(n)
        for m in range(n):
            x = px[m]
            a[m] = lp[x, pw[m]] - lp[x, pl[m]]
            b[m] = rlp[x, pw[m]] - rlp[x, pl[m]]
            wt[m] = scale * pwt[m]
        ga = np.zeros(n)
        gb = np.zeros(n)
        loss = quantile_coupling_loss(a, wt, b, wt, beta, eps, ga, gb)
        for m in range(n):
            grad_out[px[m], pw[m]] += ga[m]
            grad_out[px[m], pl[m]] -= ga[m]
        return loss
    # AOT_UNPAIRED: the coupling only sees the winner and loser marginals: pool repeated
    # responses first, exactly as the population kernel does.
    ww = np.zeros(lp.shape)
    wl = np.zeros(lp.shape)
    for m in range(n):
        ww[px[m], pw[m]] += scale * pwt[m]
        wl[px[m], pl[m]] += scale * pwt[m]
    return aot_unpaired_marginals(prm, lp, rlp, ww, wl, grad_out)


@njit(**_JIT)
def sparse_pairwise(codes, prms, loss_weights, lp, rlp, px, pw, pl, pwt, n, grad_out, want_loss):
    """sum_m pwt[m] * l(pair m) of a (combined) pairwise loss, gradient w.r.t. ``lp`` ADDED into
    ``grad_out``.

    The per-pair components go through :func:`coverage_sim._pair_kernels.pair_value_grad_sum` (the
    exact engine's per-pair layer: loss weights, f-divergence scores, and WPO's weight
    ``pi(y_w) pi(y_l) / (sum_a pi(a|x)^2)^2`` computed from the current policy and held fixed);
    AOT components by :func:`_sparse_aot`, scaled by their loss weight. Without ``want_loss`` the
    per-pair losses are not summed (0.0 is returned, except for AOT components)."""
    loss = 0.0
    per_pair = False
    weighted = False
    for c in range(codes.shape[0]):
        code = codes[c]
        if code == AOT or code == AOT_UNPAIRED:
            loss += _sparse_aot(code, prms[c], loss_weights[c], lp, rlp, px, pw, pl, pwt, n,
                                grad_out)
        else:
            per_pair = True
            if prms[c, P_USE_WEIGHTING] != 0.0:
                weighted = True
    if not per_pair:
        return loss
    if codes.shape[0] == 1 and not weighted:
        # One loss (the hot path of sampled DPO): its weight is folded into the pair weights.
        code = codes[0]
        prm = prms[0]
        scale = loss_weights[0]
        raw = int(prm[P_DIVERGENCE]) == REVERSE_KL or code == APO_ZERO or code == SFT
        for m in range(n):
            x = px[m]
            w = pw[m]
            l = pl[m]
            if raw:  # the loss of the raw log-ratios, inlined (as _population_component)
                uw = lp[x, w] - rlp[x, w]
                ul = lp[x, l] - rlp[x, l]
                v, dw, dl = _loss_on_scores(code, uw, ul, uw - ul, lp[x, w], prm)
            else:
                v, dw, dl = pair_value_grad(code, lp[x, w], lp[x, l], rlp[x, w], rlp[x, l], prm)
            c = pwt[m] * scale
            if want_loss:  # else the compiler drops v's transcendental calls (the loop's hot part)
                loss += c * v
            grad_out[x, w] += c * dw
            grad_out[x, l] += c * dl
        return loss
    # WPO's normaliser log sum_a pi(a|x)^2, computed once per context that has pairs
    log_norm = np.full(lp.shape[0], np.nan)
    for m in range(n):
        x = px[m]
        w = pw[m]
        l = pl[m]
        if weighted and np.isnan(log_norm[x]):
            log_norm[x] = log_sq_norm(lp[x])
        v, dw, dl = pair_value_grad_sum(codes, prms, loss_weights, lp[x, w], lp[x, l], rlp[x, w],
                                        rlp[x, l], log_norm[x])
        c = pwt[m]
        if want_loss:
            loss += c * v
        grad_out[x, w] += c * dw
        grad_out[x, l] += c * dl
    return loss


@njit(**_JIT)
def sparse_unpaired(code, uprm, lp, rlp, ux, uy, ulab, uwt, n, mx, my, mwt, n_mis, grad_out):
    """The unpaired term (TRL's KTOTrainer) on ``n`` examples: sum_m uwt[m] w_label l(example m),
    gradient ADDED into ``grad_out``. KTO's reference point z0 = max(0, sum_m mwt[m] (lp - rlp)[mx,
    my]) over the ``n_mis`` mismatched pairs, held fixed (TRL detaches it); ``uprm`` = (beta,
    desirable_weight, undesirable_weight)."""
    beta = uprm[0]
    z0 = 0.0
    if code == KTO:
        for m in range(n_mis):
            z0 += mwt[m] * (lp[mx[m], my[m]] - rlp[mx[m], my[m]])
        z0 = max(z0, 0.0)
    loss = 0.0
    for m in range(n):
        x = ux[m]
        y = uy[m]
        desirable = ulab[m] != 0
        v, g = unpaired_value_grad(code, desirable, lp[x, y] - rlp[x, y], z0, beta)
        c = uwt[m] * (uprm[1] if desirable else uprm[2])
        grad_out[x, y] += c * g
        loss += c * v
    return loss


@njit(**_JIT)
def batch_loss_grad(terms, kl_est, kl_in, clip, lp, pi, rlp, buf, grad_out, want_loss):
    """The plug-in loss estimate of a batch at the current policy; its gradient w.r.t. ``log pi``
    is ADDED into ``grad_out``.

    Pairs: ``sum w l``. Responses: ``-sum w log pi``. Policy samples: the REINFORCE surrogate
    ``-w A log pi(y)`` (or PPO's ``-w min(rA, clip(r, 1 - clip, 1 + clip) A)``, r = pi/pi_old, when
    ``clip > 0``) for the gradient; for the value, the importance-weighted plug-in
    ``-reward_coef w r R(y) + kl_coef w r k(y)``, unbiased for the population loss at the current
    policy. A KL estimator in the loss adds ``kl_coef w dk/dlog pi`` at ``y``; the exact KL term
    (``kl_est == KL_EXACT``) is added densely, as in the engine. ``want_loss=False`` (unrecorded
    steps) skips the pairwise values; the returned loss is then incomplete.

    Nash-MD's samples (``pg == NASH_MD``) put ``w (beta sg(log pi/pi_ref)(y) - A)`` on
    ``dL/dlog pi`` at ``y`` and add ``w (beta log pi/pi_ref - A) log pi(y)`` to the loss (TRL's
    ``beta * kl_div_loss - score``). Unpaired examples: :func:`sparse_unpaired`. ``rlp`` is the
    current reference (TR-DPO moves it).
    """
    (codes, prms, source, W, P, fast, S, d, act, C, kl_coef, reward_coef, R, rho, loss_weights,
     unpaired, uprm, U, M, pg, pg_prm) = terms
    (px, pw, pl, pwt, lx, ly, lwt, sx, sy, swt, sadv, slp, counts, ux, uy, ulab, uwt, mx, my,
     mwt) = buf
    loss = 0.0
    if codes.shape[0] > 0 and counts[C_PAIRS] > 0:
        loss += sparse_pairwise(codes, prms, loss_weights, lp, rlp, px, pw, pl, pwt,
                                counts[C_PAIRS], grad_out, want_loss)
    if unpaired >= 0 and counts[C_UNPAIRED] > 0:
        loss += sparse_unpaired(unpaired, uprm, lp, rlp, ux, uy, ulab, uwt, counts[C_UNPAIRED],
                                mx, my, mwt, counts[C_MISMATCHED], grad_out)
    if pg == NASH_MD:
        beta = pg_prm[0]
        for m in range(counts[C_SAMPLES_TERM]):
            x = sx[m]
            y = sy[m]
            coef = swt[m] * (beta * (lp[x, y] - rlp[x, y]) - sadv[m])
            grad_out[x, y] += coef
            loss += coef * lp[x, y]
        return loss
    for m in range(counts[C_LIN]):
        x = lx[m]
        y = ly[m]
        grad_out[x, y] -= lwt[m]
        loss -= lwt[m] * lp[x, y]
    for m in range(counts[C_SAMPLES_TERM]):
        x = sx[m]
        y = sy[m]
        c = swt[m]
        adv = sadv[m]
        # r = pi/pi_old is exactly 1 on the step that drew the batch: skip the exp there
        ratio = 1.0 if lp[x, y] == slp[m] else np.exp(lp[x, y] - slp[m])
        if clip > 0.0:
            if (adv > 0.0 and ratio > 1.0 + clip) or (adv < 0.0 and ratio < 1.0 - clip):
                dadv = 0.0          # the clipped branch of the min is active: no gradient
            else:
                dadv = adv * ratio  # d(r A)/dlog pi = r A
        else:
            dadv = adv
        grad_out[x, y] -= c * dadv
        if reward_coef != 0.0:
            loss -= reward_coef * c * ratio * R[x, y]
        if kl_est != KL_EXACT:
            kv, dk = kl_value_grad(kl_est, lp[x, y] - rlp[x, y])
            loss += kl_coef * c * ratio * kv
            if kl_in == KL_IN_LOSS:
                grad_out[x, y] += kl_coef * c * dk
    if kl_est == KL_EXACT and kl_coef != 0.0:
        n_ctx, k = lp.shape
        for x in range(n_ctx):
            for i in range(k):
                p = pi[x, i]
                if p > 0.0:
                    g = lp[x, i] - rlp[x, i]
                    grad_out[x, i] += kl_coef * rho[x] * p * (g + 1.0)
                    loss += kl_coef * rho[x] * p * g
    return loss


# ------------------------------------------------------------------------------------------------
# loops
# ------------------------------------------------------------------------------------------------

@njit(**_JIT)
def sampled_gradients(lp, rlp, terms, plan, state, out_loss, out_grad):
    """``out_grad.shape[0]`` independent batches at one tabular softmax policy ``lp`` (X, K).

    Fills ``out_loss[d]`` (plug-in loss) and ``out_grad[d]`` (X, K), the gradient w.r.t. the logits;
    advances ``state``.
    """
    n_ctx, k = lp.shape
    ints, flts = plan[0], plan[1]
    pi = np.exp(lp)
    static = build_static(terms[13], plan)
    ws = workspace(ints, n_ctx, k)
    buf = alloc_buffers(ints)
    grad_lp = np.empty((n_ctx, k))
    empty_features = np.zeros((n_ctx, k, 0))
    for r in range(out_grad.shape[0]):
        draw_batch(terms, plan, static, lp, pi, rlp, state, ws, buf)
        grad_lp[:] = 0.0
        # np.bool_ / np.int64, not literals: numba would compile the batch objective and the
        # backprop a second time for the constants (the training loops pass variables).
        out_loss[r] = batch_loss_grad(terms, ints[I_KL_EST], ints[I_KL_IN], flts[F_CLIP], lp, pi,
                                      rlp, buf, grad_lp, np.bool_(True))
        _backprop_into(np.int64(TABULAR), empty_features, pi, grad_lp,
                       out_grad[r].reshape(n_ctx * k))


@njit(**_JIT)
def draw_one(lp, rlp, terms, plan, state):
    """One batch at policy ``lp`` (X, K): the buffers of :func:`alloc_buffers`."""
    n_ctx, k = lp.shape
    buf = alloc_buffers(plan[0])
    draw_batch(terms, plan, build_static(terms[13], plan), lp, np.exp(lp), rlp, state,
               workspace(plan[0], n_ctx, k), buf)
    return buf


@njit(nogil=True, **_JIT)
def run_one_sampled(theta, kind, features, base, rlp, terms, plan, state, optimizer, lr, adam_b1,
                    adam_b2, adam_eps, steps, reuse, reset_each_batch, record_steps, out_lp,
                    out_loss, out_samples, out_queries, ref_sync_every, ref_mix_alpha, out_rlp):
    """Fused sampled-gradient loop; updates ``theta`` and ``state`` in place.

    A batch is drawn from the current policy at every step ``s`` with ``s % reuse == 0`` and used
    for ``reuse`` updates (with a fresh optimiser state per batch when ``reset_each_batch``, as
    iterative DPO restarts its optimiser per dataset). Records, for each ``s`` in ``record_steps``:
    ``out_lp[r]`` = log pi, ``out_loss[r]`` = the batch's plug-in loss estimate at step ``s``,
    ``out_samples[r]`` / ``out_queries[r]`` = responses drawn / reward queries made by the batches of
    the updates before step ``s`` (those that produced this policy).

    TR-DPO (``ref_sync_every = tau > 0``): the reference starts at ``rlp`` (not modified) and after
    every tau-th update becomes :func:`coverage_sim._engine.mix_reference` of itself and the
    current policy with ``ref_mix_alpha``, as in the exact loop; ``out_rlp[r]`` records it when
    ``out_rlp`` has rows.
    """
    n_ctx, k = rlp.shape
    ints, flts = plan[0], plan[1]
    rho = terms[13]
    ref = rlp.copy() if ref_sync_every > 0 else rlp
    record_ref = out_rlp.shape[0] > 0
    static = build_static(rho, plan)
    ws = workspace(ints, n_ctx, k)
    buf = alloc_buffers(ints)
    m = np.zeros(theta.size)
    v = np.zeros(theta.size)
    g = np.empty(theta.size)
    lp = np.empty((n_ctx, k))
    pi = np.empty((n_ctx, k))
    bits = np.empty(k, dtype=np.int64)
    grad_lp = np.zeros((n_ctx, k))
    kl_est = ints[I_KL_EST]
    kl_in = ints[I_KL_IN]
    clip = flts[F_CLIP]
    total_samples = 0
    total_queries = 0
    seg_start = 0
    nxt = 0
    n_rec = record_steps.size
    for s in range(steps + 1):
        _softmax_into(kind, theta, features, base, lp, pi, bits)
        if ref_sync_every > 0 and s > 0 and s % ref_sync_every == 0:
            mix_reference(ref, lp, ref_mix_alpha)
        recording = nxt < n_rec and record_steps[nxt] == s
        if s == steps and not recording:
            break
        if recording:
            out_samples[nxt] = total_samples
            out_queries[nxt] = total_queries
        if s % reuse == 0:
            draw_batch(terms, plan, static, lp, pi, ref, state, ws, buf)
            total_samples += buf[12][C_SAMPLES]
            total_queries += buf[12][C_QUERIES]
            if reset_each_batch and optimizer == ADAM:
                m[:] = 0.0
                v[:] = 0.0
                seg_start = s
        grad_lp[:] = 0.0
        loss = batch_loss_grad(terms, kl_est, kl_in, clip, lp, pi, ref, buf, grad_lp, recording)
        if recording:
            out_lp[nxt] = lp
            out_loss[nxt] = loss
            if record_ref:
                out_rlp[nxt] = ref
            nxt += 1
        if s == steps:
            break
        _backprop_into(kind, features, pi, grad_lp, g)
        apply_update(optimizer, theta, g, m, v, s - seg_start + 1, lr, adam_b1, adam_b2, adam_eps,
                     kind, features, lp, grad_lp, rho)


def run_batch_sampled(theta, kind, features, base, rlp, stacked_terms, ints, flts, rank_reward,
                      lin_q, lin_c, lin_rho, tab_p, tab_flat, mis_p, mis_flat, states, optimizer,
                      lr, adam_b1, adam_b2, adam_eps, steps, reuse, reset_each_batch, record_steps,
                      out_lp, out_loss, out_samples, out_queries, ref_sync_every, ref_mix_alpha,
                      out_rlp, threads=1):
    """:func:`run_one_sampled` over a leading batch axis of independent problems, one stream each,
    whole problems per thread (``threads`` Python threads; the jitted loop releases the GIL, and
    one compiled loop serves single and batched runs, as :func:`coverage_sim._engine.run_batch`).

    ``stacked_terms``: the term tuples stacked along axis 0
    (:func:`coverage_sim._engine.stack_terms`); ``ref_sync_every`` (B,), ``ref_mix_alpha`` (B,)
    and ``out_rlp`` (B, R or 0, X, K) as :func:`run_one_sampled`'s, per problem.

    Problem ``b`` reads only row ``b`` of every stacked array and its own ``states[b]``, so its
    result does not depend on the thread count or on the other problems.
    """
    reuse, reset_each_batch = int(reuse), bool(reset_each_batch)

    def one(b):
        plan = (ints[b], flts[b], rank_reward[b], lin_q[b], lin_c[b], lin_rho[b], tab_p[b],
                tab_flat[b], mis_p[b], mis_flat[b])
        run_one_sampled(theta[b], kind, features[b], base[b], rlp[b], terms_at(stacked_terms, b),
                        plan, states[b], optimizer, lr[b], adam_b1, adam_b2, adam_eps, steps,
                        reuse, reset_each_batch, record_steps, out_lp[b], out_loss[b],
                        out_samples[b], out_queries[b], ref_sync_every[b], ref_mix_alpha[b],
                        out_rlp[b])

    for_each(one, theta.shape[0], threads)
