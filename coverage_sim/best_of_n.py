"""Exact Best-of-N and best/worst-of-N pair distributions.

* :func:`best_of_n_policy` -- the law of the highest-reward response among ``n`` i.i.d. draws from a
  policy (Gao et al., arXiv:2210.10760; Beirami et al., arXiv:2401.01879; claim C14 in docs/claims.md).
* :func:`best_worst_of_n_pairs` / :func:`best_worst_pairs` -- the joint law of (best, worst) of
  ``n`` draws, i.e. the ``choose_type max_min`` pairs of RLHF Workflow (arXiv:2405.07863, §9).
* :func:`best_of_n_kl_bound` -- ``log n - (n - 1)/n``.

Everything is exact (closed forms on the reward-sorted CDF), shapes ``(K,)`` or ``(X, K)``.
"""

from __future__ import annotations

import numpy as np

from coverage_sim._validation import (as_float_array, check_distribution, check_finite,
                                      check_int)
from coverage_sim.data import PairData, _check_sampler

__all__ = ["best_of_n_policy", "best_worst_of_n_pairs", "best_worst_pairs", "best_of_n_kl_bound"]


def _policy_reward(policy, reward):
    pi = as_float_array(policy, "policy", ndim=(1, 2))
    if pi.shape[-1] < 2:
        raise ValueError(f"policy must have at least 2 responses, got shape {pi.shape}")
    check_distribution(pi, "policy")
    r = check_finite(as_float_array(reward, "reward", ndim=(1, 2)), "reward")
    if r.shape != pi.shape:
        raise ValueError(f"reward must have the shape of policy {pi.shape}, got shape {r.shape}")
    K = pi.shape[-1]
    return pi, pi.reshape(-1, K), r.reshape(-1, K)


def _bon_row(p: np.ndarray, r: np.ndarray, n: int) -> np.ndarray:
    """Best-of-n law for one context; tied rewards pooled, split in proportion to ``p``."""
    out = np.zeros_like(p)
    live = np.flatnonzero(p > 0)
    vals, group = np.unique(r[live], return_inverse=True)         # ascending reward groups
    m = np.bincount(group, weights=p[live], minlength=len(vals))  # group masses, all > 0
    # S_g = mass strictly above group g (accurate near the top, where F_g ~ 1)
    above = np.concatenate([np.cumsum(m[::-1])[::-1][1:], [0.0]])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_F = np.log1p(-np.minimum(above, 1.0))                 # log F_g (-inf if F_g ~ 0)
        log_F_prev = np.empty_like(log_F)
        log_F_prev[0] = -np.inf                                   # F_{-1} = 0
        log_F_prev[1:] = log_F[:-1]
        # F_g^n - F_{g-1}^n = F_g^n * (1 - (F_{g-1}/F_g)^n), stable for F ~ 1 and large n
        p_group = np.exp(n * log_F) * -np.expm1(n * (log_F_prev - log_F))
    p_group = np.clip(np.nan_to_num(p_group, nan=0.0), 0.0, None)
    out[live] = p_group[group] * (p[live] / m[group])            # share within the tie group
    return out / out.sum()


def best_of_n_policy(policy, reward, n: int) -> np.ndarray:
    """Exact Best-of-N policy: the law of the highest-reward of ``n`` i.i.d. draws from ``policy``.

    Sort distinct reward values ascending with CDF ``F_g`` (policy mass of rewards ``<=`` the
    ``g``-th value); the winning reward group has probability ``F_g^n - F_{g-1}^n`` (claim C14;
    Gao et al., arXiv:2210.10760; Beirami et al., arXiv:2401.01879). Responses with
    exactly equal (float) rewards are pooled and the group's probability is split in proportion to
    their policy mass (any tie-break that ignores the response identity gives this law). Responses
    with zero policy mass get 0. ``n = 1`` returns ``policy``.

    Args:
      policy: sampling policy (e.g. ``pi_ref``), ``(K,)`` or ``(X, K)``; rows sum to 1.
      reward: the reward the selection uses (gold or proxy), same shape; finite.
      n: number of draws, integer ``>= 1``.

    Returns:
      ``pi_BoN`` shaped like ``policy``.

    Examples:
      >>> from coverage_sim.best_of_n import best_of_n_policy
      >>> best_of_n_policy([0.5, 0.5], [0.0, 1.0], n=2)
      array([0.25, 0.75])
    """
    pi, pi2, r2 = _policy_reward(policy, reward)
    n = check_int(n, "n", minimum=1)
    out = np.stack([_bon_row(pi2[x], r2[x], n) for x in range(pi2.shape[0])])
    return out.reshape(pi.shape)


def best_worst_of_n_pairs(policy, reward, n: int, context_weights=None) -> np.ndarray:
    """Exact joint law of (best, worst) among ``n`` i.i.d. draws: RLHF Workflow ``max_min`` pairs.

    RLHF Workflow (Dong et al., arXiv:2405.07863; figure F16 in docs/figures.md): draw ``n`` responses from
    ``policy``, take the highest-reward one as ``y_w`` and the lowest as ``y_l``. Responses are
    ranked by a stable ascending sort on reward, so **ties are broken by index** (among equal
    rewards the larger index counts as better); a pair of tied responses then still forms a
    (best, worst) pair. With ``F`` the CDF in rank order and ``M(a, b) = F_b - F_{a-1}`` the mass of
    ranks ``a..b``, inclusion-exclusion gives for ranks ``a < b``::

        Pr(worst = a, best = b) = M(a,b)^n - M(a+1,b)^n - M(a,b-1)^n + M(a+1,b-1)^n.

    When every draw is the same response (probability ``sum_y pi(y|x)^n``) there is no pair: that
    mass is dropped and the joint over all contexts is renormalised, i.e. the result is the law
    conditional on a pair existing (prompts whose draws coincide are discarded, so contexts where
    the policy is more concentrated lose weight).

    Args:
      policy: sampling policy, ``(K,)`` or ``(X, K)``.
      reward: ranking reward, same shape; finite.
      n: number of draws, integer ``>= 2``.
      context_weights: ``(X,)`` context distribution (default uniform).

    Returns:
      ``(X, K, K)`` weights, ``W[x, best, worst]``, summing to 1; usable as ``PairData.weights``.

    Examples:
      >>> from coverage_sim.best_of_n import best_worst_of_n_pairs
      >>> best_worst_of_n_pairs([0.5, 0.5], [0.0, 1.0], n=2)[0]
      array([[0., 0.],
             [1., 0.]])
    """
    pi, pi2, r2 = _policy_reward(policy, reward)
    n = check_int(n, "n", minimum=2)
    X, K = pi2.shape
    if context_weights is None:
        rho = np.full(X, 1.0 / X)
    else:
        rho = as_float_array(context_weights, "context_weights", ndim=1, shape=(X,))
        check_distribution(rho, "context_weights")
    W = np.zeros((X, K, K))
    idx = np.arange(K)
    for x in range(X):
        if rho[x] == 0:
            continue
        order = np.argsort(r2[x], kind="stable")                  # rank -> response
        p = pi2[x, order]
        C = np.concatenate([[0.0], np.cumsum(p)])                  # C[k] = F_{k-1}
        a = idx[:, None]
        b = idx[None, :]

        def mass_pow(lo, hi):                                      # M(lo, hi)^n, 0 if empty
            m = np.where(hi >= lo, C[np.clip(hi + 1, 0, K)] - C[np.clip(lo, 0, K)], 0.0)
            return np.clip(m, 0.0, None) ** n

        J = mass_pow(a, b) - mass_pow(a + 1, b) - mass_pow(a, b - 1) + mass_pow(a + 1, b - 1)
        J = np.where(b > a, np.clip(J, 0.0, None), 0.0)            # J[worst rank, best rank]
        W[x][np.ix_(order, order)] = J.T * rho[x]                  # W[best, worst]
    total = W.sum()
    if total <= 0:
        raise ValueError("policy puts all its mass on a single response in every context, so "
                         "n draws never contain two different responses (no best/worst pair)")
    return W / total


def best_worst_pairs(env, policy, n: int, reward=None) -> PairData:
    """:class:`PairData` of exact best-vs-worst-of-``n`` pairs from ``policy`` (RLHF Workflow).

    Wraps :func:`best_worst_of_n_pairs` with ``env.context_weights``; winner = best, loser = worst
    under the gold reward or a proxy ``reward`` (ties broken by index, see there).

    Args:
      env: the bandit.
      policy: sampling policy shaped like ``env.ref``, zero wherever ``env.ref`` is 0.
      n: draws per prompt, ``>= 2`` (RLHF Workflow uses 8).
      reward: optional ranking reward (e.g. a reward model ``r_hat``) shaped like ``env.ref``.

    Returns:
      :class:`PairData` with ``labels = "deterministic"``, ``behavior = None``, ``n = None``.

    Examples:
      >>> from coverage_sim.env import Bandit
      >>> from coverage_sim.best_of_n import best_worst_pairs
      >>> env = Bandit(reward=[0.0, 1.0, 2.0], ref=[1/3, 1/3, 1/3])
      >>> best_worst_pairs(env, env.ref, n=2).chosen.round(4)
      array([[0.    , 0.3333, 0.6667]])
    """
    pi = _check_sampler(env, policy, "policy")
    r = env.reward2d if reward is None else check_finite(env.as2d(reward, "reward"), "reward")
    W = best_worst_of_n_pairs(pi, r, n, context_weights=env.context_weights)
    src = f"best vs worst of {n} (exact)" + (", proxy reward" if reward is not None else "")
    return PairData(weights=W, shape=env.shape, behavior=None, n=None, labels="deterministic",
                    source=src)


def best_of_n_kl_bound(n: int) -> float:
    """Best-of-N KL bound ``log n - (n - 1)/n``.

    The analytic KL of Best-of-N to its base policy for continuous (tie-free) rewards, quoted by
    Gao et al. (arXiv:2210.10760); Beirami et al. (arXiv:2401.01879) show it is an upper bound on
    ``KL(pi_BoN || pi)`` for discrete policies (claim C14).

    Args:
      n: number of draws, integer ``>= 1``.

    Returns:
      ``log n - (n - 1)/n`` (0 for ``n = 1``).

    Examples:
      >>> from coverage_sim.best_of_n import best_of_n_kl_bound
      >>> round(best_of_n_kl_bound(4), 6)
      0.636294
    """
    n = check_int(n, "n", minimum=1)
    return float(np.log(n) - (n - 1) / n)
